"""Tests of ``teacher_path_logprobs``: the teacher's likeliest path inside each student token, off the sampled one.

Goldens worked by hand on small vocabularies; the chain rule it completes, exactly, where the two paths cover every
prefix; a tree-masked forward of a real Hugging Face model against plain forwards of each path; and, on every
cross pair of real tokenizers, the function against a slow walk over plain token sequences in this file.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from alignment import (
    AlignmentError,
    ByteFrames,
    ByteVocab,
    TeacherPath,
    byte_vocab,
    fold_next_bytes,
    generalized_jsd,
    next_byte_logprobs,
    prefix_weights,
    teacher_path_logprobs,
)
from alignment._paths import _tree_inputs
from alignment._tokenizer import tokenizer_info
from alignment.nextbyte import STOP
from tests.test_branches import tiny_teacher
from tests.test_nextbyte import build
from tests.test_teacher import NAMES, tokenizer

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def one_token(sampled: bytes) -> ByteFrames:
    """The entries of one student token ``sampled`` read at frame 0, the teacher reading the same bytes at position
    0 (the same vocabulary on both sides): each byte, then the token's end."""
    prefixes = tuple(sampled[:k] for k in range(len(sampled) + 1))
    return ByteFrames(
        rows=np.zeros(len(prefixes), dtype=np.int64),
        student_frames=np.zeros(len(prefixes), dtype=np.int64),
        student_prefixes=prefixes,
        teacher_positions=np.zeros(len(prefixes), dtype=np.int64),
        teacher_prefixes=prefixes,
        targets=np.array([*sampled, ord(" ")], dtype=np.int64),
        token_ends=np.array([False] * len(sampled) + [True]),
    )


DIGITS = ByteVocab(token_bytes=(b"4", b"45", b"456", b"457", b"7", b"78"), ends=frozenset())


def test_with_one_vocabulary_the_path_is_read_in_the_teachers_row() -> None:
    """The teacher likes ``456`` (through ``4`` and ``45``); the student sampled ``78``: the nodes ``4`` and
    ``45``, each weighted by the teacher's probability of its bytes, both sides read in the student's classes."""
    teacher = torch.tensor([[[0.0, 0.0, 4.0, 1.0, 0.0, 0.0]]])
    student = torch.zeros(1, 1, 6, requires_grad=True)
    path = teacher_path_logprobs(one_token(b"78"), student, teacher, student_vocab=DIGITS, teacher_vocab=DIGITS)
    assert path.nodes == (b"4", b"45") and path.entries.tolist() == [0, 0]
    assert path.student.shape == path.teacher.shape == (2, STOP + 1)
    e = math.exp
    total = 4 + e(4) + e(1)  # every unit's exp(logit)
    torch.testing.assert_close(path.weights, torch.tensor([2 + e(4) + e(1), 1 + e(4) + e(1)]) / total)
    after_4 = torch.tensor([1.0, 1 + e(4) + e(1)])  # 4 itself stops; 45, 456 and 457 go on with 5
    torch.testing.assert_close(path.teacher[0, [STOP, ord("5")]].exp(), after_4 / after_4.sum())
    after_45 = torch.tensor([e(4), e(1), 1.0])  # 456, 457, 45 itself
    torch.testing.assert_close(path.teacher[1, [ord("6"), ord("7"), STOP]].exp(), after_45 / after_45.sum())
    torch.testing.assert_close(path.student[1, [ord("6"), ord("7"), STOP]].exp(), torch.full((3,), 1 / 3))
    path.student.sum().backward()
    assert student.grad is not None
    assert student.grad[0, 0, :4].abs().min() > 1e-2  # the units under the nodes
    assert student.grad[0, 0, 4:].abs().max() < 1e-6  # and no others


