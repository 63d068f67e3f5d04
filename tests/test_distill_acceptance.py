"""``python -m benchmarks.distill.acceptance``: the acceptance check over runs that several commands made."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.distill.acceptance import combine, main, ratio_interval, table

SETTING = "beta=0.0, eval=400, lr=0.003, student_steps=1200, warmup_steps=300"


def run(pair: str, arm: str, seed: int, final: float, *, teachers: str = "final", losses=(1.0, 0.5)) -> dict:
    cross, family = pair.split("->")
    student = family + "3"
    teacher = student if arm == "same-family" else cross
    curve = [{"step": 0, "loss": float("nan"), "eval": 0.0}] + [{"step": k, "loss": x} for k, x in enumerate(losses)]
    return {
        "pair": pair,
        "arm": arm,
        "seed": seed,
        "teachers": teachers,
        "student": student,
        "teacher": teacher,
        "final_eval": final,
        "curve": curve,
    }


def write(folder: Path, name: str, records: list[dict], setting: str = SETTING) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(records))
    arms = sorted({r["arm"] for r in records})
    path.with_suffix(".md").write_text(f"# title\n\nConfiguration: arms={arms}, {setting}, seeds=[0, 1]\n")
    return path


def test_seeds_run_by_separate_commands_are_compared_seed_by_seed(tmp_path: Path) -> None:
    first = write(
        tmp_path,
        "a",
        [
            run("qwen->llama", "same-family", 0, 0.10),
            run("qwen->llama", "same-family", 1, 0.08),
            run("qwen->llama", "aligned", 0, 0.09),
            run("qwen->llama", "naive", 0, 0.0),
        ],
    )
    second = write(
        tmp_path,
        "b",
        [
            run("qwen->llama", "same-family", 1, 0.08),  # the same run again: counted once
            run("qwen->llama", "aligned", 1, 0.09, losses=(1.0, 0.4, 0.9)),  # above twice its lowest: diverged
            run("deepseek->llama", "aligned", 0, 0.12),  # final teachers: qwen->llama's same-family run of seed 0
            run("gpt2->mistral", "aligned", 0, 0.3, teachers="byte-matched"),  # no same-family run of its own
        ],
    )
    setting, records = combine([first, second])
    assert setting == {"beta": "0.0", "eval": "400", "lr": "0.003", "student_steps": "1200", "warmup_steps": "300"}
    assert len(records) == 7
    assert table(records)[2:] == [
        "| deepseek->llama | final | aligned | 0 | 0.100 ± 0.000 | 0.120 ± 0.000 | 1.200 | 1.200 to 1.200 | yes | yes "
        "| n/a |",
        "| qwen->llama | final | aligned | 0, 1 | 0.090 ± 0.010 | 0.090 ± 0.000 | 1.000 | 0.900 to 1.125 | yes | no "
        "| 0.000 (1 of 2 seeds) |",
    ]


def test_a_ratio_below_the_bar_is_not_within(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a",
        [run("qwen->llama", "same-family", s, 0.10) for s in range(3)]
        + [run("qwen->llama", "aligned-chain", s, 0.094) for s in range(3)],
    )
    assert table(combine([path])[1])[2:] == [
        "| qwen->llama | final | aligned-chain | 0 to 2 | 0.100 ± 0.000 | 0.094 ± 0.000 | 0.940 | 0.940 to 0.940 | no "
        "| yes | n/a |"
    ]


def test_files_made_with_another_setting_are_refused(tmp_path: Path) -> None:
    first = write(tmp_path, "a", [run("qwen->llama", "aligned", 0, 0.1)])
    second = write(tmp_path, "b", [run("qwen->llama", "aligned", 1, 0.1)], SETTING.replace("beta=0.0", "beta=0.5"))
    with pytest.raises(SystemExit, match=r"another setting .*\(beta: 0\.0 vs 0\.5\)"):
        combine([first, second])


def test_the_byte_examples_setting_counts_only_with_byte_matched_teachers(tmp_path: Path) -> None:
    """Pages written before ``byte_examples`` existed do not name it; it changes no run unless the teachers are
    byte-matched, so only then must the files agree on it."""
    matched = f"{SETTING}, teachers=['matched']"
    older = write(tmp_path, "a", [run("qwen->llama", "aligned", 0, 0.1, teachers="matched")], matched)
    newer = write(
        tmp_path, "b", [run("qwen->llama", "aligned", 1, 0.2, teachers="matched")], f"{matched}, byte_examples=200"
    )
    assert sorted(r["seed"] for r in combine([older, newer])[1]) == [0, 1]
    byte = write(
        tmp_path,
        "c",
        [run("qwen->llama", "aligned", 2, 0.3, teachers="byte-matched")],
        f"{SETTING}, teachers=['byte-matched'], byte_examples=200",
    )
    with pytest.raises(SystemExit, match=r"byte_examples: None vs 200"):
        combine([older, byte])


def test_one_run_with_two_results_is_refused(tmp_path: Path) -> None:
    first = write(tmp_path, "a", [run("qwen->llama", "aligned", 0, 0.1)])
    second = write(tmp_path, "b", [run("qwen->llama", "aligned", 0, 0.2)])
    with pytest.raises(SystemExit, match=r"ended at 0\.2 here and 0\.1 in an earlier file"):
        combine([first, second])


def test_a_result_file_needs_its_page(tmp_path: Path) -> None:
    path = write(tmp_path, "a", [run("qwen->llama", "aligned", 0, 0.1)])
    path.with_suffix(".md").unlink()
    with pytest.raises(SystemExit, match=r"no a\.md beside it"):
        combine([path])


def test_the_command_prints_the_setting_and_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "a", [run("qwen->llama", "same-family", 0, 0.1), run("qwen->llama", "aligned", 0, 0.1)])
    main([str(path)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Setting: beta=0.0, eval=400, lr=0.003, student_steps=1200, warmup_steps=300"
    assert out[-1] == (
        "| qwen->llama | final | aligned | 0 | 0.100 ± 0.000 | 0.100 ± 0.000 | 1.000 | 1.000 to 1.000 | yes | yes "
        "| n/a |"
    )


def test_with_matched_teachers_each_pair_is_measured_against_its_own_same_family_runs(tmp_path: Path) -> None:
    """Matched teachers depend on the pair: a Llama 3 student's same-family teacher for Qwen3 is not the one for
    DeepSeek V3, so neither pair borrows the other's same-family runs."""
    path = write(
        tmp_path,
        "a",
        [
            run("qwen->llama", "same-family", 0, 0.10, teachers="matched"),
            run("deepseek->llama", "same-family", 0, 0.05, teachers="matched"),
            run("qwen->llama", "aligned", 0, 0.10, teachers="matched"),
            run("deepseek->llama", "aligned", 0, 0.05, teachers="matched"),
            run("gpt2->llama", "aligned", 0, 0.05, teachers="matched"),  # no same-family run of its own
        ],
    )
    assert table(combine([path])[1])[2:] == [
        "| deepseek->llama | matched | aligned | 0 | 0.050 ± 0.000 | 0.050 ± 0.000 | 1.000 | 1.000 to 1.000 | yes "
        "| yes | n/a |",
        "| qwen->llama | matched | aligned | 0 | 0.100 ± 0.000 | 0.100 ± 0.000 | 1.000 | 1.000 to 1.000 | yes | yes "
        "| n/a |",
    ]


