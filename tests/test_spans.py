"""Tests for :mod:`alignment.spans`: exact byte spans of arbitrary id sequences, and segment encoding.

Three tiers: hand-computed goldens on vendored real tokenizers and the synthetic ones; hypothesis properties over
unicode text and over arbitrary (non-canonical) id sequences for every available tokenizer; and an exhaustive
check of every vocabulary entry's width against bytes computed here, independently of the package, from the raw
vocabulary pieces (GPT-2's ``bytes_to_unicode`` inverted for byte-level BPE; ``▁`` and ``<0xNN>`` for
SentencePiece). :func:`reference` is also used by ``tests/test_vocab.py``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alignment._tokenizer import tokenizer_info
from alignment.errors import AlignmentError, TokenizerError
from alignment.spans import (
    _encode_plain,
    _from_encodings,
    char_to_byte,
    decode_bytes,
    encode_segments,
    encode_segments_batch,
    token_byte_spans,
)
from tests.tokenizers import SYNTHETIC, available_real_names, load_real

# How each tokenizer spells its vocabulary, known from its family (not read from the package).
BYTE_LEVEL = frozenset({"llama3", "qwen3", "mistral_nemo", "gpt2", "smollm2", "deepseek_v3", "synthetic_bytebpe"})
SENTENCEPIECE = frozenset({"mistral_v3", "gemma3", "phi3", "synthetic_sp"})
STRIPS_LEADING_SPACE = frozenset({"mistral_v3", "phi3", "synthetic_sp"})  # decoder ends with Strip(" ", 1, 0)
NORMALIZES_NFC = frozenset({"qwen3"})
# A control token of each tokenizer (its end-of-turn token), as literal text.
CONTROL = {
    "llama3": "<|eot_id|>",
    "qwen3": "<|im_end|>",
    "mistral_v3": "</s>",
    "mistral_nemo": "</s>",
    "gemma3": "<end_of_turn>",
    "gpt2": "<|endoftext|>",
    "phi3": "<|end|>",
    "smollm2": "<|im_end|>",
    "deepseek_v3": "<｜end▁of▁sentence｜>",  # full-width bars: DeepSeek's spelling
    "synthetic_bytebpe": "<|im_end|>",
    "synthetic_sp": "</s>",
}
NAMES = (*available_real_names(), *SYNTHETIC)
NO_DEADLINE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def get_tokenizer(name: str) -> Any:
    """A real (``load_real``) or synthetic tokenizer by name; cached, do not mutate."""
    return SYNTHETIC[name]() if name in SYNTHETIC else load_real(name)


# --- an independent reference for the bytes of every vocabulary entry -------------------------------------------------


@functools.cache
def unicode_to_byte() -> dict[str, int]:
    """GPT-2's ``bytes_to_unicode`` table, inverted: printable bytes stand for themselves, the rest map to 256+n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return {char: b for b, char in table.items()}


_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")


def piece_bytes(name: str, piece: str) -> bytes:
    """The bytes a model vocabulary piece stands for, by the tokenizer family's spelling convention."""
    if name in BYTE_LEVEL:
        table = unicode_to_byte()
        return bytes(table[char] for char in piece)
    if name in SENTENCEPIECE:
        match = _BYTE_PIECE.fullmatch(piece)
        return bytes([int(match.group(1), 16)]) if match else piece.replace("▁", " ").encode()
    raise KeyError(f"add {name!r} to BYTE_LEVEL or SENTENCEPIECE in tests/test_spans.py")


@dataclass(frozen=True)
class Reference:
    """Bytes of every id of one tokenizer, computed in the tests from its raw vocabulary."""

    token_bytes: tuple[bytes, ...]
    is_control: np.ndarray  # (V,) bool
    lengths: np.ndarray  # (V,) int64
    single_bytes: frozenset[int]  # byte values that have an ordinary one-byte token
    added: frozenset[int]  # ids of every added token, control or not


@functools.cache
def reference(name: str) -> Reference:
    """Control (added) tokens spell their literal text; every other id the bytes of its model piece.

    An added token is a control token when it is special, or when it is not the model's own piece at that id
    (a non-special added token that *is* the model's piece, like Gemma's ``<unused0>``, stays ordinary).
    """
    tokenizer = get_tokenizer(name)
    backend = tokenizer.backend_tokenizer
    size = len(tokenizer)
    model = backend.get_vocab(with_added_tokens=False)
    added = backend.get_added_tokens_decoder()
    control = {int(i): token.content for i, token in added.items() if token.special or model.get(token.content) != i}
    data: list[bytes | None] = [None] * size
    for index, content in control.items():
        data[index] = content.encode()
    for piece, index in model.items():
        if index not in control:
            data[index] = piece_bytes(name, piece)
    assert all(d is not None for d in data), f"{name}: ids without a piece"
    token_bytes = tuple(d or b"" for d in data)
    is_control = np.zeros(size, dtype=np.bool_)
    is_control[list(control)] = True
    singles = frozenset(d[0] for d, c in zip(token_bytes, is_control, strict=True) if len(d) == 1 and not c)
    lengths = np.fromiter(map(len, token_bytes), dtype=np.int64, count=size)
    return Reference(
        token_bytes=token_bytes, is_control=is_control, lengths=lengths, single_bytes=singles, added=frozenset(added)
    )


