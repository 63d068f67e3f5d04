"""Exact UTF-8 byte spans of tokens: of any id sequence, and of text tokenized with control tokens kept apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from alignment._tokenizer import FastTokenizer, TokenizerInfo, tokenizer_info
from alignment.errors import TokenizerError

__all__ = ["decode_bytes", "token_byte_spans"]

Segment = tuple[int, int, int | None]  # [char start, char stop) of the text, control token id or None for plain text


def _checked_ids(info: TokenizerInfo, ids: Any) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"ids must be one sequence of shape (T,), got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"ids must be integers, got dtype {array.dtype}")
    bad = np.flatnonzero((array < 0) | (array >= info.vocab_size))
    if len(bad):
        raise TokenizerError(
            f"ids[{bad[0]}] = {array[bad[0]]} is outside the vocabulary of {info.name} "
            f"(valid ids are 0..{info.vocab_size - 1}); were these ids produced by another tokenizer?"
        )
    return array.astype(np.int64, copy=False)


def token_byte_spans(tokenizer: FastTokenizer, ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Exact byte span of every token of an arbitrary id sequence.

    The sequence need not be the canonical tokenization of its text (on-policy samples often are not).
    Each ordinary token is as wide as its exact bytes (``Ġ``/``Ċ`` byte-level pieces, SentencePiece ``▁``
    as a space, ``<0xNN>`` as one byte, so pieces of one multi-byte character get one span each); a control
    (added) token spans its literal text, as it does in a :class:`~alignment.Rendering`. The spans tile
    :func:`decode_bytes` of the same ids: contiguous, non-overlapping, starting at 0.

    Args:
        tokenizer: a Hugging Face fast tokenizer.
        ids: ``(T,)`` integer token ids.

    Returns:
        ``(T, 2)`` int64 half-open byte spans ``[start, stop)``.

    Raises:
        TokenizerError: an id is outside the vocabulary, or the tokenizer's decoder is unsupported.
        TypeError: ``ids`` are not integers.

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> tok = load_tokenizer("smollm2")
        >>> ids = tok.encode(" ☕!", add_special_tokens=False)
        >>> token_byte_spans(tok, ids).tolist()
        [[0, 2], [2, 3], [3, 4], [4, 5]]
    """
    info = tokenizer_info(tokenizer)
    lengths = info.byte_lengths[_checked_ids(info, ids)]
    stops = np.cumsum(lengths)
    return np.stack([stops - lengths, stops], axis=1)


def decode_bytes(tokenizer: FastTokenizer, ids: Sequence[int] | np.ndarray) -> bytes:
    """The exact bytes the tokens spell, control tokens as their literal text.

    Unlike ``tokenizer.decode`` nothing is stripped, cleaned or replaced: a sequence that ends inside a
    multi-byte character returns the partial bytes.

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> tok = load_tokenizer("mistral_v3")
        >>> decode_bytes(tok, tok.encode("Hi ☕", add_special_tokens=False)[:-1])
        b' Hi \\xe2\\x98'
    """
    info = tokenizer_info(tokenizer)
    return b"".join(info.token_bytes[i] for i in _checked_ids(info, ids).tolist())


def char_to_byte(text: str) -> np.ndarray:
    """``(len(text) + 1,)`` int64: the byte offset in ``text.encode()`` of each character index."""
    codepoints = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    widths = 1 + (codepoints >= 0x80) + (codepoints >= 0x800) + (codepoints >= 0x10000)
    return np.concatenate([[0], np.cumsum(widths, dtype=np.int64)])


