"""The public surface of ``alignment`` is pinned: ``__all__``, importability, and a section per name in docs/api.md.

Adding a public name means adding it here, to ``alignment.__all__`` (kept sorted) and to ``docs/api.md``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import alignment

API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"

PUBLIC_NAMES = [
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


def _api_headings() -> list[str]:
    """Names of the ``## `name` `` headings (any level) of docs/api.md."""
    return re.findall(r"^#{2,6} `([^`]+)`\s*$", API_DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)


def test_all_is_pinned() -> None:
    assert sorted(alignment.__all__) == PUBLIC_NAMES


def test_all_is_sorted_without_duplicates() -> None:
    assert alignment.__all__ == sorted(alignment.__all__)
    assert len(set(alignment.__all__)) == len(alignment.__all__)


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_every_name_is_importable(name: str) -> None:
    module = importlib.import_module("alignment")
    assert hasattr(module, name), f"alignment.{name} is in __all__ but not defined"
    namespace: dict[str, object] = {}
    exec(f"from alignment import {name}", namespace)
    assert namespace[name] is getattr(module, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from alignment import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC_NAMES


@pytest.mark.parametrize("name", [n for n in PUBLIC_NAMES if n not in ("__version__", "Span")])
def test_every_function_and_class_has_a_docstring(name: str) -> None:
    obj = getattr(alignment, name)
    assert inspect.getdoc(obj), f"alignment.{name} has no docstring"


def test_version_is_a_string() -> None:
    assert isinstance(alignment.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", alignment.__version__)


def test_every_name_has_a_section_in_api_md() -> None:
    missing = sorted(set(PUBLIC_NAMES) - set(_api_headings()))
    assert not missing, f"docs/api.md has no `## \\`name\\`` heading for {missing}"


def test_api_md_documents_only_public_names_once() -> None:
    headings = _api_headings()
    assert not sorted(set(headings) - set(PUBLIC_NAMES)), "docs/api.md documents names that are not public"
    assert len(headings) == len(set(headings)), "docs/api.md documents a name twice"


def test_every_section_renders_its_object() -> None:
    text = API_DOC.read_text(encoding="utf-8")
    missing = [name for name in PUBLIC_NAMES if not re.search(rf"^::: alignment\.{re.escape(name)}\s*$", text, re.M)]
    assert not missing, f"docs/api.md lacks a `::: alignment.<name>` line for {missing}"
