"""Tests of alignment.nextbyte: next-byte distributions from next-token logits, and the byte frames of the seam."""

from __future__ import annotations

import itertools
import math
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment import (
    AlignmentError,
    ByteFrames,
    ByteVocab,
    byte_logprobs,
    byte_vocab,
    decode_bytes,
    end_of_turn_id,
    fold_next_bytes,
    generalized_jsd,
    next_byte_logprobs,
    prefix_weights,
    prepare_teacher_batch,
    token_byte_spans,
)
from alignment import nextbyte as nextbyte_module
from alignment import teacher as teacher_module
from alignment._tokenizer import tokenizer_info
from alignment.nextbyte import END, STOP, TEMPLATE
from tests.test_teacher import ANSWERS, EXAMPLES, NAMES, kwargs, sample, tokenizer
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
    two = ByteVocab(token_bytes=(b"4", b"<eot>", b"<eos>"), ends=frozenset({1, 2}), other_ends=frozenset({2}))
    assert two.restrict([2, 0]).other_ends == frozenset({0}) and two.restrict([1, 0]).other_ends == frozenset()


def test_a_closing_token_the_template_does_not_end_turns_with_is_taught_away_on_the_students_side() -> None:
    """Llama 3 closes a chat turn with ``<|eot_id|>``; its ``<|end_of_text|>`` also ends a turn, so the teacher's
    next byte cannot tell them apart. On the student's side (``stop=True``) the second is STOP at a boundary, a
    class no teacher has there: the loss moves the student's ending onto its template's token."""
    vocab = ByteVocab(token_bytes=(b"4", b"<eot>", b"<eos>"), ends=frozenset({1, 2}), other_ends=frozenset({2}))
    assert vocab.classes(b"").tolist() == [ord("4"), END, END]
    assert vocab.classes(b"", stop=True).tolist() == [ord("4"), END, STOP]
    student = torch.log(torch.tensor([[0.2, 0.3, 0.5]])).requires_grad_()
    probs = next_byte_logprobs(student, vocab, [b""], stop=True).exp()[0]
    assert probs[[ord("4"), END, STOP]].tolist() == pytest.approx([0.2, 0.3, 0.5])
    teacher = next_byte_logprobs(torch.log(torch.tensor([[0.2, 0.4, 0.4]])), vocab, [b""])  # ends with 0.8
    folded = fold_next_bytes(teacher, vocab, [b""])
    assert folded.exp()[0, END].item() == pytest.approx(0.8) and folded.exp()[0, STOP].item() < 1e-30
    generalized_jsd(next_byte_logprobs(student, vocab, [b""], stop=True), folded, beta=0.0).backward()
    assert student.grad[0, 2] > 0 > student.grad[0, 1]  # away from <eos>, towards <eot>
    llama = byte_vocab(tokenizer("llama3"))
    assert llama.other_ends == {tokenizer("llama3").eos_token_id} and end_of_turn_id(tokenizer("llama3")) in llama.ends
    assert byte_vocab(tokenizer("mistral_v3")).other_ends == frozenset()  # closes its turns with its EOS
    with pytest.raises(AlignmentError, match="other_ends must be a subset of ends"):
        ByteVocab(token_bytes=(b"4", b"<eos>"), ends=frozenset(), other_ends=frozenset({1}))


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
    assert end_of_turn_id(tok) in vocab.ends and end_of_turn_id(tok) not in vocab.other_ends
    assert vocab.other_ends == vocab.ends - {end_of_turn_id(tok)}
    for unit, piece in enumerate(vocab.token_bytes):
        if info.is_control[unit] and unit not in vocab.ends:
            assert piece is None
        else:
            assert piece == info.token_bytes[unit]


def build(student: str, teacher: str, **options) -> tuple[list[list[int]], object]:
    return teacher_batch(student, teacher, byte_frames=True, **options)


def teacher_side(frames, n: int) -> tuple[int, bytes, int]:
    return int(frames.teacher_positions[n]), frames.teacher_prefixes[n], int(frames.targets[n])


def written_template(student: str, example: int, completion: list[int]) -> bytes:
    """The text the student's template writes before the content, as its sample spells it in text tokens (a
    control token such as Qwen3's ``<think>`` is not text, so it is not compared byte by byte)."""
    tok = tokenizer(student)
    separator = teacher_module._separator(tok, EXAMPLES[example], "auto", kwargs(student)).encode()
    info, spans = tokenizer_info(tok), token_byte_spans(tok, completion)
    assert decode_bytes(tok, completion).startswith(separator)
    return b"".join(
        info.token_bytes[token][: max(0, len(separator) - int(low))]
        for token, (low, _) in zip(completion, spans.tolist(), strict=True)
        if low < len(separator) and not info.is_control[token]
    )


