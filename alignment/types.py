"""Plain result types shared by every layer: frozen dataclasses over read-only numpy arrays.

All offsets are half-open ``[start, stop)`` **byte** offsets into UTF-8 text unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

import numpy as np

__all__ = [
    "BatchAlignment",
    "ChatMessage",
    "Chunks",
    "Rendering",
    "Role",
    "Span",
    "TokenAlignment",
    "VocabMap",
    "VocabProjection",
]

Span = tuple[int, int]  # half-open [start, stop)
Role = Literal["system", "user", "assistant", "tool"]


class ChatMessage(TypedDict):
    """One chat turn, in the Hugging Face layout (a plain ``dict`` works)."""

    role: str
    content: str


def _frozen(array: np.ndarray, *, dtype: type, ndim: int, name: str) -> np.ndarray:
    if array.dtype != dtype or array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d {np.dtype(dtype).name} array, got {array.ndim}-d {array.dtype}")
    array.setflags(write=False)  # half the cost of `array.flags.writeable = False`, which builds a flags object
    return array


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Rendering:
    """A conversation or prompt/completion pair rendered and tokenized for one tokenizer.

    ``text`` tokenizes to ``input_ids`` (template control tokens as control tokens, message content
    always as plain text); ``byte_offsets[i]`` is token ``i``'s half-open span in ``text.encode()``.
    Spans are non-overlapping and non-decreasing. A control token spans its literal text. A token that
    covers no text of its own (a SentencePiece prefix space the text lacks) is zero-width.

    Attributes:
        text: the rendered text, byte-identical to the tokenizer's ``apply_chat_template(tokenize=False)``
            in chat mode.
        mode: ``"chat"`` or ``"completion"``.
        input_ids: ``(T,)`` int64 token ids.
        byte_offsets: ``(T, 2)`` int64 byte spans into ``text.encode()``.
        control_mask: ``(T,)`` bool, ``True`` for the tokenizer's added/control tokens.
        completion_mask: ``(T,)`` bool, ``True`` for every token of a trained turn, from its first content
            token through the end-of-turn token that closes it.
        roles: role of each input message, in order.
        message_spans: byte span of each message's content in ``text``; ``None`` where the template
            dropped the message (only with ``on_dropped="ignore"``).
        trimmed: ``(leading, trailing)`` bytes of each message's content that the template trimmed
            (edge whitespace only); ``(0, 0)`` where nothing was trimmed or the message was dropped.
        trained_messages: indices of the messages whose turns are trained (``completion_mask``).
        end_of_turn: for each trained message, the index of the token that closes its turn.
    """

    text: str
    mode: Literal["chat", "completion"]
    input_ids: np.ndarray
    byte_offsets: np.ndarray
    control_mask: np.ndarray
    completion_mask: np.ndarray
    roles: tuple[str, ...]
    message_spans: tuple[Span | None, ...]
    trimmed: tuple[Span, ...]
    trained_messages: tuple[int, ...]
    end_of_turn: tuple[int, ...]

    def __post_init__(self) -> None:
        _frozen(self.input_ids, dtype=np.int64, ndim=1, name="input_ids")
        _frozen(self.byte_offsets, dtype=np.int64, ndim=2, name="byte_offsets")
        _frozen(self.control_mask, dtype=np.bool_, ndim=1, name="control_mask")
        _frozen(self.completion_mask, dtype=np.bool_, ndim=1, name="completion_mask")
        n = len(self.input_ids)
        if self.byte_offsets.shape != (n, 2) or len(self.control_mask) != n or len(self.completion_mask) != n:
            raise ValueError(
                f"per-token arrays disagree in length: input_ids {n}, byte_offsets {self.byte_offsets.shape}, "
                f"control_mask {len(self.control_mask)}, completion_mask {len(self.completion_mask)}"
            )
        if not len(self.roles) == len(self.message_spans) == len(self.trimmed):
            raise ValueError("roles, message_spans and trimmed must have one entry per message")
        if len(self.trained_messages) != len(self.end_of_turn):
            raise ValueError("trained_messages and end_of_turn must have the same length")

    @property
    def completion_spans(self) -> tuple[Span, ...]:
        """Byte span of each trained message's content, in the order of ``trained_messages``."""
        spans = tuple(self.message_spans[i] for i in self.trained_messages)
        return tuple(s for s in spans if s is not None)

    def token_text(self, index: int) -> str:
        """The text token ``index`` covers (may be empty, or a partial character shown with replacement)."""
        start, stop = self.byte_offsets[index]
        return self.text.encode()[start:stop].decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Chunks:
    """Minimal many-to-many groups of student and teacher tokens that cover identical byte ranges.

    Group ``g`` holds student tokens ``range(*student[g])`` and teacher tokens ``range(*teacher[g])``;
    both cover exactly ``byte_spans[g]``. All three arrays are ``(G, 2)`` int64.
    """

    student: np.ndarray
    teacher: np.ndarray
    byte_spans: np.ndarray

    def __post_init__(self) -> None:
        _frozen(self.student, dtype=np.int64, ndim=2, name="student")
        _frozen(self.teacher, dtype=np.int64, ndim=2, name="teacher")
        _frozen(self.byte_spans, dtype=np.int64, ndim=2, name="byte_spans")
        if not self.student.shape == self.teacher.shape == self.byte_spans.shape:
            raise ValueError(
                f"student, teacher and byte_spans differ in shape: "
                f"{self.student.shape}, {self.teacher.shape}, {self.byte_spans.shape}"
            )

    def __len__(self) -> int:
        return len(self.byte_spans)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class TokenAlignment:
    """Where a student and a teacher tokenization of the same text can be compared.

    Attributes:
        pairs: ``(K, 2)`` int64 ``(student index, teacher index)``: the last student token and the last
            teacher token that end at the same byte. After them both models have read the same text, so
            their next-token distributions are comparable one to one. Strictly increasing on both sides.
        chunks: the minimal groups covering identical byte ranges (for chunk-likelihood losses).
        num_student: number of student tokens aligned.
        num_teacher: number of teacher tokens aligned.
    """

    pairs: np.ndarray
    chunks: Chunks
    num_student: int
    num_teacher: int

    def __post_init__(self) -> None:
        _frozen(self.pairs, dtype=np.int64, ndim=2, name="pairs")
        if self.pairs.shape[1:] != (2,):
            raise ValueError(f"pairs must have shape (K, 2), got {self.pairs.shape}")

    @property
    def student_coverage(self) -> float:
        """Share of student tokens that have a 1:1 pair (0.0 for no tokens)."""
        return len(self.pairs) / self.num_student if self.num_student else 0.0

    @property
    def teacher_coverage(self) -> float:
        """Share of teacher tokens that have a 1:1 pair (0.0 for no tokens)."""
        return len(self.pairs) / self.num_teacher if self.num_teacher else 0.0


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class BatchAlignment:
    """The :class:`TokenAlignment` of every example of a batch, in flat arrays (:func:`~alignment.align_spans_batch`).

    Example ``b``'s pairs are ``pairs[pair_offsets[b]:pair_offsets[b + 1]]`` and its chunks the same rows of
    ``chunks`` between ``chunk_offsets[b]`` and ``chunk_offsets[b + 1]``, with token indices counted within the
    example, as :func:`~alignment.align_spans` gives them; ``batch[b]`` is that :class:`TokenAlignment`. To read
    padded ``(B, T, V)`` logits at every pair: ``logits[batch.rows, batch.pairs[:, 0]]``.

    Attributes:
        pairs: ``(K, 2)`` int64 ``(student index, teacher index)`` of every example, one example after another.
        pair_offsets: ``(B + 1,)`` int64, non-decreasing, from 0 to ``K``.
        chunks: the chunks of every example, one example after another.
        chunk_offsets: ``(B + 1,)`` int64, non-decreasing, from 0 to ``len(chunks)``.
        num_student: ``(B,)`` int64 student tokens of each example.
        num_teacher: ``(B,)`` int64 teacher tokens of each example.
    """

    pairs: np.ndarray
    pair_offsets: np.ndarray
    chunks: Chunks
    chunk_offsets: np.ndarray
    num_student: np.ndarray
    num_teacher: np.ndarray

    def __post_init__(self) -> None:
        _frozen(self.pairs, dtype=np.int64, ndim=2, name="pairs")
        for name in ("pair_offsets", "chunk_offsets", "num_student", "num_teacher"):
            _frozen(getattr(self, name), dtype=np.int64, ndim=1, name=name)
        rows = len(self.num_student)
        for name, total in (("pair_offsets", len(self.pairs)), ("chunk_offsets", len(self.chunks))):
            offsets = getattr(self, name)
            checked = name == "chunk_offsets" and offsets is self.pair_offsets  # the same array, checked just before
            ordered = checked or not (offsets[1:] < offsets[:-1]).any()
            if len(offsets) != rows + 1 or offsets[0] != 0 or offsets[-1] != total or not ordered:
                raise ValueError(f"{name} must run from 0 to {total} in {rows + 1} non-decreasing steps")
        if self.num_teacher.shape != (rows,):
            raise ValueError(f"num_teacher must have shape ({rows},), got {self.num_teacher.shape}")

    def __len__(self) -> int:
        return len(self.num_student)

    def __getitem__(self, b: int) -> TokenAlignment:
        """The :class:`TokenAlignment` of example ``b`` (views of these arrays)."""
        if not -len(self) <= b < len(self):
            raise IndexError(f"example {b} is out of range for a batch of {len(self)}")
        b %= len(self)
        pairs = slice(int(self.pair_offsets[b]), int(self.pair_offsets[b + 1]))
        chunks = slice(int(self.chunk_offsets[b]), int(self.chunk_offsets[b + 1]))
        return TokenAlignment(
            pairs=self.pairs[pairs],
            chunks=Chunks(
                student=self.chunks.student[chunks],
                teacher=self.chunks.teacher[chunks],
                byte_spans=self.chunks.byte_spans[chunks],
            ),
            num_student=int(self.num_student[b]),
            num_teacher=int(self.num_teacher[b]),
        )

    @property
    def rows(self) -> np.ndarray:
        """``(K,)`` int64 the example of each pair."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.pair_offsets))


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class VocabMap:
    """Token pairs of two vocabularies whose byte strings are identical.

    Attributes:
        pairs: ``(M, 2)`` int64 ``(student id, teacher id)`` of ordinary tokens with identical bytes,
            sorted by student id then teacher id. A byte string present several times in one vocabulary
            (``A`` and ``<0x41>``) yields every combination.
        special_pairs: ``(S, 2)`` int64 control-token pairs matched by role (``bos``, ``eos``,
            ``end_of_turn``), never by spelling.
        special_roles: the role of each row of ``special_pairs``.
        student_size: student vocabulary size ``V``.
        teacher_size: teacher vocabulary size ``W``.
    """

    pairs: np.ndarray
    special_pairs: np.ndarray
    special_roles: tuple[str, ...]
    student_size: int
    teacher_size: int

    def __post_init__(self) -> None:
        _frozen(self.pairs, dtype=np.int64, ndim=2, name="pairs")
        _frozen(self.special_pairs, dtype=np.int64, ndim=2, name="special_pairs")
        if len(self.special_roles) != len(self.special_pairs):
            raise ValueError("special_roles must name each row of special_pairs")

    @property
    def student_shared(self) -> float:
        """Share of the student vocabulary with an identical teacher entry."""
        return len(np.unique(self.pairs[:, 0])) / self.student_size if self.student_size else 0.0

    @property
    def teacher_shared(self) -> float:
        """Share of the teacher vocabulary with an identical student entry."""
        return len(np.unique(self.pairs[:, 1])) / self.teacher_size if self.teacher_size else 0.0


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class VocabProjection:
    """A common event space for two vocabularies: each token of either side belongs to one class.

    A next-token distribution over either vocabulary becomes a distribution over ``num_classes`` classes by
    summing the probabilities of each class's members; the two projected distributions are then comparable
    with any same-vocabulary loss.

    Attributes:
        student_classes: ``(V,)`` int64 class of each student token.
        teacher_classes: ``(W,)`` int64 class of each teacher token.
        num_classes: ``C``. Class ``C - 2`` holds the end-of-turn and EOS tokens of both sides (paired by role),
            class ``C - 1`` everything without a counterpart; the others are byte strings in both vocabularies.
        kind: ``"prefix"``: a token's class is the longest byte string in both vocabularies that starts it
            (Llama's ``123`` shares the class of Qwen's ``1``); ``"exact"``: only identical byte strings share
            a class, all other tokens go to the last class (one tail bucket).
    """

    student_classes: np.ndarray
    teacher_classes: np.ndarray
    num_classes: int
    kind: Literal["prefix", "exact"]

    def __post_init__(self) -> None:
        _frozen(self.student_classes, dtype=np.int64, ndim=1, name="student_classes")
        _frozen(self.teacher_classes, dtype=np.int64, ndim=1, name="teacher_classes")

    def restrict(self, student_ids: np.ndarray, teacher_ids: np.ndarray) -> VocabProjection:
        """The projection for models whose outputs cover only ``student_ids`` and ``teacher_ids``.

        Output unit ``i`` of the student is token ``student_ids[i]`` (likewise for the teacher). Classes that
        no listed token belongs to are dropped (they hold no mass on either side, so no divergence changes);
        the end-of-turn and "other" classes stay the last two.

        Examples:
            >>> p = VocabProjection(student_classes=np.array([0, 1, 4, 3]), teacher_classes=np.array([1, 3, 4]),
            ...                     num_classes=5, kind="prefix")
            >>> r = p.restrict(np.array([1, 3]), np.array([0, 2]))
            >>> r.student_classes.tolist(), r.teacher_classes.tolist(), r.num_classes
            ([0, 1], [0, 2], 3)
        """
        student = self.student_classes[np.asarray(student_ids, dtype=np.int64)]
        teacher = self.teacher_classes[np.asarray(teacher_ids, dtype=np.int64)]
        used = np.unique(np.concatenate([student, teacher, [self.num_classes - 2, self.num_classes - 1]]))
        return VocabProjection(
            student_classes=np.searchsorted(used, student).astype(np.int64),
            teacher_classes=np.searchsorted(used, teacher).astype(np.int64),
            num_classes=len(used),
            kind=self.kind,
        )
