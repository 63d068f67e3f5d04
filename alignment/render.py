"""Render a conversation, or a prompt and completion, in one tokenizer's own format, and locate every message.

1. The template renders the conversation, and :mod:`alignment._locate` finds every message in the text through a
   sentinel rendering of the same shape (never guessed: a template that rewrites content raises
   :class:`ContentRewrittenError`).
2. The text is tokenized split at the control tokens found in the template's own text only; the text
   between them, content included, is tokenized with added-token matching off, so a message that
   contains ``<|im_end|>`` stays plain text."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from alignment import _locate, _plans
from alignment._tokenizer import FastTokenizer, tokenizer_info
from alignment.errors import ContentRewrittenError, ExampleError, TemplateError, TokenizerError
from alignment.spans import Segment
from alignment.types import Rendering

__all__ = ["prompt_messages", "render", "render_chat", "render_completion", "render_prompt"]

Mode = Literal["auto", "chat", "completion"]
Turns = Literal["all", "last"]
OnDropped = Literal["raise", "ignore"]


def _checked_messages(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise ExampleError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.80}")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ExampleError(f"messages[{index}] must be a dict with a string 'role', got {message!r:.80}")
        if not isinstance(message.get("content"), str):
            raise ExampleError(
                f"messages[{index}]['content'] must be a string, got {type(message.get('content')).__name__}; "
                "multimodal content lists are not supported"
            )
    return [dict(m) for m in messages]


def _trained(roles: Sequence[str], turns: Turns) -> tuple[int, ...]:
    assistant = tuple(i for i, role in enumerate(roles) if role == "assistant")
    if turns not in ("all", "last"):
        raise ValueError(f"turns must be 'all' or 'last', got {turns!r}")
    return assistant if turns == "all" else assistant[-1:]


def render_chat(
    tokenizer: FastTokenizer,
    messages: Sequence[Mapping[str, Any]],
    *,
    turns: Turns = "all",
    add_generation_prompt: bool = False,
    chat_template: str | None = None,
    on_dropped: OnDropped = "raise",
    **template_kwargs: Any,
) -> Rendering:
    """Render ``messages`` with the tokenizer's chat template and locate every message's content.

    The text is byte-identical to ``tokenizer.apply_chat_template(messages, tokenize=False, ...)``.

    Args:
        tokenizer: a Hugging Face fast tokenizer.
        messages: ``[{"role": ..., "content": ...}, ...]``; extra keys pass through to the template.
        turns: train ``"all"`` assistant turns or only the ``"last"``.
        add_generation_prompt: append the template's generation prompt (a prompt to sample from).
        chat_template: a Jinja template to use instead of the tokenizer's own.
        on_dropped: ``"raise"`` if the template leaves a message out (Mistral NeMo drops the system prompt
            of a conversation that ends with an assistant turn); ``"ignore"`` records ``None`` as its span.
            A dropped trained message always raises.
        **template_kwargs: extra template variables, e.g. Llama 3's ``date_string``.

    Returns:
        The :class:`~alignment.Rendering`, ``mode="chat"``.

    Raises:
        TemplateError: no chat template, or the template rejected the conversation (e.g. a role it forbids).
        ContentRewrittenError: the template dropped or rewrote a message's content.
        ExampleError: malformed messages, or a trained assistant turn with empty content.

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> tok = load_tokenizer("smollm2")
        >>> r = render_chat(tok, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])
        >>> r.text[slice(*r.message_spans[1])], [r.token_text(i) for i in r.completion_mask.nonzero()[0]]
        ('4', ['4', '<|im_end|>'])
    """
    return _plans.tokenize_one(
        _plan_chat(
            tokenizer,
            messages,
            turns=turns,
            add_generation_prompt=add_generation_prompt,
            chat_template=chat_template,
            on_dropped=on_dropped,
            **template_kwargs,
        )
    )


def _plan_chat(
    tokenizer: FastTokenizer,
    messages: Sequence[Mapping[str, Any]],
    *,
    turns: Turns,
    add_generation_prompt: bool,
    chat_template: str | None,
    on_dropped: OnDropped,
    empty_ok: bool = False,
    **template_kwargs: Any,
) -> _plans.Plan:
    checked = _checked_messages(messages)
    template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
    if not template:
        raise TemplateError(
            f"{tokenizer_info(tokenizer).name} has no chat template: pass chat_template=..., "
            "or render with mode='completion' (render_completion) for a plain completion model"
        )
    if on_dropped not in ("raise", "ignore"):
        raise ValueError(f"on_dropped must be 'raise' or 'ignore', got {on_dropped!r}")
    options = {"add_generation_prompt": add_generation_prompt, "chat_template": template, **template_kwargs}
    text = _locate.apply_template(tokenizer, checked, **options)
    spans, trims = _locate.locate_messages(tokenizer, text, checked, options)
    roles = [m["role"] for m in checked]
    dropped = [i for i in range(len(checked)) if i not in spans]
    if dropped and on_dropped == "raise":
        raise ContentRewrittenError(
            f"the chat template of {tokenizer_info(tokenizer).name} dropped message(s) "
            f"{', '.join(f'{i} ({roles[i]})' for i in dropped)} from the rendered text; pass on_dropped='ignore' "
            "to accept that (the teacher then never sees them), or move their content into another message"
        )
    segments = _plans.control_segments(tokenizer_info(tokenizer), text, list(spans.values()))
    return _plans.Plan(
        tokenizer,
        text,
        "chat",
        roles,
        [spans.get(i) for i in range(len(checked))],
        [trims.get(i, (0, 0)) for i in range(len(checked))],
        _trained(roles, turns),
        segments,
        empty_ok=empty_ok,
    )


def _plain_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ExampleError(f"{name} must be a string, got {type(value).__name__}")
    return value


def render_completion(tokenizer: FastTokenizer, prompt: str, completion: str) -> Rendering:
    """Render a plain prompt and completion: BOS as the tokenizer adds it, the prompt, the completion, EOS.

    For a model without a chat template (a plain completion model such as GPT-2). The prompt and the
    completion are tokenized separately, as they are when a model samples a completion after a prompt, so no
    token straddles the two. The completion is trained through the EOS token that closes it.

    Args:
        tokenizer: a Hugging Face fast tokenizer with an EOS token.
        prompt: the prompt text (may be empty).
        completion: the completion text; not empty.

    Returns:
        The :class:`~alignment.Rendering`, ``mode="completion"``, with roles ``("prompt", "completion")``.

    Raises:
        ExampleError: the completion is empty, or an argument is not a string.
        TokenizerError: the tokenizer has no EOS token.

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> r = render_completion(load_tokenizer("mistral_v3"), "Q: 2+2=", "4")
        >>> r.text, [r.token_text(i) for i in r.completion_mask.nonzero()[0]]
        ('<s>Q: 2+2=4</s>', ['4', '</s>'])
    """
    pieces = [(_plain_text(prompt, "prompt"), True)]
    return _plans.tokenize_one(
        _plan_plain(tokenizer, ("prompt", "completion"), pieces, "", _plain_text(completion, "completion"))
    )


def _plan_plain(
    tokenizer: FastTokenizer,
    roles: Sequence[str],
    prompt: Sequence[tuple[str, bool]],
    separator: str,
    completion: str | None,
    *,
    empty_ok: bool = False,
) -> _plans.Plan:
    """BOS, the prompt pieces (those flagged ``True`` are messages, located in order), separator, completion, EOS.

    The prompt and the separator plus completion are one plain segment each. With ``completion=None`` only
    the BOS and the prompt are rendered (a prompt to sample from; nothing is trained). ``empty_ok``: an empty
    completion is rendered (only its EOS is then trained) instead of refused.
    """
    info = tokenizer_info(tokenizer)
    if completion == "" and not empty_ok:
        raise ExampleError("the completion is empty: there is no text to compare; drop the sample")
    if completion is not None and info.eos_id is None:
        raise TokenizerError(f"{info.name} has no EOS token to close the completion; set tokenizer.eos_token")
    segments: list[Segment] = []
    cursor = 0
    for token in info.bos_prefix:
        width = len(info.token_bytes[token].decode())
        segments.append((cursor, cursor + width, token))
        cursor += width
    spans: list[tuple[int, int]] = []
    prompt_start = cursor
    for piece, is_message in prompt:
        if is_message:
            spans.append((cursor, cursor + len(piece)))
        cursor += len(piece)
    segments.append((prompt_start, cursor, None))
    bos = "".join(info.token_bytes[token].decode() for token in info.bos_prefix)
    text = bos + "".join(piece for piece, _ in prompt)
    trained: tuple[int, ...] = ()
    if completion is not None:
        assert info.eos_id is not None
        spans.append((cursor + len(separator), cursor + len(separator) + len(completion)))
        segments.append((cursor, spans[-1][1], None))
        eos = info.token_bytes[info.eos_id].decode()
        segments.append((spans[-1][1], spans[-1][1] + len(eos), info.eos_id))
        text += separator + completion + eos
        trained = (len(spans) - 1,)
    segments = [s for s in segments if s[2] is not None or s[0] < s[1]]
    trims = [(0, 0)] * len(spans)
    return _plans.Plan(tokenizer, text, "completion", roles, spans, trims, trained, segments, empty_ok=empty_ok)


def _plain_prompt(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool]]:
    """Turns as ``"Role: content\\n\\n"`` blocks, then ``"Assistant:"``; content pieces are flagged ``True``."""
    prompt: list[tuple[str, bool]] = []
    for message in messages:
        prompt += [(f"{message['role'].capitalize()}: ", False), (message["content"], True), ("\n\n", False)]
    return [*prompt, ("Assistant:", False)]


def _plan_messages_plain(
    tokenizer: FastTokenizer, messages: list[dict[str, Any]], *, empty_ok: bool = False
) -> _plans.Plan:
    """The plain layout of the earlier turns, then ``" "`` and the last message as the completion."""
    if messages[-1]["role"] != "assistant":
        raise ExampleError(
            "in completion mode the last message is the completion and must be an assistant turn, "
            f"got role {messages[-1]['role']!r}"
        )
    roles = [m["role"] for m in messages]
    prompt = _plain_prompt(messages[:-1])
    return _plan_plain(tokenizer, roles, prompt, " ", messages[-1]["content"], empty_ok=empty_ok)


def prompt_messages(example: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conversation a completion is sampled after: ``messages`` without trailing assistant turns."""
    messages = _checked_messages(example["messages"])
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    if not messages:
        raise ExampleError("the example has no turn before its assistant turns to prompt with")
    return messages