def expect_frames_read_the_same_text(student: str, teacher: str, completions, batch) -> None:
    """Every byte entry: on each side, the token at the frame begins with the prefix read and then the target byte
    (or ends the turn, for END); per example the targets spell what the student's template writes before the
    content (the template is the teacher there), then the content both hold, then END if both closed.
    After every student token that the compared text goes on from, exactly one token-end entry: the whole token
    read on the student's side, and the teacher's side of the byte (or END) that follows."""
    frames = batch.byte_frames
    s_bytes, t_bytes = byte_vocab(tokenizer(student)), byte_vocab(tokenizer(teacher))
    for n in range(len(frames)):
        b, target = int(frames.rows[n]), int(frames.targets[n])
        s_token = completions[b][int(frames.student_frames[n])]
        t_token = int(batch.input_ids[b, int(frames.teacher_positions[n]) + 1])
        if frames.teacher_positions[n] == TEMPLATE:
            assert frames.teacher_prefixes[n] == b"" and target != END
        elif target == END:
            assert t_token in t_bytes.ends and frames.teacher_prefixes[n] == b""
        else:
            assert t_bytes.token_bytes[t_token].startswith(frames.teacher_prefixes[n] + bytes([target])), n
        if frames.token_ends[n]:
            assert frames.student_prefixes[n] == s_bytes.token_bytes[s_token], n
        elif target == END:
            assert s_token in s_bytes.ends and frames.student_prefixes[n] == b""
        else:
            assert s_bytes.token_bytes[s_token].startswith(frames.student_prefixes[n] + bytes([target])), n
    for b, rendering in enumerate(batch.renderings):
        start, stop = rendering.message_spans[rendering.trained_messages[-1]]
        here = (frames.rows == b) & ~frames.token_ends
        templated = here & (frames.teacher_positions == TEMPLATE)
        assert bytes(frames.targets[templated].tolist()) == written_template(student, b, completions[b])
        targets = frames.targets[here & ~templated].tolist()
        text = bytes(t for t in targets if t != END)
        assert text == rendering.text.encode()[start:stop]  # the whole content both hold, byte by byte, in order
        assert targets[-1] == END
        entries = np.flatnonzero(here)
        expected = []  # after each byte that ends its student token, if the next token's first byte follows: its side
        for n, after in itertools.pairwise(entries):
            token = s_bytes.token_bytes[completions[b][int(frames.student_frames[n])]]
            adjacent = (
                frames.student_frames[after] == frames.student_frames[n] + 1 and not frames.student_prefixes[after]
            )
            if (
                adjacent
                and frames.targets[n] != END
                and frames.student_prefixes[n] + bytes([frames.targets[n]]) == token
            ):
                expected.append((int(frames.student_frames[n]), token, *teacher_side(frames, after)))
        ends = np.flatnonzero((frames.rows == b) & frames.token_ends)
        assert expected == [
            (int(frames.student_frames[n]), frames.student_prefixes[n], *teacher_side(frames, n)) for n in ends
        ]
        assert expected, "every sample has a student token with text after it"


@pytest.mark.parametrize(("student", "teacher"), list(itertools.permutations(NAMES, 2)), ids=str)
def test_byte_frames_cover_every_content_byte_of_every_pair(student: str, teacher: str) -> None:
    completions, batch = build(student, teacher)
    expect_frames_read_the_same_text(student, teacher, completions, batch)


def test_byte_frames_of_non_canonical_samples() -> None:
    completions, batch = build("mistral_v3", "smollm2", canonical=False)
    expect_frames_read_the_same_text("mistral_v3", "smollm2", completions, batch)


def test_each_side_reads_a_byte_only_where_its_token_spells_it() -> None:
    # One side's tokens over its text: "ab", a zero-width token, "c", a token spelling "Z" where the text holds "d" (a
    # normalising tokenizer rewrote it), and a control token whose literal text "<|x|>" it does not spell as text.
    from alignment._byteframes import _side

    spans = np.array([[0, 2], [2, 2], [2, 3], [3, 4], [4, 9]], dtype=np.int64)
    pieces = [b"ab", b"", b"c", b"Z", b""]
    tokens, prefixes, spelled = _side(spans, pieces, np.arange(7, dtype=np.int64), b"abcd<|x|>")
    assert tokens.tolist() == [0, 0, 2, 3, 4, 4, 4]
    assert prefixes == [b"", b"a", b"", b"", b"", b"", b""]
    assert spelled.tolist() == [True, True, True, False, False, False, False]


def test_byte_frames_on_the_identity_path_cover_every_text_byte() -> None:
    completions, batch = build("smollm2", "smollm2")
    frames, vocab = batch.byte_frames, byte_vocab(tokenizer("smollm2"))
    assert not batch.aligned
    for b, completion in enumerate(completions):
        rows, ends = (frames.rows == b) & ~frames.token_ends, (frames.rows == b) & frames.token_ends
        pieces = [vocab.token_bytes[t] for t in completion if t not in vocab.ends and vocab.token_bytes[t]]
        assert bytes(t for t in frames.targets[rows].tolist() if t != END) == b"".join(pieces)
        np.testing.assert_array_equal(frames.teacher_positions[rows], batch.positions[b, frames.student_frames[rows]])
        # after each text token: its whole bytes, against the next token's frame and first byte (END after the last)
        assert completion[-1] in vocab.ends
        assert [frames.student_prefixes[n] for n in np.flatnonzero(ends)] == pieces
        following = frames.student_frames[ends] + 1
        np.testing.assert_array_equal(frames.teacher_positions[ends], batch.positions[b, following])
        assert frames.targets[ends].tolist() == [p[0] for p in pieces[1:]] + [END]