@pytest.mark.parametrize(
    ("sampled", "nodes"),
    [(b"456", ()), (b"457", ()), (b"78", (b"4", b"45"))],
    ids=["the teacher's own path", "its first bytes sampled", "another token"],
)
def test_a_node_the_sampled_token_begins_with_is_left_to_the_sampled_entries(sampled: bytes, nodes: tuple) -> None:
    teacher = torch.tensor([[[0.0, 0.0, 4.0, 1.0, 0.0, 0.0]]])
    path = teacher_path_logprobs(
        one_token(sampled), torch.zeros(1, 1, 6), teacher, student_vocab=DIGITS, teacher_vocab=DIGITS
    )
    assert path.nodes == nodes and len(path) == len(nodes) == path.weights.shape[0]


def test_the_path_stops_where_the_teacher_ends_the_turn() -> None:
    vocab = ByteVocab(token_bytes=(b"4", b"45", b"<end>"), ends=frozenset({2}))
    teacher = torch.tensor([[[0.0, 0.0, 5.0]]])  # the teacher would end the turn here
    path = teacher_path_logprobs(
        one_token(b"45"),
        torch.zeros(1, 1, 3),
        teacher,
        student_vocab=vocab,
        teacher_vocab=vocab,
    )
    assert len(path) == 0 and path.student.shape == (0, STOP + 1) and path.weights.shape == (0,)


def test_with_one_vocabulary_the_two_paths_complete_the_chain_rule() -> None:
    r"""With ``beta=0`` the loss is KL(teacher ‖ student) over next bytes. On ``4 45 456 7 78`` the sampled ``78``
    reads the prefixes ``""`` and ``7``, and the teacher's path (``456``) the prefixes ``4`` and ``45``: every
    prefix of a token. With the sampled entries read on both sides in the student's classes (the same vocabulary,
    so the teacher's own ``7`` is its STOP after ``7``) and weighed by ``prefix_weights``, plus the path's nodes
    weighed by their probability, the sum is the token-level KL at that frame, exactly (the chain rule)."""
    vocab = ByteVocab(token_bytes=(b"4", b"45", b"456", b"7", b"78"), ends=frozenset())
    teacher_logits = torch.tensor([[[0.3, -0.2, 1.5, 0.1, -0.4]]], dtype=torch.float64)
    student_logits = torch.tensor([[[1.0, 0.2, -0.7, 0.4, 0.9]]], dtype=torch.float64)
    frames = one_token(b"78")
    frames = frames.select(~frames.token_ends)  # "78" goes on to nothing: its end entry adds 0
    s = next_byte_logprobs(student_logits[0, [0, 0]], vocab, frames.student_prefixes, stop=True)
    t = next_byte_logprobs(teacher_logits[0, [0, 0]], vocab, frames.teacher_prefixes, stop=True)
    path = teacher_path_logprobs(frames, student_logits, teacher_logits, student_vocab=vocab, teacher_vocab=vocab)
    assert path.nodes == (b"4", b"45")
    sampled = (generalized_jsd(s, t, beta=0.0, reduction="none") * prefix_weights(frames, t)).sum()
    off = (generalized_jsd(path.student, path.teacher, beta=0.0, reduction="none") * path.weights).sum()
    p, q = teacher_logits[0, 0].softmax(-1), student_logits[0, 0].softmax(-1)
    token_level = (p * (p.log() - q.log())).sum()
    torch.testing.assert_close(sampled + off, token_level, atol=1e-9, rtol=1e-9)
    assert not torch.isclose(sampled, token_level)  # the sampled path alone is not


# Across vocabularies: a teacher that writes single characters, a student with longer tokens. The teacher is a
# table from the tokens it has read (in order of their positions) to its logits, so a forward over a tree mask
# gives a path token exactly what a plain forward over the path's text gives, and nothing else.
CHARS = ("=", "4", "5", "6", "7", "8", "<end>")
TABLE = {
    ("=",): {"4": 3.0, "7": 1.0},
    ("=", "4"): {"5": 2.0, "<end>": 0.5},
    ("=", "4", "5"): {"6": 2.0},
    ("=", "7"): {"8": 1.0},
}
STUDENT = ByteVocab(token_bytes=(b"4", b"45", b"456", b"7", b"78", b"<end>"), ends=frozenset({5}))


