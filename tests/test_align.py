"""Tests for :func:`alignment.align.align_spans`: hand-computed goldens, properties, and a slow reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alignment import token_byte_spans
from alignment.align import (
    Turn,
    _align_general,
    _align_tiled,
    _index_ranges,
    align_each_turn,
    align_spans,
    align_spans_batch,
    align_turns,
)
from alignment.errors import AlignmentError, TextMismatchError
from alignment.types import BatchAlignment, Chunks, TokenAlignment
from tests.strategies import (
    Spans,
    span_pairs,
    span_pairs_any_coverage,
    span_pairs_with_extras,
    tokenize_runs,
    with_zero_width,
)
from tests.tokenizers import load_real

# --- tier 1: hand-computed goldens ---------------------------------------------------------------------------------
# Each case: student spans, teacher spans, pairs, student chunks, teacher chunks, chunk byte spans.
GOLDENS = [
    pytest.param(  # " ☕" = 20 | E2 98 95: byte-level "Ġâĺ"+"ķ" (3+1) vs " "+"☕" (1+3)
        [(0, 3), (3, 4)], [(0, 1), (1, 4)],
        [[1, 1]], [[0, 2]], [[0, 2]], [[0, 4]],
        id="coffee-3+1-vs-1+3",
    ),
    pytest.param(  # " ☕": "Ġâĺ"+"ķ" vs SentencePiece "▁" + <0xE2> <0x98> <0x95>
        [(0, 3), (3, 4)], [(0, 1), (1, 2), (2, 3), (3, 4)],
        [[0, 2], [1, 3]], [[0, 1], [1, 2]], [[0, 3], [3, 4]], [[0, 3], [3, 4]],
        id="coffee-byte-fallback",
    ),
    pytest.param(  # "你好世界", 3 bytes per character: one token per character vs two per token
        [(0, 3), (3, 6), (6, 9), (9, 12)], [(0, 6), (6, 12)],
        [[1, 0], [3, 1]], [[0, 2], [2, 4]], [[0, 1], [1, 2]], [[0, 6], [6, 12]],
        id="cjk",
    ),
    pytest.param(  # student BOS at 0, teacher none
        [(0, 0), (0, 2), (2, 5)], [(0, 2), (2, 3), (3, 5)],
        [[1, 0], [2, 2]], [[0, 2], [2, 3]], [[0, 1], [1, 3]], [[0, 2], [2, 5]],
        id="zero-width-start-one-side",
    ),
    pytest.param(  # BOS on both sides: a common end at byte 0
        [(0, 0), (0, 3)], [(0, 0), (0, 1), (1, 3)],
        [[0, 0], [1, 2]], [[0, 1], [1, 2]], [[0, 1], [1, 3]], [[0, 0], [0, 3]],
        id="zero-width-start-both",
    ),
    pytest.param(  # zero-width inside a teacher token: no cut there
        [(0, 2), (2, 2), (2, 4)], [(0, 1), (1, 4)],
        [[2, 1]], [[0, 3]], [[0, 2]], [[0, 4]],
        id="zero-width-middle",
    ),
    pytest.param(  # zero-width at a common end: the pair takes the last student token ending there
        [(0, 2), (2, 2), (2, 4)], [(0, 2), (2, 4)],
        [[1, 0], [2, 1]], [[0, 2], [2, 3]], [[0, 1], [1, 2]], [[0, 2], [2, 4]],
        id="zero-width-middle-at-cut",
    ),
    pytest.param(  # student EOS at the end
        [(0, 3), (3, 3)], [(0, 1), (1, 3)],
        [[1, 1]], [[0, 2]], [[0, 2]], [[0, 3]],
        id="zero-width-end-one-side",
    ),
    pytest.param(  # end-of-turn on both sides at the same byte
        [(0, 3), (3, 3)], [(0, 3), (3, 3)],
        [[1, 1]], [[0, 2]], [[0, 2]], [[0, 3]],
        id="zero-width-end-both",
    ),
    pytest.param(  # zero-width token after the last common end joins the last chunk, which grows to hold it
        [(0, 2), (4, 4)], [(0, 2)],
        [[0, 0]], [[0, 2]], [[0, 1]], [[0, 4]],
        id="zero-width-after-last-cut",
    ),
    pytest.param(  # only zero-width tokens, no common end: one chunk, no pair
        [(0, 0)], [],
        np.zeros((0, 2)), [[0, 1]], [[0, 0]], [[0, 0]],
        id="zero-width-only",
    ),
    pytest.param(  # same common gap [2, 5) on both sides
        [(0, 2), (5, 6), (6, 8)], [(0, 1), (1, 2), (5, 8)],
        [[0, 1], [2, 2]], [[0, 1], [1, 3]], [[0, 2], [2, 3]], [[0, 2], [5, 8]],
        id="common-gap",
    ),
    pytest.param(  # leading gap: nothing covers [0, 3)
        [(3, 5)], [(3, 4), (4, 5)],
        [[0, 1]], [[0, 1]], [[0, 2]], [[3, 5]],
        id="leading-gap",
    ),
    pytest.param(
        [(0, 1), (1, 3), (3, 6)], [(0, 1), (1, 3), (3, 6)],
        [[0, 0], [1, 1], [2, 2]], [[0, 1], [1, 2], [2, 3]], [[0, 1], [1, 2], [2, 3]], [[0, 1], [1, 3], [3, 6]],
        id="identical",
    ),
    pytest.param(
        [(0, 5)], [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)],
        [[0, 4]], [[0, 1]], [[0, 5]], [[0, 5]],
        id="one-vs-many",
    ),
    pytest.param([], [], np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2)), id="empty"),
    pytest.param(
        np.zeros((0, 2), dtype=np.int32), np.zeros((0, 2), dtype=np.int64),
        np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2)),
        id="empty-arrays",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("student", "teacher", "pairs", "s_chunks", "t_chunks", "byte_spans"), GOLDENS)
def test_golden(student, teacher, pairs, s_chunks, t_chunks, byte_spans):
    result = align_spans(student, teacher)
    for name, actual, expected in [
        ("pairs", result.pairs, pairs),
        ("student", result.chunks.student, s_chunks),
        ("teacher", result.chunks.teacher, t_chunks),
        ("byte_spans", result.chunks.byte_spans, byte_spans),
    ]:
        assert actual.dtype == np.int64, name
        np.testing.assert_array_equal(actual, np.asarray(expected, dtype=np.int64).reshape(-1, 2), err_msg=name)
    assert (result.num_student, result.num_teacher) == (len(student), len(teacher))


def test_coverage_figures():
    result = align_spans([(0, 3), (3, 4)], [(0, 1), (1, 2), (2, 3), (3, 4)])
    assert (result.student_coverage, result.teacher_coverage) == (1.0, 0.5)


@pytest.mark.parametrize(
    "student",
    [
        [(0, 1), (1, 3)],
        ((0, 1), (1, 3)),
        [[0, 1], [1, 3]],
        np.array([[0, 1], [1, 3]], dtype=np.int32),
        np.array([[0, 1], [1, 3]], dtype=np.uint16),
        np.array([[0, 9, 1], [1, 9, 3]])[:, ::2],
    ],
    ids=["list-of-tuples", "tuple-of-tuples", "list-of-lists", "int32", "uint16", "non-contiguous"],
)
def test_accepts_array_likes(student):
    result = align_spans(student, np.array([[0, 3]]))
    np.testing.assert_array_equal(result.pairs, [[1, 0]])


def test_does_not_alias_or_mutate_inputs():
    student = np.array([[0, 1], [1, 3]])
    result = align_spans(student, student)
    assert not result.pairs.flags.writeable
    np.testing.assert_array_equal(student, [[0, 1], [1, 3]])


# --- errors --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("student", "teacher", "error", "match"),
    [
        (np.array([[0.0, 1.0]]), [(0, 1)], TypeError, r"student_spans must hold integers, got dtype float64"),
        ([(0, 1)], np.array([[True, True]]), TypeError, r"teacher_spans must hold integers, got dtype bool"),
        ([0, 1, 2], [(0, 1)], ValueError, r"student_spans must have shape \(n, 2\), got \(3,\)"),
        ([(0, 1)], [(0, 1, 2)], ValueError, r"teacher_spans must have shape \(n, 2\), got \(1, 3\)"),
        ([(0, 1)], [(0, 1), (1,)], ValueError, r"teacher_spans must be a \(n, 2\) array"),
        ([(0, 2), (3, 2)], [(0, 3)], ValueError, r"student_spans\[1\] = \[3, 2\) has start > stop"),
        ([(-1, 2)], [(0, 2)], ValueError, r"student_spans\[0\] = \[-1, 2\) has a negative start"),
        (
            [(0, 3)], [(0, 2), (1, 3)], ValueError,
            r"teacher_spans\[1\] = \[1, 3\) starts before teacher_spans\[0\] = \[0, 2\) stops",
        ),
        (
            [(2, 3), (0, 1)], [(0, 3)], ValueError,
            r"student_spans\[1\] = \[0, 1\) starts before student_spans\[0\] = \[2, 3\) stops",
        ),
        (
            [(0, 3)], [(0, 2)], TextMismatchError,
            r"first difference at byte 2: student_spans has token 0 = \[0, 3\), teacher_spans has no token there",
        ),
        (
            [(0, 1), (2, 3)], [(0, 3)], TextMismatchError,
            r"first difference at byte 1: student_spans has no token there, teacher_spans has token 0 = \[0, 3\)",
        ),
        (
            [(0, 2), (2, 2)], [(0, 2), (2, 4)], TextMismatchError,
            r"byte 2: student_spans has no token there, teacher_spans has token 1 = \[2, 4\)",
        ),
        ([], [(1, 2)], TextMismatchError, r"byte 1: student_spans has no token there"),
    ],
    ids=["float", "bool", "1d", "3-columns", "ragged", "start>stop", "negative", "overlap", "decreasing",
         "teacher-short", "student-gap", "zero-width-is-not-coverage", "student-empty"],
)  # fmt: skip
def test_errors(student, teacher, error, match):
    with pytest.raises(error, match=match):
        align_spans(student, teacher)


def test_text_mismatch_is_an_alignment_error():
    assert issubclass(TextMismatchError, AlignmentError)
    with pytest.raises(ValueError, match="cover different bytes"):
        align_spans([(0, 1)], [(0, 2)])


# --- tier 2: properties --------------------------------------------------------------------------------------------
def _covered(spans: np.ndarray) -> set[int]:
    return {b for start, stop in spans.tolist() for b in range(start, stop)}


def check_invariants(student: Spans, teacher: Spans, result: TokenAlignment) -> None:
    s_stop, t_stop = student[:, 1], teacher[:, 1]
    pairs, chunks = result.pairs, result.chunks
    # pairs: strictly increasing, end together, last token ending there, one per common end
    assert np.all(np.diff(pairs, axis=0) > 0)
    np.testing.assert_array_equal(s_stop[pairs[:, 0]], t_stop[pairs[:, 1]])
    for spans, column in [(student, pairs[:, 0]), (teacher, pairs[:, 1])]:
        after = column + 1
        assert np.all((after == len(spans)) | (spans[np.minimum(after, len(spans) - 1), 1] > spans[column, 1]))
    assert set(s_stop[pairs[:, 0]].tolist()) == set(s_stop.tolist()) & set(t_stop.tolist())
    # chunks: partition both sides, in order
    for spans, ranges in [(student, chunks.student), (teacher, chunks.teacher)]:
        flat = [i for first, end in ranges.tolist() for i in range(first, end)]
        assert flat == list(range(len(spans)))
        assert np.all(ranges[:, 0] <= ranges[:, 1])
    assert len(chunks) == len(pairs) or (len(pairs) == 0 and len(chunks) == 1)
    for g, (span_lo, span_hi) in enumerate(chunks.byte_spans.tolist()):
        s_tokens, t_tokens = student[slice(*chunks.student[g])], teacher[slice(*chunks.teacher[g])]
        both = np.concatenate([s_tokens, t_tokens])
        # both sides cover the same bytes, inside the chunk's byte span, which is tight
        assert (both[:, 0].min(), both[:, 1].max()) == (span_lo, span_hi)
        assert _covered(s_tokens) == _covered(t_tokens)
        covered = _covered(s_tokens)
        assert covered == (set(range(min(covered), max(covered) + 1)) if covered else set())
        # minimal: the only common end inside the chunk is its cut, and both sides reach it
        common = set(s_tokens[:, 1].tolist()) & set(t_tokens[:, 1].tolist())
        if len(pairs):
            cut = int(s_stop[pairs[g, 0]])
            assert common == {cut}
            assert s_tokens[:, 1].max(initial=cut) == cut or g == len(chunks) - 1
            assert t_tokens[:, 1].max(initial=cut) == cut or g == len(chunks) - 1
        else:
            assert common == set()


@given(span_pairs())
def test_properties_plain(spans):
    student, teacher = spans
    result = align_spans(student, teacher)
    check_invariants(student, teacher, result)
    for g, (lo, hi) in enumerate(result.chunks.byte_spans.tolist()):  # no zero-width tokens: each side tiles it
        assert _covered(student[slice(*result.chunks.student[g])]) == set(range(lo, hi))
        assert (student[result.chunks.student[g, 0], 0], teacher[result.chunks.teacher[g, 0], 0]) == (lo, lo)


@given(span_pairs_with_extras())
def test_properties_with_zero_width_and_gaps(spans):
    student, teacher = spans
    check_invariants(student, teacher, align_spans(student, teacher))


@given(span_pairs_with_extras())
def test_swap_swaps_sides(spans):
    student, teacher = spans
    forward, backward = align_spans(student, teacher), align_spans(teacher, student)
    np.testing.assert_array_equal(backward.pairs, forward.pairs[:, ::-1])
    np.testing.assert_array_equal(backward.chunks.student, forward.chunks.teacher)
    np.testing.assert_array_equal(backward.chunks.teacher, forward.chunks.student)
    np.testing.assert_array_equal(backward.chunks.byte_spans, forward.chunks.byte_spans)


@given(span_pairs())
def test_self_alignment_is_identity(spans):
    student, _ = spans
    result = align_spans(student, student)
    n = len(student)
    np.testing.assert_array_equal(result.pairs, np.stack([np.arange(n), np.arange(n)], axis=1))
    np.testing.assert_array_equal(result.chunks.student, np.stack([np.arange(n), np.arange(1, n + 1)], axis=1))
    np.testing.assert_array_equal(result.chunks.teacher, result.chunks.student)
    np.testing.assert_array_equal(result.chunks.byte_spans, student)
    assert result.student_coverage == result.teacher_coverage == (1.0 if n else 0.0)


# --- tier 3: parity with a slow, obviously correct reference ---------------------------------------------------------
def reference_align(student: Spans, teacher: Spans) -> tuple[list, list, list, list]:
    """Set-based restatement of the rule: pairs, student chunks, teacher chunks, chunk byte spans."""
    s, t = [tuple(r) for r in student.tolist()], [tuple(r) for r in teacher.tolist()]
    cuts = sorted({b for _, b in s} & {b for _, b in t})
    pairs = [[max(i for i, (_, b) in enumerate(s) if b == c), max(j for j, (_, b) in enumerate(t) if b == c)]
             for c in cuts]  # fmt: skip
    groups = len(cuts) if cuts else int(bool(s or t))

    def chunk_of(stop: int) -> int:
        return next((g for g, c in enumerate(cuts) if c >= stop), groups - 1)

    ranges: list[list[list[int]]] = [[], []]
    spans: list[list[int]] = []
    for g in range(groups):
        members = [[i for i, (_, b) in enumerate(side) if chunk_of(b) == g] for side in (s, t)]
        for k, (side, ids) in enumerate(zip((s, t), members, strict=True)):
            ranges[k].append([min(ids), max(ids) + 1] if ids else [len(side), len(side)])
        tokens = [s[i] for i in members[0]] + [t[j] for j in members[1]]
        spans.append([min(a for a, _ in tokens), max(b for _, b in tokens)])
    return pairs, ranges[0], ranges[1], spans


def reference_first_difference(student: Spans, teacher: Spans) -> int | None:
    differ = _covered(student) ^ _covered(teacher)
    return min(differ) if differ else None


@given(span_pairs_with_extras())
def test_parity_with_reference(spans):
    student, teacher = spans
    result = align_spans(student, teacher)
    pairs, s_chunks, t_chunks, byte_spans = reference_align(student, teacher)
    assert result.pairs.tolist() == pairs
    assert result.chunks.student.tolist() == s_chunks
    assert result.chunks.teacher.tolist() == t_chunks
    assert result.chunks.byte_spans.tolist() == byte_spans


@given(span_pairs_any_coverage())
def test_coverage_check_parity_with_reference(spans):
    student, teacher = spans
    first = reference_first_difference(student, teacher)
    if first is None:
        check_invariants(student, teacher, align_spans(student, teacher))
    else:
        with pytest.raises(TextMismatchError, match=rf"first difference at byte {first}:"):
            align_spans(student, teacher)


@given(span_pairs(), st.integers(0, 2**40))
def test_tiled_fast_path_agrees_with_the_general_path(spans, offset):
    # align_spans takes _align_tiled for sides that tile the same bytes with non-empty tokens (most text)
    student, teacher = (s + offset for s in spans)
    if not len(student):
        return
    fast, general = _align_tiled(student, teacher), _align_general(student, teacher)
    assert fast.pairs.tolist() == general.pairs.tolist()
    for name in ("student", "teacher", "byte_spans"):
        actual, expected = getattr(fast.chunks, name), getattr(general.chunks, name)
        assert actual.dtype == np.int64 and not actual.flags.writeable, name
        assert actual.tolist() == expected.tolist(), name
    assert (fast.num_student, fast.num_teacher) == (general.num_student, general.num_teacher)


@pytest.mark.parametrize("width", [1, 10**6], ids=["dense", "sparse"])
def test_tiled_sides_far_from_byte_zero(width):
    start = 2**50
    student = np.array([[start, start + width], [start + width, start + 2 * width]])
    teacher = np.array([[start, start + 2 * width]])
    result = align_spans(student, teacher)
    assert result.pairs.tolist() == [[1, 0]]
    assert result.chunks.student.tolist() == [[0, 2]] and result.chunks.teacher.tolist() == [[0, 1]]
    assert result.chunks.byte_spans.tolist() == [[start, start + 2 * width]]


def test_large_input_is_vectorised():
    rng = np.random.default_rng(0)
    n_bytes = 200_000
    cuts = [rng.choice(np.arange(1, n_bytes), size=k, replace=False) for k in (50_000, 70_000)]
    edges = [np.unique(np.r_[0, c, n_bytes]) for c in cuts]
    student, teacher = (np.stack([e[:-1], e[1:]], axis=1) for e in edges)
    result = align_spans(student, teacher)
    assert len(result.pairs) == len(np.intersect1d(student[:, 1], teacher[:, 1]))
    assert result.chunks.student[-1, 1] == len(student)


# --- align_spans_batch -------------------------------------------------------------------------------------------
def test_a_batch_holds_each_examples_alignment_in_flat_arrays() -> None:
    student = [[(0, 2), (2, 3)], [(0, 1), (1, 2)], [(5, 6)]]
    teacher = [[(0, 1), (1, 3)], [(0, 2)], [(5, 6)]]
    batch = align_spans_batch(student, teacher)
    assert len(batch) == 3
    assert batch.pairs.tolist() == [[1, 1], [1, 0], [0, 0]]
    assert batch.pair_offsets.tolist() == batch.chunk_offsets.tolist() == [0, 1, 2, 3]
    assert batch.rows.tolist() == [0, 1, 2]
    assert batch.chunks.byte_spans.tolist() == [[0, 3], [0, 2], [5, 6]]
    assert batch.num_student.tolist() == [2, 2, 1] and batch.num_teacher.tolist() == [2, 1, 1]
    for b in range(3):
        alone = align_spans(student[b], teacher[b])
        assert batch[b].pairs.tolist() == alone.pairs.tolist()
        assert batch[b].chunks.student.tolist() == alone.chunks.student.tolist()
        assert (batch[b].num_student, batch[b].num_teacher) == (alone.num_student, alone.num_teacher)
    assert batch[-1].chunks.byte_spans.tolist() == [[5, 6]]
    with pytest.raises(IndexError, match="example 3 is out of range for a batch of 3"):
        batch[3]


def test_an_empty_batch_and_empty_examples() -> None:
    empty = align_spans_batch([], [])
    assert len(empty) == 0 and empty.pairs.shape == (0, 2) and empty.pair_offsets.tolist() == [0]
    batch = align_spans_batch([[], [(0, 1)]], [[], [(0, 1)]])
    assert batch.pair_offsets.tolist() == [0, 0, 1] and batch[0].num_student == 0


def test_a_batch_error_names_the_example() -> None:
    with pytest.raises(ValueError, match="must hold one entry per example, got 2 and 1"):
        align_spans_batch([[(0, 1)], [(0, 1)]], [[(0, 1)]])
    with pytest.raises(ValueError, match=r"^example 1: student_spans must have shape \(n, 2\), got \(3,\)"):
        align_spans_batch([[(0, 1)], [0, 1, 2]], [[(0, 1)], [(0, 1)]])
    with pytest.raises(TypeError, match=r"^example 0: teacher_spans must hold integers"):
        align_spans_batch([[(0, 1)]], [np.array([[0.0, 1.0]])])
    with pytest.raises(TextMismatchError, match=r"^example 1: student_spans and teacher_spans cover different"):
        align_spans_batch([[(0, 1)], [(0, 1), (1, 3)]], [[(0, 1)], [(0, 1), (1, 2)]])


def test_a_batch_alignment_checks_its_offsets() -> None:
    batch = align_spans_batch([[(0, 1)]], [[(0, 1)]])
    fields = {
        "pairs": batch.pairs,
        "chunks": batch.chunks,
        "chunk_offsets": batch.chunk_offsets,
        "num_student": batch.num_student,
        "num_teacher": batch.num_teacher,
    }
    with pytest.raises(ValueError, match=r"pair_offsets must run from 0 to 1 in 2 non-decreasing steps"):
        BatchAlignment(pair_offsets=np.array([0, 2]), **fields)
    with pytest.raises(ValueError, match=r"pair_offsets must be a 1-d int64 array"):
        BatchAlignment(pair_offsets=np.array([0.0, 1.0]), **fields)
    three = align_spans_batch([[(0, 1)]] * 3, [[(0, 1)]] * 3)
    fields = {"pairs": three.pairs, "chunks": three.chunks, "num_student": three.num_student}
    fields["num_teacher"] = three.num_teacher
    backwards = np.array([0, 2, 1, 3])
    for chunk_offsets in (backwards, three.pair_offsets):  # the same array as pair_offsets, or another
        with pytest.raises(ValueError, match=r"pair_offsets must run from 0 to 3 in 4 non-decreasing steps"):
            BatchAlignment(pair_offsets=backwards, chunk_offsets=chunk_offsets, **fields)
    with pytest.raises(ValueError, match=r"chunk_offsets must run from 0 to 3 in 4 non-decreasing steps"):
        BatchAlignment(pair_offsets=three.pair_offsets, chunk_offsets=backwards, **fields)


@pytest.mark.parametrize(("student", "teacher"), [("gpt2", "smollm2"), ("smollm2", "gpt2")], ids=str)
def test_a_batch_of_real_tokenizations_is_each_examples_alignment(student: str, teacher: str) -> None:
    texts = ["What is 1234 + 5678? It is 6912.", "Reverse the word 'café': éfac ☕", "apple fig pear\n\tdone"]
    s_tok, t_tok = load_real(student), load_real(teacher)
    sides = [
        (
            token_byte_spans(s_tok, s_tok.encode(text, add_special_tokens=False)),
            token_byte_spans(t_tok, t_tok.encode(text, add_special_tokens=False)),
        )
        for text in texts
    ]
    batch = align_spans_batch([s for s, _ in sides], [t for _, t in sides])
    for b, (s, t) in enumerate(sides):
        alone = align_spans(s, t)
        assert batch[b].pairs.tolist() == alone.pairs.tolist()
        assert batch[b].chunks.byte_spans.tolist() == alone.chunks.byte_spans.tolist()
    assert (batch.rows == np.repeat(np.arange(3), [len(align_spans(s, t).pairs) for s, t in sides])).all()


def test_index_ranges_maps_an_empty_range_to_an_empty_range_where_it_sits() -> None:
    indices = np.array([3, 4, 7], dtype=np.int64)
    ranges = np.array([[0, 0], [0, 2], [2, 2], [2, 3], [3, 3]], dtype=np.int64)
    assert _index_ranges(indices, ranges).tolist() == [[3, 3], [3, 5], [7, 7], [7, 8], [8, 8]]
    assert _index_ranges(indices[:0], np.array([[0, 0]], dtype=np.int64)).tolist() == [[0, 0]]


def test_a_token_holding_an_empty_content_and_more_pairs_nothing() -> None:
    # a completion-format student wrote "  " after "Assistant:" (its separator, a space, and a space of content);
    # the teacher's template trimmed that content to nothing. The student's token straddles the content start and
    # its turn start is no comparable prefix; the teacher has no content token: nothing to pair, one chunk that
    # only the student's side holds (a chunk loss leaves out what one side lacks)
    student = Turn(np.array([[0, 0], [0, 2]], dtype=np.int64), 1, 0, None)
    teacher = Turn(np.array([[0, 5], [5, 7], [7, 9]], dtype=np.int64), 7, 0, 2)
    alignment = align_turns([student], [teacher])
    assert alignment.pairs.shape == (0, 2)
    assert alignment.chunks.student.tolist() == [[1, 2]] and alignment.chunks.teacher.tolist() == [[0, 0]]


@st.composite
def turn_pairs(draw: st.DrawFn) -> tuple[Turn, Turn]:
    """A student and a teacher turn of the same content length: each side tiles its bytes (zero-width tokens too),
    its content somewhere inside, its end of turn a token after the content or none."""
    length = draw(st.integers(0, 12))

    def side() -> Turn:
        before, after = draw(st.integers(0, 6)), draw(st.integers(0, 6))
        size = before + length + after
        spans = draw(with_zero_width(draw(tokenize_runs([(0, size)] if size else [])), size))
        closers = np.flatnonzero(spans[:, 0] >= before + length).tolist() if len(spans) else []
        return Turn(spans, before, length, draw(st.sampled_from([None, *closers])))

    return side(), side()


def reference_align_turns(student: list[Turn], teacher: list[Turn], end_of_turn: str) -> TokenAlignment:
    """``align_turns`` as its documentation reads, token by token: each turn's start token (where both sides have a
    clean one), its content tokens clipped to the content, its end of turn (where both are closed), turn k from
    byte ``sum(length + 2)`` of the turns before it; aligned by ``align_spans`` and mapped back to token indices."""

    def first_after(turn: Turn) -> int:
        return next((i for i, (_, stop) in enumerate(turn.offsets.tolist()) if stop > turn.low), len(turn.offsets))

    def clean(turn: Turn, first: int) -> bool:
        return first > 0 and (first >= len(turn.offsets) or turn.offsets[first, 0] >= turn.low)

    sides: tuple[list[int], list[int]] = ([], [])
    spans: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
    base = 0
    for turn_s, turn_t in zip(student, teacher, strict=True):
        firsts = first_after(turn_s), first_after(turn_t)
        start = clean(turn_s, firsts[0]) and clean(turn_t, firsts[1])
        closed = end_of_turn == "pair" and turn_s.end_of_turn is not None and turn_t.end_of_turn is not None
        for side, turn, first in zip((0, 1), (turn_s, turn_t), firsts, strict=True):
            high = turn.low + turn.length
            if start:
                sides[side].append(first - 1)
                spans[side].append((base, base + 1))
            for i in range(first, len(turn.offsets)):
                a, b = turn.offsets[i].tolist()
                if a >= high:
                    break
                sides[side].append(i)
                clipped = [min(max(edge, turn.low), high) for edge in (a, b)]
                spans[side].append((base + 1 + clipped[0] - turn.low, base + 1 + clipped[1] - turn.low))
            if closed:
                assert turn.end_of_turn is not None
                sides[side].append(turn.end_of_turn)
                spans[side].append((base + 1 + turn.length, base + 2 + turn.length))
        base += turn_s.length + 2
    local = align_spans(
        np.array(spans[0], dtype=np.int64).reshape(-1, 2), np.array(spans[1], dtype=np.int64).reshape(-1, 2)
    )

    def ranges(indices: list[int], local_ranges: np.ndarray) -> np.ndarray:
        mapped = []
        for a, b in local_ranges.tolist():
            if a < b:
                mapped.append((indices[a], indices[b - 1] + 1))
            else:  # an empty range sits before the token at its start, or after the last one
                at = indices[a] if a < len(indices) else (indices[-1] + 1 if indices else 0)
                mapped.append((at, at))
        return np.array(mapped, dtype=np.int64).reshape(-1, 2)

    pairs = [(sides[0][i], sides[1][j]) for i, j in local.pairs.tolist()]
    return TokenAlignment(
        pairs=np.array(pairs, dtype=np.int64).reshape(-1, 2),
        chunks=Chunks(
            student=ranges(sides[0], local.chunks.student),
            teacher=ranges(sides[1], local.chunks.teacher),
            byte_spans=local.chunks.byte_spans,
        ),
        num_student=len(sides[0]),
        num_teacher=len(sides[1]),
    )


def assert_same_alignment(result: TokenAlignment, expected: TokenAlignment) -> None:
    assert result.pairs.tolist() == expected.pairs.tolist()
    assert result.chunks.student.tolist() == expected.chunks.student.tolist()
    assert result.chunks.teacher.tolist() == expected.chunks.teacher.tolist()
    assert result.chunks.byte_spans.tolist() == expected.chunks.byte_spans.tolist()
    assert (result.num_student, result.num_teacher) == (expected.num_student, expected.num_teacher)


@given(st.lists(turn_pairs(), min_size=1, max_size=3), st.sampled_from(["pair", "exclude"]))
def test_align_turns_selects_and_aligns_each_turns_tokens(turns: list[tuple[Turn, Turn]], end_of_turn: str) -> None:
    student, teacher = [s for s, _ in turns], [t for _, t in turns]
    expected = reference_align_turns(student, teacher, end_of_turn)
    assert_same_alignment(align_turns(student, teacher, end_of_turn=end_of_turn), expected)  # type: ignore[arg-type]


@given(st.lists(turn_pairs(), max_size=5), st.sampled_from(["pair", "exclude"]))
def test_align_each_turn_is_each_turn_aligned_alone(turns: list[tuple[Turn, Turn]], end_of_turn: str) -> None:
    student, teacher = [s for s, _ in turns], [t for _, t in turns]
    batch = align_each_turn(student, teacher, end_of_turn=end_of_turn)  # type: ignore[arg-type]
    assert isinstance(batch, BatchAlignment) and len(batch) == len(turns)
    for k, (s, t) in enumerate(turns):
        assert_same_alignment(batch[k], reference_align_turns([s], [t], end_of_turn))


def test_align_turns_refuses_unmatched_turns_and_an_unknown_end_of_turn() -> None:
    turn = Turn(np.array([[0, 2]], dtype=np.int64), 0, 2, None)
    with pytest.raises(ValueError, match="1 student turn"):
        align_turns([turn], [])
    with pytest.raises(ValueError, match="end_of_turn must be"):
        align_each_turn([turn], [turn], end_of_turn="drop")  # type: ignore[arg-type]