@functools.cache
def interesting_ids(name: str) -> tuple[int, ...]:
    """Ids that uniform sampling over a large vocabulary rarely draws: control tokens and single-byte tokens."""
    ref = reference(name)
    controls = np.flatnonzero(ref.is_control)[:64].tolist()
    singles = [i for i, d in enumerate(ref.token_bytes) if len(d) == 1 and not ref.is_control[i]]
    return tuple(controls + singles)


def ids_of(tokenizer: Any, pieces: list[str]) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(pieces)
    assert tokenizer.convert_ids_to_tokens(ids) == pieces, "a golden piece is not in the vocabulary"
    return list(ids)


def assert_tile(spans: np.ndarray, total: int) -> None:
    assert spans.dtype == np.int64 and spans.ndim == 2 and spans.shape[1] == 2
    if len(spans) == 0:
        assert total == 0
        return
    assert spans[0, 0] == 0
    assert (spans[1:, 0] == spans[:-1, 1]).all(), spans.tolist()
    assert (spans[:, 1] >= spans[:, 0]).all()
    assert spans[-1, 1] == total


def test_reference_byte_table_golden() -> None:
    # the test's own GPT-2 table: printable ASCII is itself, space/newline/tab/NUL/NBSP/soft hyphen are shifted
    table = unicode_to_byte()
    assert len(table) == 256 and sorted(table.values()) == list(range(256))
    assert {c: table[c] for c in "AĠĊĉĀłŃâ"} == {
        "A": 0x41,
        "Ġ": 0x20,
        "Ċ": 0x0A,
        "ĉ": 0x09,
        "Ā": 0x00,
        "ł": 0xA0,
        "Ń": 0xAD,
        "â": 0xE2,
    }