def encode_segments(
    tokenizer: FastTokenizer, text: str, segments: Sequence[Segment]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize ``text`` given as segments that tile it: control tokens, and plain text between them.

    Plain segments are tokenized with every added token switched off, so their text never becomes a
    control token; the first plain segment of the text gets the tokenizer's start-of-text treatment
    (a Metaspace ``prepend_scheme="first"`` prefix), later ones do not, as in the tokenizer's own encoding.

    Returns ``(ids, byte_offsets, control_mask)``; the byte offsets tile ``text.encode()``.
    """
    info = tokenizer_info(tokenizer)
    plain = [(a, b) for a, b, control in segments if control is None]
    encodings: list[Any] = [None] * len(plain)
    first = [k for k, (a, _) in enumerate(plain) if a == 0]
    inner = [k for k, (a, _) in enumerate(plain) if a != 0]
    for model, picks in ((info.plain_first, first), (info.plain_inner, inner)):
        if picks:
            batch = model.encode_batch([text[plain[k][0] : plain[k][1]] for k in picks], add_special_tokens=False)
            for k, encoding in zip(picks, batch, strict=True):
                encodings[k] = encoding
    ids: list[int] = []
    chars: list[tuple[int, int]] = []
    segment_of: list[int] = []
    cursor = 0
    for index, (a, b, control) in enumerate(segments):
        if control is not None:
            ids.append(control)
            chars.append((a, b))
            segment_of.append(index)
            continue
        encoding = encodings[cursor]
        cursor += 1
        if not encoding.ids:
            raise TokenizerError(
                f"{info.name} turns the text {text[a:b]!r} at characters {a}..{b} into no token at all: its "
                "vocabulary cannot spell these bytes, so the model could never read them"
            )
        ids.extend(encoding.ids)
        chars.extend((a + s, a + e) for s, e in encoding.offsets)
        segment_of.extend([index] * len(encoding.ids))
    id_array = np.asarray(ids, dtype=np.int64)
    bounds = np.asarray([(a, b) for a, b, _ in segments], dtype=np.int64).reshape(-1, 2)
    offsets = _byte_offsets(
        info,
        text,
        id_array,
        np.asarray(chars, dtype=np.int64).reshape(-1, 2),
        np.asarray(segment_of, dtype=np.int64),
        bounds,
    )
    return id_array, offsets, info.is_control[id_array]


def _byte_offsets(
    info: TokenizerInfo, text: str, ids: np.ndarray, chars: np.ndarray, segment_of: np.ndarray, bounds: np.ndarray
) -> np.ndarray:
    """Byte spans from the tokenizer's character offsets, refined by each token's exact byte length.

    Character offsets point into the original text (they survive normalisation) but collapse the pieces
    of one character onto the same span. Runs of such overlapping tokens share out their characters' bytes
    by token byte length; a SentencePiece prefix space the text lacks counts as zero bytes. Each token then
    ends where the next token of its segment starts, so the spans tile every segment (text a normaliser
    rewrote or dropped goes to the token before it).
    """
    if len(ids) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    to_byte = char_to_byte(text)
    raw = np.frombuffer(text.encode(), dtype=np.uint8)
    starts, stops = to_byte[chars[:, 0]], to_byte[chars[:, 1]]
    at = np.minimum(starts, len(raw) - 1) if len(raw) else np.zeros_like(starts)
    text_is_space = raw[at] == 0x20 if len(raw) else np.zeros(len(ids), dtype=np.bool_)
    lengths = info.byte_lengths[ids] - ((info.first_byte[ids] == 0x20) & ~text_is_space & ~info.is_control[ids])
    same_segment = np.concatenate([[False], segment_of[1:] == segment_of[:-1]])
    overlaps = same_segment & np.concatenate([[False], chars[1:, 0] < chars[:-1, 1]])
    heads = np.flatnonzero(~overlaps)
    group = np.cumsum(~overlaps) - 1
    run_ends = np.maximum.reduceat(stops, heads)[group]
    before = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    inside = starts[heads][group] + before - before[heads][group]
    starts = np.where(overlaps, np.minimum(inside, run_ends), starts)
    seg_start, seg_stop = to_byte[bounds[segment_of, 0]], to_byte[bounds[segment_of, 1]]
    starts = np.where(same_segment, starts, seg_start)
    starts = np.maximum.accumulate(np.minimum(starts, seg_stop))
    last_in_segment = np.concatenate([segment_of[1:] != segment_of[:-1], [True]])
    stops = np.where(last_in_segment, seg_stop, np.concatenate([starts[1:], [0]]))
    return np.stack([starts, stops], axis=1)
