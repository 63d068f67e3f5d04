"""The acceptance check over the runs of several result files, e.g. seeds run by separate commands.

Run from the repo root::

    python -m benchmarks.distill.acceptance docs/results/distill-a.json docs/results/distill-b.json

Each ``.json`` is read with the ``.md`` beside it, whose ``Configuration:`` line says how its runs were made. Files
made with different settings (β, steps, warm-up, model size, ...) are refused: only the pairs, arms, seeds and
choices of teachers may differ. A run present in two files (same pair, arm, teachers and seed) must have the same
final eval in both, or the files are refused too. With ``--baselines FILES`` only the same-family and naive runs of
those files are read (held to the same setting): an aligned arm rerun with other code is then held to the
baselines of the earlier command without its earlier runs of that arm.

Each aligned arm's seed is compared with the same-family run of its pair, teachers and seed; failing that, with that of
another pair with the same student and seed whose same-family teacher is the same checkpoint: with final teachers always
(each family's last), with matched ones when the records name the same step (so a pair needs one same-family run of its
own, at any seed, to borrow the others). The table gives, per pair, choice of teachers and arm held to the bar
(``report.ACCEPTED_ARMS``), the seeds both ran, the two means ± std (population, as the run's own pages), their ratio, a
95 % interval of that ratio (:func:`ratio_interval`: how far other seeds could move it), whether it is within 5 % (an
aligned mean above the same-family one counts as within), whether every aligned loss curve stayed finite and never rose
above twice its lowest point, and the naive arm's mean on the same seeds where it ran.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.distill.report import ACCEPTED_ARMS, BAR, _smooth

VARYING = {"arms", "pairs", "seeds", "teachers", "cache"}  # what may differ between the files combined
# settings that change no run unless the file's teachers include this choice (pages written before such a setting
# existed do not name it)
ONLY_WITH_TEACHERS = {"byte_examples": "byte-matched"}


def read_setting(json_path: Path) -> dict[str, str]:
    """The ``Configuration:`` line of the ``.md`` beside ``json_path``, as ``{key: value text}``."""
    page = json_path.with_suffix(".md")
    if not page.is_file():
        raise SystemExit(f"{json_path}: no {page.name} beside it to say how its runs were made")
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("Configuration: "):
            return dict(re.findall(r"(\w+)=(\[[^\]]*\]|[^,]+)", line.removeprefix("Configuration: ")))
    raise SystemExit(f"{page}: no 'Configuration:' line")


BASELINE_ARMS = ("same-family", "naive")


def combine(paths: Sequence[Path], baselines: Sequence[Path] = ()) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The shared setting of ``paths`` and ``baselines`` and their runs, each once (of ``baselines`` only the
    :data:`BASELINE_ARMS`); raises ``SystemExit`` where they disagree."""
    setting: dict[str, str] | None = None
    runs: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for path in [*paths, *baselines]:
        only_baselines = path in baselines and path not in paths
        page = read_setting(path)
        here = {
            k: v
            for k, v in page.items()
            if k not in VARYING and (k not in ONLY_WITH_TEACHERS or ONLY_WITH_TEACHERS[k] in page.get("teachers", ""))
        }
        if setting is None:
            setting = here
        elif here != setting:
            keys = sorted(k for k in setting.keys() | here.keys() if setting.get(k) != here.get(k))
            differ = ", ".join(f"{k}: {setting.get(k)} vs {here.get(k)}" for k in keys)
            raise SystemExit(f"{path} was made with another setting than {paths[0]} ({differ})")
        for record in json.loads(path.read_text(encoding="utf-8")):
            if "error" in record or (only_baselines and record["arm"] not in BASELINE_ARMS):
                continue
            key = (record["pair"], record["arm"], record.get("teachers", "final"), int(record["seed"]))
            if key in runs and runs[key]["final_eval"] != record["final_eval"]:
                raise SystemExit(
                    f"{path}: {key} ended at {record['final_eval']} here and {runs[key]['final_eval']} in an earlier "
                    "file: the same run should give the same result"
                )
            runs.setdefault(key, record)
    return setting or {}, list(runs.values())


