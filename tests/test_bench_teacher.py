"""The teacher-preparation benchmark runs on the vendored tokenizers, and its wall-clock breakdown times what it
says: every wrapped function counts its own calls, and the functions are restored afterwards."""

from __future__ import annotations

import time

import pytest

import alignment._locate
from benchmarks import bench_teacher


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
