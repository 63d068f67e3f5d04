"""The trainer seam: build the teacher's inputs in its own format and map its outputs onto the student.

On-policy distillation step, with ``align_teacher_template=True``::

    student prompt ──► student samples completion ids ──► prepare_teacher_batch ──► teacher forward
                                                                  │                       │
                       student logits on the completion ◄─ align_teacher_logits ◄─────────┘
                                         └──────────── loss on batch.mask ────────────────┘

Everything is indexed by the student's *completion frame*: position ``k`` holds the distribution that
predicts completion token ``k`` (the student logits at input position ``prompt_length - 1 + k``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alignment._byteframes import ByteFrames, Frames, _collate_frames, _empty_frames, _row_branches, _row_frames
from alignment._tokenizer import FastTokenizer, TokenizerInfo, id_of_bytes, tokenizer_info
from alignment.align import Turn, _example, _exclusive_cumsum, _places, align_each_turn
from alignment.errors import AlignmentError, ExampleError, TokenizerError
from alignment.nextbyte import END
from alignment.render import Mode, OnDropped, prompt_messages, render, render_each, render_prompt
from alignment.spans import _checked_ids, _spelled, decode_bytes, token_byte_spans
from alignment.types import Chunks, Rendering
from alignment.vocab import _closing_ids

__all__ = ["TeacherBatch", "align_teacher_logits", "prepare_teacher_batch", "same_template"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class TeacherBatch:
    """The teacher's padded inputs and the map from its positions onto the student's completion frame.

    Attributes:
        input_ids: ``(B, S)`` int64 teacher token ids, right-padded.
        attention_mask: ``(B, S)`` bool, ``True`` on real tokens.
        positions: ``(B, T)`` int64: the teacher position whose next-token distribution is comparable with
            the student's at completion frame ``k`` (both have read the same text); ``0`` where ``mask`` is False.
        mask: ``(B, T)`` bool, ``True`` where frame ``k`` has such a teacher position. ``T`` is the longest
            completion; frames past an example's completion are False.
        student_chunks: ``(B, T)`` int64 chunk of each student completion token (``-1``: none), for
            :func:`alignment.chunk_likelihood_loss`.
        teacher_chunks: ``(B, S)`` int64 chunk of each teacher token (``-1``: none).
        lengths: ``(B,)`` int64 completion length of each example.
        aligned: ``False`` on the identity path (flag off, or the same tokenizer and template).
        renderings: the teacher :class:`~alignment.Rendering` of each example (empty on the identity path).
        byte_frames: with ``byte_frames=True``, where each side's next-byte distribution is read at every
            compared byte (:class:`~alignment.ByteFrames`, for :func:`~alignment.next_byte_logprobs`); else None.
        branch_ids: ``(B, E)`` int64 teacher token of each branch (see :meth:`branched_inputs`), padded with the
            pad id; ``E`` is 0 without ``byte_frames``.
        branch_positions: ``(B, E)`` int64 position of each branch: the index of the longer token it replaces
            (``0`` in padding).
        branch_count: ``(B,)`` int64 number of branches of each example.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    mask: torch.Tensor
    student_chunks: torch.Tensor
    teacher_chunks: torch.Tensor
    lengths: torch.Tensor
    aligned: bool
    renderings: tuple[Rendering, ...]
    byte_frames: ByteFrames | None
    branch_ids: torch.Tensor
    branch_positions: torch.Tensor
    branch_count: torch.Tensor

    @property
    def coverage(self) -> float:
        """Share of the student's completion tokens whose predicting frame has a comparable teacher position."""
        total = int(self.lengths.sum())
        return int(self.mask.sum()) / total if total else 0.0

    def branched_inputs(self, *, mask_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The teacher's inputs with its branches after them, for ``byte_logprobs(..., branched=True)``.

        Inside one of its tokens the teacher's next byte leaves out the paths where a shorter token ends there
        (GPT-2 reading `` 627`` after `` 62``: `` 62`` and then another token). A branch is that shorter token read
        in place of the longer one, so the teacher says what comes after it. Branch ``e`` of row ``b`` sits at
        position ``S + e``, with position id ``branch_positions[b, e]`` and attending to the tokens before the one
        it replaces and to itself; every position before ``S`` sees what it sees in ``input_ids`` (causal, real
        tokens only), so the outputs there are the plain forward's. One forward pass:
        ``model(**batch.branched_inputs()).logits``, with an attention implementation that takes a 4-D mask
        (Hugging Face's eager and SDPA do; FlashAttention-2 does not).

        Args:
            mask_dtype: a floating dtype gives the additive mask (0 where a position may attend, the dtype's most
                negative number elsewhere), which every attention implementation that takes a 4-D mask reads
                right; ``torch.bool`` gives ``True`` where a position may attend, a quarter of the memory of
                float32 but read right only by implementations that take a boolean mask (SDPA; eager attention
                would add it to the scores).

        Returns:
            ``input_ids`` ``(B, S + E)`` int64; ``attention_mask`` ``(B, 1, S + E, S + E)`` of ``mask_dtype``;
            ``position_ids`` ``(B, S + E)`` int64. A padding branch attends to itself only.

        Raises:
            ValueError: ``mask_dtype`` is neither floating point nor ``torch.bool``.
        """
        check_mask_dtype(mask_dtype)
        batch, length = self.input_ids.shape
        count = self.branch_ids.shape[1]
        total = length + count
        keys = torch.arange(total)
        real = torch.cat([self.attention_mask, torch.zeros(batch, count, dtype=torch.bool)], dim=1)
        mask = (keys[None, :, None] >= keys[None, None, :]) & real[:, None, :]  # causal over the real tokens
        mask[:, length:] = False
        used = torch.arange(count)[None, :] < self.branch_count[:, None]  # (B, E)
        mask[:, length:, :length] = (keys[None, None, :length] < self.branch_positions[..., None]) & used[..., None]
        mask[:, length:, length:] = torch.eye(count, dtype=torch.bool)  # and itself
        mask = as_mask_dtype(mask, mask_dtype)
        positions = torch.cat([torch.arange(length).expand(batch, length), self.branch_positions], dim=1)
        return {
            "input_ids": torch.cat([self.input_ids, self.branch_ids], dim=1),
            "attention_mask": mask[:, None],
            "position_ids": positions,
        }


def check_mask_dtype(mask_dtype: torch.dtype) -> None:
    """Raise unless ``mask_dtype`` is floating (an additive 4-D attention mask) or ``torch.bool``."""
    if not (mask_dtype.is_floating_point or mask_dtype == torch.bool):
        raise ValueError(f"mask_dtype must be a floating dtype or torch.bool, got {mask_dtype}")


def as_mask_dtype(allowed: torch.Tensor, mask_dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask (``True`` where a position may attend) in ``mask_dtype``: itself for ``torch.bool``,
    else additive (0 where it may attend, the dtype's most negative number elsewhere)."""
    if mask_dtype == torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=mask_dtype, device=allowed.device).masked_fill_(
        ~allowed, torch.finfo(mask_dtype).min
    )


def same_template(
    student_tokenizer: FastTokenizer,
    teacher_tokenizer: FastTokenizer,
    student_template_kwargs: Mapping[str, Any] | None = None,
    teacher_template_kwargs: Mapping[str, Any] | None = None,
) -> bool:
    """Whether both sides share vocabulary bytes, chat template and template variables (the identity path)."""
    if student_tokenizer is teacher_tokenizer:
        return dict(student_template_kwargs or {}) == dict(teacher_template_kwargs or {})
    student, teacher = tokenizer_info(student_tokenizer), tokenizer_info(teacher_tokenizer)
    return (
        student.token_bytes == teacher.token_bytes
        and student.bos_prefix == teacher.bos_prefix
        and getattr(student_tokenizer, "chat_template", None) == getattr(teacher_tokenizer, "chat_template", None)
        and dict(student_template_kwargs or {}) == dict(teacher_template_kwargs or {})
    )


def prepare_teacher_batch(
    examples: Sequence[Mapping[str, Any]],
    completions: Sequence[Sequence[int] | np.ndarray | torch.Tensor],
    *,
    student_tokenizer: FastTokenizer,
    teacher_tokenizer: FastTokenizer,
    align_teacher_template: bool = True,
    prompt_ids: Sequence[Sequence[int] | np.ndarray | torch.Tensor] | None = None,
    student_mode: Mode = "auto",
    teacher_mode: Mode = "auto",
    student_template_kwargs: Mapping[str, Any] | None = None,
    teacher_template_kwargs: Mapping[str, Any] | None = None,
    on_dropped: OnDropped = "raise",
    byte_frames: bool = False,
) -> TeacherBatch:
    """Re-render a batch for the teacher and map its positions onto the student's completion frame.

    For each example the student's sampled completion (its ids, unpadded, ending with the end-of-turn or EOS token
    if it finished) is turned back into text: the template's own text between the generation prompt and the content
    (Qwen3's empty ``<think>`` block, a separating space) is taken off the front, the closing token off the end, and
    from the token that holds the first byte that is not valid UTF-8 (a tail cut inside a character) on, the rest is
    dropped. The turn ends at the first token that ends a turn (end of turn or EOS): a student that writes its
    end-of-text token inside an answer has closed its turn there, as generation would have stopped, and the frames
    after it are masked out (the token is compared as the end of the turn, not left out as text the teacher reads).
    The conversation plus that text is rendered with the teacher's own template (or completion format), and the two
    token sequences are aligned by byte offsets (as in :func:`~alignment.align_renderings`); student frames without
    a teacher position that read the same text are masked out. A completion that closes the turn at once (nothing
    before its end of turn but the template's own text), or holds only whitespace the teacher's template trims away,
    is rendered for the teacher as an empty turn, and the student's frame that has read what the teacher read (the
    prompt) is compared with the teacher's last position before the content: a student that learns to answer nothing
    still hears that the teacher would not stop there. That position must follow a control token or a line break:
    after a token an answer would have joined (GPT-2's space after ``Assistant:``) the teacher reads a context it
    never sees before an answer. Where it does not, where the teacher's template refuses an empty turn (Mistral v3),
    or where the completion is empty and unfinished, the row holds the teacher's prompt and every frame is masked.

    With ``align_teacher_template=False``, or when :func:`same_template` holds, this is the identity: the teacher
    reads the student's own ids (``prompt_ids`` + completion; the prompts are rendered when not given) and frame
    ``k`` maps to position ``len(prompt) - 1 + k``. Nothing else is tokenized.

    Args:
        examples: the batch's examples (``messages`` and/or ``prompt``; see :func:`~alignment.render`).
        completions: ``B`` sequences of the student's sampled completion ids, unpadded.
        student_tokenizer: the student's Hugging Face fast tokenizer.
        teacher_tokenizer: the teacher's Hugging Face fast tokenizer.
        align_teacher_template: re-render for the teacher (``True``) or feed it the student's ids (``False``).
        prompt_ids: the student's prompt ids per example, used on the identity path.
        student_mode: how the student's prompts were rendered (``"auto"``, ``"chat"``, ``"completion"``).
        teacher_mode: how to render for the teacher.
        student_template_kwargs: Jinja variables of the student's template (e.g. Llama 3's ``date_string``).
        teacher_template_kwargs: Jinja variables of the teacher's template.
        on_dropped: whether a teacher template may leave out a prompt message (see :func:`~alignment.render_chat`;
            Mistral NeMo keeps the system prompt only before the last user turn).
        byte_frames: also build :attr:`TeacherBatch.byte_frames`: every byte of the content both sides hold
            (on the identity path, of every completion token that is text), and the end of the turn where both
            closed it, with the frame and the token bytes read before it on each side.

    Returns:
        A :class:`TeacherBatch`.

    Raises:
        TokenizerError: the flag is off but the tokenizers differ, or ids are outside the vocabulary.
        ExampleError, TemplateError, ContentRewrittenError: as for :func:`~alignment.render`.
        ValueError: ``examples`` and ``completions`` differ in length.

        An error about one example names it first (``example 3: ...``); where several fail, the first of them
        raises.
    """
    if len(examples) != len(completions) or (prompt_ids is not None and len(prompt_ids) != len(examples)):
        raise ValueError(
            f"examples ({len(examples)}), completions ({len(completions)}) and prompt_ids "
            f"({'None' if prompt_ids is None else len(prompt_ids)}) must have one entry per example"
        )
    ids = [_as_ids(c) for c in completions]
    identical = same_template(student_tokenizer, teacher_tokenizer, student_template_kwargs, teacher_template_kwargs)
    if not align_teacher_template or identical:
        if not identical:
            raise TokenizerError(
                "align_teacher_template=False feeds the student's ids to the teacher, but the two tokenizers or "
                "templates differ; pass align_teacher_template=True to re-render for the teacher"
            )
        if prompt_ids is None:
            kwargs = dict(student_template_kwargs or {})
            prompt_ids = [
                _example(b, render_prompt, student_tokenizer, e, mode=student_mode, **kwargs).input_ids
                for b, e in enumerate(examples)
            ]
        info = tokenizer_info(student_tokenizer) if byte_frames else None
        ends = _closing_ids(student_tokenizer)
        rows = [
            _example(b, _identity_row, _as_ids(p), c, info, ends)
            for b, (p, c) in enumerate(zip(prompt_ids, ids, strict=True))
        ]
        return _collate(rows, ids, _pad_id(student_tokenizer), aligned=False, tokenizer=student_tokenizer)
    tokenizers, modes = (student_tokenizer, teacher_tokenizer), (student_mode, teacher_mode)
    variables = (dict(student_template_kwargs or {}), dict(teacher_template_kwargs or {}))
    rows = _aligned_rows(examples, ids, tokenizers, modes, variables, on_dropped, byte_frames)
    return _collate(rows, ids, _pad_id(teacher_tokenizer), aligned=True, tokenizer=teacher_tokenizer)


def align_teacher_logits(teacher_logits: torch.Tensor, batch: TeacherBatch) -> torch.Tensor:
    """Gather the teacher's outputs onto the student's completion frame.

    The losses and :func:`~alignment.project_logprobs` need no such copy: ``generalized_jsd(student_logits,
    teacher_logits, batch.mask, teacher_positions=batch.positions)`` reads the same rows in place. This is for a loss
    of your own.

    Args:
        teacher_logits: ``(B, S', W)`` float teacher logits (or log-probabilities) over its inputs
            ``batch.input_ids`` (``S' >= S``; extra positions are ignored).
        batch: the :class:`TeacherBatch` the teacher scored.

    Returns:
        ``(B, T, W)``: the teacher's outputs at ``batch.positions``; frames where ``batch.mask`` is False hold
        the outputs at some other position and must be masked by the loss. When every compared frame ``k`` of
        every row sits at the same ``start + k`` (the identity path with prompts of one length, as left-padded
        batches have), this is the view ``teacher_logits[:, start : start + T]``, not a copy.

    Raises:
        ValueError: the batch size differs, or the teacher outputs are shorter than the inputs they claim to
            score.
    """
    expected = tuple(batch.input_ids.shape)
    if teacher_logits.dim() != 3 or teacher_logits.shape[0] != expected[0] or teacher_logits.shape[1] < expected[1]:
        raise ValueError(
            f"teacher_logits must have shape (B, S, W) with B = {expected[0]} and S >= {expected[1]} "
            f"(the teacher inputs of the batch), got {tuple(teacher_logits.shape)}"
        )
    start = _common_start(batch, teacher_logits.shape[1])
    if start is not None:
        return teacher_logits[:, start : start + batch.positions.shape[1]]
    positions = batch.positions.to(teacher_logits.device)
    rows = torch.arange(len(positions), device=positions.device)[:, None]
    return teacher_logits[rows, positions]  # whole rows copied: faster than a gather that reads an index per logit


def _common_start(batch: TeacherBatch, length: int) -> int | None:
    """``start`` if every compared frame ``k`` maps to position ``start + k`` and the slice fits, else None."""
    frames = batch.positions.shape[1]
    if not bool(batch.mask.any()):
        return None
    offsets = batch.positions - torch.arange(frames)
    start = int(offsets[batch.mask][0])
    uniform = bool((offsets[batch.mask] == start).all())
    return start if uniform and 0 <= start and start + frames <= length else None


def _as_ids(values: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.array(values, dtype=np.int64).reshape(-1)


@dataclass(frozen=True, slots=True)
class _Row:
    """One example of a :class:`TeacherBatch`, before padding."""

    input_ids: np.ndarray  # (S_b,) int64 teacher inputs
    positions: np.ndarray  # (T_b,) int64
    mask: np.ndarray  # (T_b,) bool
    student_chunks: np.ndarray  # (T_b,) int64
    teacher_chunks: np.ndarray  # (S_b,) int64
    rendering: Rendering | None  # the teacher rendering; None on the identity path
    frames: Frames | None = None  # byte frames (see nextbyte._row_frames), when asked for


_Spelling = tuple[bytes, np.ndarray]  # a turn's bytes and its frames' offsets (see _spell_turns)
_Sample = tuple[str, int, bool, dict[str, Any]]  # content, where it starts, whether the turn closed, what to render


def _completion_text(text: bytes, offsets: np.ndarray, closed: bool, separator: bytes) -> tuple[str, int, bool]:
    """The content the student wrote, where it starts in the completion bytes (after the template's
    ``separator``, if the student wrote it), and whether the turn closed.

    ``text`` and ``offsets`` are the turn's bytes and its frames' offsets (see :func:`_spell_turns`); ``closed`` says
    whether its last token closes the turn (that token's bytes are not content).

    Where the bytes are not valid UTF-8 (a tail cut inside a character, or bytes no text holds), the content ends
    where the token holding the first bad byte begins (or earlier, where that splits a character), and nothing after
    it is compared. Ending it at the bad byte itself would cut that token in two: clipped to the content, it would
    end where a teacher token ends, and the frame after it, which has read the bad bytes too, would be compared with
    a teacher that never read them.
    """
    stops = offsets[1 : len(offsets) - closed, 1]  # where each token of the body ends
    body = text[: int(stops[-1])] if len(stops) else b""
    start = len(separator) if separator and body.startswith(separator) else 0
    content = body[start:]
    while True:
        try:
            return content.decode(), start, closed
        except UnicodeDecodeError as error:
            holder = int(np.searchsorted(stops - start, error.start, side="right"))  # the first token ending past it
            content, closed = content[: max(int(stops[holder - 1]) - start if holder else 0, 0)], False


def _turns(tokenizer: FastTokenizer, completions: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each completion's turn, up to its first token that ends the turn (end of turn or EOS), or all of it, and
    whether that token was found. A student that writes its end-of-text token inside an answer has ended its turn
    there, as generation would have stopped: what it writes after that is not the turn's content."""
    counts = np.array([len(ids) for ids in completions], dtype=np.int64)
    flat = np.concatenate(completions) if completions else np.zeros(0, dtype=np.int64)
    closing = np.zeros(len(flat), dtype=np.bool_)
    for token in _closing_ids(tokenizer):  # one or two tokens: faster than np.isin
        closing |= flat == token
    found = np.flatnonzero(closing)
    begins = _exclusive_cumsum(counts)
    first = found[np.minimum(np.searchsorted(found, begins), len(found) - 1)] if len(found) else begins - 1
    closed = (first >= begins) & (first < begins + counts)  # the first closing token from the turn's start on
    lengths = np.where(closed, first - begins + 1, counts).tolist()
    return [ids[:length] for ids, length in zip(completions, lengths, strict=True)], closed


def _spell_turns(tokenizer: FastTokenizer, turns: list[np.ndarray]) -> list[_Spelling | Exception]:
    """Each turn's bytes and the offsets of its frames: a virtual prompt token at byte 0 (frame 0), then each token's
    byte span, as :func:`~alignment.token_byte_spans` gives it. The whole batch at once; where some id is outside
    the vocabulary, each turn alone, a turn that fails getting the error it raises."""
    info = tokenizer_info(tokenizer)
    try:
        flat = _checked_ids(info, np.concatenate(turns) if turns else np.zeros(0, dtype=np.int64))
    except TokenizerError:  # an id outside the vocabulary: the error must name its own turn
        return [_spelled_alone(tokenizer, turn) for turn in turns]
    counts = np.array([len(turn) for turn in turns], dtype=np.int64)
    letters, lengths, stops = _spelled(info, flat)
    begins = _exclusive_cumsum(counts)
    first_byte = np.concatenate([[0], stops])[begins]  # where each turn's bytes begin in ``letters``
    # each turn's frame 0 (at byte 0, zero-width) before its tokens, whose spans count from the turn's first byte
    ends_at = np.insert(stops - np.repeat(first_byte, counts), begins, 0)
    offsets = np.stack([ends_at - np.insert(lengths, begins, 0), ends_at], axis=1)
    virtual = begins + np.arange(len(turns))  # where each turn's frame 0 sits in ``offsets``
    ends = (first_byte + offsets[virtual + counts, 1]).tolist()
    return [
        (letters[a:b].tobytes(), offsets[k : k + n + 1])
        for a, b, k, n in zip(first_byte.tolist(), ends, virtual.tolist(), counts.tolist(), strict=True)
    ]


def _spelled_alone(tokenizer: FastTokenizer, ids: np.ndarray) -> _Spelling | Exception:
    try:
        spans = token_byte_spans(tokenizer, ids)
    except TokenizerError as error:
        return error
    return decode_bytes(tokenizer, ids), np.concatenate([np.zeros((1, 2), dtype=np.int64), spans])


_SEPARATORS: dict[tuple[Any, ...], str] = {}


def _separator(tokenizer: FastTokenizer, example: Mapping[str, Any], mode: Mode, kwargs: dict[str, Any]) -> str:
    """Template text between the end of the generation prompt and the content of the assistant turn.

    Found once per tokenizer, mode and template variables on a one-turn conversation, and cached: Qwen3 writes
    an empty ``<think>`` block there, Mistral a space; most templates nothing.
    """
    raw = example.get("messages") is None
    key = (tokenizer_info(tokenizer), mode, raw, repr(sorted(kwargs.items())))
    if key not in _SEPARATORS:
        probe: dict[str, Any] = {"prompt": "x"} if raw else {"messages": [{"role": "user", "content": "x"}]}
        prompt = render_prompt(tokenizer, probe, mode=mode, **kwargs)
        if prompt.mode == "completion":
            _SEPARATORS[key] = "" if raw else " "
        else:
            turn = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
            full = render(tokenizer, {"messages": turn}, mode="chat", turns="last", **kwargs)
            start = full.message_spans[-1]
            assert start is not None
            text, head = full.text.encode(), prompt.text.encode()
            _SEPARATORS[key] = text[len(head) : start[0]].decode() if text.startswith(head) else ""
    return _SEPARATORS[key]


def _aligned_rows(
    examples: Sequence[Mapping[str, Any]],
    completions: list[np.ndarray],
    tokenizers: tuple[FastTokenizer, FastTokenizer],
    modes: tuple[Mode, Mode],
    kwargs: tuple[dict[str, Any], dict[str, Any]],
    on_dropped: OnDropped,
    byte_frames: bool,
) -> list[_Row]:
    """The aligned row of every example, with the teacher's renderings tokenized in one batch and the rows aligned
    in one call.

    An example that fails raises what it raises alone, and the first failing example of the batch raises.
    """
    student_tok, teacher_tok = tokenizers
    turns, closed = _turns(student_tok, completions)  # up to the first closing token
    spelled = _spell_turns(student_tok, turns)
    samples: list[_Sample | Exception] = []
    separators: list[bytes] = []  # what the student's template writes before the content
    for example, spelling, turn_closed in zip(examples, spelled, closed.tolist(), strict=True):
        try:
            separator = _separator(student_tok, example, modes[0], kwargs[0]).encode()
            if isinstance(spelling, Exception):
                raise spelling
            content, start, finished = _completion_text(*spelling, turn_closed, separator)
            shown = content or finished  # a sample closed at once is rendered too: does the teacher stop there?
            samples.append((content, start, finished, _with_completion(example, content) if shown else {}))
        except Exception as error:  # raised below, in the order of the examples
            separator = b""
            samples.append(error)
        separators.append(separator)
    to_render = [s[3] for s in samples if not isinstance(s, Exception) and s[3]]
    options = {"mode": modes[1], "turns": "last", "on_dropped": on_dropped, **kwargs[1]}
    renderings = iter(render_each(teacher_tok, to_render, empty_ok=True, **options))
    prepared: list[_Row | _Pending | Exception] = []
    for example, ids, turn, spelling, sample, separator in zip(
        examples, completions, turns, spelled, samples, separators, strict=True
    ):
        teacher = next(renderings) if not isinstance(sample, Exception) and sample[3] else None
        try:
            found = (spelling, sample, separator, teacher)
            prepared.append(_prepare_row(tokenizers, example, (ids, turn), found, modes, kwargs, byte_frames))
        except Exception as error:  # raised below, in the order of the examples
            prepared.append(error)
    mapped = _map_rows([item for item in prepared if isinstance(item, _Pending)])
    return [_example(b, _finish_row, tokenizers, item, mapped, byte_frames) for b, item in enumerate(prepared)]


@dataclass(frozen=True, slots=True)
class _Pending:
    """An example whose student turn and teacher rendering are ready to align (with the batch's others)."""

    ids: np.ndarray  # (T_b,) the student's turn
    frames: int  # frames of the row: the whole completion, the turn and what follows it
    student: Turn  # offsets: a virtual prompt token at byte 0, then the turn's tokens
    teacher: Turn
    rendering: Rendering
    text: bytes  # the turn's bytes
    template: tuple[bytes, bool]  # the text the student's template writes before the content, and whether it did


def _prepare_row(
    tokenizers: tuple[FastTokenizer, FastTokenizer],
    example: Mapping[str, Any],
    completion: tuple[np.ndarray, np.ndarray],
    found: tuple[_Spelling | Exception, _Sample | Exception, bytes, Rendering | Exception | None],
    modes: tuple[Mode, Mode],
    kwargs: tuple[dict[str, Any], dict[str, Any]],
    byte_frames: bool,
) -> _Row | _Pending:
    """The row of one example of :func:`_aligned_rows` where it has nothing to compare, else what aligning it needs
    (``completion``: the student's ids and its turn; ``found``: the turn spelled, its sample, the separator and the
    teacher's rendering, as :func:`_aligned_rows` found them); raises what its sample or its teacher rendering
    raised."""
    (ids, turn), (spelling, sample, separator, teacher) = completion, found
    if isinstance(sample, Exception):
        raise sample
    content, start, finished, _ = sample
    if isinstance(teacher, AlignmentError) and not content.strip():
        teacher = None  # the teacher's template cannot close an empty turn: nothing to compare
    if isinstance(teacher, Exception):
        raise teacher
    if teacher is None or not _opens_cleanly(teacher):
        return _unaligned_row(tokenizers[1], example, len(ids), modes[1], kwargs[1], byte_frames)
    assert not isinstance(spelling, Exception)  # its sample would have failed
    text, offsets = spelling
    message = teacher.trained_messages[-1]
    span, (lead, _) = teacher.message_spans[message], teacher.trimmed[message]
    assert span is not None
    length = span[1] - span[0]
    closed = len(turn) if finished and len(content.encode()) + start == offsets[-2, 1] else None
    return _Pending(
        ids=turn,
        frames=len(ids),
        student=Turn(offsets, start + lead, length, closed),
        teacher=Turn(teacher.byte_offsets, span[0], length, teacher.end_of_turn[-1]),
        rendering=teacher,
        text=text,
        template=_template_text(tokenizers[0], separator, start),
    )


_Mapped = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # positions, mask, student chunks, teacher chunks


def _map_rows(pending: list[_Pending]) -> Iterator[_Mapped | Exception]:
    """:func:`_mapped` of the pending rows, in one call; where that fails, of each row alone, a row that fails
    getting the error it raises (the first failing example of the batch raises its own)."""
    try:
        return iter(_mapped(pending))
    except Exception:
        alone: list[_Mapped | Exception] = []
        for item in pending:
            try:
                alone.extend(_mapped([item]))
            except Exception as error:
                alone.append(error)
        return iter(alone)


def _mapped(pending: list[_Pending]) -> list[_Mapped]:
    """Map the teacher rendering of each pending row onto the student's frames: each row's turns aligned
    (:func:`~alignment.align.align_each_turn`), frame ``k`` of a row compared with the teacher position paired with
    it; frames past the turn are masked out."""
    if not pending:
        return []
    alignment = align_each_turn([item.student for item in pending], [item.teacher for item in pending])
    turns = np.array([len(item.ids) for item in pending], dtype=np.int64)
    frames = np.array([item.frames for item in pending], dtype=np.int64)
    lengths = np.array([len(item.rendering.input_ids) for item in pending], dtype=np.int64)
    frame_begins, teacher_begins = _exclusive_cumsum(frames), _exclusive_cumsum(lengths)
    row = alignment.rows
    kept = alignment.pairs[:, 0] < turns[row]  # the pair after the turn's last token predicts nothing of it
    at = frame_begins[row[kept]] + alignment.pairs[kept, 0]
    positions = np.zeros(int(frames.sum()), dtype=np.int64)
    positions[at] = alignment.pairs[kept, 1]
    mask = np.zeros(len(positions), dtype=np.bool_)
    mask[at] = True
    per_row = np.diff(alignment.chunk_offsets)
    layouts = (frame_begins, len(positions)), (teacher_begins, int(lengths.sum()))
    student_chunks, teacher_chunks = _chunk_ids(alignment.chunks, per_row, *layouts)
    frame_ends, teacher_ends = (frame_begins + frames).tolist(), (teacher_begins + lengths).tolist()
    return [
        (positions[a:b], mask[a:b], student_chunks[a:b], teacher_chunks[c:d])
        for a, b, c, d in zip(frame_begins.tolist(), frame_ends, teacher_begins.tolist(), teacher_ends, strict=True)
    ]


def _finish_row(
    tokenizers: tuple[FastTokenizer, FastTokenizer],
    item: _Row | _Pending | Exception,
    mapped: Iterator[_Mapped | Exception],
    byte_frames: bool,
) -> _Row:
    """The row of one example of :func:`_aligned_rows`, its byte frames too where asked; raises what it raised."""
    if isinstance(item, Exception):
        raise item
    if isinstance(item, _Row):
        return item
    found = next(mapped)
    if isinstance(found, Exception):
        raise found
    positions, mask, student_chunks, teacher_chunks = found
    row_frames = None
    if byte_frames:
        student_tok, teacher_tok = tokenizers
        student, teacher, rendering = item.student, item.teacher, item.rendering
        offsets = student.offsets
        whole = student.end_of_turn is not None and student.low + student.length == offsets[-2, 1]
        end = teacher.end_of_turn
        pieces = _text_pieces(teacher_tok, rendering.input_ids)
        row_frames = _row_frames(
            (offsets[1:], _text_pieces(student_tok, item.ids), item.text, student.low),
            (rendering.byte_offsets, pieces, rendering.text.encode(), teacher.low),
            student.length,
            end=(len(item.ids) - 1, end) if whole and end is not None else None,
            template=item.template,
        )
    return _Row(item.rendering.input_ids, positions, mask, student_chunks, teacher_chunks, item.rendering, row_frames)


def _opens_cleanly(teacher: Rendering) -> bool:
    """Whether the teacher's turn, if empty, starts after a token that an answer's first token would not have
    absorbed: a control token or a line break (not GPT-2's lone space after ``Assistant:``, a context it never reads
    before an answer, which would join it as `` 482``). A turn with content is checked token by token instead."""
    message = teacher.trained_messages[-1]
    span = teacher.message_spans[message]
    if span is None or span[0] < span[1]:
        return True
    before = int(np.searchsorted(teacher.byte_offsets[:, 1], span[0], side="right")) - 1
    if before < 0:
        return False
    start, stop = teacher.byte_offsets[before]
    return bool(teacher.control_mask[before]) or teacher.text.encode()[start:stop].endswith(b"\n")


def _template_text(tokenizer: FastTokenizer, separator: bytes, start: int) -> tuple[bytes, bool]:
    """The text the student's template writes before the content and whether the student wrote it, for the byte
    frames. If it left it out and the text begins with a control token (Qwen3's ``<think>``), there is no byte to
    ask for (the literal ``<`` would be wrong), so nothing is."""
    wrote = bool(separator) and start == len(separator)
    pattern = tokenizer_info(tokenizer).control_pattern
    if separator and not wrote and pattern is not None and pattern.match(separator.decode()):
        return b"", False
    return separator, wrote


def _text_pieces(tokenizer: FastTokenizer, ids: Sequence[int] | np.ndarray) -> list[bytes]:
    """The bytes of each of ``ids`` that is text; none for a control token, whose spelling in the content (a
    sampled end-of-text token decodes to its name) is not text that model read."""
    info = tokenizer_info(tokenizer)
    ids = np.asarray(ids)
    pieces = [info.token_bytes[i] for i in ids.tolist()]
    for k in np.flatnonzero(info.is_control[ids]).tolist():
        pieces[k] = b""
    return pieces


def _unaligned_row(
    tokenizer: FastTokenizer,
    example: Mapping[str, Any],
    frames: int,
    mode: Mode,
    kwargs: dict[str, Any],
    byte_frames: bool,
) -> _Row:
    """A sample with nothing to compare: the teacher reads its prompt and every frame is masked."""
    teacher = render_prompt(tokenizer, example, mode=mode, **kwargs)
    nothing = np.zeros(frames, dtype=np.int64)
    unchunked = np.full(len(teacher.input_ids), -1, dtype=np.int64)
    empty = _empty_frames() if byte_frames else None
    return _Row(teacher.input_ids, nothing, nothing.astype(np.bool_), nothing - 1, unchunked, teacher, empty)


def _chunk_ids(
    chunks: Chunks, per_row: np.ndarray, student: tuple[np.ndarray, int], teacher: tuple[np.ndarray, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Chunk id of each completion token and teacher token of every row, numbered within its row; chunks without a
    completion token or without a teacher token (zero-width tokens that only one side holds) are dropped.

    ``chunks`` holds ``per_row[r]`` chunks of row ``r`` after those of the rows before it (student ranges over its
    frames' offsets, where index ``i`` is completion token ``i - 1``). The ids come in flat arrays: ``student`` and
    ``teacher`` give where each row begins in them and their sizes.
    """
    row = np.repeat(np.arange(len(per_row)), per_row)
    first = np.maximum(chunks.student[:, 0] - 1, 0)  # offsets index i is completion token i - 1
    last = chunks.student[:, 1] - 1
    kept = (last > first) & (chunks.teacher[:, 1] > chunks.teacher[:, 0])
    row = row[kept]
    number = _places(np.bincount(row, minlength=len(per_row)))  # the chunk's place in its row
    (student_begins, frames), (teacher_begins, tokens) = student, teacher
    student_ids = _label_ranges(frames, first[kept] + student_begins[row], last[kept] + student_begins[row], number)
    lows, highs = (chunks.teacher[kept, side] + teacher_begins[row] for side in (0, 1))
    return student_ids, _label_ranges(tokens, lows, highs, number)


def _label_ranges(size: int, lows: np.ndarray, highs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``(size,)`` int64 holding ``values[k]`` on ``[lows[k], highs[k])`` (disjoint, increasing ranges) and -1
    elsewhere."""
    count = len(lows)
    labels = np.full(2 * count + 1, -1, dtype=np.int64)  # a gap, range 0, a gap, range 1, ..., a gap
    labels[1::2] = values
    repeats = np.empty(2 * count + 1, dtype=np.int64)
    repeats[1::2] = highs - lows
    repeats[0:-1:2] = lows  # gap k runs from the end of range k - 1 (from 0 for the first) to the start of range k
    repeats[-1] = size
    repeats[2::2] -= highs
    return np.repeat(labels, repeats)


def _with_completion(example: Mapping[str, Any], content: str) -> dict[str, Any]:
    if example.get("messages") is not None:
        return {"messages": [*prompt_messages(example), {"role": "assistant", "content": content}]}
    if example.get("prompt") is None:
        raise ExampleError(f"example needs 'messages' or 'prompt'; it has keys {sorted(example)}")
    return {"prompt": example["prompt"], "completion": content}


def _pad_id(tokenizer: FastTokenizer) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def _identity_row(prompt: np.ndarray, completion: np.ndarray, info: TokenizerInfo | None, ends: frozenset[int]) -> _Row:
    """The teacher reads the student's own ids; frame ``k`` is position ``len(prompt) - 1 + k``. With ``info``,
    byte frames: every byte of every completion token that is text (not a control token), and
    :data:`~alignment.nextbyte.END` at a closing token; then, for each text token followed by text or a closing
    token, the entry after its last byte (the teacher's side is the next token's frame)."""
    if len(prompt) == 0:
        raise AlignmentError("every prompt needs at least one token to predict the first completion token from")
    frames = np.arange(len(completion), dtype=np.int64)
    teacher_chunks = np.concatenate([np.full(len(prompt), -1, dtype=np.int64), frames])
    row_frames = None
    if info is not None:

        def text(token: int) -> bytes:
            return b"" if token in ends or info.is_control[token] else info.token_bytes[token]

        # (student frame, teacher frame, student prefix, teacher prefix, target, token end)
        entries: list[tuple[int, int, bytes, bytes, int, bool]] = []
        tokens = completion.tolist()
        for k, token in enumerate(tokens):
            if token in ends:
                entries.append((k, k, b"", b"", END, False))
                continue
            piece = text(token)
            entries += [(k, k, piece[:i], piece[:i], piece[i], False) for i in range(len(piece))]
            after = tokens[k + 1] if piece and k + 1 < len(tokens) else None
            if after is not None and (after in ends or text(after)):
                entries.append((k, k + 1, piece, b"", END if after in ends else text(after)[0], True))
        columns = list(zip(*entries, strict=True)) or [()] * 6
        row_frames = (
            np.array(columns[0], dtype=np.int64),
            list(columns[2]),
            len(prompt) - 1 + np.array(columns[1], dtype=np.int64),
            list(columns[3]),
            np.array(columns[4], dtype=np.int64),
            np.array(columns[5], dtype=np.bool_),
        )
    return _Row(
        np.concatenate([prompt, completion]),
        len(prompt) - 1 + frames,
        np.ones(len(completion), dtype=np.bool_),
        frames,
        teacher_chunks,
        None,
        row_frames,
    )


def _collate(
    rows: list[_Row], completions: list[np.ndarray], pad_id: int, *, aligned: bool, tokenizer: FastTokenizer
) -> TeacherBatch:
    """Right-pad the rows into a :class:`TeacherBatch`, with the branches of the byte frames (among the tokens of
    ``tokenizer``, the teacher's)."""
    batch, frames = len(rows), max((len(c) for c in completions), default=0)
    length = max((len(r.input_ids) for r in rows), default=0)
    input_ids = np.full((batch, length), pad_id, dtype=np.int64)
    attention = np.zeros((batch, length), dtype=np.bool_)
    positions = np.zeros((batch, frames), dtype=np.int64)
    mask = np.zeros((batch, frames), dtype=np.bool_)
    student_chunks = np.full((batch, frames), -1, dtype=np.int64)
    teacher_chunks = np.full((batch, length), -1, dtype=np.int64)
    for b, row in enumerate(rows):
        n, t = len(row.input_ids), len(row.positions)
        input_ids[b, :n], attention[b, :n], teacher_chunks[b, :n] = row.input_ids, True, row.teacher_chunks
        positions[b, :t], mask[b, :t], student_chunks[b, :t] = row.positions, row.mask, row.student_chunks
    frames_of = [row.frames for row in rows if row.frames is not None]
    framed = len(frames_of) == len(rows)
    units_of = id_of_bytes(tokenizer) if framed else None
    branched = [_row_branches(f, units_of) for f in frames_of] if units_of is not None else []
    count = max((len(ids) for _, ids, _ in branched), default=0)
    branch_ids = np.full((batch, count), pad_id, dtype=np.int64)
    branch_positions = np.zeros((batch, count), dtype=np.int64)
    for b, (_, ids, places) in enumerate(branched):
        branch_ids[b, : len(ids)], branch_positions[b, : len(ids)] = ids, places
    slots = [np.where(s >= 0, s + length, -1) for s, _, _ in branched]  # positions in branched_inputs()
    return TeacherBatch(
        input_ids=torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(attention),
        positions=torch.from_numpy(positions),
        mask=torch.from_numpy(mask),
        student_chunks=torch.from_numpy(student_chunks),
        teacher_chunks=torch.from_numpy(teacher_chunks),
        lengths=torch.tensor([len(c) for c in completions], dtype=torch.int64),
        aligned=aligned,
        renderings=tuple(r.rendering for r in rows if r.rendering is not None),
        byte_frames=_collate_frames(frames_of, slots) if framed else None,
        branch_ids=torch.from_numpy(branch_ids),
        branch_positions=torch.from_numpy(branch_positions),
        branch_count=torch.tensor([len(ids) for _, ids, _ in branched] or [0] * batch, dtype=torch.int64),
    )