def render_prompt(
    tokenizer: FastTokenizer,
    example: Mapping[str, Any],
    *,
    mode: Mode = "auto",
    chat_template: str | None = None,
    **template_kwargs: Any,
) -> Rendering:
    """Render the prompt of ``example`` to sample a completion from, in the tokenizer's own format.

    Chat mode renders ``messages`` without trailing assistant turns, with the template's generation prompt
    (or the ``prompt`` text as one user turn). Completion mode renders BOS and the ``prompt`` text, or the plain
    layout of the messages ending in ``"Assistant:"``. Nothing is trained (``completion_mask`` is all False).

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> example = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
        >>> render_prompt(load_tokenizer("mistral_v3"), example).text
        '<s>[INST] 2+2?[/INST]'
        >>> render_prompt(load_tokenizer("mistral_v3"), example, mode="completion").text
        '<s>User: 2+2?\\n\\nAssistant:'
    """
    has_messages = example.get("messages") is not None
    if _resolve_mode(tokenizer, example, mode, chat_template) == "completion":
        if example.get("prompt") is not None:
            prompt = [(_plain_text(example["prompt"], "prompt"), True)]
            return _plans.tokenize_one(_plan_plain(tokenizer, ("prompt",), prompt, "", None))
        messages = prompt_messages(example)
        return _plans.tokenize_one(
            _plan_plain(tokenizer, [m["role"] for m in messages], _plain_prompt(messages), "", None)
        )
    messages = (
        prompt_messages(example)
        if has_messages
        else [{"role": "user", "content": _plain_text(example["prompt"], "prompt")}]
    )
    plan = _plan_chat(
        tokenizer,
        messages,
        turns="all",
        add_generation_prompt=True,
        chat_template=chat_template,
        on_dropped="raise",
        **template_kwargs,
    )
    return _plans.tokenize_one(dataclasses.replace(plan, trained=()))  # a prompt's assistant turns are not trained


