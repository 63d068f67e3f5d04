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

That left-out mass is where a model decides how long its token is: Llama 3's ``9`` against ``901`` both begin with
``9``. So on the student's side (``stop=True``) the tokens that end exactly after :math:`u` form one more class,
:data:`STOP`, and the teacher's next byte is seen through the student's token (:func:`fold_next_bytes`): a byte
with which no student token goes on after :math:`u`, or the end of the turn, means the student's token stops there.
:func:`~alignment.byte_logprobs` does both for every entry of :class:`~alignment.ByteFrames`, which also asks, at the
last byte of each student token, whether the token stops there. On the teacher's side it can also read the left-out
paths one token deep (``branched=True``): the teacher's token that is exactly :math:`u`, read in its place, says
what comes after it (:meth:`TeacherBatch.branched_inputs <alignment.TeacherBatch>`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from alignment._checks import check_floating, check_in_range, upcast
from alignment._tokenizer import FastTokenizer, tokenizer_info
from alignment.errors import AlignmentError
from alignment.vocab import end_of_turn_id

__all__ = ["END", "STOP", "TEMPLATE", "ByteVocab", "byte_vocab", "fold_next_bytes", "next_byte_logprobs"]

END = 256  #: the class of the tokens that end the turn (end of turn, EOS), next to the 256 byte values
STOP = 257  #: with ``stop=True``: the tokens that end exactly after the bytes read (the token stops there)
TEMPLATE = -1  #: in :class:`~alignment.ByteFrames`, the teacher position of a byte the student's own template writes
_DROPPED = 258  # units that cannot come next after the bytes read: left out, the rest renormalised


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
    _classes: dict[tuple[bytes, bool], torch.Tensor] = field(init=False, repr=False)
    _folds: dict[bytes, torch.Tensor] = field(init=False, repr=False)

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
        object.__setattr__(self, "_folds", {})

    def restrict(self, ids: Sequence[int] | np.ndarray) -> ByteVocab:
        """The same vocabulary seen through an output layer that covers only ``ids`` (unit ``i`` is ``ids[i]``)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if any(not 0 <= i < len(self.token_bytes) for i in ids):
            raise AlignmentError(f"ids must lie in [0, {len(self.token_bytes)}), got {min(ids)}..{max(ids)}")
        return ByteVocab(
            token_bytes=tuple(self.token_bytes[i] for i in ids),
            ends=frozenset(unit for unit, i in enumerate(ids) if i in self.ends),
        )

    def classes(self, prefix: bytes, *, stop: bool = False) -> torch.Tensor:
        """``(V,)`` int64 class of each unit after the bytes ``prefix`` of a token were read: its next byte
        (0..255), :data:`END` for a turn-ending unit at a boundary, with ``stop`` :data:`STOP` for a unit that is
        exactly ``prefix`` (not empty), else 258 (cannot come next). Cached."""
        key = (prefix, stop)
        if key not in self._classes:
            depth = len(prefix)
            begins = self._lengths >= depth
            if depth > self._table.shape[1]:  # longer than any unit
                begins[:] = False
            elif depth:
                begins &= (self._table[:, :depth] == np.frombuffer(prefix, dtype=np.uint8)).all(axis=1)
            follows = begins & (self._lengths > depth)
            classes = np.where(follows, self._table[:, min(depth, self._table.shape[1] - 1)], _DROPPED)
            if not depth:
                classes[list(self.ends)] = END
            elif stop:
                classes[begins & ~follows] = STOP
            self._classes[key] = torch.from_numpy(classes.astype(np.int64))
        return self._classes[key]

    def fold(self, prefix: bytes) -> torch.Tensor:
        """``(257,)`` int64: where each next byte (and :data:`END`) of another model goes among this vocabulary's
        ``stop=True`` classes after ``prefix``: a byte with which some unit goes on stays itself; any other byte,
        and the end of the turn, is :data:`STOP` (this model's token ends there). At a boundary (``prefix``
        empty) every class stays itself. Cached."""
        if prefix not in self._folds:
            fold = torch.arange(END + 1)
            if prefix:
                goes_on = torch.zeros(END + 1, dtype=torch.bool)
                classes = self.classes(prefix)
                goes_on[classes[classes < END]] = True
                fold[~goes_on] = STOP
            self._folds[prefix] = fold
        return self._folds[prefix]


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
    logits: torch.Tensor, vocab: ByteVocab, prefixes: Sequence[bytes], *, temperature: float = 1.0, stop: bool = False
) -> torch.Tensor:
    r"""Each row's distribution over the next byte (and :data:`END`), after reading ``prefixes[i]`` of a token.

    Args:
        logits: ``(N, V')`` float next-token logits, one row per byte position, ``V' >= V`` (extra columns of a
            padded embedding take no part).
        vocab: the :class:`ByteVocab` of the model (restricted to its output units if the layer is trimmed).
        prefixes: ``N`` byte strings, the bytes of the current token read before the position (``b""`` at a
            token boundary).
        temperature: :math:`\tau > 0` dividing the logits.
        stop: also give the class :data:`STOP`: the units that are exactly the prefix read (the token stops
            there). For the student's side of :func:`byte_logprobs`.

    Returns:
        ``(N, 257)`` log-probabilities over the byte values and :data:`END` (``(N, 258)`` with :data:`STOP`;
        float32, float64 for float64 logits), normalised over the units that can come next (or stop); classes
        with no mass are floored at the dtype's smallest normal number. Feed to :func:`~alignment.generalized_jsd`
        with ``temperature=1``.

    Raises:
        AlignmentError: the logits are narrower than the vocabulary, ``prefixes`` has the wrong length, no unit
            begins with a prefix and goes on (or, with ``stop``, begins with it at all), or ``temperature`` is not
            positive.
        TypeError: the logits are not floating point.

    Examples:
        >>> vocab = ByteVocab(token_bytes=(b"4", b"48", b"5", b"482"), ends=frozenset())
        >>> probs = next_byte_logprobs(torch.zeros(2, 4), vocab, [b"", b"4"]).exp()
        >>> probs[0, [ord("4"), ord("5")]], probs[1, [ord("8")]]
        (tensor([0.7500, 0.2500]), tensor([1.]))
        >>> next_byte_logprobs(torch.zeros(1, 4), vocab, [b"4"], stop=True).exp()[0, [ord("8"), STOP]]
        tensor([0.6667, 0.3333])
    """
    return _normalised_log(_next_byte_mass(logits, vocab, prefixes, temperature=temperature, stop=stop))


def _next_byte_mass(
    logits: torch.Tensor, vocab: ByteVocab, prefixes: Sequence[bytes], *, temperature: float, stop: bool
) -> torch.Tensor:
    """The checks and the unnormalised sums of :func:`next_byte_logprobs`: ``(N, 257)`` (``(N, 258)`` with
    ``stop``) probability mass of each class."""
    check_floating("logits", logits)
    check_in_range("temperature", temperature, low=0.0, high=math.inf, low_open=True, high_open=True)
    units = len(vocab.token_bytes)
    if logits.ndim != 2 or logits.shape[1] < units:
        raise AlignmentError(f"logits must have shape (N, V') with V' >= {units}, got {tuple(logits.shape)}")
    if len(prefixes) != logits.shape[0]:
        raise AlignmentError(f"prefixes must have one entry per row ({logits.shape[0]}), got {len(prefixes)}")
    probs = torch.softmax(upcast(logits) / temperature, dim=-1)[:, :units]
    width = STOP + 1 if stop else END + 1
    for prefix in set(prefixes):
        if bool((vocab.classes(bytes(prefix), stop=stop) == _DROPPED).all()):
            raise AlignmentError(
                f"no unit of the vocabulary begins with the prefix {prefix!r}{'' if stop else ' and goes on'}"
            )
    return _by_prefix(probs, prefixes, lambda prefix: vocab.classes(prefix, stop=stop), width)


def _by_prefix(
    probs: torch.Tensor, prefixes: Sequence[bytes], classes_of: Callable[[bytes], torch.Tensor], width: int
) -> torch.Tensor:
    """``(N, width)``: each row's mass summed by class, ``classes_of(prefix)`` giving every column's class (classes
    past ``width`` are dropped). One vectorised pass per distinct prefix, not per row."""
    rows_of: dict[bytes, list[int]] = {}
    for row, prefix in enumerate(prefixes):
        rows_of.setdefault(bytes(prefix), []).append(row)
    order, parts = [], []
    for prefix, rows in rows_of.items():
        index = torch.tensor(rows, device=probs.device)
        empty = probs.new_zeros((len(rows), _DROPPED + 1))
        parts.append(empty.index_add(-1, classes_of(prefix).to(probs.device), probs[index])[:, :width])
        order.extend(rows)
    if not parts:
        return probs.new_zeros((0, width))
    return torch.cat(parts)[torch.argsort(torch.tensor(order, device=probs.device))]


def _normalised_log(mass: torch.Tensor) -> torch.Tensor:
    tiny = torch.finfo(mass.dtype).tiny  # a row whose units all underflowed stays finite, not NaN
    return torch.log((mass / mass.sum(dim=-1, keepdim=True).clamp_min(tiny)).clamp_min(tiny))


def fold_next_bytes(logprobs: torch.Tensor, vocab: ByteVocab, prefixes: Sequence[bytes]) -> torch.Tensor:
    """Another model's next-byte distributions seen through this vocabulary's tokens after ``prefixes``.

    After the student has read ``u`` of its token, the text can go on inside that token (a byte with which one of
    its units goes on) or the token stops there. So each teacher row is folded into the student's ``stop=True``
    classes (:meth:`ByteVocab.fold`): a byte with which no student unit goes on after ``u``, and the end of the
    turn, become :data:`STOP`. At a boundary (``u`` empty) nothing is folded.

    Args:
        logprobs: ``(N, 257)`` log-probabilities from :func:`next_byte_logprobs` (the teacher's).
        vocab: the student's :class:`ByteVocab`.
        prefixes: ``N`` byte strings, the student token's bytes read before each row's byte.

    Returns:
        ``(N, 258)`` log-probabilities, comparable with ``next_byte_logprobs(..., stop=True)`` of the student.

    Raises:
        AlignmentError: ``logprobs`` is not ``(N, 257)`` or ``prefixes`` has the wrong length.
        TypeError: ``logprobs`` is not floating point.

    Examples:
        >>> vocab = ByteVocab(token_bytes=(b"9", b"90", b"901"), ends=frozenset())
        >>> teacher = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))  # after "9": "0", "5" or the end of the turn
        >>> wide = torch.full((1, 257), -1e4).index_copy(1, torch.tensor([ord("0"), ord("5"), END]), teacher)
        >>> fold_next_bytes(wide, vocab, [b"9"]).exp()[0, [ord("0"), ord("5"), END, STOP]].round(decimals=4)
        tensor([0.7000, 0.0000, 0.0000, 0.3000])
    """
    check_floating("logprobs", logprobs)
    if logprobs.ndim != 2 or logprobs.shape[1] != END + 1:
        raise AlignmentError(f"logprobs must have shape (N, {END + 1}), got {tuple(logprobs.shape)}")
    if len(prefixes) != logprobs.shape[0]:
        raise AlignmentError(f"prefixes must have one entry per row ({logprobs.shape[0]}), got {len(prefixes)}")
    return _normalised_log(_by_prefix(logprobs.exp(), prefixes, vocab.fold, STOP + 1))
