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

from alignment.types import Chunks, TokenAlignment

Kernel = Callable[[np.ndarray, np.ndarray], tuple[int, np.ndarray]]


def align_tiled(student: np.ndarray, teacher: np.ndarray) -> TokenAlignment | None:
    """The alignment of two ``(n, 2)`` int64 span arrays that tile the same bytes, or ``None``.

    ``None`` means "not answered here": numba is not in use, a side is empty, or the two sides are not non-empty
    tokens tiling one byte range ``[start, stop)`` with ``start >= 0``. The caller then checks the inputs itself.
    """
    kernel = _kernel()
    if kernel is None or not len(student) or not len(teacher):
        return None
    count, out = kernel(np.ascontiguousarray(student), np.ascontiguousarray(teacher))
    if count < 0:
        return None
    return TokenAlignment(
        pairs=out[0, :count],
        chunks=Chunks(student=out[1, :count], teacher=out[2, :count], byte_spans=out[3, :count]),
        num_student=len(student),
        num_teacher=len(teacher),
    )


def enabled() -> bool:
    """Whether :func:`align_tiled` runs compiled in this process (numba imported and compiled, not switched off)."""
    return _kernel() is not None


@functools.cache
def _kernel() -> Kernel | None:
    if os.environ.get("ALIGNMENT_NUMBA", "1") == "0" or importlib.util.find_spec("numba") is None:
        return None
    signature = "Tuple((int64, int64[:, :, ::1]))(int64[:, ::1], int64[:, ::1])"
    try:
        import numba

        try:
            compiled: Kernel = numba.njit(signature, cache=True, nogil=True)(_merge)
        except RuntimeError:  # numba found no writable cache directory: compile for this process only
            compiled = numba.njit(signature, nogil=True)(_merge)
    except Exception as exc:  # an optional speed-up must not break alignment: numpy gives the same answers
        warnings.warn(
            f"alignment: numba is installed but its compiled merge failed ({type(exc).__name__}: {exc}); "
            "align_spans runs on numpy. Set ALIGNMENT_NUMBA=0 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return compiled


def _merge(student: Any, teacher: Any) -> tuple[int, np.ndarray]:
    """Walk both stops; return ``(K, out)``, or ``K = -1`` where the sides do not tile the same bytes.

    ``out[0, :K]`` are the pairs ``(i, j)`` with ``student[i, 1] == teacher[j, 1]``; ``out[1 | 2 | 3, :K]`` are the
    chunks' student tokens, teacher tokens and bytes, each ``[previous cut, this cut)``. One buffer for all four,
    because each array a compiled function returns costs as much as a few hundred tokens of the walk. Written as
    plain loops for numba; run as Python it gives the same answers (the tests call it both ways).
    """
    n_s, n_t = student.shape[0], teacher.shape[0]
    out = np.empty((4, min(n_s, n_t), 2), np.int64)
    start = student[0, 0]
    if start < 0 or teacher[0, 0] != start or teacher[n_t - 1, 1] != student[n_s - 1, 1]:
        return -1, out
    bad = 0  # each side's [start_0, stop_0, start_1, ...]: every stop past its start, every start at the last stop
    for flat in (student.ravel(), teacher.ravel()):
        for k in range(1, len(flat)):  # counting, not returning at the first bad span, is the faster loop
            before, here = flat[k - 1], flat[k]
            bad += (here <= before) if k & 1 else (here != before)
    if bad:
        return -1, out
    i = j = count = 0
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
    return count, out
