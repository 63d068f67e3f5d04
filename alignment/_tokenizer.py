"""Private: what the library needs to know about a Hugging Face fast tokenizer, computed once and cached.

The core never imports ``transformers``: it reads the tokenizer object it is given. From the backend
``tokenizers.Tokenizer`` it derives

* the exact byte string of every vocabulary entry (byte-level BPE ``Ġ``/``Ċ``, SentencePiece ``▁`` and
  ``<0xNN>`` byte fallback; added/control tokens spell their literal text);
* a copy of the backend with every control token removed, so that message content is tokenized as plain
  text and can never turn into a control token (ordinary added tokens, the model's own pieces such as Gemma's
  whitespace runs, stay: the tokenizer matches them in text, and splitting there keeps its BPE fast);
* a regular expression that finds the added tokens the tokenizer itself would match in template text.
"""

from __future__ import annotations

import copy
import json
import re
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from alignment.errors import TokenizerError

__all__ = ["FastTokenizer", "TokenizerInfo", "id_of_bytes", "tokenizer_info"]

_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class FastTokenizer(Protocol):
    """The part of a Hugging Face fast tokenizer (``PreTrainedTokenizerFast``) the library uses."""

    backend_tokenizer: Any
    chat_template: Any

    def __len__(self) -> int: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


@lru_cache(maxsize=1)
def _byte_level_decoding() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable stand-in character -> byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            mapping[chr(256 + extra)] = b
            extra += 1
    return mapping


def _decoder_kinds(decoder: dict[str, Any] | None) -> list[dict[str, Any]]:
    if decoder is None:
        return []
    if decoder.get("type") == "Sequence":
        return [d for sub in decoder.get("decoders", []) for d in _decoder_kinds(sub)]
    return [decoder]


def _piece_decoder(decoder: dict[str, Any] | None) -> Any:
    """A function turning one vocabulary piece (not an added token) into its exact bytes."""
    kinds = _decoder_kinds(decoder)
    types = {d.get("type") for d in kinds}
    if "ByteLevel" in types:
        table = _byte_level_decoding()

        def byte_level(piece: str) -> bytes:
            try:
                return bytes(table[c] for c in piece)
            except KeyError:  # a piece outside the byte alphabet: take its characters literally
                return piece.encode()

        return byte_level
    spaces = [d["pattern"]["String"] for d in kinds if d.get("type") == "Replace" and d.get("content") == " "]
    spaces += [d.get("replacement", "▁") for d in kinds if d.get("type") == "Metaspace"]
    if spaces:
        space = spaces[0]
        fallback = "ByteFallback" in types

        def sentencepiece(piece: str) -> bytes:
            match = _BYTE_FALLBACK.fullmatch(piece) if fallback else None
            return bytes([int(match.group(1), 16)]) if match else piece.replace(space, " ").encode()

        return sentencepiece
    raise TokenizerError(
        f"unsupported tokenizer decoder {sorted(t for t in types if t)!r}: token bytes are known for byte-level BPE "
        "(ByteLevel) and SentencePiece-style (Metaspace or Replace('▁', ' '), optional ByteFallback) tokenizers"
    )


def _uses_first_prepend(pre_tokenizer: dict[str, Any] | None) -> bool:
    if pre_tokenizer is None:
        return False
    if pre_tokenizer.get("type") == "Sequence":
        return any(_uses_first_prepend(p) for p in pre_tokenizer.get("pretokenizers", []))
    return pre_tokenizer.get("type") == "Metaspace" and pre_tokenizer.get("prepend_scheme") == "first"


def _never_prepend(pre_tokenizer: dict[str, Any]) -> dict[str, Any]:
    if pre_tokenizer.get("type") == "Sequence":
        return {**pre_tokenizer, "pretokenizers": [_never_prepend(p) for p in pre_tokenizer["pretokenizers"]]}
    if pre_tokenizer.get("type") == "Metaspace":
        return {**pre_tokenizer, "prepend_scheme": "never"}
    return pre_tokenizer


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class TokenizerInfo:
    """Everything derived from one tokenizer (see the module docstring)."""

    name: str
    vocab_size: int
    token_bytes: tuple[bytes, ...]
    byte_lengths: np.ndarray  # (vocab,) int64
    byte_starts: np.ndarray  # (vocab,) int64: where each token's bytes start in ``all_bytes``
    all_bytes: np.ndarray  # (sum of byte_lengths,) uint8: every token's bytes, in id order
    first_byte: np.ndarray  # (vocab,) int16, -1 for a token of no bytes
    is_control: np.ndarray  # (vocab,) bool: special added tokens, and added tokens not the model's own piece
    control_pattern: re.Pattern[str] | None
    control_ids: dict[str, int]
    plain_first: Any  # tokenizers.Tokenizer without control tokens, for text at offset 0
    plain_inner: Any  # the same for text after a control token (no Metaspace "first" prefix)
    bos_prefix: tuple[int, ...]  # ids the post-processor puts before plain text (BOS conventions)
    bos_id: int | None
    eos_id: int | None


def _state(component: Any) -> dict[str, Any] | None:
    """The JSON configuration of a backend component (normalizer, pre-tokenizer, decoder), or ``None``."""
    return None if component is None else dict(json.loads(component.__getstate__()))


