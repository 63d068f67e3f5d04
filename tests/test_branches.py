"""Tests of the teacher's branches: inside one of its tokens, the shorter token that ends where the bytes read end.

``prepare_teacher_batch(..., byte_frames=True)`` lists them, ``TeacherBatch.branched_inputs()`` reads them in the
same forward pass as the teacher's own tokens, and ``byte_logprobs(..., branched=True)`` sends the shorter token's
probability on through what the teacher writes after it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from alignment import AlignmentError, ByteFrames, ByteVocab, byte_logprobs
from alignment._tokenizer import id_of_bytes, tokenizer_info
from alignment.nextbyte import END, TEMPLATE
from tests.test_nextbyte import build
from tests.test_teacher import EXAMPLES, NAMES, tokenizer
from tests.test_teacher import build as teacher_batch


@pytest.mark.parametrize(("student", "teacher"), list(itertools.permutations(NAMES, 2)), ids=str)
def test_every_branch_is_the_teacher_token_spelling_the_bytes_read(student: str, teacher: str) -> None:
    """An entry read inside a teacher token has a branch exactly when some text token of the teacher spells the
    bytes read so far; the branch is that token, at the position of the longer one; entries at one place share
    it, and every branch is read by some entry."""
    _, batch = build(student, teacher)
    frames, info = batch.byte_frames, tokenizer_info(tokenizer(teacher))
    length = batch.input_ids.shape[1]
    assert frames.teacher_branches is not None and frames.teacher_branches.shape == (len(frames),)
    assert batch.branch_ids.shape == batch.branch_positions.shape == (len(EXAMPLES), int(batch.branch_count.max()))
    used = set()
    for n in range(len(frames)):
        b, position, prefix = int(frames.rows[n]), int(frames.teacher_positions[n]), frames.teacher_prefixes[n]
        branch = int(frames.teacher_branches[n])
        if not prefix or position == TEMPLATE or prefix not in id_of_bytes(tokenizer(teacher)):
            assert branch == -1, n
            continue
        e = branch - length
        assert 0 <= e < int(batch.branch_count[b]), n
        unit = int(batch.branch_ids[b, e])
        assert info.token_bytes[unit] == prefix and not info.is_control[unit]
        assert int(batch.branch_positions[b, e]) == position + 1
        longer = info.token_bytes[int(batch.input_ids[b, position + 1])]
        assert longer.startswith(prefix) and len(longer) > len(prefix)
        used.add((b, e))
    assert used == {(b, e) for b in range(len(EXAMPLES)) for e in range(int(batch.branch_count[b]))}
    for b in range(len(EXAMPLES)):
        places = list(zip(batch.branch_positions[b].tolist(), batch.branch_ids[b].tolist(), strict=True))
        assert len(set(places[: int(batch.branch_count[b])])) == int(batch.branch_count[b])  # no branch twice


def test_the_branches_of_an_answer_that_gpt2_writes_in_long_tokens() -> None:
    """GPT-2 writes ``1234 + 5678 = 6912.`` as `` 12|34| +| 5|678| =| 69|12|.``: inside each token, every proper
    prefix that is itself a GPT-2 token is a branch, at the position of the token it is read in."""
    _, batch = build("mistral_v3", "gpt2")
    pieces = tokenizer_info(tokenizer("gpt2")).token_bytes
    teacher = [pieces[i] for i in batch.input_ids[0].tolist()]
    j = len(teacher) - 1 - teacher[::-1].index(b" 12")  # the answer's, not the prompt's "What is 1234 + 5678?"
    assert teacher[j : j + 9] == [b" 12", b"34", b" +", b" 5", b"678", b" =", b" 69", b"12", b"."]
    count = int(batch.branch_count[0])
    places, ids = batch.branch_positions[0, :count].tolist(), batch.branch_ids[0, :count].tolist()
    branches = [(place - j, pieces[unit]) for place, unit in zip(places, ids, strict=True)]
    assert branches == [
        (0, b" "), (0, b" 1"), (1, b"3"), (2, b" "), (3, b" "), (4, b"6"), (4, b"67"), (5, b" "), (6, b" "),
        (6, b" 6"), (7, b"1"),
    ]  # fmt: skip


def test_a_piece_is_preferred_to_its_byte_fallback() -> None:
    """Mistral spells ``6`` both as the piece ``6`` and as ``<0x36>``: a branch reads the piece, as the tokenizer
    would write it."""
    tok = tokenizer("mistral_v3")
    unit = id_of_bytes(tok)[b"6"]
    assert tok.convert_ids_to_tokens(unit) == "6"
    assert tok.convert_tokens_to_ids("<0x36>") != unit


def tiny_teacher(vocab: int, attention: str) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        attn_implementation=attention,
    )
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize(
    ("attention", "mask_dtype"), [("sdpa", torch.float32), ("eager", torch.float32), ("sdpa", torch.bool)], ids=str
)
def test_one_branched_forward_equals_the_plain_forward_and_each_branch_read_alone(
    attention: str, mask_dtype: torch.dtype
) -> None:
    """The outputs before ``S`` are the plain forward's; a branch's are those of the sequence that ends with it.
    The additive mask (the default) is read right by eager and SDPA attention, the boolean one by SDPA."""
    _, batch = build("mistral_v3", "gpt2")
    model = tiny_teacher(len(tokenizer("gpt2")), attention)
    with torch.no_grad():
        plain = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask.long()).logits
        inputs = batch.branched_inputs(mask_dtype=mask_dtype)
        branched = model(**inputs).logits
    length = batch.input_ids.shape[1]
    assert inputs["attention_mask"].shape == (len(EXAMPLES), 1, branched.shape[1], branched.shape[1])
    assert inputs["attention_mask"].dtype == mask_dtype
    real = batch.attention_mask
    torch.testing.assert_close(branched[:, :length][real], plain[real], atol=1e-5, rtol=1e-5)
    assert int(batch.branch_count.sum()) > 0
    for b in range(len(EXAMPLES)):
        for e in range(int(batch.branch_count[b])):
            position = int(batch.branch_positions[b, e])
            alone = torch.cat([batch.input_ids[b, :position], batch.branch_ids[b, e : e + 1]])[None]
            with torch.no_grad():
                expected = model(input_ids=alone).logits[0, -1]
            torch.testing.assert_close(branched[b, length + e], expected, atol=1e-5, rtol=1e-5)


def test_the_additive_mask_is_the_boolean_one_in_numbers() -> None:
    _, batch = build("mistral_v3", "gpt2")
    allowed = batch.branched_inputs(mask_dtype=torch.bool)["attention_mask"]
    additive = batch.branched_inputs(mask_dtype=torch.bfloat16)["attention_mask"]
    assert additive.dtype == torch.bfloat16 and torch.equal(additive == 0, allowed)
    assert bool((additive[~allowed] == torch.finfo(torch.bfloat16).min).all())
    with pytest.raises(ValueError, match="mask_dtype must be a floating dtype or torch"):
        batch.branched_inputs(mask_dtype=torch.int64)


def test_without_byte_frames_there_are_no_branches() -> None:
    _, batch = teacher_batch("mistral_v3", "gpt2")
    assert batch.byte_frames is None and batch.branch_ids.shape == (len(EXAMPLES), 0)
    inputs = batch.branched_inputs(mask_dtype=torch.bool)
    torch.testing.assert_close(inputs["input_ids"], batch.input_ids)
    causal = torch.tril(torch.ones(batch.input_ids.shape[1], batch.input_ids.shape[1], dtype=torch.bool))
    assert torch.equal(inputs["attention_mask"][:, 0], causal & batch.attention_mask[:, None, :])


# The teacher reads "627" as one token after position 0; the student writes one digit per token.
TEACHER = ByteVocab(token_bytes=(b"6", b"62", b"627", b"7", b"1", b"<e>", b"2"), ends=frozenset({5}))
STUDENT = ByteVocab(token_bytes=(b"6", b"2", b"7", b"1", b"<e>"), ends=frozenset({4}))


def digit_frames(branches: np.ndarray | None) -> ByteFrames:
    """The bytes 6, 2, 7 of the teacher's ``627`` (position 0), then the end of the turn (position 1); the
    student's frames 0, 1, 2, 3 at its boundaries."""
    return ByteFrames(
        rows=np.zeros(4, dtype=np.int64),
        student_frames=np.arange(4),
        student_prefixes=(b"", b"", b"", b""),
        teacher_positions=np.array([0, 0, 0, 1]),
        teacher_prefixes=(b"", b"6", b"62", b""),
        targets=np.array([ord("6"), ord("2"), ord("7"), END]),
        token_ends=np.zeros(4, dtype=np.bool_),
        teacher_branches=branches,
    )


