"""Exact UTF-8 byte spans of tokens: of any id sequence, and of text tokenized with control tokens kept apart."""

from __future__ import annotations

import itertools
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
    return _spelled(info, _checked_ids(info, ids))[0].tobytes()


def _spelled(info: TokenizerInfo, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n,)`` uint8: the bytes of the tokens ``ids``, one after the other (gathered from ``info.all_bytes``), and
    the tokens' byte lengths and where each ends in them (the caller's own arrays)."""
    lengths = info.byte_lengths[ids]
    stops = np.cumsum(lengths)
    shift = np.repeat(info.byte_starts[ids] - (stops - lengths), lengths)  # from a token's place here to its bytes
    spelled: np.ndarray = info.all_bytes[np.arange(stops[-1] if len(stops) else 0) + shift]
    return spelled, lengths, stops


def char_to_byte(text: str) -> np.ndarray:
    """``(len(text) + 1,)`` int64: the byte offset in ``text.encode()`` of each character index."""
    codepoints = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    widths = 1 + (codepoints >= 0x80) + (codepoints >= 0x800) + (codepoints >= 0x10000)
    return np.concatenate([[0], np.cumsum(widths, dtype=np.int64)])


def encode_segments(
    tokenizer: FastTokenizer, text: str, segments: Sequence[Segment]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize ``text`` given as segments that tile it: control tokens, and plain text between them.

    Plain segments are tokenized with every control token switched off, so their text never becomes one (the
    ordinary added tokens, the model's own pieces, are matched as the tokenizer matches them); the first plain
    segment of the text gets the tokenizer's start-of-text treatment (a Metaspace ``prepend_scheme="first"``
    prefix), later ones do not, as in the tokenizer's own encoding.

    Returns ``(ids, byte_offsets, control_mask)``; the byte offsets tile ``text.encode()``.
    """
    (encoded,) = encode_segments_batch(tokenizer, [(text, segments)])
    if isinstance(encoded, TokenizerError):
        raise encoded
    return encoded


def encode_segments_batch(
    tokenizer: FastTokenizer, texts: Sequence[tuple[str, Sequence[Segment]]]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | TokenizerError]:
    """:func:`encode_segments` of every ``(text, segments)``, with one tokenizer call for all of them.

    One call over the whole batch lets the tokenizer run in parallel and keeps its tables in cache. Where the
    tokens spell the text's bytes exactly (most text), their byte offsets follow from their byte lengths, so
    the tokenizer need not track character offsets; a SentencePiece-style space put before a plain segment that
    does not begin with one (a Metaspace prefix, Phi-3's and Llama 2's ``Prepend("▁")``) counts as zero bytes, as
    :func:`_byte_offsets` counts it. The other texts are tokenized again with character offsets. A text that
    :func:`encode_segments` would refuse gets the :class:`TokenizerError` it would raise, in its place.
    """
    info = tokenizer_info(tokenizer)
    results: list[tuple[np.ndarray, np.ndarray, np.ndarray] | TokenizerError | None] = []
    spelled: list[int] = []  # the texts whose ids were found, checked below in one pass
    ids: list[list[int]] = []
    heads: list[list[int]] = []
    for pieces, (text, segments) in zip(_encode_plain(info, texts, offsets=False), texts, strict=True):
        try:
            text_ids, text_heads = _segment_ids(info, text, segments, pieces)
        except TokenizerError as error:
            results.append(error)
            continue
        ids.append(text_ids)
        heads.append(text_heads)
        spelled.append(len(results))
        results.append(None)  # tokenized again below, with character offsets, unless its tokens spell it
    for k, tiled in zip(spelled, _tiled(info, [texts[k][0] for k in spelled], ids, heads), strict=True):
        results[k] = tiled
    again = [k for k, result in enumerate(results) if result is None]
    if again:
        for k, encodings in zip(again, _encode_plain(info, [texts[k] for k in again], offsets=True), strict=True):
            results[k] = _from_encodings(info, *texts[k], encodings)
    return [result for result in results if result is not None]


