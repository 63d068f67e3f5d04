"""Byte frames: where each model's next-byte distribution is read at every compared byte of a batch (numpy + torch).

:func:`~alignment.prepare_teacher_batch` builds them (``byte_frames=True``) from the two sides' token byte spans;
:func:`byte_logprobs` gathers both models' distributions there (:mod:`alignment.nextbyte`), ready for
:func:`~alignment.generalized_jsd`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alignment._checks import check_floating
from alignment.errors import AlignmentError
from alignment.nextbyte import (
    END,
    STOP,
    TEMPLATE,
    ByteVocab,
    _next_byte_mass,
    _normalised_log,
    _takes_part,
    fold_next_bytes,
)

__all__ = ["ByteFrames", "byte_logprobs", "prefix_weights"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ByteFrames:
    """Where to read each model's next-byte distribution at every compared byte of a batch of completions.

    One entry per byte of the content both sides hold (and one for the end of the turn, class :data:`END`, where
    both closed it): the student's completion frame that predicts the token holding the byte, and the bytes of
    that token read before it; the same for the teacher's position. Then one more entry after the last byte of
    each student token that the text goes on from (``token_ends``): the student's frame with its whole token read,
    against the teacher's distribution of the byte that follows; there the student's token either goes on or
    stops (:data:`STOP`). Built by :func:`~alignment.prepare_teacher_batch` with ``byte_frames=True``; compare
    with :func:`byte_logprobs`.

    Attributes:
        rows: ``(P,)`` int64 example of each entry.
        student_frames: ``(P,)`` int64 completion frame (index into the student's ``(B, T, V)`` frame logits).
        student_prefixes: ``P`` byte strings: the student token's bytes read before this byte.
        teacher_positions: ``(P,)`` int64 teacher position (index into the teacher's ``(B, S, W)`` logits).
        teacher_prefixes: ``P`` byte strings: the teacher token's bytes read before this byte.
        targets: ``(P,)`` int64 the byte that comes (0..255), or :data:`END`.
        token_ends: ``(P,)`` bool: the entry follows the last byte of the student's token (its prefix is the
            whole token), so the byte that comes is the next token's if the student's token stops.
        teacher_branches: ``(P,)`` int64, or ``None`` for frames built without them. Where the teacher reads
            inside its token and one of its tokens is exactly the bytes read so far (GPT-2's `` 62`` inside
            `` 627``), the position, in :meth:`TeacherBatch.branched_inputs <alignment.TeacherBatch>`, of that
            shorter token read in place of the longer one: its logits say what the teacher writes after it
            (``byte_logprobs(..., branched=True)``); ``-1`` elsewhere.
    """

    rows: np.ndarray
    student_frames: np.ndarray
    student_prefixes: tuple[bytes, ...]
    teacher_positions: np.ndarray
    teacher_prefixes: tuple[bytes, ...]
    targets: np.ndarray
    token_ends: np.ndarray
    teacher_branches: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def select(self, keep: np.ndarray | torch.Tensor) -> ByteFrames:
        """The entries where the ``(P,)`` bool ``keep`` is true (e.g. leave out what a trimmed head cannot read)."""
        keep = np.asarray(keep, dtype=np.bool_)
        if keep.shape != (len(self),):
            raise AlignmentError(f"keep must be a ({len(self)},) bool array, got shape {keep.shape}")
        return ByteFrames(
            rows=self.rows[keep],
            student_frames=self.student_frames[keep],
            student_prefixes=tuple(p for p, k in zip(self.student_prefixes, keep.tolist(), strict=True) if k),
            teacher_positions=self.teacher_positions[keep],
            teacher_prefixes=tuple(p for p, k in zip(self.teacher_prefixes, keep.tolist(), strict=True) if k),
            targets=self.targets[keep],
            token_ends=self.token_ends[keep],
            teacher_branches=None if self.teacher_branches is None else self.teacher_branches[keep],
        )


def byte_logprobs(
    frames: ByteFrames,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    student_vocab: ByteVocab,
    teacher_vocab: ByteVocab,
    temperature: float = 1.0,
    branched: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The student's and the teacher's next-byte distributions at every entry of ``frames``, ready to compare.

    The student's side has the class :data:`STOP` (``next_byte_logprobs(..., stop=True)``), and the teacher's is
    folded into the student's classes (:func:`fold_next_bytes`), so the loss also fixes where the student's tokens
    end: Llama 3's ``9`` against ``901``, which the bytes alone leave free. At an entry of the student's own
    template text (teacher position :data:`~alignment.nextbyte.TEMPLATE`) the teacher's side is sure of the byte.

    Inside one of its tokens, after the bytes :math:`u`, the teacher's next byte leaves out the paths that end a
    token exactly after :math:`u` (:mod:`alignment.nextbyte`). With ``branched=True`` and the logits of
    :meth:`TeacherBatch.branched_inputs <alignment.TeacherBatch>`, it does not: where a teacher token is exactly
    :math:`u`, its probability goes to the next byte the teacher writes after it, read at the branch
    (:attr:`ByteFrames.teacher_branches`):

    .. math::
        P(b \mid u) \propto \sum_{v \text{ begins with } u\,b} P(v) + P(u)\,P_{\text{after } u}(b)

    On the student's own samples, text the teacher would not write, that left-out mass is often where its belief
    is: GPT-2 reading `` 627`` may mean `` 62`` and then something else than ``7``.

    Args:
        frames: :attr:`TeacherBatch.byte_frames <alignment.TeacherBatch>` of the batch.
        student_logits: ``(B, T, V')`` the student's completion-frame logits.
        teacher_logits: ``(B, S, W')`` the teacher's logits over ``TeacherBatch.input_ids``.
        student_vocab: the student's :class:`ByteVocab` (restricted if its output layer is trimmed).
        teacher_vocab: the teacher's.
        temperature: :math:`\tau > 0` dividing both sides' logits.
        branched: ``teacher_logits`` are the teacher's outputs over ``TeacherBatch.branched_inputs()`` (``(B, S + E,
            W')``): read the branches too. With ``False`` (outputs over ``input_ids`` alone) the paths that end a
            teacher token inside are left out, as in :func:`next_byte_logprobs`.

    Returns:
        ``(student, teacher)``: ``(P, 258)`` log-probabilities each; ``generalized_jsd(student, teacher, beta=...)``
        is the mean over the compared bytes.

    Raises:
        AlignmentError: the logits are not ``(B, T, V')`` and ``(B, S, W')`` with room for every frame (with
            ``branched``, for every branch), ``branched`` frames have no branches, or as :func:`next_byte_logprobs`.
        TypeError: the logits are not floating point.
    """
    if branched and frames.teacher_branches is None:
        raise AlignmentError(
            "branched=True needs frames with teacher_branches: build them with prepare_teacher_batch(..., "
            "byte_frames=True) and score TeacherBatch.branched_inputs(), or pass branched=False"
        )
    branches = frames.teacher_branches if branched else None
    check_frame_logits(frames, student_logits, teacher_logits, teacher_index=branches)
    device = student_logits.device
    student = _normalised_log(
        _next_byte_mass(
            student_logits,
            student_vocab,
            frames.student_prefixes,
            temperature=temperature,
            stop=True,
            at=(torch.from_numpy(frames.rows).to(device), torch.from_numpy(frames.student_frames).to(device)),
        )
    )
    read = frames.teacher_positions != TEMPLATE
    reading = torch.from_numpy(np.flatnonzero(read)).to(teacher_logits.device)
    teacher = torch.full(
        (len(frames), END + 1), math.log(torch.finfo(student.dtype).tiny), dtype=student.dtype, device=student.device
    )
    surely = torch.from_numpy(np.flatnonzero(~read)).to(student.device)  # the template's byte, for certain
    teacher[surely, torch.from_numpy(frames.targets[~read]).to(student.device)] = 0.0
    at = torch.from_numpy(frames.rows[read]).to(teacher_logits.device)
    positions = torch.from_numpy(frames.teacher_positions[read]).to(teacher_logits.device)
    prefixes = [p for p, r in zip(frames.teacher_prefixes, read.tolist(), strict=True) if r]
    if branches is None:
        mass = _next_byte_mass(
            teacher_logits, teacher_vocab, prefixes, temperature=temperature, stop=False, at=(at, positions)
        )
        read_bytes = _normalised_log(mass)
    else:
        read_bytes = _branched_next_bytes(
            teacher_logits, at, positions, branches[read], teacher_vocab, prefixes, temperature
        )
    teacher[reading.to(student.device)] = read_bytes.to(student)
    return student, fold_next_bytes(teacher, student_vocab, frames.student_prefixes)


def check_frame_logits(
    frames: ByteFrames,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    teacher_index: np.ndarray | None = None,
) -> None:
    """Raise unless both sides' logits are floating ``(B, T, V')`` and ``(B, S, W')`` with room for every entry of
    ``frames`` (on the teacher's side, every index of ``teacher_index``, by default its positions)."""
    for name, logits, index in (
        ("student_logits", student_logits, frames.student_frames),
        ("teacher_logits", teacher_logits, frames.teacher_positions if teacher_index is None else teacher_index),
    ):
        check_floating(name, logits)
        if logits.ndim != 3 or (
            len(frames) and (frames.rows.max() >= logits.shape[0] or index.max() >= logits.shape[1])
        ):
            raise AlignmentError(
                f"{name} must be (B, T, V) and hold every frame of the batch, got {tuple(logits.shape)}"
            )


def prefix_weights(frames: ByteFrames, teacher_logprobs: torch.Tensor) -> torch.Tensor:
    r"""The teacher's probability of the bytes of the student's token read before each entry: weights for the loss.

    :func:`byte_logprobs` reads a student frame's distribution only along the token the student sampled there. The
    token-level KL is the sum over every prefix :math:`u` of a token, weighted by its probability, of the KL between
    the two next-byte distributions after :math:`u` (the chain rule). The sampled path gives each prefix on it the
    weight one, so on the student's own samples the entries after a first byte that the teacher would not have
    written count as much as the first byte itself, and shape the student's choice inside a token it should not
    have begun. Weighted by :math:`P_{\text{teacher}}(u)`, such entries count by the teacher's belief in them, as in
    the chain rule of the teacher-weighted KL; an entry at a token boundary weighs one. On the reference answers,
    text the teacher would write, the weights stay near one.

    Use ``(generalized_jsd(s, t, reduction="none") * prefix_weights(frames, t)).sum() / len(frames)``.

    Args:
        frames: the entries, as given to :func:`byte_logprobs`.
        teacher_logprobs: ``(P, 258)`` the teacher's side returned by :func:`byte_logprobs` for ``frames``.

    Returns:
        ``(P,)`` weights in ``[0, 1]``, no gradient: for each entry, the product of the teacher's probabilities of the
        bytes its student token has read before it (one where it has read none), in the dtype of
        ``teacher_logprobs``.

    Raises:
        AlignmentError: ``teacher_logprobs`` is not ``(len(frames), 258)``.
        TypeError: ``teacher_logprobs`` is not floating point.

    Examples:
        >>> import numpy as np
        >>> frames = ByteFrames(rows=np.zeros(3, dtype=np.int64), student_frames=np.zeros(3, dtype=np.int64),
        ...     student_prefixes=(b"", b"4", b"45"), teacher_positions=np.arange(3), teacher_prefixes=(b"",) * 3,
        ...     targets=np.array([ord("4"), ord("5"), ord(" ")]), token_ends=np.array([False, False, True]))
        >>> teacher = torch.full((3, 258), -1e4)
        >>> teacher[0, ord("4")], teacher[1, ord("5")] = math.log(0.5), math.log(0.2)
        >>> prefix_weights(frames, teacher)  # 1; P(4) = 0.5; P(45) = 0.5 * 0.2
        tensor([1.0000, 0.5000, 0.1000])
    """
    check_floating("teacher_logprobs", teacher_logprobs)
    if teacher_logprobs.shape != (len(frames), STOP + 1):
        raise AlignmentError(
            f"teacher_logprobs must be the teacher's side of byte_logprobs for these frames, ({len(frames)}, "
            f"{STOP + 1}), got {tuple(teacher_logprobs.shape)}"
        )
    if not len(frames):
        return teacher_logprobs.new_zeros(0)
    device = teacher_logprobs.device
    # the class of the text that came: at a token end the student's token stopped there, elsewhere the byte
    came = np.where(frames.token_ends, STOP, frames.targets)
    read = teacher_logprobs.detach().gather(1, torch.from_numpy(came).to(device)[:, None])[:, 0]
    lengths = np.fromiter((len(p) for p in frames.student_prefixes), dtype=np.int64, count=len(frames))
    frame = frames.rows * (int(frames.student_frames.max()) + 1) + frames.student_frames
    # within each student frame: the entries in the order they read the token, its end last
    order = np.lexsort((lengths, frames.token_ends, frame))
    reorder = torch.from_numpy(order).to(device)
    ordered = read[reorder].double()
    before = torch.cumsum(ordered, 0) - ordered  # the log-probabilities read before each entry, over the batch
    sorted_frame = frame[order]
    first = np.flatnonzero(np.r_[True, sorted_frame[1:] != sorted_frame[:-1]])
    starts = np.repeat(first, np.diff(np.r_[first, len(order)]))
    before = before - before[torch.from_numpy(starts).to(device)]  # ... within the entry's own frame
    weights = torch.empty_like(read)
    weights[reorder] = before.exp().to(read.dtype)
    return weights


def _branched_next_bytes(
    teacher_logits: torch.Tensor,
    rows: torch.Tensor,
    positions: torch.Tensor,
    branches: np.ndarray,
    vocab: ByteVocab,
    prefixes: list[bytes],
    temperature: float,
) -> torch.Tensor:
    """``(N, 257)`` the teacher's next byte after ``prefixes`` of its tokens, read at ``teacher_logits[rows,
    positions]``, with the mass of the token that is exactly the prefix sent on through its branch's next byte
    (``branches[i] >= 0``; see :func:`byte_logprobs`)."""
    mass = _next_byte_mass(  # STOP: exactly the prefix
        teacher_logits, vocab, prefixes, temperature=temperature, stop=True, at=(rows, positions)
    )
    has = torch.from_numpy(branches >= 0).to(teacher_logits.device)
    for prefix in {p for p, h in zip(prefixes, has.tolist(), strict=True) if not h}:
        if not _takes_part(vocab, prefix, stop=False):
            raise AlignmentError(f"no unit of the vocabulary begins with the prefix {prefix!r} and goes on")
    where = torch.from_numpy(branches[branches >= 0]).to(teacher_logits.device)
    after = _normalised_log(
        _next_byte_mass(
            teacher_logits, vocab, [b""] * len(where), temperature=temperature, stop=False, at=(rows[has], where)
        )
    )
    read = mass[:, : END + 1].clone()
    read[has] += mass[has, STOP:] * after.exp().to(read)
    return _normalised_log(read)


def _side(
    spans: np.ndarray, pieces: Sequence[bytes], positions: np.ndarray, text: bytes
) -> tuple[np.ndarray, list[bytes], np.ndarray]:
    """For byte ``positions`` of one side's ``text``: the token holding each, its bytes read before it, and
    whether the token's own bytes spell the text there (a normalising tokenizer may not)."""
    tokens = np.searchsorted(spans[:, 1], positions, side="right")  # the token whose span holds each position
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    blob = b"".join(pieces)
    first = (np.cumsum(lengths) - lengths)[tokens]  # where the token's bytes begin in ``blob``
    read = lengths[tokens] - (spans[tokens, 1] - positions)  # its bytes before the position; < 0: none of them
    inside = read >= 0  # and read < its length, since its span ends after the position
    spelled = np.zeros(len(positions), dtype=np.bool_)
    here = np.frombuffer(blob, dtype=np.uint8)[(first + read)[inside]]
    spelled[inside] = here == np.frombuffer(text, dtype=np.uint8)[positions[inside]]
    stops = (first + np.maximum(read, 0)).tolist()
    return tokens, [blob[a:b] for a, b in zip(first.tolist(), stops, strict=True)], spelled


Frames = tuple[np.ndarray, list[bytes], np.ndarray, list[bytes], np.ndarray, np.ndarray]
_BYTES = [bytes([value]) for value in range(256)]  # the one-byte string of each byte value


def _row_frames(
    student: tuple[np.ndarray, Sequence[bytes], bytes, int],
    teacher: tuple[np.ndarray, Sequence[bytes], bytes, int],
    length: int,
    *,
    end: tuple[int, int] | None,
    template: tuple[bytes, bool],
) -> Frames:
    """Byte frames of one example. Each side is ``(token byte spans, token bytes, text, content start)``; the
    content is ``length`` bytes at each side's start, equal on both. The student's tokens are its completion
    frames; the teacher's token ``j`` is predicted at position ``j - 1``. ``end``: the closing token of each
    side, when both closed the turn right after the content. ``template``: the text the student's template writes
    before the content, and whether the student wrote it (at the start of its completion): its bytes are entries
    whose teacher is the template itself (:data:`TEMPLATE`); if the student left it out, one such entry at its
    first frame asks for the template's first byte."""
    (s_spans, s_pieces, s_text, s_start), (t_spans, t_pieces, t_text, t_start) = student, teacher
    if s_text[s_start : s_start + length] != t_text[t_start : t_start + length]:
        raise AlignmentError("student and teacher content differ where they should be equal; please report this")
    framing, wrote = template
    framing = framing if wrote else b""
    offsets = np.arange(length, dtype=np.int64)
    positions = np.r_[np.arange(len(framing), dtype=np.int64), s_start + offsets]
    s_tokens, s_prefixes, s_ok = _side(s_spans, s_pieces, positions, s_text)
    t_tokens, t_prefixes, t_ok = _side(t_spans, t_pieces, t_start + offsets, t_text)
    ours = np.full(len(framing), True)  # the template's bytes: nothing to read on the teacher's side
    keep = s_ok & np.r_[ours, t_ok & (t_tokens >= 1)]
    text = np.frombuffer(s_text, dtype=np.uint8)[positions].astype(np.int64)
    t_positions = np.r_[np.full(len(framing), TEMPLATE), t_tokens - 1]
    t_prefixes = [b""] * len(framing) + t_prefixes
    # what comes after each byte, on the teacher's side: the next byte's entry (where the text goes on), or the end
    after_ok = np.r_[keep[1:] & (positions[1:] == positions[:-1] + 1), end is not None]
    after_position = np.r_[t_positions[1:], end[1] - 1 if end is not None else -1]
    after_prefix = [*t_prefixes[1:], b""]
    after_target = np.r_[text[1:], END]
    # a student token whose last byte is here, with text (or the end of the turn) after it
    last = keep & after_ok & (s_spans[np.minimum(s_tokens, len(s_spans) - 1), 1] == positions + 1)
    bytes_kept, ends = np.flatnonzero(keep).tolist(), np.flatnonzero(last).tolist()
    s_frames = np.r_[s_tokens[keep], s_tokens[last]]
    values = text.tolist()
    s_prefixes_out = [s_prefixes[o] for o in bytes_kept] + [s_prefixes[o] + _BYTES[values[o]] for o in ends]
    t_out = np.r_[t_positions[keep], after_position[last]]
    t_prefixes_out = [t_prefixes[o] for o in bytes_kept] + [after_prefix[o] for o in ends]
    targets = np.r_[text[keep], after_target[last]]
    token_ends = np.r_[np.zeros(len(bytes_kept), dtype=np.bool_), np.ones(len(ends), dtype=np.bool_)]
    if end is not None:
        s_frames, t_out = np.r_[s_frames, end[0]], np.r_[t_out, end[1] - 1]
        s_prefixes_out, t_prefixes_out = [*s_prefixes_out, b""], [*t_prefixes_out, b""]
        targets, token_ends = np.r_[targets, END], np.r_[token_ends, False]
    if template[0] and not wrote and len(s_spans):
        s_frames, t_out = np.r_[0, s_frames], np.r_[TEMPLATE, t_out]
        s_prefixes_out, t_prefixes_out = [b"", *s_prefixes_out], [b"", *t_prefixes_out]
        targets, token_ends = np.r_[template[0][0], targets], np.r_[False, token_ends]
    return (
        s_frames.astype(np.int64),
        s_prefixes_out,
        t_out.astype(np.int64),
        t_prefixes_out,
        targets.astype(np.int64),
        token_ends.astype(np.bool_),
    )


def _empty_frames() -> Frames:
    nothing = np.zeros(0, dtype=np.int64)
    return nothing, [], nothing, [], nothing, nothing.astype(np.bool_)


def _row_branches(frames: Frames, units_of: Mapping[bytes, int]) -> tuple[np.ndarray, list[int], list[int]]:
    """The branches of one example's frames: for each entry, the branch it reads (``-1``: none), and each branch's
    token id and position. A branch is one teacher token that is exactly the bytes ``u`` read inside a longer one
    (``units_of[u]``, if a token is), read in place of the longer one: at its position, after the tokens before
    it. Entries at the same place share one; branches come in the order of their first entry."""
    positions, prefixes = frames[2], frames[3]
    slots = np.full(len(prefixes), -1, dtype=np.int64)
    lengths = np.fromiter(map(len, prefixes), dtype=np.int64, count=len(prefixes))
    asked = np.flatnonzero((lengths > 0) & (positions != TEMPLATE))
    read = [prefixes[k] for k in asked.tolist()]
    units = np.fromiter(map(units_of.get, read, itertools.repeat(-1)), dtype=np.int64, count=len(read))
    entries, units = asked[units >= 0], units[units >= 0]
    if not len(entries):
        return slots, [], []
    # one branch per place: a unit spells one byte string, so (position, unit) is (position, prefix)
    keys = positions[entries] * (int(units.max()) + 1) + units
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # the branches in the order of their first entry
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    slots[entries] = rank[inverse.reshape(-1)]
    firsts = first[order]
    return slots, units[firsts].tolist(), (positions[entries[firsts]] + 1).tolist()


def _collate_frames(rows: Sequence[Frames], branches: Sequence[np.ndarray] | None = None) -> ByteFrames:
    def cat(arrays: list[np.ndarray], dtype: type = np.int64) -> np.ndarray:
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype=dtype)

    return ByteFrames(
        rows=cat([np.full(len(r[4]), b, dtype=np.int64) for b, r in enumerate(rows)]),
        student_frames=cat([r[0] for r in rows]),
        student_prefixes=tuple(itertools.chain.from_iterable(r[1] for r in rows)),
        teacher_positions=cat([r[2] for r in rows]),
        teacher_prefixes=tuple(itertools.chain.from_iterable(r[3] for r in rows)),
        targets=cat([r[4] for r in rows]),
        token_ends=cat([r[5] for r in rows], np.bool_),
        teacher_branches=None if branches is None else cat(list(branches)),
    )
