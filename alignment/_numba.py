"""Private: :func:`alignment.align_spans`'s common case as one compiled merge, where numba is installed.

Two tokenizations of the same text tile the same bytes with non-empty tokens. Their alignment is then one walk
down both lists of stops: a pair wherever the two stops meet, and each chunk runs from the previous pair to this
one. numpy needs several passes and temporaries for that (:func:`alignment.align._align_tiled`); compiled, the
walk costs a few nanoseconds per token: 30 % of the numpy path's time at 2,048 tokens.

numba is optional (the ``fast`` extra). Importing this module never imports it: the first call does, and
compiles the kernel then (numba keeps the machine code in its cache, so later processes load it). Where numba is
missing or ``ALIGNMENT_NUMBA=0`` is set, :func:`align_tiled` answers ``None`` and :func:`alignment.align_spans`
stays on numpy; where numba fails to import or compile, the same happens with a warning. Both paths give identical
results (``tests/test_numba.py``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from alignment.types import BatchAlignment, Chunks, TokenAlignment

Kernel = Callable[[np.ndarray, np.ndarray], tuple[int, np.ndarray]]
Walk = Callable[[np.ndarray, np.ndarray, np.ndarray, int], int]


def align_tiled(student: np.ndarray, teacher: np.ndarray) -> TokenAlignment | None:
    """The alignment of two C-contiguous ``(n, 2)`` int64 span arrays that tile the same bytes, or ``None``.

    ``None`` means "not answered here": numba is not in use, a side is empty, or the two sides are not non-empty
    tokens tiling one byte range ``[start, stop)`` with ``start >= 0``. The caller then checks the inputs itself.
    """
    kernels = _kernels()
    if kernels is None or not len(student) or not len(teacher):
        return None
    count, out = kernels[0](student, teacher)
    if count < 0:
        return None
    return TokenAlignment(
        pairs=out[0, :count],
        chunks=Chunks(student=out[1, :count], teacher=out[2, :count], byte_spans=out[3, :count]),
        num_student=len(student),
        num_teacher=len(teacher),
    )


def align_tiled_batch(students: list[np.ndarray], teachers: list[np.ndarray]) -> BatchAlignment | None:
    """:func:`align_tiled` of every example of a batch (C-contiguous ``(n, 2)`` int64 span arrays, none empty) into
    one buffer, without a result per example, or ``None`` where numba is not in use or some example is not answered
    here."""
    kernels = _kernels()
    if kernels is None:
        return None
    walk = kernels[1]
    num_student = np.array([len(s) for s in students], dtype=np.int64)
    num_teacher = np.array([len(t) for t in teachers], dtype=np.int64)
    out = np.empty((4, int(np.minimum(num_student, num_teacher).sum()), 2), np.int64)
    totals, total = [0], 0  # where each example's pairs begin in ``out``, and the end
    for student, teacher in zip(students, teachers, strict=True):
        count = walk(student, teacher, out, total)
        if count < 0:
            return None
        total += count
        totals.append(total)
    offsets = np.array(totals, dtype=np.int64)
    return BatchAlignment(
        pairs=out[0, :total],
        pair_offsets=offsets,
        chunks=Chunks(student=out[1, :total], teacher=out[2, :total], byte_spans=out[3, :total]),
        chunk_offsets=offsets,
        num_student=num_student,
        num_teacher=num_teacher,
    )


def enabled() -> bool:
    """Whether :func:`align_tiled` runs compiled in this process (numba imported and compiled, not switched off)."""
    return _kernels() is not None


@functools.cache
def _kernels() -> tuple[Kernel, Walk] | None:
    if os.environ.get("ALIGNMENT_NUMBA", "1") == "0" or importlib.util.find_spec("numba") is None:
        return None
    try:
        import numba
        from numba import types
        from numba.extending import register_jitable

        register_jitable(_walk)  # callable from _merge compiled, and still plain Python for the tests

        def compiled(function: Callable[..., Any], signature: Any) -> Any:
            try:
                return numba.njit(signature, cache=True, nogil=True)(function)
            except RuntimeError:  # numba found no writable cache directory: compile for this process only
                return numba.njit(signature, nogil=True)(function)

        # spans typed read-only, so that frozen arrays (a Rendering's byte_offsets) are taken as they are
        spans, out = types.Array(types.int64, 2, "C", readonly=True), types.Array(types.int64, 3, "C")
        merge = compiled(_merge, types.Tuple((types.int64, out))(spans, spans))  # type: ignore[no-untyped-call]
        walk = compiled(_walk, types.int64(spans, spans, out, types.int64))
    except Exception as exc:  # an optional speed-up must not break alignment: numpy gives the same answers
        warnings.warn(
            f"alignment: numba is installed but its compiled merge failed ({type(exc).__name__}: {exc}); "
            "align_spans runs on numpy. Set ALIGNMENT_NUMBA=0 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return merge, walk


def _merge(student: Any, teacher: Any) -> tuple[int, np.ndarray]:
    """Walk both stops; return ``(K, out)``, or ``K = -1`` where the sides do not tile the same bytes.

    ``out[0, :K]`` are the pairs ``(i, j)`` with ``student[i, 1] == teacher[j, 1]``; ``out[1 | 2 | 3, :K]`` are the
    chunks' student tokens, teacher tokens and bytes, each ``[previous cut, this cut)``. One buffer for all four,
    because each array a compiled function returns costs as much as a few hundred tokens of the walk. Written as
    plain loops for numba; run as Python it gives the same answers (the tests call it both ways).
    """
    out = np.empty((4, min(student.shape[0], teacher.shape[0]), 2), np.int64)
    return _walk(student, teacher, out, 0), out


def _walk(student: Any, teacher: Any, out: Any, base: int) -> int:
    """Check that both sides tile the same bytes with non-empty tokens, then write their pairs and chunks into
    ``out[:, base:]``; return how many, or ``-1`` where the sides do not tile the same bytes."""
    n_s, n_t = student.shape[0], teacher.shape[0]
    start = student[0, 0]
    if start < 0 or teacher[0, 0] != start or teacher[n_t - 1, 1] != student[n_s - 1, 1]:
        return -1
    bad = 0  # each side's [start_0, stop_0, start_1, ...]: every stop past its start, every start at the last stop
    for flat in (student.ravel(), teacher.ravel()):
        for k in range(1, len(flat)):  # counting, not returning at the first bad span, is the faster loop
            before, here = flat[k - 1], flat[k]
            bad += (here <= before) if k & 1 else (here != before)
    if bad:
        return -1
    i = j = 0
    count = base
    first_s = first_t = 0
    cut = start
    while i < n_s and j < n_t:  # both sides end at the same byte, so the walk ends with a pair of the last tokens
        stop_s, stop_t = student[i, 1], teacher[j, 1]
        if stop_s == stop_t:
            out[0, count, 0], out[0, count, 1] = i, j
            out[1, count, 0], out[1, count, 1] = first_s, i + 1
            out[2, count, 0], out[2, count, 1] = first_t, j + 1
            out[3, count, 0], out[3, count, 1] = cut, stop_s
            first_s, first_t, cut = i + 1, j + 1, stop_s
            count += 1
            i += 1
            j += 1
        elif stop_s < stop_t:
            i += 1
        else:
            j += 1
    return count - base
