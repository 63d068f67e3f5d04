"""The teacher-preparation benchmark runs on the vendored tokenizers, and its wall-clock breakdown times what it
says: every wrapped function counts its own calls, and the functions are restored afterwards."""

from __future__ import annotations

import itertools
import time

import pytest

import alignment._locate
from benchmarks import bench_teacher
from benchmarks._measure import median_ms


def test_timed_counts_every_call_and_restores_the_function(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*args: object, **kwargs: object) -> str:
        time.sleep(0.01)
        return "rendered"

    monkeypatch.setattr(alignment._locate, "apply_template", slow)
    with bench_teacher.timed((("alignment._locate", "apply_template", "Jinja"),)) as spent:
        assert alignment._locate.apply_template(None, []) == "rendered"
        alignment._locate.apply_template(None, [])
    assert alignment._locate.apply_template is slow
    assert len(spent["Jinja"]) == 2 and all(0.01 <= seconds < 1.0 for seconds in spent["Jinja"])


def test_timed_refuses_a_function_that_moved() -> None:
    with pytest.raises(AttributeError), bench_teacher.timed((("alignment._locate", "no_such_function", "x"),)):
        pass


def test_cross_family_runs_on_the_vendored_pair(capsys: pytest.CaptureFixture[str]) -> None:
    bench_teacher.cross_family(("mistral_v3", "smollm2"), batch_size=4, runs=1, repeats=1)
    out = capsys.readouterr().out
    assert "ours / peer" in out and "| total |" in out and "| ours with byte_frames=True" in out
    groups = [line for line in out.splitlines() if line.startswith("| ") and "ms per batch" not in line]
    for name in bench_teacher.GROUPS.values():
        assert any(line.startswith(f"| {name} |") for line in groups), name
    for label in ("back to back", "after 10 ms of Python"):  # the encode alone, each row with a count of 20 calls
        (row,) = [line for line in groups if line.startswith(f"| {label} |")]
        assert row.endswith(f"of {bench_teacher.BREAKDOWN_RUNS} |")
    assert "each call after 10 ms asleep" in out
    paused = [line.split(" | ")[0] for line in groups if line.startswith(("| peer |", "| ours |"))]
    assert paused == ["| peer", "| ours"]
    target = next(line for line in out.splitlines() if line.startswith("target: ours <= 1.3 x peer"))
    assert "back to back" in target and "after a pause" in target


def test_a_pause_before_each_timed_run_is_slept_and_not_timed() -> None:
    calls: list[float] = []
    started = time.perf_counter()
    ms = median_ms(lambda: calls.append(time.perf_counter()), repeats=3, warmup=1, pause=0.05)
    assert len(calls) == 4
    assert all(later - earlier >= 0.05 for earlier, later in itertools.pairwise(calls))
    assert ms < 25.0 and time.perf_counter() - started >= 0.15
