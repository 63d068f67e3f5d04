"""A rendering before and after tokenization: the located text, then its tokens, in one batch per tokenizer.

:mod:`alignment.render` makes a :class:`Plan` of every example (the text, where each message is, the segments to
tokenize); :func:`tokenize` encodes the plans of one tokenizer in one batch and marks each trained turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from alignment._tokenizer import FastTokenizer, TokenizerInfo, tokenizer_info
from alignment.errors import ContentRewrittenError, ExampleError, TemplateError
from alignment.spans import Segment, encode_segments_batch
from alignment.types import Rendering


def control_segments(info: TokenizerInfo, text: str, content: list[tuple[int, int]]) -> list[Segment]:
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


@dataclass(frozen=True, slots=True)
class Plan:
    """A rendering before its text is tokenized: what :func:`_tokenize` needs to finish it."""

    tokenizer: FastTokenizer
    text: str
    mode: Literal["chat", "completion"]
    roles: Sequence[str]
    char_spans: Sequence[tuple[int, int] | None]
    trims: Sequence[tuple[int, int]]
    trained: tuple[int, ...]
    segments: list[Segment]
    empty_ok: bool = False  # a trained turn may be empty (a sample closed at once): its closer alone is marked


def tokenize(plans: Sequence[Plan]) -> list[Rendering | Exception]:
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


def tokenize_one(plan: Plan) -> Rendering:
    (rendering,) = tokenize([plan])
    if isinstance(rendering, Exception):
        raise rendering
    return rendering


def _byte_spans(text: str, size: int, spans: Sequence[tuple[int, int] | None]) -> list[tuple[int, int] | None]:
    """Character ``spans`` of ``text`` (``size`` bytes in UTF-8) as byte spans: the same where the text is ASCII,
    else each edge after the bytes of the text before it, encoded a piece at a time."""
    if size == len(text):
        return [None if span is None else (span[0], span[1]) for span in spans]
    edges = sorted({edge for span in spans if span is not None for edge in span})
    at, done, byte = {}, 0, 0
    for edge in edges:
        byte += len(text[done:edge].encode())
        at[edge], done = byte, edge
    return [None if span is None else (at[span[0]], at[span[1]]) for span in spans]


def _finish(plan: Plan, ids: np.ndarray, offsets: np.ndarray, control: np.ndarray) -> Rendering:
    """Mark each trained turn of the tokenized plan from its first content token through end of turn."""
    text, roles = plan.text, plan.roles
    raw = text.encode()
    byte_spans = _byte_spans(text, len(raw), plan.char_spans)
    mask = np.zeros(len(ids), dtype=np.bool_)
    closers = []
    for index in plan.trained:
        span = byte_spans[index]
        if span is None:
            raise ContentRewrittenError(f"message {index} ({roles[index]}) is trained but the template dropped it")
        if span[0] == span[1] and not plan.empty_ok:
            raise ExampleError(
                f"message {index} ({roles[index]}) is an empty completion: there is no text to compare; "
                "drop the sample or train only other turns"
            )
        first = int(np.searchsorted(offsets[:, 1], span[0], side="right"))
        closer = int(np.searchsorted(offsets[:, 0], span[1], side="left"))  # the first token from the span's end on
        closer += int(control[closer:].argmax()) if closer < len(control) else 0  # the first control token there
        if closer == len(control) or not control[closer] or raw[span[1] : offsets[closer, 0]].strip():
            raise TemplateError(
                f"no end-of-turn token closes message {index} ({roles[index]}) in the "
                f"{tokenizer_info(plan.tokenizer).name} rendering: the text after it is {raw[span[1] : span[1] + 40]!r}"
            )
        mask[first : closer + 1] = True
        closers.append(closer)
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