# --- tier 1: hand-computed goldens ------------------------------------------------------------------------------------
# (tokenizer, text whose canonical encoding gives the pieces or None, pieces, spans, bytes)
GOLDENS = [
    # " ☕!" = 20 | E2 98 95 | 21: Ġâ = 20 E2, ĺ = 98, ķ = 95
    pytest.param(
        "smollm2",
        " ☕!",
        ["Ġâ", "ĺ", "ķ", "!"],
        [[0, 2], [2, 3], [3, 4], [4, 5]],
        b" \xe2\x98\x95!",
        id="smollm2-coffee",
    ),
    # the same bytes, one byte per token: a non-canonical sequence
    pytest.param(
        "smollm2",
        None,
        ["Ġ", "â", "ĺ", "ķ", "!"],
        [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]],
        b" \xe2\x98\x95!",
        id="smollm2-coffee-noncanonical",
    ),
    # 你 = E4 BD A0, 好 = E5 A5 BD: ä½ = E4 BD, ł = A0, å¥ = E5 A5, ½ = BD
    pytest.param(
        "smollm2", "你好", ["ä½", "ł", "å¥", "½"], [[0, 2], [2, 3], [3, 5], [5, 6]], "你好".encode(), id="smollm2-cjk"
    ),
    # e + U+0301 (CC 81): Ì = CC, ģ = 81
    pytest.param(
        "smollm2", "e\u0301", ["e", "Ì", "ģ"], [[0, 1], [1, 2], [2, 3]], b"e\xcc\x81", id="smollm2-combining-mark"
    ),
    pytest.param(
        "smollm2", "a<|im_end|>", ["a", "<|im_end|>"], [[0, 1], [1, 11]], b"a<|im_end|>", id="smollm2-control-token"
    ),
    pytest.param(
        "smollm2",
        None,
        ["<|im_start|>", "Ċ", "ĠĠ"],
        [[0, 12], [12, 13], [13, 15]],
        b"<|im_start|>\n  ",
        id="smollm2-whitespace",
    ),
    pytest.param("smollm2", None, ["Ġâ", "ĺ"], [[0, 2], [2, 3]], b" \xe2\x98", id="smollm2-partial-character"),
    # SentencePiece: ▁ is one space byte, each <0xNN> one byte
    pytest.param(
        "mistral_v3",
        "☕",
        ["▁", "<0xE2>", "<0x98>", "<0x95>"],
        [[0, 1], [1, 2], [2, 3], [3, 4]],
        b" \xe2\x98\x95",
        id="mistral-coffee-byte-fallback",
    ),
    pytest.param(
        "mistral_v3",
        "你好世界",
        ["▁", "你", "好", "世", "界"],
        [[0, 1], [1, 4], [4, 7], [7, 10], [10, 13]],
        " 你好世界".encode(),
        id="mistral-cjk",
    ),
    pytest.param(
        "mistral_v3",
        "e\u0301!",
        ["▁e", "\u0301", "!"],
        [[0, 2], [2, 4], [4, 5]],
        b" e\xcc\x81!",
        id="mistral-combining-mark",
    ),
    pytest.param("mistral_v3", "a  b", ["▁a", "▁▁", "b"], [[0, 2], [2, 4], [4, 5]], b" a  b", id="mistral-whitespace"),
    pytest.param("mistral_v3", "Hi</s>", ["▁Hi", "</s>"], [[0, 3], [3, 7]], b" Hi</s>", id="mistral-control-eos"),
    pytest.param(
        "mistral_v3",
        None,
        ["<s>", "[INST]", "▁Hi", "[/INST]"],
        [[0, 3], [3, 9], [9, 12], [12, 19]],
        b"<s>[INST] Hi[/INST]",
        id="mistral-control-tokens",
    ),
    pytest.param(
        "mistral_v3",
        None,
        ["▁", "<0xF0>", "<0x9F>"],
        [[0, 1], [1, 2], [2, 3]],
        b" \xf0\x9f",
        id="mistral-partial-emoji",
    ),
    pytest.param(
        "phi3",
        " ☕!",
        ["▁▁", "<0xE2>", "<0x98>", "<0x95>", "!"],
        [[0, 2], [2, 3], [3, 4], [4, 5], [5, 6]],
        b"  \xe2\x98\x95!",
        id="phi3-coffee",
    ),
    pytest.param(
        "phi3",
        None,
        ["<|user|>", "▁Hi", "<|end|>"],
        [[0, 8], [8, 11], [11, 18]],
        b"<|user|> Hi<|end|>",
        id="phi3-control-tokens",
    ),
    # GPT-2: Ġâĺ = 20 E2 98, ķ = 95
    pytest.param("gpt2", " ☕", ["Ġâĺ", "ķ"], [[0, 3], [3, 4]], b" \xe2\x98\x95", id="gpt2-coffee"),
    pytest.param(
        "gpt2", "!<|endoftext|>", ["!", "<|endoftext|>"], [[0, 1], [1, 14]], b"!<|endoftext|>", id="gpt2-control-token"
    ),
    pytest.param(
        "synthetic_sp",
        "🦜",
        ["▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x9C>"],
        [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]],
        " 🦜".encode(),
        id="synthetic-sp-emoji",
    ),
    pytest.param(
        "synthetic_bytebpe",
        " 🦜<|role_sep|>",
        ["ĠðŁ", "¦", "ľ", "<|role_sep|>"],
        [[0, 3], [3, 4], [4, 5], [5, 17]],
        " 🦜<|role_sep|>".encode(),
        id="synthetic-bpe-nonspecial-added",
    ),
    # needs ../shared: one piece for a whole multi-byte character, and multi-byte control tokens
    pytest.param(
        "gemma3",
        " ☕!",
        ["▁", "☕", "!"],
        [[0, 1], [1, 4], [4, 5]],
        b" \xe2\x98\x95!",
        id="gemma3-coffee",
        marks=pytest.mark.integration,
    ),
    pytest.param("qwen3", "☕", ["âĺķ"], [[0, 3]], b"\xe2\x98\x95", id="qwen3-coffee", marks=pytest.mark.integration),
    pytest.param(
        "llama3",
        "a<|eot_id|>",
        ["a", "<|eot_id|>"],
        [[0, 1], [1, 11]],
        b"a<|eot_id|>",
        id="llama3-control-token",
        marks=pytest.mark.integration,
    ),
    # <｜end▁of▁sentence｜>: < ｜(3) end ▁(3) of ▁(3) sentence ｜(3) > = 1+3+3+3+2+3+8+3+1 = 27 bytes
    pytest.param(
        "deepseek_v3",
        None,
        ["<｜end▁of▁sentence｜>"],
        [[0, 27]],
        "<｜end▁of▁sentence｜>".encode(),
        id="deepseek-control-token",
        marks=pytest.mark.integration,
    ),
]


@pytest.mark.parametrize(("name", "text", "pieces", "spans", "data"), GOLDENS)
def test_golden_spans_and_bytes(
    name: str, text: str | None, pieces: list[str], spans: list[list[int]], data: bytes
) -> None:
    tok = get_tokenizer(name)
    ids = ids_of(tok, pieces)
    if text is not None:  # the golden is the canonical encoding of the text
        assert tok.convert_ids_to_tokens(tok.encode(text, add_special_tokens=False)) == pieces
    assert token_byte_spans(tok, ids).tolist() == spans
    assert decode_bytes(tok, ids) == data


