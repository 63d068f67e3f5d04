"""Find each message of a conversation in its rendering, through a sentinel rendering of the same shape.

The template renders the conversation twice: once as is, once with each message's content replaced by a unique
sentinel. The sentinel rendering says where each message went (templates move system prompts, fold them into a
user turn, or drop them) and what text the template itself wrote around it. Walking both renderings together,
the template's own text must match exactly, and each message's content must appear verbatim where its sentinel
was, or with edge whitespace trimmed (recorded). A template that rewrites content (drops reasoning, merges turns)
raises :class:`~alignment.errors.ContentRewrittenError`.

The sentinel rendering depends on the roles and other keys of the messages and on the template variables, not on
the contents, so it is cached per tokenizer and shape.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterator
from typing import Any

from alignment._tokenizer import FastTokenizer, tokenizer_info
from alignment.errors import AlignmentError, ContentRewrittenError, TemplateError

_SENTINEL = re.compile("\ue000([0-9]+)\ue001")


def _sentinel(index: int) -> str:
    return f"\ue000{index}\ue001"


def apply_template(tokenizer: FastTokenizer, messages: list[dict[str, Any]], **kwargs: Any) -> str:
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


def _content_candidates(content: str) -> Iterator[tuple[str, int]]:
    """The content, then its variants with whitespace trimmed from either edge, least trimmed first, each with the
    number of leading characters removed.

    Templates trim in different ways (Llama 3 strips both edges, Qwen3 strips newlines off the front of the last
    assistant turn only), so every combination of no trim, newlines, spaces or any whitespace off each edge is a
    candidate. A content that is all whitespace may vanish whole. The variants are worked out only when the content
    itself does not fit (most templates print it as it is).
    """
    yield content, 0
    leads = {0, *(len(content) - len(content.lstrip(chars)) for chars in ("\n", " ", None))}
    trails = {0, *(len(content) - len(content.rstrip(chars)) for chars in ("\n", " ", None))}
    seen = {(content, 0)}
    for lead, trail in sorted(((a, b) for a in leads for b in trails), key=lambda pair: (sum(pair), pair)):
        candidate = (content[lead : len(content) - trail], lead) if lead + trail < len(content) else ("", 0)
        if candidate not in seen:
            seen.add(candidate)
            yield candidate


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


SHAPES: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], str]] = weakref.WeakKeyDictionary()


def locate_messages(
    tokenizer: FastTokenizer, text: str, messages: list[dict[str, Any]], options: dict[str, Any]
) -> tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]]]:
    """:func:`_locate` the messages in ``text`` with the sentinel rendering of the conversation's shape.

    The sentinel rendering depends on the roles and other keys of the messages and on the options, not on the
    contents, so it is rendered once per tokenizer and shape and cached. A cached one that does not fit the
    text (a template that prints today's date, say) is rendered afresh before anything is refused.
    """
    sentinels = [{**m, "content": _sentinel(i)} for i, m in enumerate(messages)]
    try:
        shapes = SHAPES.setdefault(tokenizer, {})
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
    shapes[key] = apply_template(tokenizer, sentinels, **options)
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