def _resolve_mode(tokenizer: FastTokenizer, example: Any, mode: str, chat_template: str | None) -> str:
    """Check ``mode`` and ``example``'s shape; resolve ``"auto"`` by whether a chat template exists."""
    if mode not in ("auto", "chat", "completion"):
        raise ValueError(f"mode must be 'auto', 'chat' or 'completion', got {mode!r}")
    if not isinstance(example, Mapping):
        raise ExampleError(f"example must be a dict, got {type(example).__name__}")
    if example.get("messages") is None and example.get("prompt") is None:
        raise ExampleError(f"example needs 'messages' or both 'prompt' and 'completion'; it has keys {sorted(example)}")
    if mode == "auto":
        return "chat" if chat_template or getattr(tokenizer, "chat_template", None) else "completion"
    return mode


def render(
    tokenizer: FastTokenizer,
    example: Mapping[str, Any],
    *,
    mode: Mode = "auto",
    turns: Turns = "all",
    chat_template: str | None = None,
    on_dropped: OnDropped = "raise",
    **template_kwargs: Any,
) -> Rendering:
    """Render one training example for ``tokenizer`` in its own format.

    ``example`` holds ``messages`` (a list of ``{"role", "content"}``), or raw ``prompt`` and ``completion``
    text, or both. ``mode="chat"`` uses the chat template (from ``messages``, else a user turn holding the
    prompt and an assistant turn holding the completion); ``mode="completion"`` uses the plain format of
    :func:`render_completion` (from ``prompt``/``completion``, else from ``messages`` laid out as
    ``"User: ...\\n\\nAssistant: ..."`` with the last message as the completion); ``mode="auto"`` picks chat
    when the tokenizer has a template (or ``chat_template`` is given) and completion otherwise.

    Args:
        tokenizer: a Hugging Face fast tokenizer.
        example: the example, as described above.
        mode: ``"auto"``, ``"chat"`` or ``"completion"``.
        turns, chat_template, on_dropped, **template_kwargs: as for :func:`render_chat` (chat mode only).

    Returns:
        The :class:`~alignment.Rendering`.

    Raises:
        ExampleError: the example has neither ``messages`` nor ``prompt`` and ``completion``.
        TemplateError, ContentRewrittenError, TokenizerError: as for :func:`render_chat` and
            :func:`render_completion`.

    Examples:
        >>> from alignment.cli import load_tokenizer
        >>> example = {"prompt": "Reverse 'abc'.", "completion": "cba"}
        >>> r = render(load_tokenizer("smollm2"), example)
        >>> r.mode, r.text[-61:]
        ('chat', "Reverse 'abc'.<|im_end|>\\n<|im_start|>assistant\\ncba<|im_end|>\\n")
        >>> render(load_tokenizer("smollm2"), example, mode="completion").text
        "Reverse 'abc'.cba<|im_end|>"
    """
    options = {"turns": turns, "chat_template": chat_template, "on_dropped": on_dropped, **template_kwargs}
    return _plans.tokenize_one(_plan_example(tokenizer, example, mode=mode, **options))