@pytest.mark.parametrize("name", NAMES)
def test_empty_sequence(name: str) -> None:
    tok = get_tokenizer(name)
    for empty in ([], (), np.zeros(0, dtype=np.int64)):
        spans = token_byte_spans(tok, empty)
        assert spans.shape == (0, 2) and spans.dtype == np.int64
        assert decode_bytes(tok, empty) == b""


def _torch_tensor(ids: list[int]) -> Any:
    import torch

    return torch.tensor(ids)


@pytest.mark.parametrize(
    "make",
    [np.asarray, lambda x: np.asarray(x, dtype=np.int32), tuple, _torch_tensor],
    ids=["int64", "int32", "tuple", "torch"],
)
def test_accepts_any_integer_sequence(make: Any) -> None:
    tok = get_tokenizer("smollm2")
    ids = ids_of(tok, ["Ġâ", "ĺ", "ķ", "!"])
    assert token_byte_spans(tok, make(ids)).tolist() == [[0, 2], [2, 3], [3, 4], [4, 5]]
    assert decode_bytes(tok, make(ids)) == b" \xe2\x98\x95!"


# --- the whole vocabulary against the independent reference -----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_token_width_matches_its_piece(name: str) -> None:
    tok = get_tokenizer(name)
    ref = reference(name)
    everything = np.arange(len(tok))
    spans = token_byte_spans(tok, everything)
    assert_tile(spans, int(ref.lengths.sum()))
    widths = spans[:, 1] - spans[:, 0]
    wrong = np.flatnonzero(widths != ref.lengths)
    assert len(wrong) == 0, [(int(i), tok.convert_ids_to_tokens(int(i)), int(widths[i])) for i in wrong[:5]]
    assert decode_bytes(tok, everything) == b"".join(ref.token_bytes)


# --- tier 2: properties over arbitrary id sequences -------------------------------------------------------------------


@st.composite
def vocabulary_ids(draw: st.DrawFn, name: str, max_size: int = 24) -> list[int]:
    """Any ids of the vocabulary, often control tokens and lone bytes that split characters."""
    size = len(get_tokenizer(name))
    one = st.one_of(st.integers(0, size - 1), st.sampled_from(interesting_ids(name)))
    return draw(st.lists(one, max_size=max_size))


@pytest.mark.parametrize("name", NAMES)
@NO_DEADLINE
@given(data=st.data())
def test_arbitrary_ids_tile_their_exact_bytes(name: str, data: st.DataObject) -> None:
    tok, ref = get_tokenizer(name), reference(name)
    ids = data.draw(vocabulary_ids(name))
    spans = token_byte_spans(tok, ids)
    raw = decode_bytes(tok, ids)
    assert spans.shape == (len(ids), 2)
    assert_tile(spans, len(raw))
    assert raw == b"".join(ref.token_bytes[i] for i in ids)
    for (start, stop), i in zip(spans.tolist(), ids, strict=True):
        assert raw[start:stop] == ref.token_bytes[i]


@pytest.mark.parametrize("name", NAMES)
@NO_DEADLINE
@given(data=st.data())
def test_hf_decode_agrees_with_decode_bytes(name: str, data: st.DataObject) -> None:
    tok = get_tokenizer(name)
    ids = data.draw(vocabulary_ids(name))
    raw = decode_bytes(tok, ids)
    decoded = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    expected = raw.decode("utf-8", errors="replace")
    if name in STRIPS_LEADING_SPACE and expected.startswith(" "):  # SentencePiece drops one leading space
        expected = expected[1:]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        if name in SENTENCEPIECE:  # ByteFallback replaces every byte of an invalid run, Python only maximal parts
            assert "\ufffd" in decoded
            return
    assert decoded == expected


@pytest.mark.parametrize("name", NAMES)
def test_ids_ending_mid_character_give_partial_bytes(name: str) -> None:
    tok, ref = get_tokenizer(name), reference(name)
    lead = next(i for i, d in enumerate(ref.token_bytes) if d == b"\xe2" and not ref.is_control[i])  # ☕ = E2 98 95
    ids = [*tok.encode("a", add_special_tokens=False), lead]
    raw = decode_bytes(tok, ids)
    assert raw.endswith(b"a\xe2")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert token_byte_spans(tok, ids)[-1].tolist() == [len(raw) - 1, len(raw)]
    assert tok.decode(ids, skip_special_tokens=False).endswith("\ufffd")
    # every prefix of an encoding that splits characters is a byte prefix of the whole
    full_ids = tok.encode(" ☕🦜你", add_special_tokens=False)
    full = decode_bytes(tok, full_ids)
    for k in range(len(full_ids) + 1):
        part = decode_bytes(tok, full_ids[:k])
        assert full.startswith(part)
        assert_tile(token_byte_spans(tok, full_ids[:k]), len(part))


# --- properties over unicode text -------------------------------------------------------------------------------------

