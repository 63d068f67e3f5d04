"""Write the distillation results: raw JSON, a markdown table and a PNG of the curves."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _table(records: list[dict[str, Any]]) -> list[str]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["pair"], record.get("teachers", "final"), record["arm"])].append(record)
    lines = [
        "| pair | teachers | arm | teacher → student | teacher eval (step) | final eval (mean ± std) | final loss | "
        "steps | coverage (1:1 frames) | byte coverage | teacher mass on shared vocab | seeds | wall s (mean) |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]

    def mean_of(runs: list[dict[str, Any]], key: str) -> str:
        values = [r[key] for r in runs if r.get(key) is not None]
        return f"{np.mean(values):.3f}" if values else "n/a"

    for (pair, teachers, arm), runs in sorted(groups.items()):
        used = (
            "n/a"
            if runs[0].get("teacher_step") is None
            else f"{runs[0]['teacher_eval']:.3f} ({runs[0]['teacher_step']})"
        )
        source = "reference answers" if arm == "sft" else runs[0]["teacher"]
        if runs[0].get("teacher_byte") is not None:  # --teachers byte-matched
            used += f"; P(byte) {runs[0]['teacher_byte']:.3f}"
        lines.append(
            f"| {pair} | {teachers} | {arm} | {source} → {runs[0]['student']} | {used} | "
            f"{_mean_std([r['final_eval'] for r in runs])} | {np.mean([r['final_loss'] for r in runs]):.4f} | "
            f"{runs[0]['steps']} | {mean_of(runs, 'coverage')} | {mean_of(runs, 'byte_coverage')} | "
            f"{mean_of(runs, 'teacher_shared_mass')} | {len(runs)} | {np.mean([r['wall_s'] for r in runs]):.0f} |"
        )
    return lines


def _smooth(losses: list[float]) -> bool:
    """Finite throughout, and never above twice its lowest point after reaching it."""
    if not losses or not np.isfinite(losses).all():
        return False
    low = int(np.argmin(losses))
    return max(losses[low:]) <= 2 * losses[low]


def _acceptance(records: list[dict[str, Any]]) -> list[str]:
    """The acceptance check, per pair, choice of teachers and aligned arm (those of :data:`ACCEPTED_ARMS` that ran):
    the aligned students' mean final eval against the same-family students' (within 5 % relative),
    and whether every aligned loss curve stayed finite and never rose above twice its lowest point (no
    divergence)."""
    lines = [
        "| pair | teachers | arm | same-family eval | aligned eval | aligned / same-family | within 5 % | "
        "aligned curves finite, no divergence | naive eval |",
        "|---|---|---|--:|--:|--:|---|---|--:|",
    ]
    keys = sorted({(r["pair"], r.get("teachers", "final"), r["arm"]) for r in records if r["arm"] in ACCEPTED_ARMS})
    for pair, teachers, arm in keys:
        runs = {
            name: [
                r for r in records if r["pair"] == pair and r["arm"] == name and r.get("teachers", "final") == teachers
            ]
            for name in ("same-family", arm, "naive")
        }
        if not runs["same-family"]:
            continue
        same, aligned = (float(np.mean([r["final_eval"] for r in runs[name]])) for name in ("same-family", arm))
        smooth = all(_smooth([p["loss"] for p in r["curve"][1:]]) for r in runs[arm])
        ratio = aligned / same if same > 0 else float("nan")
        naive = f"{np.mean([r['final_eval'] for r in runs['naive']]):.3f}" if runs["naive"] else "n/a"
        lines.append(
            f"| {pair} | {teachers} | {arm} | {same:.3f} | {aligned:.3f} | {ratio:.3f} | "
            f"{'yes' if ratio >= BAR else 'no'} | {'yes' if smooth else 'no'} | {naive} |"
        )
    return lines


# the cross-family losses held to the bar: the library's next-byte loss, with the teacher's branches, and with the
# chain rule's weights (prefix_weights) on the sampled path alone or with the teacher's likeliest path too
ACCEPTED_ARMS = ("aligned", "aligned-branched", "aligned-chain", "aligned-chain-greedy")
BAR = 0.95  # aligned / same-family at or above this is within 5 %


def _acceptance_section(records: list[dict[str, Any]]) -> list[str]:
    rows = _acceptance(records)
    if len(rows) == 2:  # no pair with both an aligned and a same-family arm
        return []
    intro = (
        "Acceptance (aligned cross-family student within 5 % of the same-family student; an aligned eval above the "
        "same-family one counts as within):"
    )
    return [intro, "", *rows, ""]


def _teacher_lines(teachers: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each teacher's held-out exact match at its checkpoints (every other one, and the last)."""
    if not teachers:
        return []
    lines = ["Teachers' held-out exact match by training step:", ""]
    for name, curve in sorted(teachers.items()):
        shown = [p for k, p in enumerate(curve) if k % 2 == 1 or k == len(curve) - 1]
        lines.append(f"- {name}: " + ", ".join(f"{p['step']}: {p['eval']:.3f}" for p in shown))
    return [*lines, ""]


