"""``alignment inspect``: render one conversation for a student and a teacher and show how they align.

Run ``alignment inspect`` (or ``python -m alignment inspect``) with no arguments for the built-in example:
a multi-turn conversation, the Mistral v0.3 (SentencePiece) tokenizer as student and SmolLM2 (byte-level
BPE) as teacher, both shipped with the package so it works offline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from alignment.align import align_renderings
from alignment.errors import AlignmentError, ExampleError
from alignment.render import Mode, render
from alignment.types import Rendering, TokenAlignment
from alignment.vocab import vocab_map

__all__ = ["BUILTIN_TOKENIZERS", "DEFAULT_EXAMPLE", "load_tokenizer", "main"]

BUILTIN_TOKENIZERS = ("mistral_v3", "smollm2")

DEFAULT_EXAMPLE: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are a careful assistant. Answer briefly."},
        {"role": "user", "content": "What is 1234 + 5678?"},
        {"role": "assistant", "content": "1234 + 5678 = 6912."},
        {"role": "user", "content": "Reverse the word 'café' and add a ☕."},
        {"role": "assistant", "content": "éfac ☕"},
    ]
}

_cache: dict[str, Any] = {}


def load_tokenizer(name_or_path: str) -> Any:
    """Load a fast tokenizer: a built-in name (``mistral_v3``, ``smollm2``), a local folder, or a hub name.

    Built-in tokenizers load offline from the package. Results are cached per name.
    """
    if name_or_path not in _cache:
        from transformers import AutoTokenizer

        source: Any = name_or_path
        if name_or_path in BUILTIN_TOKENIZERS:
            source = resources.files("alignment") / "assets" / "tokenizers" / name_or_path
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        _cache[name_or_path] = AutoTokenizer.from_pretrained(str(source))
    return _cache[name_or_path]


def _marked(rendering: Rendering) -> str:
    """The rendered text with each trained completion wrapped in ``⟦ ⟧``."""
    raw = rendering.text.encode()
    pieces, cursor = [], 0
    for start, stop in sorted(rendering.completion_spans):
        pieces += [raw[cursor:start], "⟦".encode(), raw[start:stop], "⟧".encode()]
        cursor = stop
    return b"".join([*pieces, raw[cursor:]]).decode(errors="replace")


def _token(rendering: Rendering, index: int) -> str:
    return repr(rendering.token_text(index))[1:-1]


def _side(label: str, name: str, rendering: Rendering) -> list[str]:
    trained = int(rendering.completion_mask.sum())
    return [
        f"## {label}: {name} ({rendering.mode} mode)",
        f"{len(rendering.input_ids)} tokens, {trained} in trained turns (⟦completion⟧ marked):",
        "",
        *("    " + line for line in _marked(rendering).splitlines()),
        "",
    ]


def _pair_table(student: Rendering, teacher: Rendering, alignment: TokenAlignment, limit: int) -> list[str]:
    paired = {int(i) for i in alignment.pairs[:, 0]}
    rows = ["| chunk | student tokens | teacher tokens | 1:1 pair |", "|--:|---|---|:-:|"]
    chunks = alignment.chunks
    for g in range(min(len(chunks), limit)):
        s_lo, s_hi = chunks.student[g]
        t_lo, t_hi = chunks.teacher[g]
        s_text = " · ".join(_token(student, i) for i in range(s_lo, s_hi))
        t_text = " · ".join(_token(teacher, j) for j in range(t_lo, t_hi))
        rows.append(f"| {g} | `{s_text}` | `{t_text}` | {'yes' if s_hi - 1 in paired else ''} |")
    if len(chunks) > limit:
        rows.append(f"| … | {len(chunks) - limit} more chunks | | |")
    return rows


def inspect(
    student_name: str,
    teacher_name: str,
    example: dict[str, Any],
    *,
    mode: Mode,
    limit: int = 60,
    template_vars: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
) -> str:
    """The side-by-side report as markdown text; ``template_vars`` are the student's and the teacher's."""
    student_tok, teacher_tok = load_tokenizer(student_name), load_tokenizer(teacher_name)
    student_vars, teacher_vars = template_vars
    student = render(student_tok, example, mode=mode, **student_vars)
    teacher = render(teacher_tok, example, mode=mode, **teacher_vars)
    if len(student.trained_messages) != len(teacher.trained_messages):  # chat vs completion: compare the last turn
        student = render(student_tok, example, mode=mode, turns="last", **student_vars)
        teacher = render(teacher_tok, example, mode=mode, turns="last", **teacher_vars)
    alignment = align_renderings(student, teacher)
    vocab = vocab_map(student_tok, teacher_tok)
    specials = ", ".join(
        f"{role}: {student_tok.convert_ids_to_tokens(int(s))} ↔ {teacher_tok.convert_ids_to_tokens(int(t))}"
        for role, (s, t) in zip(vocab.special_roles, vocab.special_pairs, strict=True)
    )
    lines = [
        f"# alignment inspect: student {student_name} ↔ teacher {teacher_name}",
        "",
        *_side("student", student_name, student),
        *_side("teacher", teacher_name, teacher),
        "## alignment of the trained turns",
        f"{len(alignment.pairs)} aligned pairs, {len(alignment.chunks)} chunks; "
        f"student coverage {alignment.student_coverage:.1%} of {alignment.num_student} tokens, "
        f"teacher coverage {alignment.teacher_coverage:.1%} of {alignment.num_teacher} tokens",
        "",
        *_pair_table(student, teacher, alignment, limit),
        "",
        "## vocabulary overlap (identical byte strings)",
        f"{len(vocab.pairs)} pairs; {vocab.student_shared:.1%} of the student's {vocab.student_size} tokens and "
        f"{vocab.teacher_shared:.1%} of the teacher's {vocab.teacher_size} tokens have a twin",
        f"control tokens paired by role: {specials or 'none'}",
    ]
    return "\n".join(lines)


def _read_example(path: str | None) -> dict[str, Any]:
    if path is None:
        return DEFAULT_EXAMPLE
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, list):
        return {"messages": data}
    if not isinstance(data, dict):
        raise ExampleError(
            f"{path} must hold a JSON list of messages or an object with 'messages' or 'prompt' and 'completion', "
            f"got a JSON {type(data).__name__}"
        )
    return data


def _variables(pairs: list[str]) -> dict[str, Any]:
    for pair in pairs:
        if "=" not in pair:
            raise ExampleError(f"template variables are NAME=VALUE, got {pair!r}")
    return dict(pair.split("=", 1) for pair in pairs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``alignment`` command."""
    parser = argparse.ArgumentParser(prog="alignment", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    inspect_cmd = commands.add_parser("inspect", help="render a conversation for two tokenizers and align them")
    inspect_cmd.add_argument("--student", default="mistral_v3", help="built-in name, folder or hub name")
    inspect_cmd.add_argument("--teacher", default="smollm2", help="built-in name, folder or hub name")
    inspect_cmd.add_argument(
        "--example", help="JSON file: a list of messages, or {'messages': [...]} / {'prompt': ..., 'completion': ...}"
    )
    inspect_cmd.add_argument("--mode", default="auto", choices=["auto", "chat", "completion"])
    inspect_cmd.add_argument("--limit", type=int, default=60, help="chunks to list (default 60)")
    for side in ("student", "teacher"):
        inspect_cmd.add_argument(
            f"--{side}-var",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"a variable of the {side}'s chat template, e.g. date_string='26 Jul 2024' for Llama 3 (repeatable)",
        )
    args = parser.parse_args(argv)
    try:
        template_vars = (_variables(args.student_var), _variables(args.teacher_var))
        example = _read_example(args.example)
        report = inspect(
            args.student, args.teacher, example, mode=args.mode, limit=args.limit, template_vars=template_vars
        )
    except (AlignmentError, OSError, ValueError) as error:  # ValueError: bad JSON or bytes that are not UTF-8
        print(f"alignment inspect: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