TRICKY = [*"☕🦜你好世界é\u0301\u0308\u200d ️\n\t", "  ", "👩‍💻", "🇫🇷", "e\u0301", "<|im_end|>", "</s>", "<s>"]
texts = st.lists(st.one_of(st.characters(codec="utf-8"), st.sampled_from(TRICKY)), max_size=16).map("".join)


@pytest.mark.parametrize("name", NAMES)
@NO_DEADLINE
@given(text=texts)
def test_encoded_text_spans_tile_and_round_trip(name: str, text: str) -> None:
    tok, ref = get_tokenizer(name), reference(name)
    ids = tok.encode(text, add_special_tokens=False)
    raw = decode_bytes(tok, ids)
    assert_tile(token_byte_spans(tok, ids), len(raw))
    if not set((text.replace("▁", " ") if name in SENTENCEPIECE else text).encode()) <= ref.single_bytes:
        return  # a byte the vocabulary cannot spell (SmolLM2 lacks 21 single bytes) is dropped by the tokenizer
    expected = (unicodedata.normalize("NFC", text) if name in NORMALIZES_NFC else text).encode()
    if name in BYTE_LEVEL:
        assert raw == expected
    elif not ref.added.intersection(ids):  # added tokens split the text, and Phi-3 prefixes a space to every piece
        expected = text.replace("▁", " ").encode()  # SentencePiece: ▁ reads as a space; a prefix space may be added
        assert raw in (expected, b" " + expected)


# --- errors -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", [token_byte_spans, decode_bytes])
@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([5, 32768, 7], r"ids\[1\] = 32768"),  # the vocabulary is 0..32767
        ([1, 2, 3, -1], r"ids\[3\] = -1"),
        ([10**12], r"ids\[0\] = 1000000000000"),
    ],
    ids=["size", "negative", "huge"],
)
def test_out_of_vocabulary_ids_name_index_and_value(function: Any, ids: list[int], message: str) -> None:
    tok = get_tokenizer("mistral_v3")
    with pytest.raises(TokenizerError, match=message) as info:
        function(tok, ids)
    assert "32767" in str(info.value)  # the valid range
    assert isinstance(info.value, AlignmentError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("function", [token_byte_spans, decode_bytes])
@pytest.mark.parametrize(
    "ids", [[1.0, 2.0], np.array([3.5]), np.array([True, False])], ids=["float", "np-float", "bool"]
)
def test_non_integer_ids_raise_type_error(function: Any, ids: Any) -> None:
    with pytest.raises(TypeError, match="integer"):
        function(get_tokenizer("smollm2"), ids)


@pytest.mark.parametrize("function", [token_byte_spans, decode_bytes])
@pytest.mark.parametrize("ids", [[[1, 2], [3, 4]], np.ones((1, 3), dtype=np.int64), 5], ids=["2d", "np-2d", "scalar"])
def test_ids_of_wrong_rank_raise_value_error(function: Any, ids: Any) -> None:
    with pytest.raises(ValueError, match=r"shape"):
        function(get_tokenizer("smollm2"), ids)


@pytest.mark.parametrize("ids", [[[]], np.zeros((2, 0), dtype=np.int64)], ids=["nested-empty", "batch-of-empty"])
def test_empty_two_dimensional_ids_raise_value_error(ids: Any) -> None:
    # A (B, 0) batch is not one (T,) sequence; it must not pass as an empty sequence.
    with pytest.raises(ValueError, match=r"shape"):
        token_byte_spans(get_tokenizer("smollm2"), ids)


class _NoBackend:
    """A tokenizer-like object without a fast backend (like a slow, pure-Python tokenizer)."""

    chat_template = None

    def __len__(self) -> int:
        return 10


@pytest.mark.parametrize("function", [token_byte_spans, decode_bytes])
@pytest.mark.parametrize("tokenizer", [object(), _NoBackend()], ids=["object", "no-backend"])
def test_tokenizer_without_fast_backend(function: Any, tokenizer: Any) -> None:
    with pytest.raises(TokenizerError, match="use_fast"):
        function(tokenizer, [1, 2])


# --- char_to_byte -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [0]),
        ("abc", [0, 1, 2, 3]),
        ("é", [0, 2]),
        ("☕", [0, 3]),
        ("🦜", [0, 4]),
        ("aé☕🦜b", [0, 1, 3, 6, 10, 11]),
        ("e\u0301", [0, 1, 3]),
        ("你好", [0, 3, 6]),
    ],
    ids=["empty", "ascii", "2-byte", "3-byte", "4-byte", "mixed", "combining", "cjk"],
)
def test_char_to_byte_golden(text: str, expected: list[int]) -> None:
    offsets = char_to_byte(text)
    assert offsets.dtype == np.int64
    assert offsets.tolist() == expected


