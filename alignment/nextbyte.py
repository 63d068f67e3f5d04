r"""Next-byte distributions: compare two models byte by byte, whatever their vocabularies (numpy + torch).

A model's next-token distribution at a frame is also a distribution over the next *byte*: the mass of the tokens
whose bytes begin with it. Inside a token, after the model has read part of it, the same distribution restricted
to the tokens that begin with the bytes read so far gives the byte after those. So at every byte of a completion
both models have a next-byte distribution conditioned on the same text, whatever their tokenizers. Comparing them
there needs no shared vocabulary and leaves no byte without a teacher: Llama 3's ``482`` against Qwen3's ``4 8 2``,
or GPT-2's `` 482`` against Mistral's ``▁4 8 2``, are compared at each of their bytes, each with its full
distribution.

.. math::
    P(b \mid \text{frame}, u) = \frac{\sum_{v:\ \mathrm{bytes}(v) \text{ begins with } u\,b} P(v)}
    {\sum_{v:\ \mathrm{bytes}(v) \text{ begins with } u \text{ and is longer}} P(v)}

where :math:`u` are the bytes of the frame's token read so far. At a token boundary (:math:`u` empty) this is exact,
and the end-of-turn and EOS tokens form one more class, :data:`END`. Inside a token it leaves out the paths that end
a token exactly after :math:`u` and go on with another one (the model has no frame there to say how).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from alignment._checks import check_floating, check_in_range, upcast
from alignment._tokenizer import FastTokenizer, tokenizer_info
from alignment.errors import AlignmentError
from alignment.vocab import end_of_turn_id

__all__ = ["END", "ByteVocab", "byte_vocab", "next_byte_logprobs"]

END = 256  #: the class of the tokens that end the turn (end of turn, EOS), next to the 256 byte values
_DROPPED = 257  # units that cannot come next after the bytes read: left out, the rest renormalised


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ByteVocab:
    """The bytes of each output unit of one model, for :func:`next_byte_logprobs`.

    Attributes:
        token_bytes: the bytes of each unit (index = logit column); ``None`` for a control token that is never
            text and does not end the turn (such units take no part).
        ends: the units that end the turn (end of turn and EOS): class :data:`END` at a token boundary.
    """

    token_bytes: tuple[bytes | None, ...]
    ends: frozenset[int]
    _table: np.ndarray = field(init=False, repr=False)
    _lengths: np.ndarray = field(init=False, repr=False)
    _classes: dict[bytes, torch.Tensor] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        width = max((len(b) for b in self.token_bytes if b is not None), default=1)  # at least one column
        table = np.zeros((len(self.token_bytes), width), dtype=np.int16)
        lengths = np.full(len(self.token_bytes), -1, dtype=np.int64)
        for unit, piece in enumerate(self.token_bytes):
            if piece is not None and unit not in self.ends:
                table[unit, : len(piece)] = np.frombuffer(piece, dtype=np.uint8)
                lengths[unit] = len(piece)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_lengths", lengths)
        object.__setattr__(self, "_classes", {})

    def restrict(self, ids: Sequence[int] | np.ndarray) -> ByteVocab:
        """The same vocabulary seen through an output layer that covers only ``ids`` (unit ``i`` is ``ids[i]``)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if any(not 0 <= i < len(self.token_bytes) for i in ids):
            raise AlignmentError(f"ids must lie in [0, {len(self.token_bytes)}), got {min(ids)}..{max(ids)}")
        return ByteVocab(
            token_bytes=tuple(self.token_bytes[i] for i in ids),
            ends=frozenset(unit for unit, i in enumerate(ids) if i in self.ends),
        )

    def classes(self, prefix: bytes) -> torch.Tensor:
        """``(V,)`` int64 class of each unit after the bytes ``prefix`` of a token were read: its next byte
        (0..255), :data:`END` for a turn-ending unit at a boundary, else 257 (cannot come next). Cached."""
        if prefix not in self._classes:
            depth = len(prefix)
            follows = self._lengths > depth
            if depth:
                follows &= (self._table[:, :depth] == np.frombuffer(prefix, dtype=np.uint8)).all(axis=1)
            classes = np.where(follows, self._table[:, min(depth, self._table.shape[1] - 1)], _DROPPED)
            if not depth:
                classes[list(self.ends)] = END
            self._classes[prefix] = torch.from_numpy(classes.astype(np.int64))
        return self._classes[prefix]


