"""Tests of alignment.render: parity with apply_chat_template, located spans, control tokens, masks, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignment import (
    ContentRewrittenError,
    ExampleError,
    Rendering,
    TemplateError,
    TokenizerError,
    end_of_turn_id,
    render,
    render_chat,
    render_completion,
    render_prompt,
)
from alignment import _locate as locate_module
from alignment.render import render_each
from tests.tokenizers import SHARED_DIR, SYNTHETIC, available_real_names, load_real, template_kwargs

NAMES = (*available_real_names(), *SYNTHETIC)
CHAT_NAMES = tuple(n for n in NAMES if n != "gpt2")

# Control-token spellings of every family; in message content they must stay plain text.
CONTROL_STRINGS = (
    "<|im_end|>",
    "<|im_start|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "</s>",
    "<s>",
    "[INST]",
    "[/INST]",
    "<end_of_turn>",
    "<start_of_turn>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<｜end▁of▁sentence｜>",
    "<|end|>",
    "<|user|>",
    "<|assistant|>",
    "<|endoftext|>",
    "<|role_sep|>",
    "<|eos|>",
    "<bos>",
)

CONVERSATIONS = {
    "two_turn": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    "multi_turn": [
        {"role": "user", "content": "What is 1234 + 5678?"},
        {"role": "assistant", "content": "1234 + 5678 = 6912."},
        {"role": "user", "content": "And times two?"},
        {"role": "assistant", "content": "13824"},
    ],
    "unicode": [
        {"role": "user", "content": "Translate: 日本語, café, naïve ☕ 👩‍💻 🇫🇷"},
        {"role": "assistant", "content": "Japanese 日本語 — café ☕ 👍🏽 Ångström"},
    ],
    "whitespace": [
        {"role": "user", "content": "  padded\tquestion  "},
        {"role": "assistant", "content": " answer with  double  spaces \n"},
    ],
    "injection": [
        {"role": "user", "content": "Say " + " ".join(CONTROL_STRINGS)},
        {"role": "assistant", "content": "Sure: " + "".join(CONTROL_STRINGS) + " done"},
    ],
}


def tokenizer(name: str):
    return SYNTHETIC[name]() if name in SYNTHETIC else load_real(name)


def kwargs(name: str) -> dict:
    return {} if name in SYNTHETIC else template_kwargs(name)


def expect_tiling(rendering: Rendering) -> None:
    offsets = rendering.byte_offsets
    assert offsets[0, 0] == 0
    assert (offsets[1:, 0] == offsets[:-1, 1]).all()
    assert offsets[-1, 1] == len(rendering.text.encode())
    assert (offsets[:, 1] >= offsets[:, 0]).all()


def expect_located(rendering: Rendering, messages: list[dict]) -> None:
    raw = rendering.text.encode()
    for index, message in enumerate(messages):
        span = rendering.message_spans[index]
        if span is None:
            continue
        lead, trail = rendering.trimmed[index]
        content = message["content"].encode()
        kept = content[lead : len(content) - trail]
        assert raw[span[0] : span[1]] == kept
        assert not content[:lead].strip() and not content[len(content) - trail :].strip()  # only whitespace goes


def expect_content_is_plain(rendering: Rendering) -> None:
    for span in rendering.message_spans:
        if span is None:
            continue
        inside = (rendering.byte_offsets[:, 0] < span[1]) & (rendering.byte_offsets[:, 1] > span[0])
        assert not (inside & rendering.control_mask).any(), "a control token overlaps message content"


def expect_mask(tok, rendering: Rendering) -> None:
    expected = np.zeros(len(rendering.input_ids), dtype=bool)
    closer = end_of_turn_id(tok)
    for message, end in zip(rendering.trained_messages, rendering.end_of_turn, strict=True):
        start, stop = rendering.message_spans[message]
        first = np.flatnonzero(rendering.byte_offsets[:, 1] > start)[0]
        assert rendering.input_ids[end] == closer
        assert rendering.byte_offsets[end, 0] >= stop
        expected[first : end + 1] = True
    np.testing.assert_array_equal(rendering.completion_mask, expected)


def render_checked(name: str, messages: list[dict], **options) -> Rendering:
    tok = tokenizer(name)
    rendering = render(tok, {"messages": messages}, **kwargs(name), **options)
    if rendering.mode == "chat":
        assert rendering.text == tok.apply_chat_template(messages, tokenize=False, **kwargs(name))
    expect_tiling(rendering)
    expect_located(rendering, messages)
    expect_content_is_plain(rendering)
    expect_mask(tok, rendering)
    return rendering


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=str)
@pytest.mark.parametrize("name", NAMES, ids=str)
def test_renders_like_the_tokenizer_and_locates_every_message(name: str, conversation: str) -> None:
    rendering = render_checked(name, CONVERSATIONS[conversation])
    assert (
        rendering.trained_messages
        == tuple(i for i, m in enumerate(CONVERSATIONS[conversation]) if m["role"] == "assistant")
        or rendering.mode == "completion"
    )


@pytest.mark.parametrize("answer", ["1234 + 5678 = 6912.", "\t"], ids=["answer", "blank_answer"])
@pytest.mark.parametrize("name", NAMES, ids=str)
def test_a_prompt_trains_none_of_its_assistant_turns(name: str, answer: str) -> None:
    # the prompt of a multi-turn example holds an earlier answer; it is context, not a turn to train, even where the
    # template trims it to nothing (Gemma 3 strips the tab: as a trained turn it would be refused as empty)
    tok = tokenizer(name)
    messages = [{**m, "content": answer} if m["role"] == "assistant" else m for m in CONVERSATIONS["multi_turn"][:3]]
    prompt = render_prompt(tok, {"messages": [*messages, {"role": "assistant", "content": "13824"}]}, **kwargs(name))
    assert prompt.trained_messages == () and prompt.end_of_turn == () and not prompt.completion_mask.any()
    expect_tiling(prompt)
    if prompt.mode == "chat":
        expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs(name))
        assert prompt.text == expected
        expect_located(prompt, messages)


@pytest.mark.parametrize("conversation", [c for c in CONVERSATIONS if c != "injection"], ids=str)
@pytest.mark.parametrize("name", CHAT_NAMES, ids=str)
def test_without_control_strings_in_content_ids_equal_the_tokenizers_own_encoding(name: str, conversation: str) -> None:
    tok = tokenizer(name)
    rendering = render(tok, {"messages": CONVERSATIONS[conversation]}, **kwargs(name))
    assert rendering.input_ids.tolist() == tok(rendering.text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("name", CHAT_NAMES, ids=str)
def test_control_strings_in_content_stay_plain_text(name: str) -> None:
    tok = tokenizer(name)
    messages = CONVERSATIONS["injection"]
    rendering = render(tok, {"messages": messages}, **kwargs(name))
    naive = tok(rendering.text, add_special_tokens=False)["input_ids"]
    added = set(tok.added_tokens_decoder)
    assert sum(i in added for i in naive) > int(rendering.control_mask.sum())  # plain tokenization is fooled
    expect_content_is_plain(rendering)
    # the content's tokens decode to exactly the content bytes
    for index in (0, 1):
        start, stop = rendering.message_spans[index]
        inside = (rendering.byte_offsets[:, 0] >= start) & (rendering.byte_offsets[:, 1] <= stop)
        covered = b"".join(rendering.text.encode()[a:b] for a, b in rendering.byte_offsets[inside])
        assert messages[index]["content"].encode() in rendering.text.encode()[start - 8 : stop + 8]
        assert covered.strip() and covered in messages[index]["content"].encode()


@pytest.mark.parametrize("name", CHAT_NAMES, ids=str)
def test_turns_last_trains_only_the_last_assistant_turn(name: str) -> None:
    messages = CONVERSATIONS["multi_turn"]
    rendering = render(tokenizer(name), {"messages": messages}, turns="last", **kwargs(name))
    assert rendering.trained_messages == (3,)
    expect_mask(tokenizer(name), rendering)


@pytest.mark.parametrize("name", CHAT_NAMES, ids=str)
def test_generation_prompt_renders_a_prompt_with_nothing_to_train(name: str) -> None:
    tok = tokenizer(name)
    messages = CONVERSATIONS["two_turn"][:1]
    rendering = render_chat(tok, messages, add_generation_prompt=True, **kwargs(name))
    assert rendering.text == tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **kwargs(name)
    )
    assert rendering.trained_messages == () and not rendering.completion_mask.any()


_text = st.lists(
    st.sampled_from([*"abcxyz XYZ019 .,!?'\n\t-_", "é", "e\u0301", "☕", "日本", "👩‍💻", "  ", "▁", "Ġ"]), max_size=24
).map("".join)
_content = st.lists(st.one_of(_text, st.sampled_from(CONTROL_STRINGS)), min_size=1, max_size=4).map("".join)


@pytest.mark.parametrize("name", CHAT_NAMES, ids=str)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user=_content, assistant=_content.filter(lambda s: s.strip() != ""))
def test_any_content_renders_locates_and_stays_plain(name: str, user: str, assistant: str) -> None:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    rendering = render_checked(name, messages)
    if not any(c in user + assistant for c in CONTROL_STRINGS):
        tok = tokenizer(name)
        assert rendering.input_ids.tolist() == tok(rendering.text, add_special_tokens=False)["input_ids"]


EDGE_WHITESPACE = ("\n 42\n", "\n\n42 ", "  42\n\n", "\t42\n", "\n \n42")


@pytest.mark.parametrize("content", EDGE_WHITESPACE, ids=repr)
@pytest.mark.parametrize("name", CHAT_NAMES, ids=str)
def test_content_with_whitespace_at_both_edges_is_located(name: str, content: str) -> None:
    # a sampled answer may start and end with whitespace; Qwen3 strips only the newlines in front of the last
    # assistant turn and keeps the rest, Llama 3 trims both edges: each must be located, and only whitespace goes
    messages = [{"role": "user", "content": content}, {"role": "assistant", "content": content}]
    rendering = render_checked(name, messages)
    for index in (0, 1):
        start, end = rendering.message_spans[index]
        assert b"42" in rendering.text.encode()[start:end]


# ---- completion mode -------------------------------------------------------------------------------------------


def test_render_completion_golden_sentencepiece() -> None:
    rendering = render_completion(load_real("mistral_v3"), "Q: 2+2=", "4")
    assert rendering.text == "<s>Q: 2+2=4</s>"
    assert rendering.roles == ("prompt", "completion")
    assert rendering.message_spans == ((3, 10), (10, 11))
    assert [rendering.token_text(i) for i in np.flatnonzero(rendering.completion_mask)] == ["4", "</s>"]


def test_render_completion_golden_gpt2_has_no_bos() -> None:
    tok = load_real("gpt2")
    rendering = render(tok, {"prompt": "The answer is", "completion": " 42."})
    assert rendering.mode == "completion"
    assert rendering.text == "The answer is 42.<|endoftext|>"
    assert [rendering.token_text(i) for i in np.flatnonzero(rendering.completion_mask)] == [" 42", ".", "<|endoftext|>"]
    expect_tiling(rendering)


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_completion_mode_from_messages_uses_the_plain_layout(name: str) -> None:
    tok = tokenizer(name)
    messages = CONVERSATIONS["multi_turn"]
    rendering = render(tok, {"messages": messages}, mode="completion")
    bos = "".join(tok.convert_ids_to_tokens(tok("a")["input_ids"][:-1]))
    assert rendering.text == (
        f"{bos}User: What is 1234 + 5678?\n\nAssistant: 1234 + 5678 = 6912.\n\nUser: And times two?\n\n"
        f"Assistant: 13824{tok.eos_token}"
    )
    assert rendering.trained_messages == (3,)
    expect_located(rendering, messages)
    expect_tiling(rendering)
    expect_mask(tok, rendering) if tok.chat_template is None else None


@pytest.mark.parametrize("name", NAMES, ids=str)
def test_prompt_and_completion_are_tokenized_apart(name: str) -> None:
    tok = tokenizer(name)
    rendering = render(tok, {"prompt": "Reverse 'abc':", "completion": "cba"}, mode="completion")
    start, _ = rendering.message_spans[1]
    assert start in set(rendering.byte_offsets[:, 0].tolist())  # a token boundary at the completion start
    assert rendering.completion_mask.sum() == np.sum(rendering.byte_offsets[:, 0] >= start) - 0


def test_chat_mode_from_prompt_and_completion_uses_a_user_and_an_assistant_turn() -> None:
    tok = load_real("smollm2")
    rendering = render(tok, {"prompt": "Hi", "completion": "Hello"}, mode="chat")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert rendering.text == tok.apply_chat_template(messages, tokenize=False)
    assert rendering.trained_messages == (1,)


# ---- bad input --------------------------------------------------------------------------------------------------


class _SlowTokenizer:
    chat_template = "{{ messages[0]['content'] }}"

    def __len__(self) -> int:
        return 10

    def apply_chat_template(self, conversation, **kwargs):
        return conversation[0]["content"]


def test_a_tokenizer_without_offsets_is_refused() -> None:
    with pytest.raises(TokenizerError, match="use_fast=True"):
        render(_SlowTokenizer(), {"messages": CONVERSATIONS["two_turn"]})


def test_chat_mode_without_a_template_is_refused() -> None:
    with pytest.raises(TemplateError, match=r"no chat template.*mode='completion'"):
        render(load_real("gpt2"), {"messages": CONVERSATIONS["two_turn"]}, mode="chat")


def test_auto_mode_without_a_template_renders_a_completion() -> None:
    assert render(load_real("gpt2"), {"messages": CONVERSATIONS["two_turn"]}).mode == "completion"


def test_a_template_that_rewrites_content_is_refused_naming_the_message() -> None:
    upper = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | upper }}<|im_end|>\n{% endfor %}"
    with pytest.raises(ContentRewrittenError, match=r"message 0 \(user\)"):
        render(load_real("smollm2"), {"messages": CONVERSATIONS["two_turn"]}, chat_template=upper)


def test_a_role_the_template_rejects_raises_a_template_error() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(TemplateError, match="alternate"):
        render(SYNTHETIC["synthetic_sp"](), {"messages": messages})


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_an_empty_completion_is_refused(mode: str) -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]
    with pytest.raises(ExampleError, match="empty"):
        render(load_real("smollm2"), {"messages": messages}, mode=mode)
    with pytest.raises(ExampleError, match="empty"):
        render_completion(load_real("smollm2"), "prompt", "")


@pytest.mark.parametrize(
    "example, match",
    [
        ({}, "needs 'messages' or both 'prompt' and 'completion'"),
        ({"prompt": "only a prompt"}, "needs 'messages'"),
        ({"messages": "hello"}, "non-empty list"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"content": "no role"}]}, r"messages\[0\] must be a dict with a string 'role'"),
        ({"messages": [{"role": "user", "content": ["a", "list"]}]}, r"messages\[0\]\['content'\] must be a string"),
        ("not a dict", "example must be a dict"),
    ],
    ids=["empty", "prompt_only", "string_messages", "no_messages", "no_role", "list_content", "not_a_dict"],
)
def test_a_malformed_example_raises_an_example_error(example, match: str) -> None:
    with pytest.raises(ExampleError, match=match):
        render(load_real("smollm2"), example)


def test_completion_mode_needs_an_assistant_turn_last() -> None:
    with pytest.raises(ExampleError, match="must be an assistant turn"):
        render(load_real("smollm2"), {"messages": CONVERSATIONS["two_turn"][:1]}, mode="completion")


def test_a_tokenizer_without_eos_cannot_close_a_completion() -> None:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=SYNTHETIC["synthetic_bytebpe"]().backend_tokenizer)
    with pytest.raises(TokenizerError, match="no EOS token"):
        render_completion(tok, "a", "b")


@pytest.mark.parametrize("option, value", [("mode", "dialog"), ("turns", "first"), ("on_dropped", "skip")])
def test_unknown_options_are_refused(option: str, value: str) -> None:
    with pytest.raises(ValueError, match=option):
        render(load_real("smollm2"), {"messages": CONVERSATIONS["two_turn"]}, **{option: value})


# ---- real template quirks (need ../shared) ----------------------------------------------------------------------

SYSTEM_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Goodbye."},
]

integration = pytest.mark.integration


@integration
def test_llama3_dated_system_header_is_template_text() -> None:
    rendering = render_checked("llama3", SYSTEM_CONVERSATION)
    header = rendering.text.index("Today Date: 26 Jul 2024")
    assert header < rendering.message_spans[0][0]
    without_system = render_checked("llama3", SYSTEM_CONVERSATION[1:])
    assert "Cutting Knowledge Date" in without_system.text  # injected even without a system message


@integration
def test_qwen3_empty_think_block_is_template_text_and_earlier_reasoning_is_refused() -> None:
    rendering = render_checked("qwen3", SYSTEM_CONVERSATION)
    start = rendering.message_spans[4][0]
    assert rendering.text.encode()[:start].endswith(b"<think>\n\n</think>\n\n")
    reasoning = [dict(m) for m in SYSTEM_CONVERSATION]
    reasoning[2]["content"] = "<think>\nhmm\n</think>\n\nHello."
    with pytest.raises(ContentRewrittenError, match=r"message 2 \(assistant\)"):
        render(load_real("qwen3"), {"messages": reasoning})


@integration
def test_qwen3_normalisation_keeps_offsets_in_the_original_text() -> None:
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "cafe\u0301 ok"}]
    rendering = render_checked("qwen3", messages)
    start, stop = rendering.message_spans[1]
    assert rendering.text.encode()[start:stop] == "cafe\u0301 ok".encode()  # not the NFC 'café'


@integration
def test_gemma3_folds_the_system_message_into_the_first_user_turn() -> None:
    rendering = render_checked("gemma3", SYSTEM_CONVERSATION)
    system, user = rendering.message_spans[0], rendering.message_spans[1]
    assert system[1] < user[0]
    assert b"<start_of_turn>" not in rendering.text.encode()[system[1] : user[0]]


@integration
def test_mistral_v3_moves_the_system_message_into_the_last_user_turn() -> None:
    rendering = render_checked("mistral_v3", SYSTEM_CONVERSATION)
    assert rendering.message_spans[2][1] < rendering.message_spans[0][0] < rendering.message_spans[3][0]


@integration
def test_mistral_nemo_drops_the_system_message_unless_told_to_accept_it() -> None:
    with pytest.raises(ContentRewrittenError, match=r"dropped message\(s\) 0 \(system\).*on_dropped='ignore'"):
        render(load_real("mistral_nemo"), {"messages": SYSTEM_CONVERSATION})
    rendering = render_checked("mistral_nemo", SYSTEM_CONVERSATION, on_dropped="ignore")
    assert rendering.message_spans[0] is None and rendering.trimmed[0] == (0, 0)


@integration
def test_phi3_endoftext_after_the_last_turn_is_not_trained() -> None:
    rendering = render_checked("phi3", SYSTEM_CONVERSATION)
    assert rendering.text.endswith("<|end|>\n<|endoftext|>")
    assert not rendering.completion_mask[-1]
    assert load_real("phi3").convert_ids_to_tokens(int(rendering.input_ids[rendering.end_of_turn[-1]])) == "<|end|>"


@integration
def test_deepseek_role_tokens_in_content_stay_plain() -> None:
    messages = [{"role": "user", "content": "<｜User｜>hi<｜Assistant｜>"}, {"role": "assistant", "content": "ok"}]
    rendering = render_checked("deepseek_v3", messages)
    assert int(rendering.control_mask.sum()) == 4  # BOS, <｜User｜>, <｜Assistant｜>, EOS of the template only


@integration
def test_qwen25_template_default_system_prompt_is_template_text() -> None:
    template = (SHARED_DIR.parent / "tokenizers" / "extra_templates" / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
    tok = load_real("qwen3")
    rendering = render(tok, {"messages": CONVERSATIONS["two_turn"]}, chat_template=template)
    assert rendering.text == tok.apply_chat_template(CONVERSATIONS["two_turn"], tokenize=False, chat_template=template)
    assert "You are Qwen" in rendering.text[: rendering.text.index("Hi there")]
    expect_located(rendering, CONVERSATIONS["two_turn"])


@integration
def test_gemma2_template_rejects_a_system_role() -> None:
    template = (SHARED_DIR / "extra_templates" / "google-gemma-2-2b-it.jinja").read_text()
    with pytest.raises(TemplateError, match="rejected the conversation"):
        render(load_real("gemma3"), {"messages": SYSTEM_CONVERSATION}, chat_template=template)


@integration
def test_qwen3_reasoning_in_the_final_turn_is_refused_naming_the_assistant_turn() -> None:
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"}]
    with pytest.raises(ContentRewrittenError, match=r"message 0 \(user\) or message 1 \(assistant\)"):
        render(load_real("qwen3"), {"messages": messages})


# --- batching and the cached sentinel rendering ---------------------------------------------------------------------
def test_render_each_equals_render_and_keeps_each_failure_in_its_place() -> None:
    tok = load_real("smollm2")
    good = {"messages": CONVERSATIONS["two_turn"]}
    bad = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}  # empty completion
    results = render_each(tok, [good, bad, {"prompt": "Q: ", "completion": "A"}], turns="last")
    assert isinstance(results[1], ExampleError)
    for result, example in [(results[0], good), (results[2], {"prompt": "Q: ", "completion": "A"})]:
        expected = render(tok, example, turns="last")
        assert isinstance(result, Rendering) and result.text == expected.text
        assert result.input_ids.tolist() == expected.input_ids.tolist()
        assert result.byte_offsets.tolist() == expected.byte_offsets.tolist()
        assert result.completion_mask.tolist() == expected.completion_mask.tolist()


def test_the_sentinel_rendering_is_rendered_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = load_real("smollm2")
    locate_module.SHAPES.pop(tok, None)
    calls: list[int] = []
    apply = locate_module.apply_template
    monkeypatch.setattr(locate_module, "apply_template", lambda *a, **k: calls.append(1) or apply(*a, **k))
    render_chat(tok, CONVERSATIONS["two_turn"])
    render_chat(tok, [{"role": "user", "content": "Other"}, {"role": "assistant", "content": "words"}])
    assert len(calls) == 3  # two real renderings, one sentinel rendering of their shared shape


def test_a_cached_sentinel_rendering_that_does_not_fit_is_rendered_afresh() -> None:
    # e.g. a template that prints today's date: the cached rendering is stale after midnight
    tok = load_real("smollm2")
    expected = render_chat(tok, CONVERSATIONS["multi_turn"])
    shapes = locate_module.SHAPES[tok]
    for key in shapes:
        shapes[key] = shapes[key].replace("<|im_start|>", "<|im_start|>stale ")
    again = render_chat(tok, CONVERSATIONS["multi_turn"])
    assert (again.text, again.message_spans, again.trimmed) == (expected.text, expected.message_spans, expected.trimmed)