def test_an_end_of_text_token_sampled_inside_the_completion_ends_the_turn() -> None:
    """Llama 3 sampled its end-of-text token inside an answer: its turn ended there, as generation would have
    stopped. The teacher reads ``901`` and its own end of turn; ``901`` is asked whether it stops there (END after
    it) and the frame that wrote the end-of-text token is compared as the end of the turn, so a student cannot
    leave the loss by writing it; the frames after it are masked out."""
    student, teacher = tokenizer("llama3"), tokenizer("qwen3")
    eos, eot = student.eos_token_id, end_of_turn_id(student)
    ids = [*student.encode("901", add_special_tokens=False), eos, *student.encode(" 5", add_special_tokens=False), eot]
    assert student.convert_ids_to_tokens(ids) == ["901", "<|end_of_text|>", "Ġ", "5", "<|eot_id|>"]
    batch = prepare_teacher_batch(
        EXAMPLES[:1], [ids], student_tokenizer=student, teacher_tokenizer=teacher, byte_frames=True
    )
    frames = batch.byte_frames
    assert batch.renderings[0].text.endswith("</think>\n\n901<|im_end|>\n")
    assert batch.mask.tolist() == [[True, True, False, False, False]]
    closing = batch.renderings[0].end_of_turn[-1]
    assert batch.positions[0, 1] == closing - 1  # the frame that wrote it reads where the teacher closes its turn
    assert frames.student_frames.tolist() == [0, 0, 0, 0, 1]
    assert frames.student_prefixes == (b"", b"9", b"90", b"901", b"")
    assert frames.targets.tolist() == [*b"901", END, END]
    assert frames.token_ends.tolist() == [False, False, False, True, False]
    assert frames.teacher_positions.tolist()[-2:] == [closing - 1, closing - 1]
    logits = torch.zeros(1, len(ids), len(student)), torch.zeros(*batch.input_ids.shape, len(teacher))
    vocabs = {"student_vocab": byte_vocab(student), "teacher_vocab": byte_vocab(teacher)}
    assert torch.isfinite(torch.cat(byte_logprobs(frames, *logits, **vocabs))).all()
    # in a batch, beside a sample that closes with its end of turn: each row as alone, padded to the longest
    other = [*student.encode("12", add_special_tokens=False), eot]
    pair = prepare_teacher_batch(
        EXAMPLES[:2], [ids, other], student_tokenizer=student, teacher_tokenizer=teacher, byte_frames=True
    )
    alone = prepare_teacher_batch(
        EXAMPLES[1:2], [other], student_tokenizer=student, teacher_tokenizer=teacher, byte_frames=True
    )
    assert pair.mask.tolist() == [[True, True, False, False, False], [*alone.mask[0].tolist(), False, False, False]]
    assert pair.byte_frames.rows.tolist() == [0] * 5 + [1] * len(alone.byte_frames)


def test_a_control_token_sampled_inside_the_completion_is_not_compared() -> None:
    """A control token that does not end the turn (Llama 3's header token) sampled inside an answer: the content
    spells its name, which the teacher reads as text but the student never did. Those bytes are left out (and no
    entry asks whether ``901`` stops before them); the text around them is compared as usual."""
    student, teacher = tokenizer("llama3"), tokenizer("qwen3")
    header, eot = student.convert_tokens_to_ids("<|start_header_id|>"), end_of_turn_id(student)
    ids = [*student.encode("901", add_special_tokens=False), header, *student.encode(" 5", add_special_tokens=False)]
    ids.append(eot)
    assert student.convert_ids_to_tokens(ids) == ["901", "<|start_header_id|>", "Ġ", "5", "<|eot_id|>"]
    batch = prepare_teacher_batch(
        EXAMPLES[:1], [ids], student_tokenizer=student, teacher_tokenizer=teacher, byte_frames=True
    )
    frames = batch.byte_frames
    assert "901<|start_header_id|> 5<|im_end|>" in batch.renderings[0].text
    assert frames.student_frames.tolist() == [0, 0, 0, 2, 3, 2, 3, 4]
    assert frames.student_prefixes == (b"", b"9", b"90", b"", b"", b" ", b"5", b"")
    assert frames.targets.tolist() == [*b"901 5", ord("5"), END, END]
    assert frames.token_ends.tolist() == [False] * 5 + [True, True, False]
    logits = torch.zeros(1, len(ids), len(student)), torch.zeros(*batch.input_ids.shape, len(teacher))
    vocabs = {"student_vocab": byte_vocab(student), "teacher_vocab": byte_vocab(teacher)}
    assert torch.isfinite(torch.cat(byte_logprobs(frames, *logits, **vocabs))).all()


@pytest.mark.parametrize("wrote", [True, False], ids=["wrote-the-space", "left-it-out"])
def test_the_text_the_students_template_writes_is_taught_by_the_template(wrote: bool) -> None:
    """Mistral's template writes a space between ``[/INST]`` and the answer, which is not content, so no teacher
    says anything about it. Where the student wrote it, its byte is an entry whose teacher is the template (sure of
    the space); where it left it out, one such entry at its first frame asks for the space."""
    student, teacher = tokenizer("mistral_v3"), tokenizer("gpt2")
    example = {"messages": [{"role": "user", "content": "Copy the number 6219."}]}
    canonical = sample("mistral_v3", example, "6219")
    assert student.convert_ids_to_tokens(canonical) == ["▁", "6", "2", "1", "9", "</s>"]
    completion = canonical if wrote else canonical[1:]
    batch = prepare_teacher_batch(
        [example],
        [completion],
        student_tokenizer=student,
        teacher_tokenizer=teacher,
        student_template_kwargs=kwargs("mistral_v3"),
        teacher_template_kwargs=kwargs("gpt2"),
        byte_frames=True,
    )
    frames = batch.byte_frames
    first = 1 if wrote else 0  # the frame of the token "6"
    assert (frames.student_frames[0], frames.student_prefixes[0]) == (0, b"")
    assert (frames.teacher_positions[0], frames.targets[0], frames.token_ends[0]) == (TEMPLATE, ord(" "), False)
    assert (frames.teacher_positions[1:] != TEMPLATE).all()
    assert frames.student_frames[1:5].tolist() == [first, first + 1, first + 2, first + 3]
    assert bytes(frames.targets[1:5].tolist()) == b"6219"
    # after the space: does the student's token "▁" stop there? The teacher's side is the byte "6" that follows
    after_space = [n for n in np.flatnonzero(frames.token_ends) if frames.student_prefixes[n] == b" "]
    assert len(after_space) == int(wrote)
    student_logits = torch.zeros(1, len(completion), len(student))
    teacher_logits = torch.zeros(*batch.input_ids.shape, len(teacher))
    vocabs = {"student_vocab": byte_vocab(student), "teacher_vocab": byte_vocab(teacher)}
    _, t = byte_logprobs(frames, student_logits, teacher_logits, **vocabs)
    assert t[0].exp()[ord(" ")].item() == pytest.approx(1.0)  # the template is sure of its space
    assert t[1].exp().max().item() < 0.5  # the teacher (uniform logits here) is not