def byte_vocab(tokenizer: FastTokenizer) -> ByteVocab:
    """The :class:`ByteVocab` of a Hugging Face fast tokenizer: exact bytes of every entry (byte-level ``Ġ``,
    SentencePiece ``▁`` and ``<0xNN>``); its end-of-turn and EOS tokens end the turn; other control tokens
    take no part.

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> vocab = byte_vocab(load_tokenizer("smollm2"))
        >>> vocab.token_bytes[28], vocab.token_bytes[2], sorted(vocab.ends)  # 2 is <|im_end|>
        (b',', b'<|im_end|>', [2])
    """
    info = tokenizer_info(tokenizer)
    ends = frozenset(i for i in (end_of_turn_id(tokenizer), info.eos_id) if i is not None)
    pieces = tuple(None if info.is_control[i] and i not in ends else piece for i, piece in enumerate(info.token_bytes))
    return ByteVocab(token_bytes=pieces, ends=ends)


def next_byte_logprobs(
    logits: torch.Tensor, vocab: ByteVocab, prefixes: Sequence[bytes], *, temperature: float = 1.0
) -> torch.Tensor:
    r"""Each row's distribution over the next byte (and :data:`END`), after reading ``prefixes[i]`` of a token.

    Args:
        logits: ``(N, V')`` float next-token logits, one row per byte position, ``V' >= V`` (extra columns of a
            padded embedding take no part).
        vocab: the :class:`ByteVocab` of the model (restricted to its output units if the layer is trimmed).
        prefixes: ``N`` byte strings, the bytes of the current token read before the position (``b""`` at a
            token boundary).
        temperature: :math:`\tau > 0` dividing the logits.

    Returns:
        ``(N, 257)`` log-probabilities over the byte values and :data:`END` (float32, float64 for float64
        logits), normalised over the units that can come next; classes with no mass are floored at the dtype's
        smallest normal number. Feed to :func:`~alignment.generalized_jsd` with ``temperature=1``.

    Raises:
        AlignmentError: the logits are narrower than the vocabulary, ``prefixes`` has the wrong length, a prefix
            begins no unit (no token could have been read that way), or ``temperature`` is not positive.
        TypeError: the logits are not floating point.

    Examples:
        >>> vocab = ByteVocab(token_bytes=(b"4", b"48", b"5", b"482"), ends=frozenset())
        >>> probs = next_byte_logprobs(torch.zeros(2, 4), vocab, [b"", b"4"]).exp()
        >>> probs[0, [ord("4"), ord("5")]], probs[1, [ord("8")]]
        (tensor([0.7500, 0.2500]), tensor([1.]))
    """
    check_floating("logits", logits)
    check_in_range("temperature", temperature, low=0.0, high=math.inf, low_open=True, high_open=True)
    width = len(vocab.token_bytes)
    if logits.ndim != 2 or logits.shape[1] < width:
        raise AlignmentError(f"logits must have shape (N, V') with V' >= {width}, got {tuple(logits.shape)}")
    if len(prefixes) != logits.shape[0]:
        raise AlignmentError(f"prefixes must have one entry per row ({logits.shape[0]}), got {len(prefixes)}")
    probs = torch.softmax(upcast(logits) / temperature, dim=-1)[:, :width]
    rows_of: dict[bytes, list[int]] = {}
    for row, prefix in enumerate(prefixes):
        rows_of.setdefault(bytes(prefix), []).append(row)
    order, parts = [], []
    for prefix, rows in rows_of.items():  # one vectorised pass per distinct prefix, not per row
        classes = vocab.classes(prefix)
        if bool((classes == _DROPPED).all()):
            raise AlignmentError(f"no unit of the vocabulary begins with the prefix {prefix!r} and goes on")
        index = torch.tensor(rows, device=probs.device)
        empty = probs.new_zeros((len(rows), _DROPPED + 1))
        parts.append(empty.index_add(-1, classes.to(probs.device), probs[index])[:, :_DROPPED])
        order.extend(rows)
    if not parts:
        return probs.new_zeros((0, _DROPPED))
    mass = torch.cat(parts)[torch.argsort(torch.tensor(order, device=probs.device))]
    tiny = torch.finfo(mass.dtype).tiny  # a row whose units that go on all underflowed stays finite, not NaN
    return torch.log((mass / mass.sum(dim=-1, keepdim=True).clamp_min(tiny)).clamp_min(tiny))


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ByteFrames:
    """Where to read each model's next-byte distribution at every compared byte of a batch of completions.

    One entry per byte of the content both sides hold (and one for the end of the turn, class :data:`END`, where
    both closed it): the student's completion frame that predicts the token holding the byte, and the bytes of
    that token read before it; the same for the teacher's position. Built by
    :func:`~alignment.prepare_teacher_batch` with ``byte_frames=True``.

    Attributes:
        rows: ``(P,)`` int64 example of each entry.
        student_frames: ``(P,)`` int64 completion frame (index into the student's ``(B, T, V)`` frame logits).
        student_prefixes: ``P`` byte strings: the student token's bytes read before this byte.
        teacher_positions: ``(P,)`` int64 teacher position (index into the teacher's ``(B, S, W)`` logits).
        teacher_prefixes: ``P`` byte strings: the teacher token's bytes read before this byte.
        targets: ``(P,)`` int64 the byte that comes (0..255), or :data:`END`.
    """

    rows: np.ndarray
    student_frames: np.ndarray
    student_prefixes: tuple[bytes, ...]
    teacher_positions: np.ndarray
    teacher_prefixes: tuple[bytes, ...]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


