"""The library's exceptions: one small hierarchy rooted in :class:`AlignmentError`.

What goes wrong with the *data* (a tokenizer that cannot be used, a template that rejects or rewrites a
conversation, a malformed example, two texts that differ, bad tensors handed to a loss) raises a subclass of
:class:`AlignmentError`, itself a :class:`ValueError`. Misused *arguments* of the numpy/rendering layers (an
unknown option string, ids or spans of the wrong shape or dtype) raise plain :class:`ValueError` or
:class:`TypeError` naming the argument. ``except ValueError`` catches both kinds.
"""

from __future__ import annotations

__all__ = [
    "AlignmentError",
    "ContentRewrittenError",
    "ExampleError",
    "TemplateError",
    "TextMismatchError",
    "TokenizerError",
]


class AlignmentError(ValueError):
    """Base class of every error raised by :mod:`alignment`."""


class TextMismatchError(AlignmentError):
    """Two tokenizations that should cover the same text do not.

    The message names the first byte offset that disagrees and shows some context around it.
    """


class TokenizerError(AlignmentError):
    """The tokenizer cannot be used: no offsets support, an unknown decoder, or ids outside its vocabulary."""


class TemplateError(AlignmentError):
    """The chat template is missing, failed to render, or rejected the conversation."""


class ContentRewrittenError(TemplateError):
    """The chat template dropped or rewrote a message's content, so its text cannot be located verbatim."""


class ExampleError(AlignmentError):
    """The example is malformed: neither ``messages`` nor ``prompt``/``completion``, an empty completion, a bad role."""