def test_with_matched_teachers_a_pair_borrows_same_family_runs_of_the_checkpoint_its_own_runs_name(
    tmp_path: Path,
) -> None:
    """When both pairs' matched same-family teacher is the same checkpoint (its step in the records), a seed the
    pair did not run is measured against the other pair's same-family run; another step is never borrowed."""

    def at(record: dict, step: int) -> dict:
        return {**record, "teacher_step": step}

    path = write(
        tmp_path,
        "a",
        [
            at(run("qwen->llama", "same-family", 0, 0.10, teachers="matched"), 6000),
            at(run("qwen->llama", "same-family", 1, 0.20, teachers="matched"), 6000),
            at(run("qwen->llama", "same-family", 2, 0.30, teachers="matched"), 6000),
            at(run("deepseek->llama", "same-family", 0, 0.10, teachers="matched"), 6000),
            at(run("deepseek->llama", "aligned", 0, 0.10, teachers="matched"), 750),
            at(run("deepseek->llama", "aligned", 1, 0.10, teachers="matched"), 750),
            at(run("gpt2->llama", "same-family", 0, 0.40, teachers="matched"), 5000),
            at(run("gpt2->llama", "aligned", 1, 0.20, teachers="matched"), 250),
        ],
    )
    assert table(combine([path])[1])[2:] == [
        "| deepseek->llama | matched | aligned | 0, 1 | 0.150 ± 0.050 | 0.100 ± 0.000 | 0.667 | 0.500 to 1.000 | no "
        "| yes | n/a |",
    ]


def test_baselines_files_give_only_their_same_family_and_naive_runs(tmp_path: Path) -> None:
    earlier = write(
        tmp_path,
        "earlier",
        [
            run("qwen->llama", "same-family", 0, 0.10),
            run("qwen->llama", "naive", 0, 0.0),
            run("qwen->llama", "aligned", 0, 0.10),  # the arm as an earlier version of the code ran it
        ],
    )
    rerun = write(tmp_path, "rerun", [run("qwen->llama", "aligned", 0, 0.05)])
    with pytest.raises(SystemExit, match="the same run should give the same result"):
        combine([rerun, earlier])
    _, records = combine([rerun], [earlier])
    assert sorted((r["arm"], r["final_eval"]) for r in records) == [
        ("aligned", 0.05),
        ("naive", 0.0),
        ("same-family", 0.10),
    ]
    means = "| 0.100 ± 0.000 | 0.050 ± 0.000 | 0.500 | 0.500 to 0.500 |"
    assert f"| qwen->llama | final | aligned | 0 {means} no | yes | 0.000 (1 of 1 seeds) |" in table(records)
    other = write(
        tmp_path, "other", [run("qwen->llama", "same-family", 0, 0.10)], setting=SETTING.replace("0.0", "0.5")
    )
    with pytest.raises(SystemExit, match="another setting"):
        combine([rerun], [other])


def test_the_interval_resamples_seeds_with_both_their_runs() -> None:
    """Two seeds, aligned 0.1 and 0 against 0.1 and 0.1: a resample holds seed 1 twice (ratio 0) a quarter of the
    time, seed 0 twice (ratio 1) a quarter, and one of each (0.5) half, so the interval runs from 0 to 1."""
    assert ratio_interval(np.array([0.1, 0.0]), np.array([0.1, 0.1])) == (0.0, 1.0)
    # the same ratio on every seed, whatever the seeds' level: no spread at all
    base = np.array([0.05, 0.1, 0.2, 0.08])
    low, high = ratio_interval(0.9 * base, base)
    assert low == pytest.approx(0.9, abs=1e-12) and high == pytest.approx(0.9, abs=1e-12)
    # seeds paired, not pooled: the same values with the seeds' pairing broken give a wider interval
    aligned = np.array([0.05, 0.1, 0.2, 0.08]) * 0.9
    shuffled = ratio_interval(aligned[::-1].copy(), base)
    assert shuffled[0] < 0.9 < shuffled[1]
    assert all(np.isnan(ratio_interval(np.array([0.1, 0.2]), np.array([0.0, 0.0]))))  # no same-family mean above 0