def test_template_text_that_begins_with_a_control_token_is_not_asked_for_as_bytes() -> None:
    """Qwen3's template writes an empty ``<think>`` block before the answer. A Qwen3 student that left it out
    gets no template entry: its first byte is the control token ``<think>``, not the text ``<``."""
    student, teacher = tokenizer("qwen3"), tokenizer("llama3")
    example = {"messages": [{"role": "user", "content": "Copy the number 6219."}]}
    canonical = sample("qwen3", example, "6219")
    assert student.convert_ids_to_tokens(canonical)[:2] == ["<think>", "ĊĊ"]
    answer = [*student.encode("6219", add_special_tokens=False), canonical[-1]]
    frames = {}
    for name, completion in (("wrote", canonical), ("left-out", answer)):
        batch = prepare_teacher_batch(
            [example], [completion], student_tokenizer=student, teacher_tokenizer=teacher, byte_frames=True
        )
        frames[name] = batch.byte_frames
    templated = frames["wrote"].teacher_positions == TEMPLATE
    assert bytes(frames["wrote"].targets[templated & ~frames["wrote"].token_ends].tolist()) == b"\n\n\n\n"
    assert (frames["left-out"].teacher_positions != TEMPLATE).all()
    assert bytes(frames["left-out"].targets[~frames["left-out"].token_ends][:4].tolist()) == b"6219"


def test_without_the_option_there_are_no_byte_frames() -> None:
    completions = [sample("smollm2", e, a) for e, a in zip(EXAMPLES, ANSWERS, strict=True)]
    batch = prepare_teacher_batch(
        EXAMPLES, completions, student_tokenizer=tokenizer("smollm2"), teacher_tokenizer=tokenizer("mistral_v3")
    )
    assert batch.byte_frames is None


def test_byte_logprobs_run_end_to_end_on_a_real_pair() -> None:
    completions, batch = build("llama3", "qwen3")
    frames = batch.byte_frames
    s_vocab, t_vocab = byte_vocab(tokenizer("llama3")), byte_vocab(tokenizer("qwen3"))
    student_logits = torch.randn(len(EXAMPLES), max(map(len, completions)), len(s_vocab.token_bytes))
    student_logits.requires_grad_()
    teacher_logits = torch.randn(*batch.input_ids.shape, len(t_vocab.token_bytes))
    s, t = byte_logprobs(frames, student_logits, teacher_logits, student_vocab=s_vocab, teacher_vocab=t_vocab)
    assert s.shape == t.shape == (len(frames), STOP + 1)
    torch.testing.assert_close(s.exp().sum(-1), torch.ones(len(frames)))
    torch.testing.assert_close(t.exp().sum(-1), torch.ones(len(frames)))
    # the stop class: inside a student token (its prefix read); at a boundary only the student's end-of-text token
    # (Llama 3 closes its turns with <|eot_id|>), which the teacher never puts there
    inside = torch.tensor([len(p) > 0 for p in frames.student_prefixes])
    tiny = math.log(torch.finfo(torch.float32).tiny)
    logprobs = torch.log_softmax(student_logits.detach(), -1)[
        torch.from_numpy(frames.rows), torch.from_numpy(frames.student_frames)
    ]
    taking = [unit for unit, piece in enumerate(s_vocab.token_bytes) if piece is not None]  # the units that count
    eos = logprobs[:, tokenizer("llama3").eos_token_id] - torch.logsumexp(logprobs[:, taking], -1)
    torch.testing.assert_close(s[~inside, STOP], eos[~inside])
    assert (t[~inside, STOP] == tiny).all()
    assert (s[inside, STOP] > tiny).any() and (t[inside, STOP] > tiny).all()  # a folded teacher: bytes go there
    loss = generalized_jsd(s, t)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(student_logits.grad).all() and student_logits.grad.abs().sum() > 0
    assert generalized_jsd(s, s).item() == pytest.approx(0.0, abs=1e-6)


DIGITS = ByteVocab(token_bytes=(b"9", b"90", b"901", b"0", b"1", b"<e>"), ends=frozenset({5}))
SINGLE = ByteVocab(token_bytes=(b"9", b"0", b"1", b"<e>"), ends=frozenset({3}))


def digit_frames() -> ByteFrames:
    """The student sampled ``901`` then the end of the turn; the teacher (one byte per token) read 9, 0, 1, end."""
    return ByteFrames(
        rows=np.zeros(5, dtype=np.int64),
        student_frames=np.array([0, 0, 0, 0, 1]),
        student_prefixes=(b"", b"9", b"90", b"901", b""),
        teacher_positions=np.array([0, 1, 2, 3, 3]),
        teacher_prefixes=(b"", b"", b"", b"", b""),
        targets=np.array([ord("9"), ord("0"), ord("1"), END, END]),
        token_ends=np.array([False, False, False, True, False]),
    )


