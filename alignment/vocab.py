"""Match two vocabularies by the exact bytes of their tokens, across spelling conventions."""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Literal

import numpy as np

from alignment._tokenizer import FastTokenizer, TokenizerInfo, tokenizer_info
from alignment.errors import AlignmentError
from alignment.render import render_chat
from alignment.types import VocabMap, VocabProjection

__all__ = ["end_of_turn_id", "vocab_map", "vocab_projection"]


def end_of_turn_id(tokenizer: FastTokenizer) -> int | None:
    """The token that closes an assistant turn in the tokenizer's chat template, else its EOS token.

    Found by rendering a two-turn conversation, not by name: ``<|eot_id|>`` for Llama 3, ``<|im_end|>`` for
    Qwen, ``<end_of_turn>`` for Gemma, ``</s>`` for Mistral, ``<|end|>`` for Phi-3.

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> tok = load_tokenizer("smollm2")
        >>> tok.convert_ids_to_tokens(end_of_turn_id(tok))
        '<|im_end|>'
    """
    template = getattr(tokenizer, "chat_template", None)
    key = (tokenizer_info(tokenizer), template if template is None or isinstance(template, str) else repr(template))
    if key not in _END_OF_TURN:  # rendering is cheap but this runs per sample in prepare_teacher_batch: cache
        _END_OF_TURN[key] = _find_end_of_turn(tokenizer) if template else tokenizer_info(tokenizer).eos_id
    return _END_OF_TURN[key]


_END_OF_TURN: dict[tuple[TokenizerInfo, str | None], int | None] = {}


def _closing_ids(tokenizer: FastTokenizer) -> frozenset[int]:
    """The tokens that end a turn: :func:`end_of_turn_id` and the EOS token (one token for most completion models)."""
    return frozenset(i for i in (end_of_turn_id(tokenizer), tokenizer_info(tokenizer).eos_id) if i is not None)


def _find_end_of_turn(tokenizer: FastTokenizer) -> int | None:
    conversation = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    try:
        rendering = render_chat(tokenizer, conversation)
    except AlignmentError:
        return tokenizer_info(tokenizer).eos_id
    return int(rendering.input_ids[rendering.end_of_turn[-1]])


@lru_cache(maxsize=16)
def _bytes_index(token_bytes: tuple[bytes, ...], is_control: bytes) -> dict[bytes, list[int]]:
    index: dict[bytes, list[int]] = defaultdict(list)
    for token, (data, control) in enumerate(zip(token_bytes, is_control, strict=True)):
        if data and not control:
            index[data].append(token)
    return index


def vocab_map(student_tokenizer: FastTokenizer, teacher_tokenizer: FastTokenizer) -> VocabMap:
    """Pairs of student and teacher token ids whose byte strings are identical.

    Entries are compared as bytes, never as spelled strings: byte-level ``Ġthe``, SentencePiece ``▁the``
    and the three bytes of ``the`` with a leading space are the same token. Byte-fallback ``<0xE2>`` is the
    single byte ``0xE2``. Control tokens (special or added tokens) are never matched by spelling; the
    ``bos``, ``eos`` and ``end_of_turn`` tokens are paired by role in ``special_pairs`` instead.

    Args:
        student_tokenizer: the student's Hugging Face fast tokenizer (vocabulary size ``V``).
        teacher_tokenizer: the teacher's Hugging Face fast tokenizer (vocabulary size ``W``).

    Returns:
        A :class:`~alignment.VocabMap`.

    Raises:
        TokenizerError: a tokenizer's decoder is not a supported kind.

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> student, teacher = load_tokenizer("mistral_v3"), load_tokenizer("smollm2")
        >>> vm = vocab_map(student, teacher)
        >>> pair = vm.pairs[vm.pairs[:, 0] == student.convert_tokens_to_ids("▁the")][0]
        >>> teacher.convert_ids_to_tokens(int(pair[1]))
        'Ġthe'
        >>> vm.special_roles
        ('bos', 'eos', 'end_of_turn')
    """
    student, teacher = tokenizer_info(student_tokenizer), tokenizer_info(teacher_tokenizer)
    teacher_index = _bytes_index(teacher.token_bytes, teacher.is_control.tobytes())
    rows = [
        (s, t)
        for s, data in enumerate(student.token_bytes)
        if data and not student.is_control[s]
        for t in teacher_index.get(data, ())
    ]
    pairs = np.asarray(sorted(rows), dtype=np.int64).reshape(-1, 2)
    roles = {
        "bos": (student.bos_id, teacher.bos_id),
        "eos": (student.eos_id, teacher.eos_id),
        "end_of_turn": (end_of_turn_id(student_tokenizer), end_of_turn_id(teacher_tokenizer)),
    }
    present = [(role, ids) for role, ids in roles.items() if ids[0] is not None and ids[1] is not None]
    return VocabMap(
        pairs=pairs,
        special_pairs=np.asarray([ids for _, ids in present], dtype=np.int64).reshape(-1, 2),
        special_roles=tuple(role for role, _ in present),
        student_size=student.vocab_size,
        teacher_size=teacher.vocab_size,
    )