def render_each(
    tokenizer: FastTokenizer, examples: Sequence[Mapping[str, Any]], *, empty_ok: bool = False, **options: Any
) -> list[Any]:
    """:func:`render` of every example (same keyword options), tokenizing all of them in one batch.

    Returns a list holding each example's :class:`~alignment.Rendering`, or the exception its :func:`render`
    raises: the caller decides, in the order of its examples, what to raise. With ``empty_ok`` a trained turn
    may be empty (its span is then empty and only the token that closes it is marked).
    """
    plans: list[_plans.Plan | Exception] = []
    for example in examples:
        try:
            plans.append(_plan_example(tokenizer, example, empty_ok=empty_ok, **options))
        except Exception as error:  # raised by the caller in the order of its examples
            plans.append(error)
    done = iter(_plans.tokenize([plan for plan in plans if isinstance(plan, _plans.Plan)]))
    return [plan if isinstance(plan, Exception) else next(done) for plan in plans]


def _plan_example(
    tokenizer: FastTokenizer,
    example: Mapping[str, Any],
    *,
    mode: Mode = "auto",
    turns: Turns = "all",
    chat_template: str | None = None,
    on_dropped: OnDropped = "raise",
    empty_ok: bool = False,
    **template_kwargs: Any,
) -> _plans.Plan:
    """What :func:`render` renders, before tokenization (``empty_ok``: see :func:`render_each`)."""
    resolved = _resolve_mode(tokenizer, example, mode, chat_template)
    has_messages = example.get("messages") is not None
    has_text = example.get("prompt") is not None and example.get("completion") is not None
    if not (has_messages or has_text):
        raise ExampleError(f"example needs 'messages' or both 'prompt' and 'completion'; it has keys {sorted(example)}")
    if resolved == "completion":
        if has_text:
            prompt = [(_plain_text(example["prompt"], "prompt"), True)]
            completion = _plain_text(example["completion"], "completion")
            return _plan_plain(tokenizer, ("prompt", "completion"), prompt, "", completion, empty_ok=empty_ok)
        return _plan_messages_plain(tokenizer, _checked_messages(example["messages"]), empty_ok=empty_ok)
    messages = (
        example["messages"]
        if has_messages
        else [
            {"role": "user", "content": _plain_text(example["prompt"], "prompt")},
            {"role": "assistant", "content": _plain_text(example["completion"], "completion")},
        ]
    )
    return _plan_chat(
        tokenizer,
        messages,
        turns=turns,
        add_generation_prompt=False,
        chat_template=chat_template,
        on_dropped=on_dropped,
        empty_ok=empty_ok,
        **template_kwargs,
    )