def _tiled(
    info: TokenizerInfo, texts: Sequence[str], ids: Sequence[list[int]], heads: Sequence[list[int]]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """For each text whose tokens ``ids`` spell its bytes exactly, in order, its ids, their byte offsets (from the
    tokens' byte lengths: they tile the text) and control mask; ``None`` for the others. A token of ``heads`` (the
    first of a plain segment that does not begin with a space) that begins with a space spells it without that
    space: the tokenizer put it there. One pass over the batch: where every text's tokens end at its last byte,
    comparing the concatenations compares each text."""
    if not texts:
        return []
    counts = np.array([len(row) for row in ids], dtype=np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(counts.sum()))
    ends = np.cumsum(counts)
    firsts = (ends - counts).tolist()  # where each text's tokens begin in ``flat``
    raws = [text.encode() for text in texts]
    letters, lengths, stops = _spelled(info, flat)
    head = np.fromiter((first + k for first, row in zip(firsts, heads, strict=True) for k in row), dtype=np.int64)
    head = head[info.first_byte[flat[head]] == 0x20]
    if len(head):  # the spaces the tokenizer put there: not the text's
        letters = np.delete(letters, (stops - lengths)[head])
        lengths[head] -= 1  # ``lengths`` is this function's own array (``_spelled`` gathered it)
        stops = np.cumsum(lengths)
    spelled_ends = np.concatenate([[0], stops])[ends]  # where each text's token bytes end in the concatenation
    text_ends = np.cumsum([len(raw) for raw in raws], dtype=np.int64)
    if np.array_equal(spelled_ends, text_ends) and np.array_equal(letters, np.frombuffer(b"".join(raws), np.uint8)):
        exact = [True] * len(raws)
    else:  # some text is not spelled by its tokens: compare each on its own
        bounds = np.concatenate([[0], spelled_ends]).tolist()
        exact = [letters[a:b].tobytes() == raw for a, b, raw in zip(bounds[:-1], bounds[1:], raws, strict=True)]
    offsets = np.stack([stops - lengths, stops], axis=1)
    offsets -= np.repeat(np.concatenate([[0], spelled_ends[:-1]]), counts)[:, None]  # each text from its byte 0
    control = info.is_control[flat]
    return [
        (flat[a:b], offsets[a:b], control[a:b]) if ok else None
        for a, b, ok in zip(firsts, ends.tolist(), exact, strict=True)
    ]


def _encode_plain(
    info: TokenizerInfo, texts: Sequence[tuple[str, Sequence[Segment]]], *, offsets: bool
) -> list[list[Any]]:
    """The encodings of every text's plain segments, in order: one tokenizer call per kind of segment, each
    distinct piece of text (template text repeats in every example) tokenized once. Without ``offsets``, each
    piece's ids (a list, read from the tokenizer once per distinct piece) instead of its encoding."""
    pieces: tuple[dict[str, Any], dict[str, Any]] = ({}, {})  # plain text at offset 0, and after it
    for text, segments in texts:
        for a, b, control in segments:
            if control is None:
                pieces[a != 0].setdefault(text[a:b])
    for model, encodings in zip((info.plain_first, info.plain_inner), pieces, strict=True):
        if not encodings:
            continue
        if offsets:
            encodings.update(zip(encodings, model.encode_batch(list(encodings), add_special_tokens=False), strict=True))
        else:  # encode_batch_fast (tokenizers >= 0.21) leaves out the character offsets
            encode = getattr(model, "encode_batch_fast", model.encode_batch)
            found = encode(list(encodings), add_special_tokens=False)
            encodings.update(zip(encodings, (encoding.ids for encoding in found), strict=True))
    return [[pieces[a != 0][text[a:b]] for a, b, control in segments if control is None] for text, segments in texts]


def _segment_ids(
    info: TokenizerInfo, text: str, segments: Sequence[Segment], pieces: Sequence[list[int]]
) -> tuple[list[int], list[int]]:
    """The ids of ``text`` (control tokens and the ids of its plain segments, ``pieces``, in order), and where in
    them each plain segment that does not begin with a space begins."""
    ids: list[int] = []
    heads: list[int] = []
    plain = iter(pieces)
    for a, b, control in segments:
        if control is not None:
            ids.append(control)
            continue
        piece = next(plain)
        if not piece:
            raise TokenizerError(
                f"{info.name} turns the text {text[a:b]!r} at characters {a}..{b} into no token at all: its "
                "vocabulary cannot spell these bytes, so the model could never read them"
            )
        if not text.startswith(" ", a):
            heads.append(len(ids))
        ids.extend(piece)
    return ids, heads


def _from_encodings(
    info: TokenizerInfo, text: str, segments: Sequence[Segment], encodings: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids, byte offsets and control mask of ``text`` from the encodings (with offsets) of its plain segments."""
    ids = np.array(_segment_ids(info, text, segments, [encoding.ids for encoding in encodings])[0], dtype=np.int64)
    chars: list[np.ndarray] = []
    counts: list[int] = []
    plain = iter(encodings)
    for a, b, control in segments:
        if control is not None:
            chars.append(np.array([[a, b]], dtype=np.int64))
            counts.append(1)
            continue
        encoding = next(plain)
        chars.append(np.array(encoding.offsets, dtype=np.int64).reshape(-1, 2) + a)
        counts.append(len(encoding.ids))
    bounds = np.array([(a, b) for a, b, _ in segments], dtype=np.int64).reshape(-1, 2)
    offsets = _byte_offsets(
        info,
        text,
        ids,
        np.concatenate(chars) if chars else np.zeros((0, 2), dtype=np.int64),
        np.repeat(np.arange(len(segments), dtype=np.int64), counts),
        bounds,
    )
    return ids, offsets, info.is_control[ids]


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
