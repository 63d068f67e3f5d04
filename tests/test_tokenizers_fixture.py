"""Tests of the test helpers in tests/tokenizers.py: the synthetic tokenizers and the real-tokenizer loader."""

from __future__ import annotations

import filecmp
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2.exceptions import TemplateError

from tests.tokenizers import (
    CORPUS,
    REAL_NAMES,
    SHARED_DIR,
    SYNTHETIC,
    VENDORED,
    available_real_names,
    load_real,
    real_path,
    synthetic_byte_bpe,
    synthetic_sentencepiece,
    template_kwargs,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

UNSEEN = (
    "🦜 parrots 🦩 and flamingos",  # emoji absent from the corpus
    "Zebras quizzed vexing jackdaws; πολύ καλά; ᚠᚢᚦ",  # Greek and runes absent from the corpus
    "x\u0327\u0301 \U0001d54f",  # combining marks on an ASCII letter, a math letter outside the BMP
    "tab\tnew\nline\r\n",
)
CONVERSATION = (
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! 😀"},
    {"role": "user", "content": "日本語で?"},
    {"role": "assistant", "content": "はい。"},
)


def _roundtrip(tok: object, text: str) -> str:
    ids = tok(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    return tok.decode(ids)  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
@pytest.mark.parametrize("text", CORPUS + UNSEEN, ids=lambda t: t[:12])
def test_synthetic_roundtrip(name: str, text: str) -> None:
    assert _roundtrip(SYNTHETIC[name](), text) == text


# Module-scoped fixtures build (train) the tokenizers outside hypothesis' per-example deadline.
@pytest.fixture(scope="module")
def byte_bpe() -> PreTrainedTokenizerFast:
    return synthetic_byte_bpe()


@pytest.fixture(scope="module")
def sentencepiece() -> PreTrainedTokenizerFast:
    return synthetic_sentencepiece()


@given(text=st.text(max_size=40))
def test_byte_bpe_roundtrips_any_text(byte_bpe: PreTrainedTokenizerFast, text: str) -> None:
    assert _roundtrip(byte_bpe, text) == text


@given(text=st.text(st.characters(codec="utf-8", exclude_characters="▁"), max_size=40).filter(lambda t: t[:1] != " "))
def test_sentencepiece_roundtrips_text_without_leading_space(sentencepiece: PreTrainedTokenizerFast, text: str) -> None:
    assert _roundtrip(sentencepiece, text) == text


def test_sentencepiece_loses_one_leading_space_like_mistral() -> None:
    assert _roundtrip(synthetic_sentencepiece(), " a") == "a"


def test_sentencepiece_falls_back_to_byte_pieces_for_unseen_emoji() -> None:
    tok = synthetic_sentencepiece()
    tokens = tok.tokenize("🦜")
    assert tokens == ["▁", "<0xF0>", "<0x9F>", "<0xA6>", "<0x9C>"]
    ids = tok.convert_tokens_to_ids(tokens[1:])
    assert ids == [tok.backend_tokenizer.model.token_to_id(t) for t in tokens[1:]]  # ordinary model pieces
    assert not set(ids) & set(tok.added_tokens_decoder)


def test_sentencepiece_has_all_256_byte_pieces_in_the_model() -> None:
    model_vocab = synthetic_sentencepiece().backend_tokenizer.get_vocab(with_added_tokens=False)
    assert all(f"<0x{b:02X}>" in model_vocab for b in range(256))


def test_sentencepiece_adds_bos_to_plain_text_and_byte_bpe_adds_nothing() -> None:
    sp, bb = synthetic_sentencepiece(), synthetic_byte_bpe()
    assert sp("abc")["input_ids"][0] == sp.bos_token_id
    assert sp("abc", add_special_tokens=False)["input_ids"][0] != sp.bos_token_id
    assert bb("abc")["input_ids"] == bb("abc", add_special_tokens=False)["input_ids"]


def test_special_tokens() -> None:
    sp, bb = synthetic_sentencepiece(), synthetic_byte_bpe()
    assert (sp.bos_token, sp.eos_token, bb.bos_token, bb.eos_token) == ("<s>", "</s>", "<|bos|>", "<|eos|>")
    specials = {t.content for t in bb.added_tokens_decoder.values() if t.special}
    assert specials == {"<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"}
    assert {"<s>", "</s>", "[INST]", "[/INST]"} <= {t.content for t in sp.added_tokens_decoder.values() if t.special}


def test_role_sep_is_a_non_special_added_token() -> None:
    tok = synthetic_byte_bpe()
    (added,) = [t for t in tok.added_tokens_decoder.values() if t.content == "<|role_sep|>"]
    assert added.special is False
    assert "<|role_sep|>" not in tok.all_special_tokens
    ids = tok("a<|role_sep|>b", add_special_tokens=False)["input_ids"]
    assert tok.convert_tokens_to_ids("<|role_sep|>") in ids
    assert tok.decode(ids, skip_special_tokens=True) == "a<|role_sep|>b"  # kept: it is not special


def test_byte_bpe_template_renders_four_turns() -> None:
    text = synthetic_byte_bpe().apply_chat_template(list(CONVERSATION), tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>user<|role_sep|>\nHi there<|im_end|>\n"
        "<|im_start|>assistant<|role_sep|>\nHello! 😀<|im_end|>\n"
        "<|im_start|>user<|role_sep|>\n日本語で?<|im_end|>\n"
        "<|im_start|>assistant<|role_sep|>\nはい。<|im_end|>\n"
        "<|im_start|>assistant<|role_sep|>\n"
    )


def test_byte_bpe_template_without_generation_prompt_writes_no_bos() -> None:
    text = synthetic_byte_bpe().apply_chat_template(list(CONVERSATION[:1]), tokenize=False)
    assert text == "<|im_start|>user<|role_sep|>\nHi there<|im_end|>\n"


def test_sentencepiece_template_renders_four_turns_with_system() -> None:
    messages = [{"role": "system", "content": "Be brief."}, *CONVERSATION]
    text = synthetic_sentencepiece().apply_chat_template(messages, tokenize=False)
    assert text == "<s>[INST] Be brief.\n\nHi there[/INST] Hello! 😀</s>[INST] 日本語で?[/INST] はい。</s>"


@pytest.mark.parametrize(
    "roles",
    [("user", "user"), ("assistant", "user"), ("user", "assistant", "assistant"), ("user", "tool")],
    ids="-".join,
)
def test_sentencepiece_template_raises_on_bad_role_order(roles: tuple[str, ...]) -> None:
    messages = [{"role": role, "content": "x"} for role in roles]
    with pytest.raises(TemplateError):
        synthetic_sentencepiece().apply_chat_template(messages, tokenize=False)


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_tokenizers_are_deterministic_and_cached(name: str) -> None:
    build = SYNTHETIC[name]
    assert build() is build()
    fresh = build.__wrapped__()  # type: ignore[attr-defined]
    assert fresh.backend_tokenizer.to_str() == build().backend_tokenizer.to_str()


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_offsets(name: str) -> None:
    enc = SYNTHETIC[name]()("naïve 日本 🦜", add_special_tokens=False, return_offsets_mapping=True)
    assert len(enc["offset_mapping"]) == len(enc["input_ids"]) > 0
    assert all(0 <= start <= end <= len("naïve 日本 🦜") for start, end in enc["offset_mapping"])


def test_available_real_names() -> None:
    names = available_real_names()
    assert set(VENDORED) <= set(names) <= set(REAL_NAMES)
    assert names == (REAL_NAMES if SHARED_DIR.is_dir() else tuple(n for n in REAL_NAMES if n in VENDORED))


def test_template_kwargs() -> None:
    assert template_kwargs("llama3") == {"date_string": "26 Jul 2024"}
    assert template_kwargs("qwen3") == {}


def test_load_real_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown real tokenizer"):
        real_path("gpt5")


@pytest.mark.parametrize("name", available_real_names())
def test_real_tokenizer_loads_fast_with_offsets(name: str) -> None:
    tok = load_real(name)
    assert tok.is_fast
    text = "Hello, world! naïve 日本 🦜"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert len(enc["offset_mapping"]) == len(enc["input_ids"]) > 0
    assert all(0 <= start <= end <= len(text) for start, end in enc["offset_mapping"])
    assert (tok.chat_template is None) == (name == "gpt2")


@pytest.mark.parametrize("name", sorted(VENDORED))
def test_vendored_copy_loads_offline(name: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(VENDORED[name]))
    assert tok.is_fast
    assert (tok.chat_template is None) == (name == "gpt2")
    assert (VENDORED[name] / "PROVENANCE.md").is_file()
    assert (VENDORED[name] / "LICENSE").is_file()


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(VENDORED))
def test_vendored_copy_matches_shared(name: str) -> None:
    shared = SHARED_DIR / name
    files = sorted(p.name for p in shared.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(shared, VENDORED[name], files, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert match == files