def test_the_stop_class_tells_a_short_token_from_a_long_one() -> None:
    """Llama 3's ``9`` against ``901``: both begin with 9, so next bytes alone cannot tell a student that splits
    its mass between them from one that does not. The stop class can, and prefers what the teacher read."""
    teacher = torch.full((1, 4, 4), -30.0)
    for position, unit in enumerate([0, 1, 2, 3]):  # certain of 9, 0, 1, then the end
        teacher[0, position, unit] = 0.0

    def student(p_nine: float) -> torch.Tensor:
        logits = torch.full((1, 2, 6), -30.0)
        logits[0, 0, :3] = torch.log(torch.tensor([p_nine, 1e-6, 1 - p_nine]))
        logits[0, 1, 5] = 0.0  # then surely the end of the turn
        return logits

    frames = digit_frames()
    plain = frames.select(~frames.token_ends)
    losses, plain_losses = [], []
    for p_nine in (0.01, 0.5, 0.9):
        logits = student(p_nine)
        s, t = byte_logprobs(frames, logits, teacher, student_vocab=DIGITS, teacher_vocab=SINGLE)
        losses.append(generalized_jsd(s, t).item())
        rows = torch.from_numpy(plain.rows)
        s_plain = next_byte_logprobs(
            logits[rows, torch.from_numpy(plain.student_frames)], DIGITS, plain.student_prefixes
        )
        t_plain = next_byte_logprobs(teacher[rows, torch.from_numpy(plain.teacher_positions)], SINGLE, [b""] * 4)
        plain_losses.append(generalized_jsd(s_plain, t_plain).item())
    assert plain_losses == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)  # blind to the split
    assert losses[0] < losses[1] < losses[2]
    assert losses[0] == pytest.approx(0.0, abs=2e-3)


@settings(max_examples=30, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=12, unique=True),
    seed=st.integers(0, 2**16),
)
def test_stop_and_fold_match_their_definitions(pieces: list[bytes], seed: int) -> None:
    vocab = ByteVocab(token_bytes=(*pieces, b"<end>"), ends=frozenset({len(pieces)}))
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(pieces) + 1, generator=generator, dtype=torch.float64)
    prefixes = sorted({p[:i] for p in pieces for i in range(1, len(p) + 1)})  # every prefix a unit begins with
    ours = next_byte_logprobs(logits.expand(len(prefixes), -1), vocab, prefixes, stop=True).exp()
    other = torch.softmax(torch.randn(len(prefixes), END + 1, generator=generator, dtype=torch.float64), -1)
    folded = fold_next_bytes(other.log(), vocab, prefixes).exp()
    probs = torch.softmax(logits, -1)
    for row, prefix in enumerate(prefixes):
        mass = torch.zeros(STOP + 1, dtype=torch.float64)
        goes_on = set()
        for unit, piece in enumerate(pieces):
            if piece == prefix:
                mass[STOP] += probs[unit]
            elif piece.startswith(prefix):
                mass[piece[len(prefix)]] += probs[unit]
                goes_on.add(piece[len(prefix)])
        torch.testing.assert_close(ours[row][mass > 0], (mass / mass.sum())[mass > 0])
        expected = torch.zeros(STOP + 1, dtype=torch.float64)
        for byte in range(END + 1):
            expected[byte if byte in goes_on else STOP] += other[row, byte]
        torch.testing.assert_close(folded[row][expected > 0], expected[expected > 0])


def test_at_a_boundary_nothing_is_folded_and_nothing_stops() -> None:
    other = torch.log_softmax(torch.randn(2, END + 1, dtype=torch.float64), -1)
    torch.testing.assert_close(fold_next_bytes(other, DIGITS, [b"", b""])[:, :STOP], other)
    floor = math.log(torch.finfo(torch.float32).tiny)  # no mass: floored, like any empty class
    assert next_byte_logprobs(torch.zeros(1, 6), DIGITS, [b""], stop=True)[0, STOP].item() == pytest.approx(floor)