def table_logits(tokens: tuple[str, ...], names: tuple[str, ...] = CHARS, table: dict = TABLE) -> torch.Tensor:
    row = torch.zeros(len(names))
    for name, value in table.get(tokens, {}).items():
        row[names.index(name)] = value
    return row


def read_in_order(inputs: dict[str, torch.Tensor]) -> Iterator[tuple[int, int, tuple[int, ...] | None]]:
    """Each position ``(b, q)`` of the inputs of ``teacher_forward``, and the ids it may attend to in order of their
    position ids, or ``None`` where those do not count 0, 1, 2, ... (padding, which sees itself alone)."""
    mask = inputs["attention_mask"][:, 0]
    allowed = mask if mask.dtype == torch.bool else mask == 0
    rows, length = inputs["input_ids"].shape
    for b, q in itertools.product(range(rows), range(length)):
        seen = torch.nonzero(allowed[b, q])[:, 0]
        order = seen[inputs["position_ids"][b, seen].argsort()]
        counts_on = inputs["position_ids"][b, order].tolist() == list(range(len(order)))
        yield b, q, tuple(inputs["input_ids"][b, order].tolist()) if counts_on else None


def table_forward(
    inputs: dict[str, torch.Tensor],
    *,
    ids: tuple[int, ...] | None = None,
    names: tuple[str, ...] = CHARS,
    table: dict = TABLE,
) -> torch.Tensor:
    """The table teacher over ``(input_ids, attention_mask, position_ids)``: at each position, the logits of the
    tokens it may attend to, in order of their position ids (which must count 0, 1, 2, ... over them)."""
    ids = tuple(range(len(names))) if ids is None else ids
    out = torch.zeros(*inputs["input_ids"].shape, len(names))
    for b, q, read in read_in_order(inputs):
        assert read is not None, "positions must count on"
        out[b, q] = table_logits(tuple(names[ids.index(i)] for i in read), names, table)
    return out


def one_frame(student_prefixes: tuple[bytes, ...], positions: list[int], targets: bytes) -> ByteFrames:
    """Entries of the student's frame 0 against a teacher that writes one character per token (it begins a token
    at every byte, at ``positions``)."""
    count = len(student_prefixes)
    return ByteFrames(
        rows=np.zeros(count, dtype=np.int64),
        student_frames=np.zeros(count, dtype=np.int64),
        student_prefixes=student_prefixes,
        teacher_positions=np.array(positions, dtype=np.int64),
        teacher_prefixes=(b"",) * count,
        targets=np.frombuffer(targets, dtype=np.uint8).astype(np.int64),
        token_ends=np.zeros(count, dtype=np.bool_),
    )


class Batch:
    """The two fields of a ``TeacherBatch`` that the path reads."""

    def __init__(self, input_ids: torch.Tensor) -> None:
        self.input_ids, self.attention_mask = input_ids, torch.ones_like(input_ids, dtype=torch.bool)