def teacher_logits() -> torch.Tensor:
    """Positions 0, 1, then the branches "6" (slot 2) and "62" (slot 3)."""
    logits = torch.full((1, 4, 7), -30.0)
    logits[0, 0, :3] = torch.log(torch.tensor([0.2, 0.3, 0.5]))  # 6, 62, 627
    logits[0, 1, 5] = 0.0
    logits[0, 2, [6, 3]] = torch.log(torch.tensor([0.6, 0.4]))  # after "6": "2" or "7"
    logits[0, 3, [4, 5]] = torch.log(torch.tensor([0.25, 0.75]))  # after "62": "1" or the end of the turn
    return logits


def test_a_branch_sends_the_shorter_tokens_mass_on_through_what_follows_it() -> None:
    r"""After ``6``: 62 and 627 say ``2`` (0.8), and 6 then 2 or 7 says ``2`` 0.6 and ``7`` 0.4 of 0.2; after
    ``62``: 627 says ``7`` (0.5), and 62 then 1 or the end says ``1`` 0.25 and END 0.75 of 0.3."""
    frames = digit_frames(np.array([-1, 2, 3, -1]))
    student = torch.zeros(1, 4, 5)
    _, plain = byte_logprobs(frames, student, teacher_logits(), student_vocab=STUDENT, teacher_vocab=TEACHER)
    _, exact = byte_logprobs(
        frames, student, teacher_logits(), student_vocab=STUDENT, teacher_vocab=TEACHER, branched=True
    )
    two, seven, one = ord("2"), ord("7"), ord("1")
    torch.testing.assert_close(plain[1, two].exp(), torch.tensor(1.0))  # the path through "6" alone is left out
    torch.testing.assert_close(plain[2, seven].exp(), torch.tensor(1.0))
    torch.testing.assert_close(exact[1, [two, seven]].exp(), torch.tensor([0.8 + 0.2 * 0.6, 0.2 * 0.4]))
    torch.testing.assert_close(exact[2, [seven, one, END]].exp(), torch.tensor([0.5, 0.3 * 0.25, 0.3 * 0.75]) / 0.8)
    torch.testing.assert_close(exact[[0, 3]], plain[[0, 3]])  # at the teacher's boundaries nothing changes
    torch.testing.assert_close(exact.exp().sum(-1), torch.ones(4))