def _side(
    spans: np.ndarray, pieces: Sequence[bytes], positions: np.ndarray, text: bytes
) -> tuple[np.ndarray, list[bytes], np.ndarray]:
    """For byte ``positions`` of one side's ``text``: the token holding each, its bytes read before it, and
    whether the token's own bytes spell the text there (a normalising tokenizer may not)."""
    tokens = np.searchsorted(spans[:, 1], positions, side="right")
    prefixes, spelled = [], np.zeros(len(positions), dtype=np.bool_)
    for n, (token, position) in enumerate(zip(tokens.tolist(), positions.tolist(), strict=True)):
        piece = pieces[token]
        read = len(piece) - (int(spans[token, 1]) - position)
        prefixes.append(piece[: max(read, 0)])
        spelled[n] = 0 <= read < len(piece) and piece[read] == text[position]
    return tokens, prefixes, spelled


Frames = tuple[np.ndarray, list[bytes], np.ndarray, list[bytes], np.ndarray]


def _row_frames(
    student: tuple[np.ndarray, Sequence[bytes], bytes, int],
    teacher: tuple[np.ndarray, Sequence[bytes], bytes, int],
    length: int,
    *,
    end: tuple[int, int] | None,
) -> Frames:
    """Byte frames of one example. Each side is ``(token byte spans, token bytes, text, content start)``; the
    content is ``length`` bytes at each side's start, equal on both. The student's tokens are its completion
    frames; the teacher's token ``j`` is predicted at position ``j - 1``. ``end``: the closing token of each
    side, when both closed the turn right after the content."""
    (s_spans, s_pieces, s_text, s_start), (t_spans, t_pieces, t_text, t_start) = student, teacher
    if s_text[s_start : s_start + length] != t_text[t_start : t_start + length]:
        raise AlignmentError("student and teacher content differ where they should be equal; please report this")
    offsets = np.arange(length, dtype=np.int64)
    s_tokens, s_prefixes, s_ok = _side(s_spans, s_pieces, s_start + offsets, s_text)
    t_tokens, t_prefixes, t_ok = _side(t_spans, t_pieces, t_start + offsets, t_text)
    keep = s_ok & t_ok & (t_tokens >= 1)
    targets = np.frombuffer(s_text, dtype=np.uint8)[s_start : s_start + length].astype(np.int64)[keep]
    s_frames, t_positions = s_tokens[keep], t_tokens[keep] - 1
    s_prefixes = [p for p, k in zip(s_prefixes, keep.tolist(), strict=True) if k]
    t_prefixes = [p for p, k in zip(t_prefixes, keep.tolist(), strict=True) if k]
    if end is not None:
        s_frames, t_positions = np.r_[s_frames, end[0]], np.r_[t_positions, end[1] - 1]
        s_prefixes, t_prefixes, targets = [*s_prefixes, b""], [*t_prefixes, b""], np.r_[targets, END]
    return s_frames.astype(np.int64), s_prefixes, t_positions.astype(np.int64), t_prefixes, targets.astype(np.int64)


def _empty_frames() -> Frames:
    nothing = np.zeros(0, dtype=np.int64)
    return nothing, [], nothing, [], nothing


def _collate_frames(rows: Sequence[Frames]) -> ByteFrames:
    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, dtype=np.int64)

    return ByteFrames(
        rows=cat([np.full(len(r[4]), b, dtype=np.int64) for b, r in enumerate(rows)]),
        student_frames=cat([r[0] for r in rows]),
        student_prefixes=tuple(p for r in rows for p in r[1]),
        teacher_positions=cat([r[2] for r in rows]),
        teacher_prefixes=tuple(p for r in rows for p in r[3]),
        targets=cat([r[4] for r in rows]),
    )
