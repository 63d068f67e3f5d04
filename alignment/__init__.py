"""Teacher template alignment for cross-tokenizer knowledge distillation.

Render a conversation in each model's own format (:func:`render`), find the exact bytes of every token
(:func:`token_byte_spans`), align the two tokenizations (:func:`align_spans`, :func:`align_renderings`),
and match vocabularies by bytes (:func:`vocab_map`).
"""

from __future__ import annotations

from alignment.align import align_renderings, align_spans
from alignment.errors import (
    AlignmentError,
    ContentRewrittenError,
    ExampleError,
    TemplateError,
    TextMismatchError,
    TokenizerError,
)
from alignment.losses import TopK, forward_kl, generalized_jsd, masked_kl, reverse_kl
from alignment.render import render, render_chat, render_completion
from alignment.spans import decode_bytes, token_byte_spans
from alignment.types import ChatMessage, Chunks, Rendering, Span, TokenAlignment, VocabMap
from alignment.vocab import end_of_turn_id, vocab_map

__version__ = "0.1.0"

__all__ = [
    "AlignmentError",
    "ChatMessage",
    "Chunks",
    "ContentRewrittenError",
    "ExampleError",
    "Rendering",
    "Span",
    "TemplateError",
    "TextMismatchError",
    "TokenAlignment",
    "TokenizerError",
    "TopK",
    "VocabMap",
    "__version__",
    "align_renderings",
    "align_spans",
    "decode_bytes",
    "end_of_turn_id",
    "forward_kl",
    "generalized_jsd",
    "masked_kl",
    "render",
    "render_chat",
    "render_completion",
    "reverse_kl",
    "token_byte_spans",
    "vocab_map",
]
