"""Hypothesis strategies for token byte spans: pairs of tokenizations of one shared byte range.

Spans are ``(n, 2)`` int64 arrays of half-open ``[start, stop)`` byte offsets, non-decreasing and
non-overlapping, as :func:`alignment.align.align_spans` takes them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "MAX_BYTES",
    "covered_runs",
    "span_pairs",
    "span_pairs_any_coverage",
    "span_pairs_with_extras",
    "tokenize_runs",
    "with_zero_width",
]

MAX_BYTES = 40
Spans = np.ndarray


def _as_spans(pairs: Sequence[tuple[int, int]]) -> Spans:
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@st.composite
def tokenize_runs(draw: st.DrawFn, runs: Sequence[tuple[int, int]]) -> Spans:
    """One tokenization of the covered ``runs``: each run is cut at random interior points."""
    spans: list[tuple[int, int]] = []
    for start, stop in runs:
        interior = range(start + 1, stop)
        cuts = sorted(draw(st.sets(st.sampled_from(interior)))) if interior else []
        edges = [start, *cuts, stop]
        spans.extend(itertools.pairwise(edges))
    return _as_spans(spans)


@st.composite
def span_pairs(draw: st.DrawFn, max_bytes: int = MAX_BYTES) -> tuple[Spans, Spans]:
    """Two independent tokenizations of the bytes ``[0, n)``, no gaps and no zero-width tokens."""
    n = draw(st.integers(0, max_bytes))
    runs = [(0, n)] if n else []
    return draw(tokenize_runs(runs)), draw(tokenize_runs(runs))


@st.composite
def covered_runs(draw: st.DrawFn, max_bytes: int = MAX_BYTES) -> list[tuple[int, int]]:
    """Maximal covered runs of ``[0, n)`` separated by gaps (a leading gap is possible, a trailing one too)."""
    n = draw(st.integers(0, max_bytes))
    edges = sorted(draw(st.sets(st.integers(0, n), max_size=8)))
    runs = list(zip(edges[0::2], edges[1::2], strict=False))
    return [(a, b) for a, b in runs if a < b]


@st.composite
def with_zero_width(draw: st.DrawFn, spans: Spans, limit: int) -> Spans:
    """Insert zero-width tokens at positions in ``[0, limit]`` that no token straddles."""
    inside = np.zeros(limit + 1, dtype=bool)
    for start, stop in spans:
        inside[start + 1 : stop] = True
    allowed = np.flatnonzero(~inside).tolist()
    positions = draw(st.lists(st.sampled_from(allowed), max_size=4))
    merged = np.concatenate([spans, _as_spans([(p, p) for p in positions])])
    return merged[np.lexsort((merged[:, 1], merged[:, 0]))]


@st.composite
def span_pairs_with_extras(draw: st.DrawFn, max_bytes: int = MAX_BYTES) -> tuple[Spans, Spans]:
    """Two tokenizations with the same common gaps, each with its own zero-width (special) tokens."""
    runs = draw(covered_runs(max_bytes))
    limit = draw(st.integers(runs[-1][1] if runs else 0, max_bytes + 2))
    student = draw(with_zero_width(draw(tokenize_runs(runs)), limit))
    teacher = draw(with_zero_width(draw(tokenize_runs(runs)), limit))
    return student, teacher


@st.composite
def span_pairs_any_coverage(draw: st.DrawFn, max_bytes: int = MAX_BYTES) -> tuple[Spans, Spans]:
    """Two tokenizations of independently drawn coverage (usually different, sometimes equal)."""
    student = draw(tokenize_runs(draw(covered_runs(max_bytes))))
    teacher = draw(tokenize_runs(draw(covered_runs(max_bytes))))
    return student, teacher