def test_select_keeps_the_chosen_entries_in_order() -> None:
    frames = digit_frames()
    kept = frames.select(np.array([True, False, True, True, False]))
    assert kept.student_prefixes == (b"", b"90", b"901") and kept.teacher_positions.tolist() == [0, 2, 3]
    assert kept.token_ends.tolist() == [False, False, True] and len(kept) == 3
    with pytest.raises(AlignmentError, match=r"keep must be a \(5,\) bool array"):
        frames.select(np.ones(4, dtype=bool))


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: fold_next_bytes(torch.zeros(1, 258), DIGITS, [b""]), AlignmentError, r"shape \(N, 257\)"),
        (lambda: fold_next_bytes(torch.zeros(2, 257), DIGITS, [b""]), AlignmentError, "one entry per row"),
        (lambda: fold_next_bytes(torch.zeros(1, 257, dtype=torch.long), DIGITS, [b""]), TypeError, "logprobs"),
        (lambda: next_byte_logprobs(torch.zeros(1, 6), DIGITS, [b"5"], stop=True), AlignmentError, r"b'5'$"),
        (
            lambda: byte_logprobs(
                digit_frames(), torch.zeros(1, 1, 6), torch.zeros(1, 4, 4), student_vocab=DIGITS, teacher_vocab=SINGLE
            ),
            AlignmentError,
            "student_logits must be",
        ),
        (
            lambda: byte_logprobs(
                digit_frames(), torch.zeros(1, 2, 6), torch.zeros(1, 4), student_vocab=DIGITS, teacher_vocab=SINGLE
            ),
            AlignmentError,
            "teacher_logits must be",
        ),
    ],
    ids=["fold-width", "fold-prefix-count", "fold-integer", "stop-no-such-prefix", "student-short", "teacher-2d"],
)
def test_bad_stop_and_fold_input_is_refused(call, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        call()


def test_a_vocabulary_of_only_control_and_end_units_still_ends_the_turn() -> None:
    vocab = ByteVocab(token_bytes=(None, b"<e>"), ends=frozenset({1}))
    assert next_byte_logprobs(torch.zeros(1, 2), vocab, [b""]).exp()[0, END].item() == pytest.approx(1.0)
    with pytest.raises(AlignmentError, match="prefix b'a'"):
        next_byte_logprobs(torch.zeros(1, 2), vocab, [b"a"])


def test_a_prefix_whose_units_all_underflow_gives_finite_logprobs() -> None:
    logits = torch.tensor([[-1e4, -1e4, 0.0, -1e4, 0.0, 0.0, 0.0]])  # "4", "48", "482" have no mass at all
    value = next_byte_logprobs(logits, TOY, [b"4"])
    assert torch.isfinite(value).all()


# --- the chunked class sums: same values and gradients as plain autograd, in any chunking -------------------------
def plain_next_bytes(logits: torch.Tensor, vocab: ByteVocab, prefixes, *, stop: bool, temperature: float):
    """:func:`next_byte_logprobs` written with plain autograd: every row's softmax, summed by its prefix's dense
    classes (the reference the chunked autograd function must match)."""
    units = len(vocab.token_bytes)
    probs = torch.softmax(logits / temperature, dim=-1)[:, :units]
    rows = [
        torch.zeros(259, dtype=probs.dtype).index_add(0, vocab.classes(prefix, stop=stop), probs[i])
        for i, prefix in enumerate(prefixes)
    ]
    mass = torch.stack(rows)[:, : STOP + 1 if stop else END + 1]
    tiny = torch.finfo(mass.dtype).tiny
    return torch.log((mass / mass.sum(-1, keepdim=True).clamp_min(tiny)).clamp_min(tiny))


@settings(max_examples=40, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=3), min_size=1, max_size=10, unique=True),
    data=st.data(),
    stop=st.booleans(),
    temperature=st.sampled_from([0.5, 1.0, 2.0]),
    extra=st.integers(0, 3),
    chunk=st.sampled_from([1, 2, 1 << 20]),
    dense=st.sampled_from([0, 16, 1 << 20]),
)
def test_values_and_gradients_match_plain_autograd_in_any_chunking(
    pieces: list[bytes], data: st.DataObject, stop: bool, temperature: float, extra: int, chunk: int, dense: int
) -> None:
    """In chunks of 1, 2 or any number of rows (and of (entry, member) pairs), with every prefix read member by
    member (``dense=0``; boundaries are always read whole), whole (``1 << 20``) or by the library's rule."""
    vocab = ByteVocab(token_bytes=(*pieces, b"<end>"), ends=frozenset({len(pieces)}))
    # every prefix some unit goes on from (or, with stop, is): several rows may read one
    valid = sorted({p[:i] for p in pieces for i in range(len(p) + (1 if stop else 0))})
    prefixes = data.draw(st.lists(st.sampled_from(valid), min_size=1, max_size=8))  # repeats: several rows each
    seed = data.draw(st.integers(0, 2**16))
    logits = torch.randn(
        len(prefixes), len(pieces) + 1 + extra, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    weights = torch.randn(
        len(prefixes),
        STOP + 1 if stop else END + 1,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    ours_in, plain_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    with (
        mock.patch("alignment.nextbyte._default_chunk", lambda width, device: chunk),  # rows (pairs) per chunk
        mock.patch("alignment.nextbyte._DENSE", dense),
    ):
        ours = next_byte_logprobs(ours_in, vocab, prefixes, stop=stop, temperature=temperature)
        (ours * weights).sum().backward()
    plain = plain_next_bytes(plain_in, vocab, prefixes, stop=stop, temperature=temperature)
    torch.testing.assert_close(ours, plain)
    (plain * weights).sum().backward()
    torch.testing.assert_close(ours_in.grad, plain_in.grad)


@settings(max_examples=40, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=3), min_size=1, max_size=10, unique=True),
    data=st.data(),
    stop=st.booleans(),
    chunk=st.sampled_from([1, 3, 1 << 20]),
    dense=st.sampled_from([0, 16, 1 << 20]),
)
def test_entries_that_share_a_row_read_it_as_their_own_copies_would(
    pieces: list[bytes], data: st.DataObject, stop: bool, chunk: int, dense: int
) -> None:
    """Entries read rows of a ``(B, S, V')`` tensor in place, several of them one row, with one prefix or with
    several (a boundary and a prefix read whole, or read member by member): values and gradients equal those of
    each entry's row gathered first."""
    vocab = ByteVocab(token_bytes=(*pieces, b"<end>"), ends=frozenset({len(pieces)}))
    valid = sorted({p[:i] for p in pieces for i in range(len(p) + (1 if stop else 0))})
    prefixes = data.draw(st.lists(st.sampled_from(valid), min_size=1, max_size=10))
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3)), len(pieces) + 1 + data.draw(st.integers(0, 2)))
    rows = torch.tensor(
        data.draw(st.lists(st.integers(0, shape[0] - 1), min_size=len(prefixes), max_size=len(prefixes)))
    )
    positions = torch.tensor(
        data.draw(st.lists(st.integers(0, shape[1] - 1), min_size=len(prefixes), max_size=len(prefixes)))
    )
    seed = data.draw(st.integers(0, 2**16))
    logits = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    weights = torch.randn(len(prefixes), STOP + 1 if stop else END + 1, dtype=torch.float64)
    ours_in, plain_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    with (
        mock.patch("alignment.nextbyte._default_chunk", lambda width, device: chunk),
        mock.patch("alignment.nextbyte._DENSE", dense),
    ):
        mass = nextbyte_module._next_byte_mass(
            ours_in, vocab, prefixes, temperature=0.8, stop=stop, at=(rows, positions)
        )
        ours = nextbyte_module._normalised_log(mass)
        (ours * weights).sum().backward()
    plain = plain_next_bytes(plain_in[rows, positions], vocab, prefixes, stop=stop, temperature=0.8)
    torch.testing.assert_close(ours, plain)
    (plain * weights).sum().backward()
    torch.testing.assert_close(ours_in.grad, plain_in.grad)


