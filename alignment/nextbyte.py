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

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from alignment._checks import check_floating, check_in_range, upcast
from alignment._tokenizer import FastTokenizer, tokenizer_info
from alignment.errors import AlignmentError
from alignment.losses import _default_chunk
from alignment.vocab import _closing_ids, end_of_turn_id

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
        other_ends: the units of ``ends`` that the model's chat template does not close a turn with (Llama 3's
            ``<|end_of_text|>`` beside ``<|eot_id|>``). With ``stop=True`` (the student's side of
            :func:`~alignment.byte_logprobs`) they are :data:`STOP` at a boundary, a class no teacher puts mass on
            there, so that a student learns to close its turns as its template does rather than with whichever
            closing token; elsewhere they are :data:`END`.
        token_ids: the tokenizer id of each unit, where the output layer covers only some tokens (set by
            :meth:`restrict`); ``None``: unit ``i`` is token ``i``. :func:`~alignment.teacher_path_logprobs` feeds
            the teacher the tokens it picks by these ids.
    """

    token_bytes: tuple[bytes | None, ...]
    ends: frozenset[int]
    other_ends: frozenset[int] = frozenset()
    token_ids: tuple[int, ...] | None = None
    _table: np.ndarray = field(init=False, repr=False)
    _lengths: np.ndarray = field(init=False, repr=False)
    _members: dict[tuple[bytes, bool, str], tuple[torch.Tensor | None, torch.Tensor]] = field(init=False, repr=False)
    _folds: dict[bytes, torch.Tensor] = field(init=False, repr=False)
    _whole: dict[tuple[bytes, bool, str], torch.Tensor] = field(init=False, repr=False)
    _sorted: tuple[list[bytes], np.ndarray] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.other_ends <= self.ends:
            raise AlignmentError(
                f"other_ends must be a subset of ends, got {sorted(self.other_ends - self.ends)} outside them"
            )
        if self.token_ids is not None and len(self.token_ids) != len(self.token_bytes):
            raise AlignmentError(
                f"token_ids must give one id per unit ({len(self.token_bytes)}), got {len(self.token_ids)}"
            )
        width = max((len(b) for b in self.token_bytes if b is not None), default=1)  # at least one column
        table = np.zeros((len(self.token_bytes), width), dtype=np.int16)
        lengths = np.full(len(self.token_bytes), -1, dtype=np.int64)
        for unit, piece in enumerate(self.token_bytes):
            if piece is not None and unit not in self.ends:
                table[unit, : len(piece)] = np.frombuffer(piece, dtype=np.uint8)
                lengths[unit] = len(piece)
        object.__setattr__(self, "_table", table)
        object.__setattr__(self, "_lengths", lengths)
        object.__setattr__(self, "_members", {})
        object.__setattr__(self, "_folds", {})
        object.__setattr__(self, "_whole", {})
        object.__setattr__(self, "_sorted", None)

    def restrict(self, ids: Sequence[int] | np.ndarray) -> ByteVocab:
        """The same vocabulary seen through an output layer that covers only ``ids`` (unit ``i`` is ``ids[i]``)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        if any(not 0 <= i < len(self.token_bytes) for i in ids):
            raise AlignmentError(f"ids must lie in [0, {len(self.token_bytes)}), got {min(ids)}..{max(ids)}")
        return ByteVocab(
            token_bytes=tuple(self.token_bytes[i] for i in ids),
            ends=frozenset(unit for unit, i in enumerate(ids) if i in self.ends),
            other_ends=frozenset(unit for unit, i in enumerate(ids) if i in self.other_ends),
            token_ids=tuple(ids if self.token_ids is None else (self.token_ids[i] for i in ids)),
        )

    def classes(self, prefix: bytes, *, stop: bool = False) -> torch.Tensor:
        """``(V,)`` int64 class of each unit after the bytes ``prefix`` of a token were read: its next byte
        (0..255), :data:`END` for a turn-ending unit at a boundary, with ``stop`` :data:`STOP` for a unit that is
        exactly ``prefix`` (not empty) or, at a boundary, one of ``other_ends``, else 258 (cannot come next)."""
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
            if stop:
                classes[list(self.other_ends)] = STOP
        elif stop:
            classes[begins & ~follows] = STOP
        return torch.from_numpy(classes.astype(np.int64))

    def members(
        self, prefix: bytes, *, stop: bool = False, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The units that take part after ``prefix`` and their :meth:`classes`, on ``device``: ``(ids, classes)``,
        int64, without the units that cannot come next. At a boundary (``prefix`` empty) nearly every unit takes
        part: ``ids`` is ``None`` and ``classes`` is the whole :meth:`classes` vector. Cached: inside a token
        only the few units that begin with ``prefix`` are kept, so the cache stays small however many prefixes a
        training run meets."""
        key = (prefix, stop, str(torch.device(device)))
        if key not in self._members:
            if prefix:
                ids, classes = self._begin_with(prefix, stop=stop)
                entry: tuple[torch.Tensor | None, torch.Tensor] = (
                    torch.from_numpy(ids).to(device),
                    torch.from_numpy(classes).to(device),
                )
            else:
                entry = (None, self._classes_on(prefix, stop=stop, device=device))
            self._members[key] = entry
        return self._members[key]

    def _classes_on(self, prefix: bytes, *, stop: bool, device: torch.device | str) -> torch.Tensor:
        """:meth:`classes` on ``device``, cached: read where a prefix has so many members that a pass over the
        whole row costs less than picking them one by one."""
        key = (prefix, stop, str(torch.device(device)))
        if key not in self._whole:
            self._whole[key] = self.classes(prefix, stop=stop).to(device)
        return self._whole[key]

    def _begin_with(self, prefix: bytes, *, stop: bool) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`members` of a non-empty ``prefix``, found by binary search among the units' sorted bytes (not by
        a pass over the vocabulary, which a large one would pay for every new prefix)."""
        found = self._sorted
        if found is None:
            text = [(piece, unit) for unit, piece in enumerate(self.token_bytes) if piece and unit not in self.ends]
            order = sorted(text)
            found = ([piece for piece, _ in order], np.array([unit for _, unit in order], dtype=np.int64))
            object.__setattr__(self, "_sorted", found)
        pieces, units = found
        low = bisect.bisect_left(pieces, prefix)
        above = prefix.rstrip(b"\xff")  # the least byte string after every one that begins with prefix
        high = bisect.bisect_left(pieces, above[:-1] + bytes([above[-1] + 1]), lo=low) if above else len(pieces)
        ids = np.sort(units[low:high])
        lengths = self._lengths[ids]
        keep = lengths >= len(prefix) + (0 if stop else 1)
        ids, lengths = ids[keep], lengths[keep]
        classes = np.where(lengths > len(prefix), self._table[ids, min(len(prefix), self._table.shape[1] - 1)], STOP)
        return ids, classes.astype(np.int64)

    def fold(self, prefix: bytes) -> torch.Tensor:
        """``(257,)`` int64: where each next byte (and :data:`END`) of another model goes among this vocabulary's
        ``stop=True`` classes after ``prefix``: a byte with which some unit goes on stays itself; any other byte,
        and the end of the turn, is :data:`STOP` (this model's token ends there). At a boundary (``prefix``
        empty) every class stays itself. Cached."""
        if prefix not in self._folds:
            fold = torch.arange(END + 1)
            if prefix:
                goes_on = torch.zeros(END + 1, dtype=torch.bool)
                _, classes = self.members(prefix)
                goes_on[classes[classes < END]] = True
                fold[~goes_on] = STOP
            self._folds[prefix] = fold
        return self._folds[prefix]


def byte_vocab(tokenizer: FastTokenizer) -> ByteVocab:
    """The :class:`ByteVocab` of a Hugging Face fast tokenizer: exact bytes of every entry (byte-level ``Ġ``,
    SentencePiece ``▁`` and ``<0xNN>``); its end-of-turn and EOS tokens end the turn (an EOS that its chat
    template does not close turns with is one of :attr:`ByteVocab.other_ends`); other control tokens take no part.

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> vocab = byte_vocab(load_tokenizer("smollm2"))
        >>> vocab.token_bytes[28], vocab.token_bytes[2], sorted(vocab.ends)  # 2 is <|im_end|>
        (b',', b'<|im_end|>', [2])
    """
    info = tokenizer_info(tokenizer)
    ends, own = _closing_ids(tokenizer), end_of_turn_id(tokenizer)
    pieces = tuple(None if info.is_control[i] and i not in ends else piece for i, piece in enumerate(info.token_bytes))
    return ByteVocab(token_bytes=pieces, ends=ends, other_ends=ends - {own} if own is not None else frozenset())


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
            there), and at a boundary :attr:`ByteVocab.other_ends`. For the student's side of
            :func:`byte_logprobs`.

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
    logits: torch.Tensor,
    vocab: ByteVocab,
    prefixes: Sequence[bytes],
    *,
    temperature: float,
    stop: bool,
    at: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The checks and the unnormalised sums of :func:`next_byte_logprobs`: ``(N, 257)`` (``(N, 258)`` with
    ``stop``) probability mass of each class. With ``at = (rows, positions)``, ``logits`` are ``(B, S, V')`` and
    entry ``i`` reads ``logits[rows[i], positions[i]]``, so that no ``(N, V')`` copy of the rows read is made."""
    check_floating("logits", logits)
    check_in_range("temperature", temperature, low=0.0, high=math.inf, low_open=True, high_open=True)
    units = len(vocab.token_bytes)
    if logits.ndim != (2 if at is None else 3) or logits.shape[-1] < units:
        shape = "(N, V')" if at is None else "(B, S, V')"
        raise AlignmentError(f"logits must have shape {shape} with V' >= {units}, got {tuple(logits.shape)}")
    count = logits.shape[0] if at is None else len(at[0])
    if len(prefixes) != count:
        raise AlignmentError(f"prefixes must have one entry per row ({count}), got {len(prefixes)}")
    distinct: dict[bytes, int] = {}
    which = [distinct.setdefault(bytes(prefix), len(distinct)) for prefix in prefixes]
    for prefix in distinct:
        if not _takes_part(vocab, prefix, stop=stop):
            raise AlignmentError(
                f"no unit of the vocabulary begins with the prefix {prefix!r}{'' if stop else ' and goes on'}"
            )
    plan = _plan(vocab, list(distinct), torch.tensor(which, dtype=torch.int64), stop=stop, device=logits.device)
    if at is None:
        rows = torch.zeros(count, dtype=torch.int64, device=logits.device)
        at = (rows, torch.arange(count, device=logits.device))
        logits = logits[None]
    width = STOP + 1 if stop else END + 1
    mass: torch.Tensor = _ClassMass.apply(logits, at[0], at[1], plan, width, temperature)  # type: ignore[no-untyped-call]
    return mass


def _takes_part(vocab: ByteVocab, prefix: bytes, *, stop: bool) -> bool:
    """Whether some unit of ``vocab`` can come next after ``prefix`` (or, with ``stop``, is exactly it)."""
    ids, classes = vocab.members(prefix, stop=stop)
    return bool((classes != _DROPPED).any()) if ids is None else bool(len(ids))


_DENSE = 16  # a prefix whose members are more than 1/16 of the units is read with a pass over the whole row
_PAIR_WIDTH = 16  # an (entry, unit) pair read one by one costs about as much memory as 16 logits of a chunk


@dataclass(frozen=True, slots=True)
class _Plan:
    """Which units each entry of :class:`_ClassMass` reads, as flat tensors.

    An entry at a token boundary reads every unit of its row, and so does an entry whose prefix begins more than
    1/16 of the units (after a space, about half of a vocabulary): those are *whole* reads, summed by a class
    vector over the row in the pass that normalises it. Every other entry reads only its prefix's members, picked
    one by one.

    Attributes:
        whole: the entries read whole.
        kinds: per entry of ``whole``, its row of ``tables``.
        tables: ``(K, V)`` the class of every unit after each prefix read whole (:meth:`ByteVocab.classes`).
        picked: the other entries.
        first: per entry of ``picked``, where its prefix's members begin in ``ids`` and ``classes``.
        count: per entry of ``picked``, how many members its prefix has.
        ids: the members (units) of every distinct prefix of ``picked``, one prefix after another.
        classes: the class of each of ``ids`` (its next byte, or :data:`STOP`).
    """

    whole: torch.Tensor
    kinds: torch.Tensor
    tables: torch.Tensor
    picked: torch.Tensor
    first: torch.Tensor
    count: torch.Tensor
    ids: torch.Tensor
    classes: torch.Tensor


def _plan(vocab: ByteVocab, distinct: list[bytes], which: torch.Tensor, *, stop: bool, device: torch.device) -> _Plan:
    """The :class:`_Plan` of entries whose prefixes are ``distinct[which[i]]``."""
    units = len(vocab.token_bytes)
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    tables: list[torch.Tensor] = []
    kind_of: list[int] = []
    ids, classes = [empty], [empty]
    for prefix in distinct:
        members, member_classes = vocab.members(prefix, stop=stop, device=device)
        if members is None or len(members) * _DENSE > units:
            kind_of.append(len(tables))
            tables.append(vocab._classes_on(prefix, stop=stop, device=device))
            members, member_classes = empty, empty
        else:
            kind_of.append(-1)
        ids.append(members)
        classes.append(member_classes)
    count = torch.tensor([len(members) for members in ids[1:]], dtype=torch.int64)
    first = torch.cumsum(count, 0) - count
    kinds = torch.tensor(kind_of, dtype=torch.int64)[which]
    whole = kinds >= 0
    picked = which[~whole]
    return _Plan(
        whole=torch.nonzero(whole).view(-1).to(device),
        kinds=kinds[whole].to(device),
        tables=torch.stack(tables) if tables else torch.zeros((0, units), dtype=torch.int64, device=device),
        picked=torch.nonzero(~whole).view(-1).to(device),
        first=first[picked].to(device),
        count=count[picked].to(device),
        ids=torch.cat(ids),
        classes=torch.cat(classes),
    )


class _ClassMass(torch.autograd.Function):
    r"""``(B, S, V')`` logits to ``(N, width)`` class masses: entry ``i`` sums the softmax of the row
    ``logits[rows[i], positions[i]]`` by the classes of its prefix; ``plan`` says which units each entry reads.

    Entries are bytes, several per token, and most read inside a token, where only the units that begin with the
    bytes read take part. So each row read is normalised once, a chunk of rows at a time (its log-sum-exp); the
    entries read whole (at a token boundary, or after a prefix most units begin with) sum their row's softmax by
    class within that pass, and the other entries read only their members' logits, all of them at once as flat
    (entry, member) pairs. The backward recomputes the same way and writes one gradient the size of the logits: no
    ``(N, V')`` tensor is ever made.

    With :math:`M_c = \sum_{v \in c} p_v` and incoming :math:`g_c = \partial L / \partial M_c` (``0`` for units
    that take no part): :math:`\partial L / \partial z_v = p_v\,(g_{c(v)} - \sum_c g_c M_c) / \tau`, summed over
    the entries that read the row.
    """

    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        rows: torch.Tensor,
        positions: torch.Tensor,
        plan: _Plan,
        width: int,
        temperature: float,
    ) -> torch.Tensor:
        dtype = torch.promote_types(logits.dtype, torch.float32)
        unique, inverse = torch.unique(rows * logits.shape[1] + positions, return_inverse=True)
        reads, kinds, which = _whole_reads(inverse, plan)
        lse = logits.new_empty(len(unique), dtype=dtype)
        mass = logits.new_zeros((len(reads), _DROPPED + 1), dtype=dtype)
        units = plan.tables.shape[1]
        for span, probs, chunk in _row_passes(logits, unique, reads, lse, temperature, fill=True):
            for kind, at in _by_kind(kinds, chunk):
                local = _rows_of(reads[at] - span.start, len(probs))
                mass[at] = mass.new_zeros((len(at), _DROPPED + 1)).index_add_(
                    -1, plan.tables[kind], probs[local, :units]
                )
        out = logits.new_zeros((len(rows), width), dtype=dtype)
        out[plan.whole] = mass[which, :width]
        for entries, pairs, _, classes, probs in _picked_reads(
            logits, rows, positions, inverse, lse, plan, temperature
        ):
            flat = probs.new_zeros(len(entries) * (_DROPPED + 1)).index_add_(0, pairs * (_DROPPED + 1) + classes, probs)
            out[entries] = flat.view(len(entries), _DROPPED + 1)[:, :width]
        ctx.save_for_backward(logits, rows, positions, out, unique, inverse, lse, reads, kinds, which)
        ctx.plan, ctx.temperature = plan, temperature
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        logits, rows, positions, out, unique, inverse, lse, reads, kinds, which = ctx.saved_tensors
        plan, temperature = ctx.plan, ctx.temperature
        incoming = grad_out.new_zeros((len(rows), _DROPPED + 1))  # the dropped class and past width: no gradient
        incoming[:, : out.shape[1]] = grad_out
        totals = lse.new_zeros(len(unique)).index_add_(0, inverse, (grad_out * out).sum(dim=-1))
        per_read = incoming.new_zeros((len(reads), _DROPPED + 1)).index_add_(0, which, incoming[plan.whole])
        grad = logits.new_zeros(logits.shape)
        flat = grad.view(-1, logits.shape[-1])
        units = plan.tables.shape[1]
        for span, probs, chunk in _row_passes(logits, unique, reads, lse, temperature, fill=False):
            # dL/dz_v = p_v (sum of g over the reads of the row, each at v's class - the row's total) / tau
            total = totals[span, None] / -temperature
            factor = total.expand(-1, units).clone()
            for kind, at in _by_kind(kinds, chunk):
                local = _rows_of(reads[at] - span.start, len(probs))  # distinct: one read per row and kind
                factor[local] += per_read[at].index_select(-1, plan.tables[kind]) / temperature
            probs[:, :units] *= factor
            probs[:, units:] *= total
            flat.index_copy_(0, unique[span], probs.to(grad.dtype))  # each row once: no sum needed
        for entries, pairs, ids, classes, probs in _picked_reads(
            logits, rows, positions, inverse, lse, plan, temperature
        ):
            entry = entries[pairs]
            per_class = incoming[entry, classes] / temperature
            key = rows[entry] * logits.shape[1] + positions[entry]
            flat.index_put_((key, ids), (probs * per_class).to(grad.dtype), accumulate=True)
        return grad, None, None, None, None, None


def _whole_reads(inverse: torch.Tensor, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct (row, kind) reads of the entries read whole, ordered by row: each read's row (an index into
    the distinct rows), its kind, and, per entry of ``plan.whole``, its read. Several entries often read one row
    with one table (a teacher's token boundary holds the byte after several student tokens): summed once."""
    kinds = len(plan.tables)
    reads, which = torch.unique(inverse[plan.whole] * kinds + plan.kinds, return_inverse=True)
    return reads // kinds, reads % kinds, which


def _row_passes(
    logits: torch.Tensor,
    unique: torch.Tensor,
    reads: torch.Tensor,
    lse: torch.Tensor,
    temperature: float,
    *,
    fill: bool,
) -> Iterator[tuple[slice, torch.Tensor, slice]]:
    """Each chunk of the rows read (``unique`` flat row keys, ``B * S`` based): its span of ``unique``, its rows'
    softmax at ``1 / temperature`` in ``lse``'s dtype (a fresh tensor), and its span of ``reads`` (the row of
    each whole read, ordered). With ``fill`` the rows' log-sum-exp is computed and written to ``lse``; without,
    it is read from there (the backward)."""
    rows_of = logits.view(-1, logits.shape[-1]) if logits.is_contiguous() else None
    chunk = _default_chunk(logits.shape[-1], logits.device)
    starts = list(range(0, len(unique), chunk))
    bounds = torch.searchsorted(reads, torch.tensor([*starts, len(unique)], device=logits.device)).tolist()
    for n, start in enumerate(starts):
        span = slice(start, start + chunk)
        keys = unique[span]
        if rows_of is not None:
            probs = rows_of.index_select(0, keys).to(lse.dtype)
        else:
            probs = logits[keys // logits.shape[1], keys % logits.shape[1]].to(lse.dtype)
        if temperature != 1.0:
            probs.div_(temperature)
        if fill:
            top = probs.amax(dim=-1, keepdim=True).nan_to_num_(neginf=0.0)  # a row of -inf: NaN, as softmax gives
            total = probs.sub_(top).exp_().sum(dim=-1, keepdim=True)
            lse[span] = (top + total.log()).view(-1)
            probs.div_(total)
        else:
            probs.sub_(lse[span, None]).exp_()
        yield span, probs, slice(bounds[n], bounds[n + 1])


def _rows_of(local: torch.Tensor, rows: int) -> torch.Tensor | slice:
    """``local`` (distinct, ascending rows of a chunk of ``rows``) as an index: all of them as a slice (a view, no
    copy), else itself."""
    return slice(None) if len(local) == rows else local


def _by_kind(kinds: torch.Tensor, chunk: slice) -> Iterator[tuple[int, torch.Tensor]]:
    """The whole reads of ``chunk`` grouped by kind: each kind and the indices of its reads."""
    here = kinds[chunk]
    if not len(here):
        return
    first = int(here[0])
    if bool((here == first).all()):  # the common case: a chunk of rows read at token boundaries only
        yield first, torch.arange(chunk.start, chunk.stop, device=kinds.device)
        return
    for kind in torch.unique(here).tolist():
        yield kind, torch.nonzero(here == kind).view(-1) + chunk.start


def _picked_reads(
    logits: torch.Tensor,
    rows: torch.Tensor,
    positions: torch.Tensor,
    inverse: torch.Tensor,
    lse: torch.Tensor,
    plan: _Plan,
    temperature: float,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The entries that read their members one by one, as flat (entry, member) pairs, a chunk of pairs at a time:
    the chunk's entries, each pair's entry (an index into them), unit and class, and the unit's probability
    (through the rows' log-sum-exp ``lse``). A pair holds about ten integers and floats while it is read, so a
    chunk holds a sixteenth as many pairs as a chunk of the losses holds logits, or a single entry."""
    budget = _default_chunk(_PAIR_WIDTH, logits.device)
    ends = torch.cumsum(plan.count, 0).tolist()
    start, done = 0, 0
    while start < len(ends):
        stop = max(bisect.bisect_right(ends, done + budget, lo=start), start + 1)
        count = plan.count[start:stop]
        pairs = torch.repeat_interleave(torch.arange(stop - start, device=logits.device), count)
        within = torch.arange(len(pairs), device=logits.device) - (torch.cumsum(count, 0) - count)[pairs]
        members = plan.first[start:stop][pairs] + within
        entries = plan.picked[start:stop]
        ids, classes = plan.ids[members], plan.classes[members]
        entry = entries[pairs]
        picked = logits[rows[entry], positions[entry], ids].to(lse.dtype)
        if temperature != 1.0:
            picked = picked / temperature
        yield entries, pairs, ids, classes, torch.exp(picked - lse[inverse[entry]])
        start, done = stop, ends[stop - 1]


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
    distinct: dict[bytes, int] = {}
    which = [distinct.setdefault(bytes(prefix), len(distinct)) for prefix in prefixes]
    table = torch.stack([vocab.fold(prefix) for prefix in distinct]) if distinct else torch.zeros((0, END + 1))
    index = table.to(logprobs.device, torch.int64)[torch.tensor(which, dtype=torch.int64, device=logprobs.device)]
    mass = logprobs.new_zeros((len(prefixes), STOP + 1), dtype=torch.promote_types(logprobs.dtype, torch.float32))
    return _normalised_log(mass.scatter_add(1, index, upcast(logprobs).exp()))
