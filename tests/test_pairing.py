"""Tests of alignment.align_renderings on every ordered pair of real (and synthetic) tokenizers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from alignment import AlignmentError, Rendering, TextMismatchError, align_renderings, render
from tests.tokenizers import SYNTHETIC, available_real_names, load_real, template_kwargs

NAMES = (*available_real_names(), *SYNTHETIC)

EXAMPLES = {
    "arithmetic": {
        "messages": [
            {"role": "user", "content": "What is 1234 + 5678?"},
            {"role": "assistant", "content": "1234 + 5678 = 6912."},
            {"role": "user", "content": "Reverse 'café' and add ☕."},
            {"role": "assistant", "content": "éfac ☕ — 日本語 👩‍💻"},
        ]
    },
    "whitespace": {
        "messages": [
            {"role": "user", "content": " spaced "},
            {"role": "assistant", "content": "  two leading spaces, a tab\tand a newline\n"},
        ]
    },
    "raw_text": {"prompt": "Sort: pear, apple, fig", "completion": "apple, fig, pear"},
}


def tokenizer(name: str):
    return SYNTHETIC[name]() if name in SYNTHETIC else load_real(name)


def rendered(name: str, example: str, turns: str = "all") -> Rendering:
    options = {} if name in SYNTHETIC else template_kwargs(name)
    return render(tokenizer(name), EXAMPLES[example], turns=turns, **options)


def kept_ranges(rendering: Rendering, other: Rendering) -> list[tuple[int, int]]:
    """Per trained turn, the byte range of the content both renderings kept (templates may trim edges)."""
    ranges = []
    for mine, theirs in zip(rendering.trained_messages, other.trained_messages, strict=True):
        (start, stop), (lead, trail) = rendering.message_spans[mine], rendering.trimmed[mine]
        lead_other, trail_other = other.trimmed[theirs]
        ranges.append((start + max(lead, lead_other) - lead, stop - max(trail, trail_other) + trail))
    return ranges


def clean_start(rendering: Rendering, start: int) -> bool:
    first = int(np.flatnonzero(rendering.byte_offsets[:, 1] > start)[0])
    return first > 0 and int(rendering.byte_offsets[first, 0]) >= start


def roles_of(rendering: Rendering, kept: list[tuple[int, int]], indices: np.ndarray) -> list[tuple[int, str, int]]:
    """For each listed token: (turn, kind, end relative to the turn's kept content start)."""
    out = []
    for index in indices.tolist():
        for turn, (start, stop) in enumerate(kept):
            token_start, token_stop = rendering.byte_offsets[index]
            if index == rendering.end_of_turn[turn]:
                out.append((turn, "end", 0))
                break
            if token_stop <= start and rendering.byte_offsets[index + 1, 1] > start:
                out.append((turn, "start", 0))
                break
            if token_stop > start and token_start < stop:
                out.append((turn, "content", min(int(token_stop), stop) - start))
                break
    return out


PAIRS = list(itertools.permutations(NAMES, 2))
PAIR_IDS = [f"{a}->{b}" for a, b in PAIRS]


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
@pytest.mark.parametrize(("student", "teacher"), PAIRS, ids=PAIR_IDS)
def test_pairs_end_at_the_same_content_byte_on_both_sides(student: str, teacher: str, example: str) -> None:
    completion = "completion" in {rendered(student, example).mode, rendered(teacher, example).mode}
    turns = "last" if completion else "all"
    s, t = rendered(student, example, turns), rendered(teacher, example, turns)
    alignment = align_renderings(s, t)
    pairs = alignment.pairs
    assert len(pairs) > 0
    assert (np.diff(pairs[:, 0]) > 0).all() and (np.diff(pairs[:, 1]) > 0).all()
    # the kept content is byte-identical on both sides; each pair is the same turn, the same kind of token,
    # and for content the same end byte relative to the kept content
    kept_s, kept_t = kept_ranges(s, t), kept_ranges(t, s)
    for (a, b), (c, d) in zip(kept_s, kept_t, strict=True):
        assert s.text.encode()[a:b] == t.text.encode()[c:d]
    student_roles, teacher_roles = roles_of(s, kept_s, pairs[:, 0]), roles_of(t, kept_t, pairs[:, 1])
    assert len(student_roles) == len(teacher_roles) == len(pairs)
    assert student_roles == teacher_roles
    # every trained turn's end-of-turn tokens are paired with each other (by role, not by text)
    ends = {tuple(p) for p in pairs.tolist()}
    for turn in range(len(s.trained_messages)):
        assert (s.end_of_turn[turn], t.end_of_turn[turn]) in ends
    # a turn start pairs only where neither side's first content token also covers template text before it
    starts = [clean_start(s, a) and clean_start(t, c) for (a, _), (c, _) in zip(kept_s, kept_t, strict=True)]
    assert [any(r == (turn, "start", 0) for r in student_roles) for turn in range(len(kept_s))] == starts
    # coverage is the share of the tokens taking part (turn start, kept content, end of turn) that pair up
    taking_part = sum(
        int(np.sum((s.byte_offsets[:, 1] > a) & (s.byte_offsets[:, 0] < b))) + 1 + start
        for (a, b), start in zip(kept_s, starts, strict=True)
    )
    assert alignment.num_student == taking_part
    assert alignment.student_coverage == len(pairs) / taking_part


@pytest.mark.parametrize(("student", "teacher"), PAIRS, ids=PAIR_IDS)
def test_chunks_cover_the_same_text_on_both_sides(student: str, teacher: str) -> None:
    s, t = rendered(student, "raw_text", "last"), rendered(teacher, "raw_text", "last")
    alignment = align_renderings(s, t)
    chunks = alignment.chunks
    content_s, content_t = s.message_spans[s.trained_messages[0]], t.message_spans[t.trained_messages[0]]

    def covered(rendering: Rendering, lo: int, hi: int, span: tuple[int, int]) -> bytes:
        start, stop = rendering.byte_offsets[lo, 0], rendering.byte_offsets[hi - 1, 1]
        return rendering.text.encode()[max(start, span[0]) : min(stop, span[1])]

    texts = []
    for g in range(len(chunks)):
        left = covered(s, *chunks.student[g], content_s)
        right = covered(t, *chunks.teacher[g], content_t)
        assert left == right
        texts.append(left)
    assert b"".join(texts) == s.text.encode()[slice(*content_s)]
    assert chunks.student[0, 0] < chunks.student[-1, 1] and (chunks.student[1:, 0] >= chunks.student[:-1, 1]).all()


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_a_rendering_aligned_with_itself_pairs_every_token_with_itself(name: str) -> None:
    r = rendered(name, "arithmetic", "last")
    alignment = align_renderings(r, r)
    np.testing.assert_array_equal(alignment.pairs[:, 0], alignment.pairs[:, 1])
    widths = r.byte_offsets[:, 1] - r.byte_offsets[:, 0]
    taking_part = alignment.num_student
    zero_width = int(np.sum(widths[alignment.pairs[:, 0]] == 0))
    assert zero_width == 0
    assert len(alignment.pairs) <= taking_part
    if not (widths[r.completion_mask] == 0).any():
        assert alignment.student_coverage == 1.0


def test_end_of_turn_can_be_excluded() -> None:
    s, t = rendered("mistral_v3", "arithmetic"), rendered("smollm2", "arithmetic")
    paired = align_renderings(s, t)
    excluded = align_renderings(s, t, end_of_turn="exclude")
    assert len(excluded.pairs) == len(paired.pairs) - 2
    assert not set(excluded.pairs[:, 0].tolist()) & set(s.end_of_turn)


def test_different_texts_are_refused_with_the_first_differing_byte() -> None:
    s = rendered("mistral_v3", "raw_text")
    other = {"prompt": EXAMPLES["raw_text"]["prompt"], "completion": "apple, fog, pear"}
    t = render(load_real("smollm2"), other)
    with pytest.raises(TextMismatchError, match="differs at content byte 8"):
        align_renderings(s, t)


def test_a_different_number_of_trained_turns_is_refused() -> None:
    s, t = rendered("mistral_v3", "arithmetic"), rendered("smollm2", "arithmetic", "last")
    with pytest.raises(AlignmentError, match=r"trains 2 turn.*teacher 1"):
        align_renderings(s, t)


def test_unknown_end_of_turn_option_is_refused() -> None:
    r = rendered("smollm2", "raw_text")
    with pytest.raises(ValueError, match="end_of_turn"):
        align_renderings(r, r, end_of_turn="fuse")  # type: ignore[arg-type]