def plain(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    length = ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return {
        "input_ids": ids,
        "attention_mask": causal.expand(len(ids), 1, -1, -1),
        "position_ids": torch.arange(length)[None],
    }


def table_path(
    frames: ByteFrames,
    input_ids: torch.Tensor,
    teacher: ByteVocab,
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    *,
    teacher_forward: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
    **options: Any,
) -> TeacherPath:
    """``teacher_path_logprobs`` of :data:`STUDENT` (its logits uniform) against a table teacher over
    ``input_ids``: its logits there by ``forward``, and its steps by ``teacher_forward`` (by default ``forward``)."""
    return teacher_path_logprobs(
        frames,
        torch.zeros(1, 1, len(STUDENT.token_bytes)),
        forward(plain(input_ids)),
        student_vocab=STUDENT,
        teacher_vocab=teacher,
        batch=Batch(input_ids),  # type: ignore[arg-type]
        teacher_forward=forward if teacher_forward is None else teacher_forward,
        **options,
    )


@pytest.mark.parametrize("mask_dtype", [torch.float32, torch.bool], ids=str)
@pytest.mark.parametrize("trimmed", [False, True], ids=["full head", "trimmed head"])
def test_across_vocabularies_a_path_token_is_read_as_a_plain_forward_reads_its_text(
    mask_dtype: torch.dtype, trimmed: bool
) -> None:
    """The student sampled ``78`` after ``=``; the teacher writes ``4``, ``5``, ``6``. The node ``4`` is read at
    a new position holding the teacher's ``4`` after ``=``, the node ``45`` at one more holding ``5``; ``456`` goes
    on to nothing. With a trimmed head the path's tokens are fed by their tokenizer ids."""
    ids = (10, 11, 12, 13, 14, 15, 16) if trimmed else tuple(range(len(CHARS)))
    teacher = ByteVocab(
        token_bytes=tuple(c.encode() for c in CHARS),
        ends=frozenset({6}),
        token_ids=ids if trimmed else None,
    )
    input_ids = torch.tensor([[ids[0], ids[4], ids[5]]])  # "=", then the student's "78" as the teacher's 7 8
    frames = one_frame((b"", b"7"), [0, 1], b"78")
    forward = functools.partial(table_forward, ids=ids)
    path = table_path(frames, input_ids, teacher, forward, mask_dtype=mask_dtype)
    assert path.nodes == (b"4", b"45") and path.entries.tolist() == [0, 0]

    def next_char(tokens: tuple[str, ...]) -> torch.Tensor:
        return table_logits(tokens).softmax(-1)

    p_4, p_5 = next_char(("=",))[1], next_char(("=", "4"))[2]
    torch.testing.assert_close(path.weights, torch.stack([p_4, p_4 * p_5]))
    after_4, after_45 = next_char(("=", "4")), next_char(("=", "4", "5"))
    # the teacher's next byte seen through the student's tokens: after 4 they go on with 5 or stop (4 itself)
    torch.testing.assert_close(path.teacher[0, [ord("5"), STOP]].exp(), torch.stack([after_4[2], 1 - after_4[2]]))
    torch.testing.assert_close(path.teacher[1, [ord("6"), STOP]].exp(), torch.stack([after_45[3], 1 - after_45[3]]))


PIECES = ("=", "4", "45", "47", "5", "6", "7", "8", "<end>")
PIECE_TABLE = {("=",): {"45": 3.0, "47": 1.0, "4": 0.5}, ("=", "45"): {"6": 2.0}}


def test_across_vocabularies_a_node_inside_a_teacher_token_is_read_in_its_row() -> None:
    """The teacher writes ``45`` where the student sampled ``78``: the node ``4`` is read inside that token, in
    the teacher's row with ``4`` read, by the teacher's probability of the byte ``4``; the node ``45`` after it at
    a new position, by the probability of ``4`` then ``5``."""
    teacher = ByteVocab(token_bytes=tuple(p.encode() for p in PIECES), ends=frozenset({8}))
    input_ids = torch.tensor([[0, 6, 7]])  # "=", then the student's "78" as the teacher's 7 8
    frames = one_frame((b"", b"7"), [0, 1], b"78")
    forward = functools.partial(table_forward, names=PIECES, table=PIECE_TABLE)
    path = table_path(frames, input_ids, teacher, forward)
    assert path.nodes == (b"4", b"45")
    e = math.exp
    first = e(3) + e(1) + e(0.5)  # 45, 47 and 4: the byte 4
    p_4 = first / (first + 6)  # against =, 5, 6, 7, 8 and the end of the turn
    p_5 = e(3) / (e(3) + e(1))  # after 4, inside the teacher's token: 45 against 47 (4 itself is left out)
    torch.testing.assert_close(path.weights, torch.tensor([p_4, p_4 * p_5]))
    # after the student's 4 its tokens go on with 5 or stop: the teacher's 7 (its 47) is the student's stop
    torch.testing.assert_close(path.teacher[0, [ord("5"), STOP]].exp(), torch.tensor([p_5, 1 - p_5]))
    p_6 = e(2) / (e(2) + 8)  # after "=" "45": 6 against the eight other units
    torch.testing.assert_close(path.teacher[1, [ord("6"), STOP]].exp(), torch.tensor([p_6, 1 - p_6]))


def test_a_teacher_that_ends_the_turn_or_whose_path_leaves_the_students_tokens_adds_nothing() -> None:
    teacher = ByteVocab(token_bytes=tuple(c.encode() for c in CHARS), ends=frozenset({6}))
    input_ids = torch.tensor([[0, 4, 5]])
    frames = one_frame((b"",), [1], b"8")  # after "=" "7": the table likes "8", and the student has no "8..."
    calls = []

    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(inputs)
        return table_forward(inputs)

    path = table_path(frames, input_ids, teacher, table_forward, teacher_forward=forward)
    assert len(path) == 0 and not calls  # no step went on: no forward pass


@pytest.mark.parametrize(
    ("attention", "mask_dtype"), [("sdpa", torch.float32), ("eager", torch.float32), ("sdpa", torch.bool)], ids=str
)
def test_a_hugging_face_model_reads_the_tree_as_plain_forwards_of_each_path(
    attention: str, mask_dtype: torch.dtype
) -> None:
    """The tree's real positions give the plain forward's logits; each path token (two steps deep on row 0, and
    a padded row 1 with one) gives the logits of the text up to its root followed by its path's tokens."""
    model = tiny_teacher(20, attention)
    ids = torch.tensor([[1, 2, 3, 4, 5, 0], [6, 7, 8, 0, 0, 0]])
    real = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    # row 0: 9 after position 2, 10 after that 9 (slot 6), 11 after position 4; row 1: 12 after position 1
    tree = [[(9, 2, 0), (11, 4, 0), (10, 6, 1)], [(12, 1, 0)]]
    inputs = _tree_inputs(ids, real, tree, mask_dtype)
    assert inputs["attention_mask"].shape == (2, 1, 9, 9) and inputs["attention_mask"].dtype == mask_dtype
    assert inputs["position_ids"][0, 6:].tolist() == [3, 5, 4] and inputs["position_ids"][1, 6] == 2
    with torch.no_grad():
        out = model(**inputs).logits
        flat = model(input_ids=ids, attention_mask=real.long()).logits

        def alone(*tokens: int) -> torch.Tensor:
            return model(input_ids=torch.tensor([tokens])).logits[0, -1]

        torch.testing.assert_close(out[:, :6][real], flat[real], **TOLERANCE)
        torch.testing.assert_close(out[0, 6], alone(1, 2, 3, 9), **TOLERANCE)
        torch.testing.assert_close(out[0, 7], alone(1, 2, 3, 4, 5, 11), **TOLERANCE)
        torch.testing.assert_close(out[0, 8], alone(1, 2, 3, 9, 10), **TOLERANCE)
        torch.testing.assert_close(out[1, 6], alone(6, 7, 12), **TOLERANCE)
        assert (out[1, 7:] == out[1, 7:]).all()  # padding reads itself: finite


# Every cross pair of real tokenizers: a teacher that writes one or two letters or digits at a time, chosen by a hash
# of what it has read, against a slow walk over plain token sequences.
DEPTH = 4


@functools.cache
def vocab_of(name: str) -> ByteVocab:
    return byte_vocab(tokenizer(name))


@functools.cache
def longer_prefixes(name: str) -> frozenset[bytes]:
    """Every proper prefix of a text token of ``name``: the nodes its student can go on from."""
    vocab = vocab_of(name)
    return frozenset(
        piece[:k]
        for unit, piece in enumerate(vocab.token_bytes)
        if piece and unit not in vocab.ends
        for k in range(1, len(piece))
    )


def short_token_teacher(name: str) -> tuple[ByteVocab, list[int]]:
    """The teacher's vocabulary and its tokens of one or two ASCII letters or digits (the only ones it writes)."""
    vocab = vocab_of(name)
    return vocab, [
        unit for unit, piece in enumerate(vocab.token_bytes) if piece and len(piece) <= 2 and piece.isalnum()
    ]


def hashed_logits(tokens: tuple[int, ...], head: np.ndarray, chars: dict[int, int]) -> torch.Tensor:
    """Logits over ``head``: one character, picked by a hash of the tokens read, well above the rest."""
    row = torch.zeros(len(head))
    row[torch.arange(len(head)) % 7 == hash(tokens) % 7] = 0.5  # some spread among the others
    row[chars[sorted(chars)[hash(tokens) % len(chars)]]] = 6.0
    return row


def hashed_forward(inputs: dict[str, torch.Tensor], head: np.ndarray, chars: dict[int, int]) -> torch.Tensor:
    out = torch.zeros(*inputs["input_ids"].shape, len(head))
    for b, q, read in read_in_order(inputs):
        out[b, q] = math.nan if read is None else hashed_logits(read, head, chars)  # padding is never read
    return out


def slow_walk(
    frames: ByteFrames, completions: list[list[int]], batch, student: str, head: np.ndarray, teacher: ByteVocab, chars
) -> dict[tuple[int, bytes], tuple[float, torch.Tensor]]:
    """Per (entry, node): the weight and the teacher's folded row, by walking each path over plain sequences."""
    student_pieces, goes_on = tokenizer_info(tokenizer(student)).token_bytes, longer_prefixes(student)
    found = {}
    for entry in range(len(frames)):
        if frames.student_prefixes[entry] or frames.teacher_prefixes[entry] or frames.token_ends[entry]:
            continue
        row, position = int(frames.rows[entry]), int(frames.teacher_positions[entry])
        if position < 0:
            continue
        sampled = student_pieces[completions[row][int(frames.student_frames[entry])]]
        tokens, node, weight = batch.input_ids[row, : position + 1].tolist(), b"", 0.0
        for _ in range(DEPTH):
            logits = hashed_logits(tuple(tokens), head, chars)
            unit = int(logits.argmax())
            piece = teacher.token_bytes[unit]
            if not piece or unit in teacher.ends:
                break
            steps = [
                float(next_byte_logprobs(logits[None], teacher, [piece[:k]])[0, piece[k]]) for k in range(len(piece))
            ]
            stopped = False
            for k in range(1, len(piece)):  # inside the teacher's token
                if node + piece[:k] not in goes_on:
                    stopped = True
                    break
                if not sampled.startswith(node + piece[:k]):
                    read = next_byte_logprobs(logits[None], teacher, [piece[:k]])
                    folded = fold_next_bytes(read, vocab_of(student), [node + piece[:k]])
                    found[entry, node + piece[:k]] = (weight + sum(steps[:k]), folded)
            if stopped or node + piece not in goes_on:
                break
            node, weight = node + piece, weight + sum(steps)
            tokens.append(int(head[unit]))
            if not sampled.startswith(node):
                read = next_byte_logprobs(hashed_logits(tuple(tokens), head, chars)[None], teacher, [b""])
                found[entry, node] = (weight, fold_next_bytes(read, vocab_of(student), [node]))
    return found


@pytest.mark.parametrize(("student", "teacher"), list(itertools.permutations(NAMES, 2)), ids=str)
def test_on_real_tokenizers_the_path_is_the_slow_walk_over_plain_text(student: str, teacher: str) -> None:
    completions, batch = build(student, teacher)
    full, written = short_token_teacher(teacher)
    head = np.array(sorted(set(batch.input_ids.unique().tolist()) | set(written)))  # a trimmed output layer
    units = {int(i): unit for unit, i in enumerate(head.tolist())}
    trimmed = full.restrict(head)
    chars = {i: units[i] for i in written}
    forward = functools.partial(hashed_forward, head=head, chars=chars)
    frames = batch.byte_frames
    length = batch.input_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril() & batch.attention_mask[:, None, :]
    positions = torch.arange(length).expand(len(completions), -1)
    teacher_logits = forward(
        {"input_ids": batch.input_ids, "attention_mask": causal[:, None], "position_ids": positions}
    )
    student_logits = torch.zeros(len(completions), max(map(len, completions)), len(vocab_of(student).token_bytes))
    path = teacher_path_logprobs(
        frames,
        student_logits,
        teacher_logits,
        student_vocab=vocab_of(student),
        teacher_vocab=trimmed,
        batch=batch,
        teacher_forward=forward,
        mask_dtype=torch.bool,
        depth=DEPTH,
    )
    expected = slow_walk(frames, completions, batch, student, head, trimmed, chars)
    got = {(int(e), node): i for i, (e, node) in enumerate(zip(path.entries.tolist(), path.nodes, strict=True))}
    assert set(got) == set(expected)
    assert len(got) == len(path)  # no node twice
    for key, i in got.items():
        weight, row = expected[key]
        torch.testing.assert_close(path.weights[i], torch.tensor(math.exp(weight)), **TOLERANCE)
        torch.testing.assert_close(path.teacher[i], row[0], **TOLERANCE)
    assert len(path) > 0


def test_the_inputs_are_checked() -> None:
    frames = one_token(b"78")
    teacher = torch.zeros(1, 1, 6)
    other = ByteVocab(token_bytes=(b"4", b"45", b"456", b"457", b"7", b"79"), ends=frozenset())
    with pytest.raises(ValueError, match=r"pass batch= .* and teacher_forward="):
        teacher_path_logprobs(frames, torch.zeros(1, 1, 6), teacher, student_vocab=DIGITS, teacher_vocab=other)
    with pytest.raises(ValueError, match="depth must be at least 1, got 0"):
        teacher_path_logprobs(frames, teacher, teacher, student_vocab=DIGITS, teacher_vocab=DIGITS, depth=0)
    with pytest.raises(ValueError, match=r"mask_dtype must be a floating dtype or torch\.bool"):
        teacher_path_logprobs(
            frames, teacher, teacher, student_vocab=DIGITS, teacher_vocab=DIGITS, mask_dtype=torch.int64
        )
    with pytest.raises(AlignmentError, match="teacher_logits must be"):
        teacher_path_logprobs(frames, teacher, teacher[:, :0], student_vocab=DIGITS, teacher_vocab=DIGITS)
    with pytest.raises(TypeError, match="student_logits must have a floating-point dtype"):
        teacher_path_logprobs(frames, teacher.long(), teacher, student_vocab=DIGITS, teacher_vocab=DIGITS)


def test_a_teacher_forward_of_the_wrong_shape_is_refused() -> None:
    teacher = ByteVocab(token_bytes=tuple(c.encode() for c in CHARS), ends=frozenset({6}))
    input_ids = torch.tensor([[0, 4, 5]])
    frames = one_frame((b"",), [0], b"7")
    with pytest.raises(AlignmentError, match=r"teacher_forward must return \(1, 4\) \+ \(W',\) logits"):
        table_path(
            frames, input_ids, teacher, table_forward, teacher_forward=lambda inputs: table_forward(inputs)[:, :3]
        )


def test_restrict_records_the_ids_of_the_units() -> None:
    vocab = ByteVocab(token_bytes=(b"a", b"b", b"c", b"d"), ends=frozenset({3}))
    once = vocab.restrict([3, 1, 2])
    assert once.token_ids == (3, 1, 2) and once.ends == frozenset({0})
    assert once.restrict([2, 0]).token_ids == (2, 3)  # ids of the first vocabulary, not of the restricted one
    assert vocab.token_ids is None
    with pytest.raises(AlignmentError, match=r"token_ids must give one id per unit \(2\), got 1"):
        ByteVocab(token_bytes=(b"a", b"b"), ends=frozenset(), token_ids=(0,))


def test_a_teacher_path_checks_its_shapes_and_freezes_its_entries() -> None:
    path = teacher_path_logprobs(
        one_token(b"78"),
        torch.zeros(1, 1, 6),
        torch.tensor([[[0.0, 0.0, 4.0, 1.0, 0.0, 0.0]]]),
        student_vocab=DIGITS,
        teacher_vocab=DIGITS,
    )
    assert not path.entries.flags.writeable
    with pytest.raises(ValueError, match=r"a TeacherPath of 1 nodes needs \(N, 258\)"):
        TeacherPath(
            student=path.student,
            teacher=path.teacher,
            weights=path.weights,
            entries=np.zeros(1, np.int64),
            nodes=(b"4",),
        )
