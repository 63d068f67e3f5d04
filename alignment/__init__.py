"""Teacher template alignment for cross-tokenizer knowledge distillation.

Render a conversation in each model's own format (:func:`render`), find the exact bytes of every token
(:func:`token_byte_spans`), align the two tokenizations (:func:`align_spans`, :func:`align_renderings`),
and match vocabularies by bytes (:func:`vocab_map`).
"""

from __future__ import annotations

from alignment._byteframes import ByteFrames, byte_logprobs, prefix_weights
from alignment._paths import TeacherPath, teacher_path_logprobs
from alignment.align import align_renderings, align_spans, align_spans_batch
from alignment.crossvocab import chunk_likelihood_loss, project_logprobs, token_logprobs
from alignment.errors import (
    AlignmentError,
    ContentRewrittenError,
    ExampleError,
    TemplateError,
    TextMismatchError,
    TokenizerError,
)
from alignment.losses import TopK, forward_kl, generalized_jsd, masked_kl, reverse_kl
from alignment.nextbyte import ByteVocab, byte_vocab, fold_next_bytes, next_byte_logprobs
from alignment.render import render, render_chat, render_completion, render_prompt
from alignment.spans import decode_bytes, token_byte_spans
from alignment.teacher import TeacherBatch, align_teacher_logits, prepare_teacher_batch, same_template
from alignment.types import (
    BatchAlignment,
    ChatMessage,
    Chunks,
    Rendering,
    Span,
    TokenAlignment,
    VocabMap,
    VocabProjection,
)
from alignment.vocab import end_of_turn_id, vocab_map, vocab_projection

__version__ = "0.1.0"

__all__ = [
    "AlignmentError",
    "BatchAlignment",
    "ByteFrames",
    "ByteVocab",
    "ChatMessage",
    "Chunks",
    "ContentRewrittenError",
    "ExampleError",
    "Rendering",
    "Span",
    "TeacherBatch",
    "TeacherPath",
    "TemplateError",
    "TextMismatchError",
    "TokenAlignment",
    "TokenizerError",
    "TopK",
    "VocabMap",
    "VocabProjection",
    "__version__",
    "align_renderings",
    "align_spans",
    "align_spans_batch",
    "align_teacher_logits",
    "byte_logprobs",
    "byte_vocab",
    "chunk_likelihood_loss",
    "decode_bytes",
    "end_of_turn_id",
    "fold_next_bytes",
    "forward_kl",
    "generalized_jsd",
    "masked_kl",
    "next_byte_logprobs",
    "prefix_weights",
    "prepare_teacher_batch",
    "project_logprobs",
    "render",
    "render_chat",
    "render_completion",
    "render_prompt",
    "reverse_kl",
    "same_template",
    "teacher_path_logprobs",
    "token_byte_spans",
    "token_logprobs",
    "vocab_map",
    "vocab_projection",
]