def test_a_teacher_sure_of_its_long_token_reads_the_same_with_or_without_branches() -> None:
    logits = teacher_logits()
    logits[0, 0, :3] = torch.tensor([-200.0, -200.0, 0.0])  # surely "627"
    frames = digit_frames(np.array([-1, 2, 3, -1]))
    student = torch.zeros(1, 4, 5)
    options = {"student_vocab": STUDENT, "teacher_vocab": TEACHER}
    torch.testing.assert_close(
        byte_logprobs(frames, student, logits, branched=True, **options)[1],
        byte_logprobs(frames, student, logits, **options)[1],
    )


def test_branched_reading_needs_branches_and_their_logits() -> None:
    student, options = torch.zeros(1, 4, 5), {"student_vocab": STUDENT, "teacher_vocab": TEACHER}
    with pytest.raises(AlignmentError, match="branched=True needs frames with teacher_branches"):
        byte_logprobs(digit_frames(None), student, teacher_logits(), branched=True, **options)
    with pytest.raises(AlignmentError, match="teacher_logits must be"):  # the outputs over input_ids alone
        byte_logprobs(
            digit_frames(np.array([-1, 2, 3, -1])), student, teacher_logits()[:, :2], branched=True, **options
        )


def test_an_inner_prefix_no_token_goes_on_from_is_refused_without_a_branch() -> None:
    """With a branch the teacher's next byte after ``62`` comes from the branch alone if no token goes on from it
    (a trimmed vocabulary); without one there is nothing to read, and that is an error, not a silent guess."""
    short = ByteVocab(token_bytes=(b"6", b"62", b"7", b"1", b"<e>", None), ends=frozenset({4}))
    frames = digit_frames(np.array([-1, -1, -1, -1]))
    logits = torch.zeros(1, 4, 6)
    with pytest.raises(AlignmentError, match="begins with the prefix b'62' and goes on"):
        byte_logprobs(frames, torch.zeros(1, 4, 5), logits, student_vocab=STUDENT, teacher_vocab=short, branched=True)
    branched = digit_frames(np.array([-1, 2, 3, -1]))
    _, t = byte_logprobs(
        branched, torch.zeros(1, 4, 5), logits, student_vocab=STUDENT, teacher_vocab=short, branched=True
    )
    after = torch.full((6,), 1 / 5)  # uniform over 6, 62, 7, 1 and the end (None takes no part)
    assert math.isclose(float(t[2, END].exp()), float(after[4]), rel_tol=1e-5)