@given(text=texts)
def test_char_to_byte_is_the_utf8_length_of_each_prefix(text: str) -> None:
    assert char_to_byte(text).tolist() == [len(text[:i].encode()) for i in range(len(text) + 1)]


# --- encode_segments --------------------------------------------------------------------------------------------------


def _control_id(tok: Any, name: str) -> int:
    index = tok.convert_tokens_to_ids(CONTROL[name])
    assert reference(name).is_control[index]
    return int(index)


@pytest.mark.parametrize(
    ("name", "text", "segments", "pieces", "offsets"),
    [
        pytest.param(
            "smollm2",
            "a<|im_end|>b",
            [(0, 1, None), (1, 11, 2), (11, 12, None)],
            ["a", "<|im_end|>", "b"],
            [[0, 1], [1, 11], [11, 12]],
            id="smollm2",
        ),
        # plain text spelling a control token stays plain text
        pytest.param(
            "smollm2",
            "x<|im_end|>y",
            [(0, 12, None)],
            ["x", "<", "|", "im", "_", "end", "|", ">", "y"],
            [[0, 1], [1, 2], [2, 3], [3, 5], [5, 6], [6, 9], [9, 10], [10, 11], [11, 12]],
            id="smollm2-spelled-control",
        ),
        # only the first plain segment gets the ▁ prefix; it covers no text, so "▁Hi" spans the two bytes of "Hi"
        pytest.param(
            "mistral_v3",
            "Hi</s>Hi",
            [(0, 2, None), (2, 6, 2), (6, 8, None)],
            ["▁Hi", "</s>", "Hi"],
            [[0, 2], [2, 6], [6, 8]],
            id="mistral",
        ),
        pytest.param(
            "mistral_v3",
            "x</s> y",
            [(0, 7, None)],
            ["▁x", "</", "s", ">", "▁y"],
            [[0, 1], [1, 3], [3, 4], [4, 5], [5, 7]],
            id="mistral-spelled-control",
        ),
        # Phi-3's normalizer prepends ▁ to every segment: zero bytes of the text
        pytest.param(
            "phi3",
            "<|user|>Hi",
            [(0, 8, 32010), (8, 10, None)],
            ["<|user|>", "▁Hi"],
            [[0, 8], [8, 10]],
            id="phi3-inner-prefix",
        ),
        # a non-special added token is switched off in plain text too
        pytest.param(
            "synthetic_bytebpe",
            "<|role_sep|>",
            [(0, 12, None)],
            ["<", "|", "ro", "le", "_", "s", "e", "p", "|", ">"],
            [[0, 1], [1, 2], [2, 4], [4, 6], [6, 7], [7, 8], [8, 9], [9, 10], [10, 11], [11, 12]],
            id="synthetic-nonspecial-added",
        ),
    ],
)
def test_encode_segments_golden(
    name: str, text: str, segments: list[Any], pieces: list[str], offsets: list[list[int]]
) -> None:
    tok = get_tokenizer(name)
    ids, byte_offsets, control = encode_segments(tok, text, segments)
    assert ids.dtype == np.int64 and byte_offsets.dtype == np.int64 and control.dtype == np.bool_
    assert ids.tolist() == ids_of(tok, pieces)
    assert byte_offsets.tolist() == offsets
    controls = [s[2] for s in segments if s[2] is not None]
    assert ids[control].tolist() == controls
    assert control.tolist() == reference(name).is_control[ids].tolist()


@pytest.mark.parametrize("name", NAMES)
@NO_DEADLINE
@given(left=texts, right=texts)
def test_encode_segments_keeps_control_tokens_apart(name: str, left: str, right: str) -> None:
    tok, ref = get_tokenizer(name), reference(name)
    literal = CONTROL[name]
    control_id = tok.convert_tokens_to_ids(literal)
    assert ref.is_control[control_id]
    text = left + literal + right
    a, b = len(left), len(left) + len(literal)
    segments = [s for s in [(0, a, None), (a, b, control_id), (b, len(text), None)] if s[2] is not None or s[0] < s[1]]
    if not set((left + right).encode()) <= ref.single_bytes:
        try:  # a byte the vocabulary lacks (SmolLM2): a typed error, or offsets that still tile (see the test below)
            ids, offsets, control = encode_segments(tok, text, segments)
        except TokenizerError:
            return
    else:
        ids, offsets, control = encode_segments(tok, text, segments)
    raw = text.encode()
    assert offsets.shape == (len(ids), 2) and control.shape == (len(ids),)
    assert control.tolist() == ref.is_control[ids].tolist()
    # exactly one control token: the segment's; the text around it never becomes one, whatever it spells
    (where,) = np.flatnonzero(control)
    assert ids[where] == control_id
    assert offsets[where].tolist() == [len(left.encode()), len(left.encode()) + len(literal.encode())]
    if not set((left + right).encode()) <= ref.single_bytes:
        return  # a byte the vocabulary lacks is dropped by the tokenizer (SmolLM2): see the test below
    assert_tile(offsets, len(raw))
    if name in NORMALIZES_NFC and unicodedata.normalize("NFC", text) != text:
        return  # the normaliser rewrote the text: offsets still tile, but token bytes differ from the text
    if name in SENTENCEPIECE and "▁" in text:
        return  # ▁ in the text reads as a space
    for i, (start, stop) in zip(ids.tolist(), offsets.tolist(), strict=True):
        piece = ref.token_bytes[i]  # a plain token covers exactly its bytes, less a prefix space the text lacks
        assert raw[start:stop] == piece or (piece.startswith(b" ") and raw[start:stop] == piece[1:])