def test_a_prefix_most_units_begin_with_is_read_whole_and_a_rare_one_member_by_member() -> None:
    """The rule of the two read paths on a real vocabulary: after a space (about half of SmolLM2's units) the whole
    row is summed by class, after `` t`` only its members are picked."""
    vocab = byte_vocab(tokenizer("smollm2"))
    units = len(vocab.token_bytes)
    assert len(vocab.members(b" ")[0]) * nextbyte_module._DENSE > units
    assert len(vocab.members(b" t")[0]) * nextbyte_module._DENSE < units
    plan = nextbyte_module._plan(
        vocab, [b"", b" ", b" t"], torch.tensor([0, 1, 2, 1, 0]), stop=False, device=torch.device("cpu")
    )
    assert plan.whole.tolist() == [0, 1, 3, 4] and plan.kinds.tolist() == [0, 1, 1, 0]
    assert plan.picked.tolist() == [2] and plan.count.tolist() == [len(vocab.members(b" t")[0])]
    torch.testing.assert_close(plan.tables[1], vocab.classes(b" "))
    torch.testing.assert_close(plan.ids, vocab.members(b" t")[0])


def test_gradcheck_of_every_class_inside_and_at_the_boundary() -> None:
    logits = torch.randn(4, len(TOY.token_bytes) + 2, dtype=torch.float64, requires_grad=True)
    prefixes = [b"", b"4", b"48", b"4"]
    assert torch.autograd.gradcheck(
        lambda x: next_byte_logprobs(x, TOY, prefixes, stop=True, temperature=0.7), (logits,)
    )
    folded = torch.randn(3, END + 1, dtype=torch.float64).log_softmax(-1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: fold_next_bytes(x, DIGITS, [b"", b"9", b"90"]), (folded,))


@pytest.mark.parametrize("branched", [False, True], ids=["plain", "branched"])
def test_byte_logprobs_read_the_rows_in_place_as_a_gather_would(branched: bool) -> None:
    """byte_logprobs reads each frame's row of the (B, T, V) logits without copying them out; its values and
    gradients (to both sides, several entries reading one row) equal those of the rows gathered first."""
    completions, batch = build("mistral_v3", "gpt2")  # both vendored; GPT-2 reads inside its tokens: branches
    frames = batch.byte_frames
    s_vocab, t_vocab = byte_vocab(tokenizer("mistral_v3")), byte_vocab(tokenizer("gpt2"))
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(len(EXAMPLES), max(map(len, completions)), len(s_vocab.token_bytes) + 5, generator=generator)
    width = batch.branched_inputs()["input_ids"].shape[1] if branched else batch.input_ids.shape[1]
    assert not branched or width > batch.input_ids.shape[1]
    teacher = 3 * torch.randn(len(EXAMPLES), width, len(t_vocab.token_bytes), generator=generator)
    student.requires_grad_(), teacher.requires_grad_()
    s, t = byte_logprobs(
        frames, student, teacher, student_vocab=s_vocab, teacher_vocab=t_vocab, temperature=0.9, branched=branched
    )
    weights = torch.randn(s.shape, generator=generator)
    ((s - t) * weights).sum().backward()
    rows = torch.from_numpy(frames.rows)
    gathered_s = student.detach().clone().requires_grad_()
    gathered_t = teacher.detach().clone().requires_grad_()
    s_ref = next_byte_logprobs(
        gathered_s[rows, torch.from_numpy(frames.student_frames)],
        s_vocab,
        frames.student_prefixes,
        stop=True,
        temperature=0.9,
    )
    torch.testing.assert_close(s, s_ref)
    read = frames.teacher_positions != TEMPLATE
    assert read.sum() > 0
    if not branched:
        t_read = next_byte_logprobs(
            gathered_t[rows[read], torch.from_numpy(frames.teacher_positions[read])],
            t_vocab,
            [p for p, r in zip(frames.teacher_prefixes, read, strict=True) if r],
            temperature=0.9,
        )
        t_full = torch.full((len(frames), END + 1), math.log(torch.finfo(torch.float32).tiny))
        t_full[torch.from_numpy(np.flatnonzero(~read)), torch.from_numpy(frames.targets[~read])] = 0.0
        t_full = t_full.index_put((torch.from_numpy(np.flatnonzero(read)),), t_read)
        t_ref = fold_next_bytes(t_full, s_vocab, frames.student_prefixes)
        torch.testing.assert_close(t, t_ref)
        ((s_ref - t_ref) * weights).sum().backward()
        torch.testing.assert_close(teacher.grad, gathered_t.grad)
    else:
        s_ref.mul(weights).sum().backward()
        assert torch.isfinite(teacher.grad).all() and teacher.grad[:, batch.input_ids.shape[1] :].abs().sum() > 0
    torch.testing.assert_close(student.grad, gathered_s.grad)
    assert student.grad[..., len(s_vocab.token_bytes) :].abs().sum() > 0  # padded columns: in the softmax only


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=16, unique=True),
    prefixes=st.lists(st.binary(min_size=1, max_size=5), max_size=6),
    stop=st.booleans(),
)
def test_members_found_by_search_are_the_units_the_classes_keep(
    pieces: list[bytes], prefixes: list[bytes], stop: bool
) -> None:
    """Inside a token the members come from a binary search over the sorted bytes (``\\xff`` bytes included), the
    classes from a pass over every unit: they must agree, for prefixes that units begin with, equal, or miss."""
    vocab = ByteVocab(token_bytes=(*pieces, None, b"<end>"), ends=frozenset({len(pieces) + 1}))
    for prefix in [*prefixes, *(p[:i] for p in pieces for i in range(1, len(p) + 1))]:
        ids, classes = vocab.members(prefix, stop=stop)
        dense = vocab.classes(prefix, stop=stop)
        expected = torch.from_numpy(np.flatnonzero(dense.numpy() != 258))
        assert ids is not None and ids.tolist() == expected.tolist()
        assert classes.tolist() == dense[expected].tolist()
    ids, classes = vocab.members(b"", stop=stop)
    assert ids is None and classes.tolist() == vocab.classes(b"", stop=stop).tolist()


