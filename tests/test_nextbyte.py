"""Tests of alignment.nextbyte: next-byte distributions from next-token logits, and the byte frames of the seam."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment import (
    AlignmentError,
    ByteVocab,
    byte_vocab,
    end_of_turn_id,
    generalized_jsd,
    next_byte_logprobs,
    prepare_teacher_batch,
)
from alignment._tokenizer import tokenizer_info
from alignment.nextbyte import END
from tests.test_teacher import ANSWERS, EXAMPLES, NAMES, sample, tokenizer
from tests.test_teacher import build as teacher_batch

TOY = ByteVocab(token_bytes=(b"4", b"48", b"482", b"5", b" 4", None, b"<e>"), ends=frozenset({6}))


def brute_force(logits: torch.Tensor, vocab: ByteVocab, prefix: bytes) -> torch.Tensor:
    """The definition, one unit at a time, in float64: mass of the units that go on after ``prefix``, by the byte
    (or END) that comes next, normalised over those units."""
    probs = torch.softmax(logits.double(), dim=-1)
    mass = torch.zeros(257, dtype=torch.float64)
    for unit, piece in enumerate(vocab.token_bytes):
        if unit in vocab.ends:
            if not prefix:
                mass[END] += probs[unit]
        elif piece is not None and len(piece) > len(prefix) and piece.startswith(prefix):
            mass[piece[len(prefix)]] += probs[unit]
    return mass / mass.sum()


def test_boundary_and_inside_token_distributions_on_a_toy_vocabulary() -> None:
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.15, 0.05, 0.1, 0.1]))
    rows = next_byte_logprobs(logits.expand(3, -1), TOY, [b"", b"4", b"48"]).exp()
    # at a boundary: "4" holds 4, 48 and 482; " " holds " 4"; END the end token; the control unit takes no part
    assert rows[0, ord("4")].item() == pytest.approx(0.6 / 0.9)
    assert rows[0, ord(" ")].item() == pytest.approx(0.05 / 0.9)
    assert rows[0, ord("5")].item() == pytest.approx(0.15 / 0.9)
    assert rows[0, END].item() == pytest.approx(0.1 / 0.9)
    # after reading "4": only 48 and 482 go on, both with 8 next
    assert rows[1, ord("8")].item() == pytest.approx(1.0)
    # after reading "48": only 482 goes on
    assert rows[2, ord("2")].item() == pytest.approx(1.0)
    assert torch.allclose(rows.sum(-1), torch.ones(3, dtype=rows.dtype))


@settings(max_examples=30, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=12, unique=True),
    seed=st.integers(0, 2**16),
    temperature=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_matches_the_definition_unit_by_unit(pieces: list[bytes], seed: int, temperature: float) -> None:
    vocab = ByteVocab(token_bytes=(*pieces, b"<end>"), ends=frozenset({len(pieces)}))
    logits = torch.randn(len(pieces) + 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    prefixes = sorted({p[:i] for p in pieces for i in range(len(p))})
    ours = next_byte_logprobs(logits.expand(len(prefixes), -1), vocab, prefixes, temperature=temperature)
    for row, prefix in enumerate(prefixes):
        expected = brute_force(logits / temperature, vocab, prefix)
        nonzero = expected > 0
        torch.testing.assert_close(ours[row, nonzero].exp(), expected[nonzero])
        assert (ours[row, ~nonzero] == math.log(torch.finfo(torch.float64).tiny)).all()


def test_padded_logits_ignore_the_extra_columns_and_gradients_flow() -> None:
    logits = torch.randn(2, len(TOY.token_bytes) + 3, dtype=torch.float64, requires_grad=True)
    value = next_byte_logprobs(logits, TOY, [b"", b"4"])
    narrow = next_byte_logprobs(logits[:, : len(TOY.token_bytes)], TOY, [b"", b"4"])
    torch.testing.assert_close(value, narrow)
    assert torch.autograd.gradcheck(lambda x: next_byte_logprobs(x, TOY, [b"", b"4"])[:, [ord("4"), END]], (logits,))


def test_restrict_keeps_the_units_bytes_and_ends() -> None:
    small = TOY.restrict([6, 2, 0])
    assert small.token_bytes == (b"<e>", b"482", b"4") and small.ends == frozenset({0})
    assert next_byte_logprobs(torch.zeros(1, 3), small, [b""]).exp()[0, END].item() == pytest.approx(1 / 3)
    with pytest.raises(AlignmentError, match=r"ids must lie in \[0, 7\)"):
        TOY.restrict([7])


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: next_byte_logprobs(torch.zeros(1, 3), TOY, [b""]), AlignmentError, "V' >= 7"),
        (lambda: next_byte_logprobs(torch.zeros(2, 7), TOY, [b""]), AlignmentError, "one entry per row"),
        (lambda: next_byte_logprobs(torch.zeros(1, 7), TOY, [b"9"]), AlignmentError, "prefix b'9'"),
        (lambda: next_byte_logprobs(torch.zeros(1, 7), TOY, [b"482"]), AlignmentError, "prefix b'482'"),
        (lambda: next_byte_logprobs(torch.zeros(1, 7), TOY, [b""], temperature=0.0), AlignmentError, "temperature"),
        (lambda: next_byte_logprobs(torch.zeros(1, 7, dtype=torch.long), TOY, [b""]), TypeError, "logits"),
    ],
    ids=["narrow", "prefix-count", "no-such-prefix", "nothing-goes-on", "temperature", "integer-logits"],
)
def test_bad_input_is_refused(call, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("name", NAMES)
def test_byte_vocab_of_a_real_tokenizer(name: str) -> None:
    tok = tokenizer(name)
    info, vocab = tokenizer_info(tok), byte_vocab(tok)
    assert len(vocab.token_bytes) == info.vocab_size
    assert end_of_turn_id(tok) in vocab.ends
    for unit, piece in enumerate(vocab.token_bytes):
        if info.is_control[unit] and unit not in vocab.ends:
            assert piece is None
        else:
            assert piece == info.token_bytes[unit]


def build(student: str, teacher: str, **options) -> tuple[list[list[int]], object]:
    return teacher_batch(student, teacher, byte_frames=True, **options)


def expect_frames_read_the_same_text(student: str, teacher: str, completions, batch) -> None:
    """Every entry: on each side, the token at the frame begins with the prefix read and then the target byte
    (or ends the turn, for END); per example the targets spell the content both hold, then END if both closed."""
    frames = batch.byte_frames
    s_bytes, t_bytes = byte_vocab(tokenizer(student)), byte_vocab(tokenizer(teacher))
    for n in range(len(frames)):
        b, target = int(frames.rows[n]), int(frames.targets[n])
        s_token = completions[b][int(frames.student_frames[n])]
        t_token = int(batch.input_ids[b, int(frames.teacher_positions[n]) + 1])
        if target == END:
            assert s_token in s_bytes.ends and t_token in t_bytes.ends
            assert frames.student_prefixes[n] == frames.teacher_prefixes[n] == b""
            continue
        assert s_bytes.token_bytes[s_token].startswith(frames.student_prefixes[n] + bytes([target])), n
        assert t_bytes.token_bytes[t_token].startswith(frames.teacher_prefixes[n] + bytes([target])), n
    for b, rendering in enumerate(batch.renderings):
        start, stop = rendering.message_spans[rendering.trained_messages[-1]]
        targets = frames.targets[frames.rows == b].tolist()
        text = bytes(t for t in targets if t != END)
        assert text == rendering.text.encode()[start:stop]  # the whole content both hold, byte by byte, in order
        assert targets[-1] == END


@pytest.mark.parametrize(("student", "teacher"), list(itertools.permutations(NAMES, 2)), ids=str)
def test_byte_frames_cover_every_content_byte_of_every_pair(student: str, teacher: str) -> None:
    completions, batch = build(student, teacher)
    expect_frames_read_the_same_text(student, teacher, completions, batch)


def test_byte_frames_of_non_canonical_samples() -> None:
    completions, batch = build("mistral_v3", "smollm2", canonical=False)
    expect_frames_read_the_same_text("mistral_v3", "smollm2", completions, batch)


def test_byte_frames_on_the_identity_path_cover_every_text_byte() -> None:
    completions, batch = build("smollm2", "smollm2")
    frames, vocab = batch.byte_frames, byte_vocab(tokenizer("smollm2"))
    assert not batch.aligned
    for b, completion in enumerate(completions):
        rows = frames.rows == b
        text = b"".join(vocab.token_bytes[t] for t in completion if t not in vocab.ends and vocab.token_bytes[t])
        assert bytes(t for t in frames.targets[rows].tolist() if t != END) == text
        np.testing.assert_array_equal(frames.teacher_positions[rows], batch.positions[b, frames.student_frames[rows]])


def test_without_the_option_there_are_no_byte_frames() -> None:
    completions = [sample("smollm2", e, a) for e, a in zip(EXAMPLES, ANSWERS, strict=True)]
    batch = prepare_teacher_batch(
        EXAMPLES, completions, student_tokenizer=tokenizer("smollm2"), teacher_tokenizer=tokenizer("mistral_v3")
    )
    assert batch.byte_frames is None


def test_next_byte_loss_runs_end_to_end_and_is_zero_against_itself() -> None:
    completions, batch = build("mistral_v3", "smollm2")
    frames = batch.byte_frames
    s_vocab, t_vocab = byte_vocab(tokenizer("mistral_v3")), byte_vocab(tokenizer("smollm2"))
    rows = torch.from_numpy(frames.rows)
    student_logits = torch.randn(len(EXAMPLES), max(map(len, completions)), len(s_vocab.token_bytes))
    student_logits.requires_grad_()
    teacher_logits = torch.randn(*batch.input_ids.shape, len(t_vocab.token_bytes))
    s = next_byte_logprobs(
        student_logits[rows, torch.from_numpy(frames.student_frames)], s_vocab, frames.student_prefixes
    )
    t = next_byte_logprobs(
        teacher_logits[rows, torch.from_numpy(frames.teacher_positions)], t_vocab, frames.teacher_prefixes
    )
    loss = generalized_jsd(s, t)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(student_logits.grad).all() and student_logits.grad.abs().sum() > 0
    assert generalized_jsd(s, s).item() == pytest.approx(0.0, abs=1e-6)


def test_a_vocabulary_of_only_control_and_end_units_still_ends_the_turn() -> None:
    vocab = ByteVocab(token_bytes=(None, b"<e>"), ends=frozenset({1}))
    assert next_byte_logprobs(torch.zeros(1, 2), vocab, [b""]).exp()[0, END].item() == pytest.approx(1.0)
    with pytest.raises(AlignmentError, match="prefix b'a'"):
        next_byte_logprobs(torch.zeros(1, 2), vocab, [b"a"])


def test_a_prefix_whose_units_all_underflow_gives_finite_logprobs() -> None:
    logits = torch.tensor([[-1e4, -1e4, 0.0, -1e4, 0.0, 0.0, 0.0]])  # "4", "48", "482" have no mass at all
    value = next_byte_logprobs(logits, TOY, [b"4"])
    assert torch.isfinite(value).all()