def _plain_copy(backend: Any, pre_tokenizer: Any, ordinary: list[Any]) -> Any:
    """A tokenizer sharing ``backend``'s model and pipeline, with only the ``ordinary`` added tokens (no control
    token)."""
    from tokenizers import Tokenizer  # imported here: the core layers stay importable without it

    plain = Tokenizer(backend.model)
    plain.normalizer = backend.normalizer
    plain.pre_tokenizer = pre_tokenizer
    if ordinary:
        plain.add_tokens(ordinary)
    return plain


def _without_first_prepend(pre_tokenizer: Any) -> Any:
    config = _state(pre_tokenizer)
    if not _uses_first_prepend(config):
        return pre_tokenizer
    assert config is not None
    changed = copy.copy(pre_tokenizer)
    changed.__setstate__(json.dumps(_never_prepend(config)).encode())
    return changed


def _build(tokenizer: FastTokenizer) -> TokenizerInfo:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "get_added_tokens_decoder"):
        raise TokenizerError(
            f"{type(tokenizer).__name__} has no fast backend, so it offers no offsets; load it with "
            "transformers.AutoTokenizer.from_pretrained(..., use_fast=True) (a PreTrainedTokenizerFast)"
        )
    decode_piece = _piece_decoder(_state(backend.decoder))
    vocab_size = len(tokenizer)
    pieces = backend.get_vocab(with_added_tokens=False)
    token_bytes = [b""] * vocab_size
    for piece, index in pieces.items():
        if index < vocab_size:
            token_bytes[index] = decode_piece(piece)
    # A special added token, or one the model vocabulary lacks, is a control token spelling its literal text.
    # A non-special added token that is also the model's own piece (Gemma's whitespace runs) stays ordinary.
    added = {int(index): token for index, token in backend.get_added_tokens_decoder().items()}
    is_control = np.zeros(vocab_size, dtype=np.bool_)
    for index, token in added.items():
        if index < vocab_size and (token.special or pieces.get(token.content) != index):
            token_bytes[index] = token.content.encode()
            is_control[index] = True
    by_length = sorted((token.content for token in added.values()), key=len, reverse=True)
    with_specials = backend.encode("a", add_special_tokens=True).ids
    without = backend.encode("a", add_special_tokens=False).ids
    prefix = tuple(with_specials[: with_specials.index(without[0])]) if without and without[0] in with_specials else ()
    bos_id = getattr(tokenizer, "bos_token_id", None)
    eos_id = getattr(tokenizer, "eos_token_id", None)
    # ordinary added tokens: the model's own pieces (Gemma's whitespace runs), matched in text as the tokenizer does
    ordinary = [token for index, token in sorted(added.items()) if index < vocab_size and not is_control[index]]
    byte_lengths = np.fromiter(map(len, token_bytes), dtype=np.int64, count=vocab_size)
    return TokenizerInfo(
        name=str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__),
        vocab_size=vocab_size,
        token_bytes=tuple(token_bytes),
        byte_lengths=byte_lengths,
        byte_starts=np.cumsum(byte_lengths) - byte_lengths,
        all_bytes=np.frombuffer(b"".join(token_bytes), dtype=np.uint8),
        first_byte=np.fromiter((b[0] if b else -1 for b in token_bytes), dtype=np.int16, count=vocab_size),
        is_control=is_control,
        control_pattern=re.compile("|".join(map(re.escape, by_length))) if by_length else None,
        control_ids={token.content: index for index, token in added.items()},
        plain_first=_plain_copy(backend, backend.pre_tokenizer, ordinary),
        plain_inner=_plain_copy(backend, _without_first_prepend(backend.pre_tokenizer), ordinary),
        bos_prefix=prefix,
        bos_id=bos_id if isinstance(bos_id, int) else None,
        eos_id=eos_id if isinstance(eos_id, int) else None,
    )


_CACHE: weakref.WeakKeyDictionary[Any, TokenizerInfo] = weakref.WeakKeyDictionary()


_IDS: weakref.WeakKeyDictionary[Any, dict[bytes, int]] = weakref.WeakKeyDictionary()


def id_of_bytes(tokenizer: FastTokenizer) -> dict[bytes, int]:
    """The text token (not a control token) spelling each byte string, a piece rather than a ``<0xNN>`` byte
    fallback where both do; cached apart from :func:`tokenizer_info`, for only the byte frames need it."""
    try:
        return _IDS[tokenizer]
    except (KeyError, TypeError):
        pass
    info = tokenizer_info(tokenizer)
    pieces = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False)
    ids: dict[bytes, int] = {}
    for piece, index in pieces.items():
        spelled = info.token_bytes[index] if index < info.vocab_size and not info.is_control[index] else b""
        if spelled and (spelled not in ids or not _BYTE_FALLBACK.fullmatch(piece)):
            ids[spelled] = index  # a piece replaces a fallback seen before it, never the other way round
    try:
        _IDS[tokenizer] = ids
    except TypeError:  # not weak-referenceable: built every time
        pass
    return ids


def tokenizer_info(tokenizer: FastTokenizer) -> TokenizerInfo:
    """The cached :class:`TokenizerInfo` of ``tokenizer`` (built on first use, a fraction of a second)."""
    try:
        return _CACHE[tokenizer]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: build every time
        return _build(tokenizer)
    info = _build(tokenizer)
    _CACHE[tokenizer] = info
    return info