def test_prefix_weights_are_the_teachers_probability_of_the_bytes_read_in_the_token() -> None:
    frames = digit_frames()  # 901 then the end of the turn; the teacher reads 9, 0, 1 with P 0.5, 0.4, 0.3
    teacher = torch.full((len(frames), STOP + 1), -1e4)
    for entry, (cls, p) in enumerate([(ord("9"), 0.5), (ord("0"), 0.4), (ord("1"), 0.3), (STOP, 0.9), (END, 0.8)]):
        teacher[entry, cls] = math.log(p)
    weights = prefix_weights(frames, teacher.requires_grad_())
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.5, 0.2, 0.06, 1.0]))
    assert not weights.requires_grad


def _shuffled(frames: ByteFrames, order: np.ndarray) -> ByteFrames:
    return ByteFrames(
        rows=frames.rows[order],
        student_frames=frames.student_frames[order],
        student_prefixes=tuple(frames.student_prefixes[i] for i in order),
        teacher_positions=frames.teacher_positions[order],
        teacher_prefixes=tuple(frames.teacher_prefixes[i] for i in order),
        targets=frames.targets[order],
        token_ends=frames.token_ends[order],
    )


WEIGHTED_PAIRS = [
    (s, t) for s, t in (("llama3", "qwen3"), ("gpt2", "mistral_v3"), ("mistral_v3", "gpt2")) if {s, t} <= set(NAMES)
]


@pytest.mark.parametrize(("student", "teacher"), WEIGHTED_PAIRS, ids=str)
def test_prefix_weights_follow_their_definition_on_a_real_batch_in_any_order(student: str, teacher: str) -> None:
    completions, batch = build(student, teacher)
    frames = batch.byte_frames
    s_vocab, t_vocab = byte_vocab(tokenizer(student)), byte_vocab(tokenizer(teacher))
    generator = torch.Generator().manual_seed(0)
    student_logits = torch.randn(
        len(EXAMPLES), max(map(len, completions)), len(s_vocab.token_bytes), generator=generator
    )
    teacher_logits = torch.randn(*batch.input_ids.shape, len(t_vocab.token_bytes), generator=generator)
    _, t = byte_logprobs(frames, student_logits, teacher_logits, student_vocab=s_vocab, teacher_vocab=t_vocab)
    weights = prefix_weights(frames, t)
    expected = []
    for e in range(len(frames)):  # the product over the entries of the same frame that read fewer of its bytes
        log_p = 0.0
        for f in range(len(frames)):
            same = (frames.rows[f], frames.student_frames[f]) == (frames.rows[e], frames.student_frames[e])
            before = len(frames.student_prefixes[f]) < len(frames.student_prefixes[e]) or (
                frames.token_ends[e] and not frames.token_ends[f]
            )
            if same and before and not frames.token_ends[f]:
                log_p += float(t[f, frames.targets[f]])
        expected.append(math.exp(log_p))
    torch.testing.assert_close(weights, torch.tensor(expected), rtol=1e-5, atol=1e-7)
    boundary = np.array([not p for p in frames.student_prefixes]) & ~frames.token_ends
    assert boundary.any() and (weights[torch.from_numpy(boundary)] == 1).all()
    assert ((weights >= 0) & (weights <= 1)).all() and (weights < 1).any()
    order = np.random.default_rng(0).permutation(len(frames))
    torch.testing.assert_close(prefix_weights(_shuffled(frames, order), t[torch.from_numpy(order)]), weights[order])


def test_prefix_weights_refuse_logprobs_of_other_frames() -> None:
    frames = digit_frames()
    with pytest.raises(AlignmentError, match=r"\(5, 258\)"):
        prefix_weights(frames, torch.zeros(4, STOP + 1))
    with pytest.raises(TypeError, match="teacher_logprobs"):
        prefix_weights(frames, torch.zeros(5, STOP + 1, dtype=torch.int64))
    assert prefix_weights(frames.select(np.zeros(5, dtype=bool)), torch.zeros(0, STOP + 1)).shape == (0,)