@pytest.mark.parametrize("name", NAMES)
@NO_DEADLINE
@given(left=texts, right=texts)
def test_offsets_from_token_bytes_agree_with_character_offsets(name: str, left: str, right: str) -> None:
    # encode_segments takes the byte offsets from the token byte lengths where the tokens spell the text exactly,
    # and from the tokenizer's character offsets (_byte_offsets) elsewhere: the two must agree
    tok, info = get_tokenizer(name), tokenizer_info(get_tokenizer(name))
    control_id = tok.convert_tokens_to_ids(CONTROL[name])
    text = left + CONTROL[name] + right
    a, b = len(left), len(left) + len(CONTROL[name])
    segments = [s for s in [(0, a, None), (a, b, control_id), (b, len(text), None)] if s[2] is not None or s[0] < s[1]]
    try:
        ids, offsets, control = encode_segments(tok, text, segments)
    except TokenizerError:
        return
    (encodings,) = _encode_plain(info, [(text, segments)], offsets=True)
    expected_ids, expected_offsets, expected_control = _from_encodings(info, text, segments, encodings)
    assert ids.tolist() == expected_ids.tolist()
    assert offsets.tolist() == expected_offsets.tolist()
    assert control.tolist() == expected_control.tolist()


def _around_control(name: str, left: str, right: str) -> tuple[str, list[Any]]:
    """``left``, the tokenizer's control token, ``right``: the text and its segments."""
    tok = get_tokenizer(name)
    text = left + CONTROL[name] + right
    a, b = len(left), len(left) + len(CONTROL[name])
    control_id = tok.convert_tokens_to_ids(CONTROL[name])
    return text, [
        s for s in [(0, a, None), (a, b, control_id), (b, len(text), None)] if s[2] is not None or s[0] < s[1]
    ]


@pytest.mark.parametrize("name", NAMES)
@NO_DEADLINE
@given(batch=st.lists(st.tuples(texts, texts, st.booleans()), max_size=6))
@example(batch=[(" Hi", "", False), ("Hi", " there", True), ("\nHi", "x", True)])  # a segment led by a space, or not
def test_encode_segments_batch_matches_each_text_alone(name: str, batch: list[tuple[str, str, bool]]) -> None:
    # The batch checks in one pass whether each text's tokens spell it; a text they do not spell (a SentencePiece
    # prefix space, NFC rewriting, bytes the vocabulary lacks), or one refused, must not shift its neighbours:
    # every text gets what the character-offset path gives it alone, or the error it raises alone.
    tok, info = get_tokenizer(name), tokenizer_info(get_tokenizer(name))
    items = [
        _around_control(name, left, right) if control else (left, [(0, len(left), None)] if left else [])
        for left, right, control in batch
    ]
    results = encode_segments_batch(tok, items)
    assert len(results) == len(items)
    for (text, segments), result in zip(items, results, strict=True):
        (encodings,) = _encode_plain(info, [(text, segments)], offsets=True)
        try:
            expected = _from_encodings(info, text, segments, encodings)
        except TokenizerError:
            assert isinstance(result, TokenizerError)
            continue
        assert not isinstance(result, TokenizerError)
        ids, offsets, control = result
        assert ids.dtype == np.int64 and offsets.dtype == np.int64 and control.dtype == np.bool_
        assert ids.tolist() == expected[0].tolist()
        assert offsets.tolist() == expected[1].tolist()
        assert control.tolist() == expected[2].tolist()