def vocab_projection(
    student_tokenizer: FastTokenizer, teacher_tokenizer: FastTokenizer, *, kind: Literal["prefix", "exact"] = "prefix"
) -> VocabProjection:
    """Classes that make next-token distributions over two vocabularies comparable.

    The anchors are the byte strings both vocabularies hold as ordinary tokens. With ``kind="prefix"`` every
    token joins the class of the longest anchor its bytes begin with, so a token that exists on one side only is
    still credited: Llama 3 writes ``123`` as one token while Qwen splits every digit, and the class of ``1``
    then holds Llama's ``1``, ``12``, ``123``, … and Qwen's ``1``. Projected, the KL between the two
    distributions is the KL between the probabilities of *how the next text begins*. With ``kind="exact"``
    only identical byte strings share a class and everything else is one tail bucket (the common
    shared-vocabulary loss, which punishes a student for preferring a token the teacher lacks).

    The end-of-turn and EOS tokens of both sides share one class (paired by role); every other control token,
    and any token without an anchor, goes to a last "other" class, so each projection is a proper
    distribution.

    Args:
        student_tokenizer: the student's Hugging Face fast tokenizer (``V`` tokens).
        teacher_tokenizer: the teacher's Hugging Face fast tokenizer (``W`` tokens).
        kind: ``"prefix"`` (default) or ``"exact"``.

    Returns:
        A :class:`~alignment.VocabProjection`.

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> student, teacher = load_tokenizer("mistral_v3"), load_tokenizer("smollm2")
        >>> p = vocab_projection(student, teacher)
        >>> the = p.teacher_classes[teacher.convert_tokens_to_ids("Ġthe")]
        >>> sorted(t for t, i in student.get_vocab().items() if p.student_classes[i] == the)  # no '▁theoret' twin
        ['▁the', '▁theoret']
    """
    if kind not in ("prefix", "exact"):
        raise ValueError(f"kind must be 'prefix' or 'exact', got {kind!r}")
    student, teacher = tokenizer_info(student_tokenizer), tokenizer_info(teacher_tokenizer)
    stops = (
        {end_of_turn_id(student_tokenizer), student.eos_id} - {None},
        {end_of_turn_id(teacher_tokenizer), teacher.eos_id} - {None},
    )
    student_classes, teacher_classes, count = _classes(student, teacher, kind, stops)
    return VocabProjection(
        student_classes=student_classes, teacher_classes=teacher_classes, num_classes=count, kind=kind
    )


@lru_cache(maxsize=32)
def _anchor_index(student: TokenizerInfo, teacher: TokenizerInfo) -> dict[bytes, int]:
    ordinary_s = {b for b, c in zip(student.token_bytes, student.is_control, strict=True) if b and not c}
    shared = {b for b, c in zip(teacher.token_bytes, teacher.is_control, strict=True) if b and not c} & ordinary_s
    return {anchor: index for index, anchor in enumerate(sorted(shared))}


def _classes(
    student: TokenizerInfo, teacher: TokenizerInfo, kind: str, stops: tuple[set[int | None], set[int | None]]
) -> tuple[np.ndarray, np.ndarray, int]:
    anchors = _anchor_index(student, teacher)
    stop_class, other = len(anchors), len(anchors) + 1
    longest = max(map(len, anchors), default=0)

    def classify(info: TokenizerInfo, stop_ids: set[int | None]) -> np.ndarray:
        classes = np.full(info.vocab_size, other, dtype=np.int64)
        for token, (data, control) in enumerate(zip(info.token_bytes, info.is_control, strict=True)):
            if token in stop_ids:
                classes[token] = stop_class
            elif data and not control:
                if kind == "exact":
                    classes[token] = anchors.get(data, other)
                    continue
                for end in range(min(len(data), longest), 0, -1):
                    found = anchors.get(data[:end])
                    if found is not None:
                        classes[token] = found
                        break
        return classes

    return classify(student, stops[0]), classify(teacher, stops[1]), len(anchors) + 2
