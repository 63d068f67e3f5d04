"""The compiled merge of :mod:`alignment._numba` gives exactly what the numpy path of ``align_spans`` gives.

``tests/test_align.py`` checks ``align_spans`` against a slow reference through whichever path this process uses
(compiled where numba is installed, as in CI through the ``test`` extra). Here both paths run on the same inputs:
the kernel compiled, the kernel run as plain Python (so its logic is checked without numba too), and the numpy
path with the kernel switched off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alignment import _numba, align_spans, align_spans_batch
from alignment.errors import TextMismatchError
from alignment.types import BatchAlignment, TokenAlignment
from tests.strategies import span_pairs, span_pairs_any_coverage, span_pairs_with_extras

needs_numba = pytest.mark.skipif(not _numba.enabled(), reason="numba is not installed (the `test` extra has it)")


@contextmanager
def numpy_only() -> Iterator[None]:
    """Run ``align_spans`` on its numpy path for the duration."""
    saved = _numba._kernels
    _numba._kernels = lambda: None  # type: ignore[assignment]
    try:
        yield
    finally:
        _numba._kernels = saved


def same(a: TokenAlignment, b: TokenAlignment) -> None:
    assert a.pairs.tolist() == b.pairs.tolist()
    for name in ("student", "teacher", "byte_spans"):
        assert getattr(a.chunks, name).tolist() == getattr(b.chunks, name).tolist(), name
    assert (a.num_student, a.num_teacher) == (b.num_student, b.num_teacher)


def outcome(student: np.ndarray, teacher: np.ndarray) -> TokenAlignment | Exception:
    try:
        return align_spans(student, teacher)
    except (ValueError, TypeError) as exc:  # TextMismatchError is a ValueError
        return exc


@needs_numba
@given(span_pairs(), st.integers(0, 2**40))
def test_compiled_path_equals_numpy_path_on_tilings(spans, offset):
    student, teacher = (s + offset for s in spans)
    compiled = _numba.align_tiled(student, teacher)
    with numpy_only():
        expected = align_spans(student, teacher)
    if not len(student):
        assert compiled is None  # nothing to walk: the numpy path answers
        return
    assert compiled is not None, "two tilings of the same bytes must be answered by the kernel"
    same(compiled, expected)
    for array in (compiled.pairs, compiled.chunks.student, compiled.chunks.teacher, compiled.chunks.byte_spans):
        assert array.dtype == np.int64 and not array.flags.writeable


@needs_numba
@given(st.one_of(span_pairs_with_extras(), span_pairs_any_coverage()))
def test_align_spans_is_the_same_with_and_without_the_kernel(spans):
    # Gaps, zero-width tokens and sides covering different bytes: the kernel declines, and the numpy path answers
    # or raises exactly as it does alone.
    student, teacher = spans
    got = outcome(student, teacher)
    with numpy_only():
        expected = outcome(student, teacher)
    if isinstance(expected, Exception):
        assert type(got) is type(expected) and str(got) == str(expected)
    else:
        assert isinstance(got, TokenAlignment)
        same(got, expected)


@given(span_pairs())
def test_the_merge_run_as_python_agrees_with_the_numpy_path(spans):
    # The kernel's own logic, without numba: the same function, interpreted.
    student, teacher = spans
    if not len(student):
        return
    count, out = _numba._merge(student, teacher)
    with numpy_only():
        expected = align_spans(student, teacher)
    assert out[0, :count].tolist() == expected.pairs.tolist()
    assert out[1, :count].tolist() == expected.chunks.student.tolist()
    assert out[2, :count].tolist() == expected.chunks.teacher.tolist()
    assert out[3, :count].tolist() == expected.chunks.byte_spans.tolist()


@pytest.mark.parametrize(
    ("student", "teacher"),
    [
        ([(0, 1), (1, 3)], [(0, 2), (2, 4)]),  # different bytes
        ([(1, 3)], [(0, 3)]),  # different starts
        ([(0, 1), (2, 3)], [(0, 3)]),  # a gap
        ([(0, 2), (2, 2), (2, 3)], [(0, 3)]),  # a zero-width token
        ([(0, 2), (1, 3)], [(0, 3)]),  # overlap
        ([(-1, 1), (1, 3)], [(-1, 3)]),  # negative start
        ([(0, 3)], [(0, 2), (2, 3), (3, 3)]),  # a zero-width token at the end
        ([(0, 5), (5, -(2**63))], [(0, 5), (5, -(2**63))]),  # stop - start would overflow int64
    ],
    ids=["other-bytes", "other-start", "gap", "zero-width", "overlap", "negative", "zero-width-last", "int64-min"],
)
def test_the_merge_declines_what_is_not_two_tilings_of_the_same_bytes(student, teacher):
    count, _ = _numba._merge(np.array(student, dtype=np.int64), np.array(teacher, dtype=np.int64))
    assert count == -1


@needs_numba
def test_errors_are_the_numpy_paths():
    with pytest.raises(ValueError, match=r"teacher_spans\[1\] = \[1, 3\) starts before teacher_spans\[0\]"):
        align_spans([(0, 3)], [(0, 2), (1, 3)])
    with pytest.raises(TextMismatchError, match=r"first difference at byte 2"):
        align_spans([(0, 1), (1, 3)], [(0, 1), (1, 2)])


@needs_numba
def test_inputs_of_any_layout_and_integer_type():
    base = np.array([[0, 2, 9], [2, 3, 9], [3, 6, 9]], dtype=np.int32)
    student = base[:, :2]  # int32, not contiguous
    teacher = np.array([[0, 3], [3, 6]], dtype=np.uint16)
    result = _numba.align_tiled(np.asarray(student, dtype=np.int64), np.asarray(teacher, dtype=np.int64))
    assert result is not None
    same(align_spans(student, teacher), result)
    assert result.pairs.tolist() == [[1, 0], [2, 1]]
    assert result.chunks.byte_spans.tolist() == [[0, 3], [3, 6]]


def test_switched_off_by_the_environment():
    code = "from alignment import _numba, align_spans; align_spans([(0, 1)], [(0, 1)]); print(_numba.enabled())"
    env = {**os.environ, "ALIGNMENT_NUMBA": "0"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@needs_numba
def test_compiles_without_a_cache_directory(monkeypatch):
    import numba

    real = numba.njit

    def njit(*args, cache=False, **kwargs):
        if cache:  # what numba raises where no cache directory is writable
            raise RuntimeError("cannot cache function '_merge': no locator available")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)
    kernels = _numba._kernels.__wrapped__()
    assert kernels is not None
    count, out = kernels[0](np.array([[0, 1], [1, 3]]), np.array([[0, 3]]))
    assert count == 1 and out[0, :1].tolist() == [[1, 0]]


@needs_numba
def test_a_failing_compile_falls_back_to_numpy_with_a_warning(monkeypatch):
    import numba

    def njit(*args, **kwargs):
        raise ValueError("no LLVM here")

    monkeypatch.setattr(numba, "njit", njit)
    with pytest.warns(RuntimeWarning, match=r"compiled merge failed \(ValueError: no LLVM here\).*ALIGNMENT_NUMBA=0"):
        assert _numba._kernels.__wrapped__() is None


def batch_outcome(pairs: list[tuple[np.ndarray, np.ndarray]]) -> BatchAlignment | Exception:
    try:
        return align_spans_batch([s for s, _ in pairs], [t for _, t in pairs])
    except (ValueError, TypeError) as exc:
        return exc


@needs_numba
@given(st.lists(st.one_of(span_pairs(), span_pairs_with_extras(), span_pairs_any_coverage()), max_size=5))
def test_a_batch_is_the_same_with_and_without_the_kernel(batch):
    # Tilings of the same bytes are walked in one compiled call; anything else sends the batch to numpy, example
    # by example: the same results, or the same error naming the same example.
    got = batch_outcome(batch)
    with numpy_only():
        expected = batch_outcome(batch)
    if isinstance(expected, Exception):
        assert type(got) is type(expected) and str(got) == str(expected)
        return
    assert isinstance(got, BatchAlignment) and len(got) == len(batch)
    for b, (student, teacher) in enumerate(batch):
        same(got[b], expected[b])
        same(got[b], align_spans(student, teacher))


@needs_numba
@given(st.lists(span_pairs(), min_size=1, max_size=5), st.integers(0, 2**40))
def test_a_batch_of_tilings_is_answered_by_the_kernel(batch, offset):
    batch = [(s + offset, t + offset) for s, t in batch if len(s)]
    if not batch:
        return
    compiled = _numba.align_tiled_batch([s for s, _ in batch], [t for _, t in batch])
    assert compiled is not None, "tilings of the same bytes must be answered by the kernel"
    for b, (student, teacher) in enumerate(batch):
        same(compiled[b], align_spans(student, teacher))
    for array in (compiled.pairs, compiled.pair_offsets, compiled.chunks.byte_spans, compiled.num_student):
        assert array.dtype == np.int64 and not array.flags.writeable


@given(st.lists(span_pairs(), min_size=1, max_size=4))
def test_the_walk_run_as_python_writes_each_example_after_the_last(batch):
    batch = [(s, t) for s, t in batch if len(s)]
    out = np.full((4, sum(min(len(s), len(t)) for s, t in batch), 2), -7, dtype=np.int64)
    base = 0
    for student, teacher in batch:
        count = _numba._walk(student, teacher, out, base)
        expected_count, alone = _numba._merge(student, teacher)
        assert count == expected_count
        assert out[:, base : base + count].tolist() == alone[:, :count].tolist()
        base += count
    assert (out[:, base:] == -7).all()  # nothing written past the last example


@needs_numba
def test_a_batch_with_an_example_the_walk_declines_goes_to_numpy():
    tiled = (np.array([[0, 1], [1, 3]]), np.array([[0, 3]]))
    zero_width = (np.array([[0, 1], [1, 1], [1, 3]]), np.array([[0, 3]]))
    assert _numba.align_tiled_batch([tiled[0], zero_width[0]], [tiled[1], zero_width[1]]) is None
    batch = align_spans_batch([tiled[0], zero_width[0]], [tiled[1], zero_width[1]])
    assert batch.pairs.tolist() == [[1, 0], [2, 0]] and batch.pair_offsets.tolist() == [0, 1, 2]


@needs_numba
def test_read_only_spans_are_taken_as_they_are():
    # A Rendering's byte_offsets and a TokenAlignment's arrays are frozen: the kernels read them without a copy.
    student, teacher = np.array([[0, 1], [1, 3]]), np.array([[0, 3]])
    for array in (student, teacher):
        array.setflags(write=False)
    assert _numba.align_tiled(student, teacher) is not None
    assert align_spans(student, teacher).pairs.tolist() == [[1, 0]]
    batch = _numba.align_tiled_batch([student, student], [teacher, teacher])
    assert batch is not None and batch.pairs.tolist() == [[1, 0], [1, 0]]