@pytest.mark.parametrize("name", ["phi3", "mistral_v3"])
def test_a_prefix_space_the_tokenizer_adds_needs_no_second_tokenization(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Phi-3's normalizer puts "▁" before every plain segment, Mistral v3's Metaspace before one at offset 0: that
    # space counts as zero bytes, so the texts need no second tokenization with character offsets (which doubled
    # the tokenizer's time for such a teacher), and their offsets are those of the character-offset path.
    import alignment.spans

    tok, info = get_tokenizer(name), tokenizer_info(get_tokenizer(name))
    items = [("Hi there", [(0, 8, None)]), _around_control(name, "x,y", "\nYes it is."), ("\nHi", [(0, 3, None)])]
    calls: list[bool] = []
    plain = alignment.spans._encode_plain

    def counted(info: Any, texts: Any, *, offsets: bool) -> Any:
        calls.append(offsets)
        return plain(info, texts, offsets=offsets)

    monkeypatch.setattr(alignment.spans, "_encode_plain", counted)
    results = encode_segments_batch(tok, items)
    assert calls == [False]
    for (text, segments), result in zip(items, results, strict=True):
        assert not isinstance(result, TokenizerError)
        (encodings,) = plain(info, [(text, segments)], offsets=True)
        expected = _from_encodings(info, text, segments, encodings)
        assert [part.tolist() for part in result] == [part.tolist() for part in expected]
        assert_tile(result[1], len(text.encode()))


def test_encode_segments_batch_mixes_spelled_respelled_and_refused_texts() -> None:
    # Between texts whose tokens spell them: one they do not spell (mistral_v3 puts a "▁" the text lacks before its
    # first plain segment; SmolLM2 has no token for the byte 0x04 and drops it), one refused (0x04 alone: no token
    # at all) and an empty one. Each must get what it gets alone.
    for name, odd in (("mistral_v3", "Hi there"), ("smollm2", "a\x04b")):
        tok = get_tokenizer(name)
        plain = _around_control(name, "", "ab cd")  # the control token first: the plain text spelled exactly
        items = [plain, (odd, [(0, len(odd), None)]), plain, ("\x04", [(0, 1, None)]), ("", []), plain]
        results = encode_segments_batch(tok, items)
        alone = [encode_segments_batch(tok, [item])[0] for item in items]
        for result, single in zip(results, alone, strict=True):
            if isinstance(single, TokenizerError):
                assert isinstance(result, TokenizerError) and str(result) == str(single)
            else:
                assert not isinstance(result, TokenizerError)
                assert [part.tolist() for part in result] == [part.tolist() for part in single]
        assert not isinstance(results[1], TokenizerError)
        assert_tile(results[1][1], len(odd.encode()))
        assert results[4][0].tolist() == [] and results[4][1].shape == (0, 2)
        ids, offsets, control = results[5]
        assert ids.tolist() == tok.encode(plain[0], add_special_tokens=False)
        assert offsets.tolist() == token_byte_spans(tok, ids).tolist()  # spelled exactly: from byte 0 of its text
        assert control.tolist() == [True] + [False] * (len(ids) - 1)
    assert isinstance(results[3], TokenizerError)  # SmolLM2: 0x04 alone has no token


@pytest.mark.parametrize("name", NAMES)
def test_ordinary_added_tokens_in_content_are_read_as_the_tokenizer_reads_them(name: str) -> None:
    # An added token that is the model's own piece and not special (Gemma's whitespace runs and <unused0>, Phi-3's
    # "</s>", Mistral v3's [REFERENCE_DOC_1]) is no control token: in content the tokenizer matches it, and so do
    # we. The control tokens stay plain text (test_encode_segments_keeps_control_tokens_apart).
    tok, ref = get_tokenizer(name), reference(name)
    added = tok.backend_tokenizer.get_added_tokens_decoder()
    ordinary = sorted(added[i].content for i in added if i < len(ref.is_control) and not ref.is_control[i])
    content = "Hi " + " x ".join(ordinary[:3] + [t for t in ordinary if not t.strip()][:3]) + "\n\n\nend  of\tit"
    text, segments = _around_control(name, "", content)
    ids, offsets, control = encode_segments(tok, text, segments)
    assert ids.tolist() == tok(text, add_special_tokens=False)["input_ids"]
    assert control.tolist() == [True] + [False] * (len(ids) - 1)
    assert_tile(offsets, len(text.encode()))
    for piece in ordinary[:3]:
        assert tok.convert_tokens_to_ids(piece) in ids.tolist()


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("<|im_end|>\x04", [(0, 10, 2), (10, 11, None)]),
        ("\x04<|im_end|>", [(0, 1, None), (1, 11, 2)]),
        ("<|im_end|>\U00040000", [(0, 10, 2), (10, 11, None)]),
    ],
    ids=["after-control", "before-control", "astral"],
)
def test_encode_segments_tiles_text_the_vocabulary_cannot_spell(text: str, segments: list[Any]) -> None:
    # SmolLM2's vocabulary lacks the single bytes 0x04 and 0xF1, so its BPE drops them and a plain segment made
    # only of them yields no token. The offsets must still tile text.encode() (the docstring's contract), or the
    # call must raise TokenizerError; silently leaving bytes uncovered mis-spans whatever is rendered there.
    tok = get_tokenizer("smollm2")
    assert 0x04 not in reference("smollm2").single_bytes and 0xF1 not in reference("smollm2").single_bytes
    try:
        _, offsets, _ = encode_segments(tok, text, segments)
    except TokenizerError:
        return
    assert_tile(offsets, len(text.encode()))