def _baseline(records: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any] | None:
    """The same-family run ``run`` is measured against: that of its pair, teachers and seed, or else any pair's
    with the same student and seed that learnt from the same checkpoint: with final teachers each family's last
    one teaches it whatever the cross pair; with matched ones the records must name the same step."""
    teachers, seed = run.get("teachers", "final"), int(run["seed"])
    candidates = [
        r for r in records if r["arm"] == "same-family" and r.get("teachers", "final") == teachers and r["seed"] == seed
    ]
    for r in candidates:
        if r["pair"] == run["pair"]:
            return r
    own_step = next(
        (
            r.get("teacher_step")
            for r in records
            if r["arm"] == "same-family"
            and r["pair"] == run["pair"]
            and r.get("teachers", "final") == teachers
            and r.get("teacher_step") is not None
        ),
        None,
    )
    for r in candidates:
        if r["student"] != run["student"]:
            continue
        if teachers == "final" or (own_step is not None and r.get("teacher_step") == own_step):
            return r
    return None


DRAWS = 10_000  # bootstrap resamples behind each interval


def ratio_interval(aligned: np.ndarray, base: np.ndarray, *, draws: int = DRAWS) -> tuple[float, float]:
    """A 95 % interval of ``aligned.mean() / base.mean()`` by a paired bootstrap over seeds: ``draws`` times, as many
    seeds as there are drawn with replacement, each with both its runs (they share a warm-up), and the ratio of the
    two means; the 2.5th and 97.5th percentiles of those ratios (draws whose same-family mean is 0 left out). The
    generator is seeded, so a table prints the same interval every time."""
    picks = np.random.default_rng(0).integers(0, len(aligned), size=(draws, len(aligned)))
    numerator, denominator = aligned[picks].mean(axis=1), base[picks].mean(axis=1)
    ratios = numerator[denominator > 0] / denominator[denominator > 0]
    if not len(ratios):
        return float("nan"), float("nan")
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def table(records: list[dict[str, Any]]) -> list[str]:
    """The acceptance table's markdown lines."""
    lines = [
        "| pair | teachers | arm | seeds | same-family | aligned arm | ratio | 95 % interval (seeds resampled) | "
        "within 5 % | curves finite, no divergence | naive |",
        "|---|---|---|---|--:|--:|--:|--:|---|---|--:|",
    ]
    groups = sorted({(r["pair"], r.get("teachers", "final"), r["arm"]) for r in records if r["arm"] in ACCEPTED_ARMS})
    for pair, teachers, arm in groups:
        runs = sorted(
            (r for r in records if (r["pair"], r.get("teachers", "final"), r["arm"]) == (pair, teachers, arm)),
            key=lambda r: int(r["seed"]),
        )
        paired = [(run, base) for run in runs if (base := _baseline(records, run)) is not None]
        if not paired:
            continue
        aligned = np.array([run["final_eval"] for run, _ in paired])
        base = np.array([b["final_eval"] for _, b in paired])
        ratio = aligned.mean() / base.mean() if base.mean() > 0 else float("nan")
        low, high = ratio_interval(aligned, base)
        smooth = all(_smooth([p["loss"] for p in run["curve"][1:]]) for run, _ in paired)
        seeds = [int(run["seed"]) for run, _ in paired]
        naive = [
            r["final_eval"]
            for r in records
            if (r["pair"], r.get("teachers", "final"), r["arm"]) == (pair, teachers, "naive") and r["seed"] in seeds
        ]
        lines.append(
            f"| {pair} | {teachers} | {arm} | {_seeds(seeds)} | {base.mean():.3f} ± {base.std():.3f} | "
            f"{aligned.mean():.3f} ± {aligned.std():.3f} | {ratio:.3f} | {low:.3f} to {high:.3f} | "
            f"{'yes' if ratio >= BAR else 'no'} | "
            f"{'yes' if smooth else 'no'} | "
            + (f"{np.mean(naive):.3f} ({len(naive)} of {len(seeds)} seeds)" if naive else "n/a")
            + " |"
        )
    return lines


def _seeds(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]} to {seeds[-1]}"
    return ", ".join(map(str, seeds))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="distill result files (.json, with their .md beside)")
    parser.add_argument(
        "--baselines",
        nargs="+",
        type=Path,
        default=[],
        help="result files of which only the same-family and naive runs are read",
    )
    args = parser.parse_args(argv)
    setting, records = combine(args.files, args.baselines)
    print("Setting: " + ", ".join(f"{k}={v}" for k, v in sorted(setting.items())))
    print("Files: " + ", ".join(f"`{p}`" for p in args.files))
    if args.baselines:
        print("Same-family and naive runs also from: " + ", ".join(f"`{p}`" for p in args.baselines))
    print()
    print("\n".join(table(records)))


if __name__ == "__main__":
    main()