ARM_COLORS = {
    "aligned": "C0",
    "naive": "C1",
    "same-family": "C2",
    "sft": "C3",
    "aligned-bytes": "C4",
    "aligned-stop": "C5",
    "aligned+chunk": "C6",
    "aligned-prefix": "C8",
    "aligned-projection": "C9",
    "aligned-chunk": "k",
    "aligned-weighted": "m",
    "aligned-branched": "C7",
    "aligned-ends": "y",
    "aligned-greedy": "darkred",
    "aligned-chain": "navy",
    "aligned-chain-greedy": "teal",
}


def _plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = sorted({r["pair"] for r in records})
    modes = sorted({r.get("teachers", "final") for r in records} - {"n/a"}) or ["final"]
    columns = [(pair, mode) for pair in pairs for mode in modes]
    if not columns:  # every run failed: the table says so, there is nothing to draw
        return
    figure, axes = plt.subplots(2, len(columns), figsize=(6 * len(columns), 7), squeeze=False)
    for column, (pair, mode) in enumerate(columns):
        for arm in sorted({r["arm"] for r in records if r["pair"] == pair}):
            runs = [
                r for r in records if r["pair"] == pair and r["arm"] == arm and r.get("teachers", mode) in (mode, "n/a")
            ]
            if not runs:  # this arm ran with the other choice of teachers only
                continue
            steps = [p["step"] for p in runs[0]["curve"]]
            for row, key in enumerate(("loss", "eval")):
                values = np.array([[p[key] for p in r["curve"]] for r in runs])
                color = ARM_COLORS.get(arm, "C7")  # one colour per arm in every panel and on every page
                axes[row][column].plot(steps, values.mean(0), label=arm, color=color)
                if len(runs) > 1:
                    axes[row][column].fill_between(steps, values.min(0), values.max(0), alpha=0.2, color=color)
        axes[0][column].set_title(f"{pair}, {mode} teachers: training loss (each arm's own)")
        axes[1][column].set_title(f"{pair}, {mode} teachers: held-out exact match (greedy)")
        axes[1][column].set_xlabel("student step")
        axes[0][column].set_yscale("log")
        for row in range(2):
            axes[row][column].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _reuse_lines(records: list[dict[str, Any]]) -> list[str]:
    sources = sorted({r["reused_from"] for r in records if "reused_from" in r})
    if not sources:
        return []
    arms = sorted({(r["pair"], r["arm"], r["teachers"]) for r in records if "reused_from" in r})
    return [
        f"Carried over unchanged from {', '.join(f'`{s}`' for s in sources)} as it was before this command "
        "(`--reuse`: runs an earlier command made): "
        + "; ".join(f"{pair} {arm} ({teachers})" for pair, arm, teachers in arms)
        + ".",
        "",
    ]


def write_report(
    records: list[dict[str, Any]],
    out: Path,
    config: dict[str, Any],
    machine: str,
    wall: float,
    *,
    stem: str = "distill",
    command: str = "python -m benchmarks.distill.run",
    quick: bool | None = None,
    teachers: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out`` (``quick=`` picks the preset's stem)."""
    if quick is not None:
        stem = "distill-quick" if quick else "distill"
        command = "python -m benchmarks.distill.run" + (" --quick" if quick else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(records, indent=1))
    failed = [r for r in records if "error" in r]
    records = [r for r in records if "error" not in r]
    lines = [
        "# Cross-family on-policy distillation",
        "",
        f"Command: `{command}` · machine: {machine} · total wall time {wall / 60:.1f} min.",
        "",
        *_reuse_lines(records),
        "Configuration: " + ", ".join(f"{k}={v}" for k, v in sorted(config.items()) if k != "cache"),
        "",
        *_table(records),
        "",
        *_acceptance_section(records),
        *(f"- FAILED: {r['pair']} {r['arm']} seed {r['seed']}: {r['error']}" for r in failed),
        "",
        *_teacher_lines(teachers or {}),
        f"Curves: `{stem}.png`; raw records with curves: `{stem}.json`.",
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    try:
        _plot(records, out / f"{stem}.png")
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'); no PNG written")
    print("\n".join(_table(records)))
