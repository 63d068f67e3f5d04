"""Render a conversation, or a prompt and completion, in one tokenizer's own format, and locate every message.

How messages are located (never guessed):

1. The template renders the conversation twice: once as is, once with each message's content replaced by
   a unique sentinel. The sentinel rendering says where each message went (templates move system prompts,
   fold them into a user turn, or drop them) and what text the template itself wrote around it.
2. Walking both renderings together, the template's own text must match exactly, and each message's
   content must appear verbatim where its sentinel was, or with edge whitespace trimmed (recorded). A
   template that rewrites content (drops reasoning, merges turns) raises :class:`ContentRewrittenError`.
3. The text is tokenized split at the control tokens found in the template's own text only; the text
   between them, content included, is tokenized with added-token matching off, so a message that
   contains ``<|im_end|>`` stays plain text.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from alignment._tokenizer import FastTokenizer, TokenizerInfo, tokenizer_info
from alignment.errors import AlignmentError, ContentRewrittenError, ExampleError, TemplateError, TokenizerError
from alignment.spans import Segment, char_to_byte, encode_segments_batch
from alignment.types import Rendering

__all__ = ["prompt_messages", "render", "render_chat", "render_completion", "render_prompt"]

Mode = Literal["auto", "chat", "completion"]
Turns = Literal["all", "last"]
OnDropped = Literal["raise", "ignore"]

_SENTINEL = re.compile("\ue000([0-9]+)\ue001")


def _sentinel(index: int) -> str:
    return f"\ue000{index}\ue001"


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


def _apply_template(tokenizer: FastTokenizer, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as error:  # jinja2 errors and the template's own raise_exception
        raise TemplateError(
            f"the chat template of {tokenizer_info(tokenizer).name} rejected the conversation "
            f"(roles {[m['role'] for m in messages]}): {error}"
        ) from error
    if not isinstance(text, str):
        raise TemplateError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def _content_candidates(content: str) -> list[tuple[str, int]]:
    """The content, then its variants with whitespace trimmed from either edge, least trimmed first, each with the
    number of leading characters removed.

    Templates trim in different ways (Llama 3 strips both edges, Qwen3 strips newlines off the front of the last
    assistant turn only), so every combination of no trim, newlines, spaces or any whitespace off each edge is a
    candidate. A content that is all whitespace may vanish whole.
    """
    leads = {0, *(len(content) - len(content.lstrip(chars)) for chars in ("\n", " ", None))}
    trails = {0, *(len(content) - len(content.rstrip(chars)) for chars in ("\n", " ", None))}
    variants: list[tuple[str, int]] = []
    for lead, trail in sorted(((a, b) for a in leads for b in trails), key=lambda pair: (sum(pair), pair)):
        candidate = (content[lead : len(content) - trail], lead) if lead + trail < len(content) else ("", 0)
        if candidate not in variants:
            variants.append(candidate)
    return variants


def _locate(
    real: str, sentinel_text: str, messages: list[dict[str, Any]]
) -> tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]]]:
    """Char spans of each located message in ``real`` and the (lead, trail) bytes trimmed from it."""
    spans: dict[int, tuple[int, int]] = {}
    trims: dict[int, tuple[int, int]] = {}
    cursor, previous, previous_index = 0, 0, None
    for match in _SENTINEL.finditer(sentinel_text):
        index = int(match.group(1))
        if index >= len(messages) or index in spans:
            raise TemplateError(f"the template repeats or invents message {index}; its position is ambiguous")
        template_text = sentinel_text[previous : match.start()]
        if not real.startswith(template_text, cursor):  # the template wrote other text around this content
            _rewritten(real, cursor, messages, [i for i in (previous_index, index) if i is not None])
        cursor += len(template_text)
        following = sentinel_text[match.end() : _next_sentinel(sentinel_text, match.end())]
        content = messages[index]["content"]
        for candidate, lead in _content_candidates(content):
            end = cursor + len(candidate)
            if real.startswith(candidate, cursor) and real.startswith(following, end):
                spans[index] = (cursor, end)
                trims[index] = (len(content[:lead].encode()), len(content[lead + len(candidate) :].encode()))
                cursor = end
                break
        else:  # the content itself is there: the text after it changed, maybe because of the next message
            upcoming = _SENTINEL.search(sentinel_text, match.end())
            verbatim = real.startswith(content, cursor) and upcoming is not None
            _rewritten(real, cursor, messages, [index, int(upcoming.group(1))] if verbatim and upcoming else [index])
        previous, previous_index = match.end(), index
    if real[cursor:] != sentinel_text[previous:]:
        _rewritten(real, cursor, messages, [] if previous_index is None else [previous_index])
    return spans, trims


_SHAPES: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], str]] = weakref.WeakKeyDictionary()


def _locate_messages(
    tokenizer: FastTokenizer, text: str, messages: list[dict[str, Any]], options: dict[str, Any]
) -> tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]]]:
    """:func:`_locate` the messages in ``text`` with the sentinel rendering of the conversation's shape.

    The sentinel rendering depends on the roles and other keys of the messages and on the options, not on the
    contents, so it is rendered once per tokenizer and shape and cached. A cached one that does not fit the
    text (a template that prints today's date, say) is rendered afresh before anything is refused.
    """
    sentinels = [{**m, "content": _sentinel(i)} for i, m in enumerate(messages)]
    try:
        shapes = _SHAPES.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: no cache
        shapes = {}
    template = options.get("chat_template")  # a long string: hashed (once) rather than printed
    rest = sorted((k, v) for k, v in options.items() if k != "chat_template")
    key = (template if isinstance(template, str) else repr(template), repr((sentinels, rest)))
    if key in shapes:
        try:
            return _locate(text, shapes[key], messages)
        except AlignmentError:
            pass
    if len(shapes) >= _MAX_SHAPES:
        shapes.clear()
    shapes[key] = _apply_template(tokenizer, sentinels, **options)
    return _locate(text, shapes[key], messages)


_MAX_SHAPES = 256  # per tokenizer; a batch of conversations has a handful


def _next_sentinel(text: str, start: int) -> int:
    found = _SENTINEL.search(text, start)
    return found.start() if found else len(text)


def _rewritten(real: str, cursor: int, messages: list[dict[str, Any]], suspects: list[int]) -> None:
    named = " or ".join(f"message {i} ({messages[i]['role']})" for i in suspects) or "the template's own text"
    raise ContentRewrittenError(
        f"{named} does not appear verbatim in the rendered text near {real[max(cursor - 20, 0) : cursor + 20]!r}: "
        "the chat template rewrote it (for example Qwen3 drops <think> reasoning from earlier assistant turns). "
        "Remove what the template rewrites from the content before rendering, or render with another template."
    )


def _control_segments(info: TokenizerInfo, text: str, content: list[tuple[int, int]]) -> list[Segment]:
    """Segments tiling ``text``: control tokens found in the template's own text, plain text between."""
    segments: list[Segment] = []
    plain_from = 0
    template_from = 0
    for start, stop in [*sorted(content), (len(text), len(text))]:
        if info.control_pattern is not None:
            for found in info.control_pattern.finditer(text, template_from, start):
                segments.append((plain_from, found.start(), None))
                segments.append((found.start(), found.end(), info.control_ids[found.group()]))
                plain_from = found.end()
        template_from = stop
    segments.append((plain_from, len(text), None))
    return [s for s in segments if s[2] is not None or s[0] < s[1]]


def _trained(roles: Sequence[str], turns: Turns) -> tuple[int, ...]:
    assistant = tuple(i for i, role in enumerate(roles) if role == "assistant")
    if turns not in ("all", "last"):
        raise ValueError(f"turns must be 'all' or 'last', got {turns!r}")
    return assistant if turns == "all" else assistant[-1:]


@dataclass(frozen=True, slots=True)
class _Plan:
    """A rendering before its text is tokenized: what :func:`_tokenize` needs to finish it."""

    tokenizer: FastTokenizer
    text: str
    mode: Literal["chat", "completion"]
    roles: Sequence[str]
    char_spans: Sequence[tuple[int, int] | None]
    trims: Sequence[tuple[int, int]]
    trained: tuple[int, ...]
    segments: list[Segment]


def _tokenize(plans: Sequence[_Plan]) -> list[Rendering | Exception]:
    """Tokenize plans of one tokenizer in one batch; a plan that fails gets the exception it raised."""
    if not plans:
        return []
    encoded = encode_segments_batch(plans[0].tokenizer, [(plan.text, plan.segments) for plan in plans])
    renderings: list[Rendering | Exception] = []
    for plan, tokens in zip(plans, encoded, strict=True):
        try:
            if isinstance(tokens, Exception):
                raise tokens
            renderings.append(_finish(plan, *tokens))
        except Exception as error:  # kept in its place: the caller raises it in the order of its examples
            renderings.append(error)
    return renderings


def _one(plan: _Plan) -> Rendering:
    (rendering,) = _tokenize([plan])
    if isinstance(rendering, Exception):
        raise rendering
    return rendering


def _finish(plan: _Plan, ids: np.ndarray, offsets: np.ndarray, control: np.ndarray) -> Rendering:
    """Mark each trained turn of the tokenized plan from its first content token through end of turn."""
    text, roles = plan.text, plan.roles
    to_byte = char_to_byte(text)
    byte_spans = [None if s is None else (int(to_byte[s[0]]), int(to_byte[s[1]])) for s in plan.char_spans]
    raw = text.encode()
    mask = np.zeros(len(ids), dtype=np.bool_)
    closers = []
    for index in plan.trained:
        span = byte_spans[index]
        if span is None:
            raise ContentRewrittenError(f"message {index} ({roles[index]}) is trained but the template dropped it")
        if span[0] == span[1]:
            raise ExampleError(
                f"message {index} ({roles[index]}) is an empty completion: there is no text to compare; "
                "drop the sample or train only other turns"
            )
        first = int(np.searchsorted(offsets[:, 1], span[0], side="right"))
        after = np.flatnonzero(control & (offsets[:, 0] >= span[1]))
        if len(after) == 0 or raw[span[1] : offsets[after[0], 0]].strip():
            raise TemplateError(
                f"no end-of-turn token closes message {index} ({roles[index]}) in the "
                f"{tokenizer_info(plan.tokenizer).name} rendering: the text after it is {raw[span[1] : span[1] + 40]!r}"
            )
        mask[first : after[0] + 1] = True
        closers.append(int(after[0]))
    return Rendering(
        text=text,
        mode=plan.mode,
        input_ids=ids,
        byte_offsets=offsets,
        control_mask=control,
        completion_mask=mask,
        roles=tuple(roles),
        message_spans=tuple(byte_spans),
        trimmed=tuple(plan.trims),
        trained_messages=plan.trained,
        end_of_turn=tuple(closers),
    )


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
    return _one(
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
    **template_kwargs: Any,
) -> _Plan:
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
    text = _apply_template(tokenizer, checked, **options)
    spans, trims = _locate_messages(tokenizer, text, checked, options)
    roles = [m["role"] for m in checked]
    dropped = [i for i in range(len(checked)) if i not in spans]
    if dropped and on_dropped == "raise":
        raise ContentRewrittenError(
            f"the chat template of {tokenizer_info(tokenizer).name} dropped message(s) "
            f"{', '.join(f'{i} ({roles[i]})' for i in dropped)} from the rendered text; pass on_dropped='ignore' "
            "to accept that (the teacher then never sees them), or move their content into another message"
        )
    segments = _control_segments(tokenizer_info(tokenizer), text, list(spans.values()))
    return _Plan(
        tokenizer,
        text,
        "chat",
        roles,
        [spans.get(i) for i in range(len(checked))],
        [trims.get(i, (0, 0)) for i in range(len(checked))],
        _trained(roles, turns),
        segments,
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
    return _one(_plan_plain(tokenizer, ("prompt", "completion"), pieces, "", _plain_text(completion, "completion")))


def _plan_plain(
    tokenizer: FastTokenizer,
    roles: Sequence[str],
    prompt: Sequence[tuple[str, bool]],
    separator: str,
    completion: str | None,
) -> _Plan:
    """BOS, the prompt pieces (those flagged ``True`` are messages, located in order), separator, completion, EOS.

    The prompt and the separator plus completion are one plain segment each. With ``completion=None`` only
    the BOS and the prompt are rendered (a prompt to sample from; nothing is trained).
    """
    info = tokenizer_info(tokenizer)
    if completion == "":
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
    return _Plan(tokenizer, text, "completion", roles, spans, [(0, 0)] * len(spans), trained, segments)


def _plain_prompt(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool]]:
    """Turns as ``"Role: content\\n\\n"`` blocks, then ``"Assistant:"``; content pieces are flagged ``True``."""
    prompt: list[tuple[str, bool]] = []
    for message in messages:
        prompt += [(f"{message['role'].capitalize()}: ", False), (message["content"], True), ("\n\n", False)]
    return [*prompt, ("Assistant:", False)]


def _plan_messages_plain(tokenizer: FastTokenizer, messages: list[dict[str, Any]]) -> _Plan:
    """The plain layout of the earlier turns, then ``" "`` and the last message as the completion."""
    if messages[-1]["role"] != "assistant":
        raise ExampleError(
            "in completion mode the last message is the completion and must be an assistant turn, "
            f"got role {messages[-1]['role']!r}"
        )
    roles = [m["role"] for m in messages]
    return _plan_plain(tokenizer, roles, _plain_prompt(messages[:-1]), " ", messages[-1]["content"])


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
            return _one(_plan_plain(tokenizer, ("prompt",), prompt, "", None))
        messages = prompt_messages(example)
        return _one(_plan_plain(tokenizer, [m["role"] for m in messages], _plain_prompt(messages), "", None))
    messages = (
        prompt_messages(example)
        if has_messages
        else [{"role": "user", "content": _plain_text(example["prompt"], "prompt")}]
    )
    return render_chat(tokenizer, messages, add_generation_prompt=True, chat_template=chat_template, **template_kwargs)


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
    return _one(_plan_example(tokenizer, example, mode=mode, **options))


def render_each(tokenizer: FastTokenizer, examples: Sequence[Mapping[str, Any]], **options: Any) -> list[Any]:
    """:func:`render` of every example (same keyword options), tokenizing all of them in one batch.

    Returns a list holding each example's :class:`~alignment.Rendering`, or the exception its :func:`render`
    raises: the caller decides, in the order of its examples, what to raise.
    """
    plans: list[_Plan | Exception] = []
    for example in examples:
        try:
            plans.append(_plan_example(tokenizer, example, **options))
        except Exception as error:  # raised by the caller in the order of its examples
            plans.append(error)
    done = iter(_tokenize([plan for plan in plans if isinstance(plan, _Plan)]))
    return [plan if isinstance(plan, Exception) else next(done) for plan in plans]


def _plan_example(
    tokenizer: FastTokenizer,
    example: Mapping[str, Any],
    *,
    mode: Mode = "auto",
    turns: Turns = "all",
    chat_template: str | None = None,
    on_dropped: OnDropped = "raise",
    **template_kwargs: Any,
) -> _Plan:
    """What :func:`render` renders, before tokenization."""
    resolved = _resolve_mode(tokenizer, example, mode, chat_template)
    has_messages = example.get("messages") is not None
    has_text = example.get("prompt") is not None and example.get("completion") is not None
    if not (has_messages or has_text):
        raise ExampleError(f"example needs 'messages' or both 'prompt' and 'completion'; it has keys {sorted(example)}")
    if resolved == "completion":
        if has_text:
            prompt = [(_plain_text(example["prompt"], "prompt"), True)]
            completion = _plain_text(example["completion"], "completion")
            return _plan_plain(tokenizer, ("prompt", "completion"), prompt, "", completion)
        return _plan_messages_plain(tokenizer, _checked_messages(example["messages"]))
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
        **template_kwargs,
    )
