"""Tokenizers for the test suite: real ones loaded offline, and two synthetic ones built in code.

Real tokenizers live in the sibling folder ``../shared/tokenizers`` (all nine families, when that folder exists).
A fresh clone without it still has four: ``mistral_v3`` and ``smollm2`` ship inside the package
(``alignment/assets/tokenizers``) and ``phi3`` and ``gpt2`` are test assets (``tests/assets/tokenizers``).

The synthetic tokenizers need no files at all. They are small (a few hundred pieces), deterministic, and exercise
the same code paths as the real families: a byte-level BPE with a ChatML template and a non-special added token
(``synthetic_byte_bpe``), and a SentencePiece-style BPE with ``▁`` word markers, byte fallback and a Mistral-like
``[INST]`` template (``synthetic_sentencepiece``).

Usage from a test module::

    from tests.tokenizers import SYNTHETIC, available_real_names, load_real, template_kwargs
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared" / "tokenizers"
REAL_NAMES = ("llama3", "qwen3", "mistral_v3", "mistral_nemo", "gemma3", "gpt2", "phi3", "smollm2", "deepseek_v3")
VENDORED = {
    "mistral_v3": REPO_ROOT / "alignment" / "assets" / "tokenizers" / "mistral_v3",
    "smollm2": REPO_ROOT / "alignment" / "assets" / "tokenizers" / "smollm2",
    "phi3": REPO_ROOT / "tests" / "assets" / "tokenizers" / "phi3",
    "gpt2": REPO_ROOT / "tests" / "assets" / "tokenizers" / "gpt2",
}


def _offline() -> None:
    # huggingface_hub reads these when it is first imported, so set them before transformers is imported.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def available_real_names() -> tuple[str, ...]:
    """Names that :func:`load_real` can load here: all of ``REAL_NAMES`` with ``../shared``, else the vendored four."""
    if SHARED_DIR.is_dir():
        return REAL_NAMES
    return tuple(name for name in REAL_NAMES if name in VENDORED)


def real_path(name: str) -> Path:
    """Folder of the real tokenizer ``name``: ``../shared/tokenizers/<name>`` if present, else the vendored copy."""
    if name not in REAL_NAMES:
        raise ValueError(f"unknown real tokenizer {name!r}; expected one of {REAL_NAMES}")
    shared = SHARED_DIR / name
    if shared.is_dir():
        return shared
    if name in VENDORED:
        return VENDORED[name]
    raise FileNotFoundError(
        f"real tokenizer {name!r} needs {SHARED_DIR} (the repository's sibling ../shared/tokenizers), which is "
        f"absent; only {sorted(VENDORED)} are vendored. Use available_real_names() to pick loadable ones."
    )


@functools.cache
def load_real(name: str) -> PreTrainedTokenizerFast:
    """The real tokenizer ``name`` loaded offline with ``AutoTokenizer`` (cached: do not mutate it)."""
    path = real_path(name)
    _offline()
    from transformers import AutoTokenizer

    tokenizer: PreTrainedTokenizerFast = AutoTokenizer.from_pretrained(str(path))
    return tokenizer


def template_kwargs(name: str) -> dict[str, Any]:
    """Extra Jinja variables that make ``name``'s chat template deterministic (Llama 3 prints today's date)."""
    if name == "llama3":
        return {"date_string": "26 Jul 2024"}
    return {}


# A small fixed training corpus: English prose, code-ish text, digits, accents, combining marks, CJK, Korean,
# Arabic, Cyrillic and emoji. Deliberately NOT containing every character: tests rely on unseen text (e.g. the
# emoji "🦜") falling back to bytes.
CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today? I am fine, thank you.",
    "The user asks a question and the assistant gives an answer.",
    "A teacher model and a student model read the same text with different tokenizers.",
    "Knowledge distillation aligns the tokens of the student with the tokens of the teacher.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14159 1,000,000 -17 +8",
    "Dates like 26 Jul 2024 and times like 12:30 appear in chat templates.",
    "Café, naïve, façade, jalapeño, Ångström, über, déjà vu, crème brûlée.",
    "Combining marks: e\u0301 a\u0300 o\u0308 n\u0303 and the precomposed é à ö ñ.",
    "Les élèves étudient le français à l'école.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "敏捷的棕色狐狸跳过了懒狗。你好，世界！今天天气很好。",
    "日本語のテキストもあります。こんにちは、世界。",
    "빠른 갈색 여우가 게으른 개를 뛰어넘습니다. 안녕하세요!",
    "Emoji: 😀 😂 👍 🎉 ❤️ 🚀 👩‍💻 🇫🇷 and a thumbs up 👍🏽.",
    "Whitespace:  two spaces,   three spaces,\n\nblank line,\ttab, trailing space ",
    "Symbols: @#$%^&*()[]{}<>|\\/~`'\"-_=+;:!?.,",
    "The assistant said: I can help with that. The user said: thank you very much.",
    "Tokens, offsets, spans and bytes: every token covers a span of bytes of the text.",
    "the the the and and and of of of to to to in in in is is is it it it",
)

BYTE_BPE_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '<|role_sep|>\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant<|role_sep|>\\n' }}"
    "{%- endif %}"
)

SENTENCEPIECE_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}"
    "{{- '[INST] ' + message['content'] + '[/INST]' }}"
    "{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}"
    "{{- raise_exception('Only user and assistant roles are supported, after an optional first system message') }}"
    "{%- endif %}"
    "{%- endfor %}"
)


@functools.cache
def synthetic_byte_bpe() -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2/Llama-3/Qwen style, ~600 pieces) with a ChatML-style template.

    Special added tokens ``<|bos|>``, ``<|eos|>``, ``<|im_start|>``, ``<|im_end|>``; a NON-special added token
    ``<|role_sep|>`` between the role and the content. The template writes no BOS; a plain ``tok(text)`` adds
    nothing. Cached: do not mutate the returned object.
    """
    _offline()
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=1,
        show_progress=False,
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_tokens([AddedToken("<|role_sep|>", special=False, normalized=False)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        chat_template=BYTE_BPE_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


@functools.cache
def synthetic_sentencepiece() -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE (Llama-2/Mistral style) with byte fallback and a Mistral-like ``[INST]`` template.

    The model vocabulary starts with ``<unk>``, ``<s>``, ``</s>``, ``[INST]``, ``[/INST]`` (all registered as
    special added tokens) and the 256 byte pieces ``<0x00>`` … ``<0xFF>`` as ordinary model tokens, followed by
    ~500 pieces trained on :data:`CORPUS` (761 in all). Text is not split on spaces (``Metaspace(split=False)``,
    as in transformers' conversion of Mistral's tokenizer); a plain ``tok(text)`` prepends ``<s>``. As with the
    real Mistral tokenizer, one leading space of the text is lost in a round trip (``" a"`` encodes like ``"a"``).
    Cached: do not mutate the returned object.
    """
    _offline()
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    # Train with split=True, so that no merge crosses a word boundary (like SentencePiece's split_by_whitespace),
    # then rebuild the model with the control and byte pieces first, and encode with split=False.
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trained.train_from_iterator(
        CORPUS, trainer=trainers.BpeTrainer(vocab_size=500, min_frequency=1, show_progress=False)
    )
    model = trained.get_vocab()
    merges = [tuple(m) for m in _merges(trained)]
    controls = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    vocab: dict[str, int] = {}
    for piece in [*controls, *byte_pieces, *sorted(model, key=model.__getitem__)]:
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in controls])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        chat_template=SENTENCEPIECE_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def _merges(tok: Any) -> list[list[str]]:
    merges: list[Any] = json.loads(tok.to_str())["model"]["merges"]
    return [m.split(" ") if isinstance(m, str) else list(m) for m in merges]


SYNTHETIC: dict[str, Callable[[], PreTrainedTokenizerFast]] = {
    "synthetic_bytebpe": synthetic_byte_bpe,
    "synthetic_sp": synthetic_sentencepiece,
}
