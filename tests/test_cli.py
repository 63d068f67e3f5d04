"""Tests for :mod:`alignment.cli`: ``alignment inspect`` (in process and as ``python -m alignment``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alignment.align import align_renderings
from alignment.cli import BUILTIN_TOKENIZERS, DEFAULT_EXAMPLE, load_tokenizer, main
from alignment.render import render
from alignment.vocab import vocab_map
from tests.tokenizers import REPO_ROOT, VENDORED

ASSISTANT = [m["content"] for m in DEFAULT_EXAMPLE["messages"] if m["role"] == "assistant"]
MARKED = re.compile(r"⟦(.*?)⟧", re.DOTALL)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["inspect", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def rendered_block(report: str, label: str) -> list[str]:
    """The indented rendered text under the ``## {label}:`` heading, one entry per line, indentation removed."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {label}:"))
    assert lines[start + 1].endswith("(⟦completion⟧ marked):") and lines[start + 2] == ""
    block = []
    for line in lines[start + 3 :]:
        if not line.startswith("    "):
            break
        block.append(line[4:])
    return block


def marked(report: str) -> list[str]:
    """The ``⟦…⟧``-marked completions of the student's, then the teacher's rendered text."""
    return MARKED.findall("\n".join(rendered_block(report, "student"))) + MARKED.findall(
        "\n".join(rendered_block(report, "teacher"))
    )


def write_json(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "example.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "required" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["inspect", "--mode", "bogus"], ["inspect", "--limit", "many"], ["frobnicate"]],
    ids=["mode", "limit", "command"],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: alignment") and ("invalid choice" in err or "invalid int" in err)


def test_load_tokenizer_builtin_and_folder() -> None:
    assert BUILTIN_TOKENIZERS == ("mistral_v3", "smollm2")
    mistral, smollm = load_tokenizer("mistral_v3"), load_tokenizer("smollm2")
    assert mistral.is_fast and smollm.is_fast
    assert (len(mistral), len(smollm)) == (32768, 49152)
    assert load_tokenizer("mistral_v3") is mistral  # cached
    gpt2 = load_tokenizer(str(VENDORED["gpt2"]))
    assert gpt2.is_fast and len(gpt2) == 50257 and not gpt2.chat_template


def test_inspect_default_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys)
    assert code == 0 and err == ""
    assert out.startswith("# alignment inspect: student mistral_v3 ↔ teacher smollm2\n")
    headings = [line for line in out.splitlines() if line.startswith("## ")]
    assert headings == [
        "## student: mistral_v3 (chat mode)",
        "## teacher: smollm2 (chat mode)",
        "## alignment of the trained turns",
        "## vocabulary overlap (identical byte strings)",
    ]
    # both rendered texts, exactly as the chat templates render them, with only the assistant contents marked
    for label, name in (("student", "mistral_v3"), ("teacher", "smollm2")):
        shown = "\n".join(rendered_block(out, label))
        assert MARKED.findall(shown) == ASSISTANT
        expected = load_tokenizer(name).apply_chat_template(DEFAULT_EXAMPLE["messages"], tokenize=False)
        assert shown.replace("⟦", "").replace("⟧", "").splitlines() == expected.splitlines()
    assert marked(out) == ASSISTANT * 2
    assert out.count("⟦") == out.count("⟧") == 2 * len(ASSISTANT) + 2  # and once in each "(⟦completion⟧ marked)"
    # the figures agree with the library
    student_tok, teacher_tok = load_tokenizer("mistral_v3"), load_tokenizer("smollm2")
    student, teacher = render(student_tok, DEFAULT_EXAMPLE), render(teacher_tok, DEFAULT_EXAMPLE)
    alignment = align_renderings(student, teacher)
    vm = vocab_map(student_tok, teacher_tok)
    assert f"{len(student.input_ids)} tokens, {int(student.completion_mask.sum())} in trained turns" in out
    assert f"{len(teacher.input_ids)} tokens, {int(teacher.completion_mask.sum())} in trained turns" in out
    assert (
        f"{len(alignment.pairs)} aligned pairs, {len(alignment.chunks)} chunks; "
        f"student coverage {alignment.student_coverage:.1%} of {alignment.num_student} tokens, "
        f"teacher coverage {alignment.teacher_coverage:.1%} of {alignment.num_teacher} tokens"
    ) in out
    assert re.search(r"student coverage \d+\.\d% of \d+ tokens, teacher coverage \d+\.\d% of \d+ tokens", out)
    assert (
        f"{len(vm.pairs)} pairs; {vm.student_shared:.1%} of the student's 32768 tokens and "
        f"{vm.teacher_shared:.1%} of the teacher's 49152 tokens have a twin"
    ) in out
    assert out.rstrip("\n").endswith(
        "control tokens paired by role: bos: <s> ↔ <|im_start|>, eos: </s> ↔ <|im_end|>, end_of_turn: </s> ↔ <|im_end|>"
    )
    table = [line for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(table) == len(alignment.chunks)  # fewer than the default limit of 60


def test_same_tokenizer_aligns_one_to_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--student", "smollm2", "--teacher", "smollm2")
    assert code == 0
    assert re.search(r"student coverage 100\.0% of (\d+) tokens, teacher coverage 100\.0% of \1 tokens", out)


def test_limit_truncates_the_chunk_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--limit", "2")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| chunk")]
    assert [row.split(" | ")[0] for row in rows] == ["| 0", "| 1", "| …"]
    chunks = int(re.search(r"(\d+) chunks;", out).group(1))  # type: ignore[union-attr]
    assert rows[-1] == f"| … | {chunks - 2} more chunks | | |"


def test_example_as_a_list_of_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    messages = [
        {"role": "user", "content": "Say 你好 with a ☕ and an e\u0301."},
        {"role": "assistant", "content": "你好 ☕ e\u0301 — done."},
    ]
    code, out, err = run_main(capsys, "--example", write_json(tmp_path, messages))
    assert (code, err) == (0, "")
    assert marked(out) == [messages[1]["content"]] * 2
    assert "## student: mistral_v3 (chat mode)" in out and "## teacher: smollm2 (chat mode)" in out


def test_example_as_messages_dict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--example", write_json(tmp_path, DEFAULT_EXAMPLE))
    assert code == 0
    assert marked(out) == ASSISTANT * 2


def test_example_as_prompt_and_completion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = {"prompt": "Translate 'cat' to French.", "completion": "le chat ☕"}
    code, out, _ = run_main(capsys, "--example", write_json(tmp_path, example))
    assert code == 0
    assert marked(out) == ["le chat ☕"] * 2
    assert "Translate 'cat' to French." in "\n".join(rendered_block(out, "student"))
    assert "Translate 'cat' to French." in "\n".join(rendered_block(out, "teacher"))


def test_completion_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--mode", "completion")
    assert code == 0
    assert "## student: mistral_v3 (completion mode)" in out and "## teacher: smollm2 (completion mode)" in out
    assert marked(out) == ASSISTANT[-1:] * 2  # only the last assistant turn is the completion
    prompt = (
        "System: You are a careful assistant. Answer briefly.\n\nUser: What is 1234 + 5678?\n\n"
        "Assistant: 1234 + 5678 = 6912.\n\nUser: Reverse the word 'café' and add a ☕.\n\nAssistant: "
    )
    assert "\n".join(rendered_block(out, "student")) == "<s>" + prompt + "⟦éfac ☕⟧</s>"
    assert "\n".join(rendered_block(out, "teacher")) == prompt + "⟦éfac ☕⟧<|im_end|>"


def test_teacher_without_chat_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gpt2 = str(VENDORED["gpt2"])
    example = {"prompt": "Translate 'cat' to French: ", "completion": "le chat ☕"}
    code, out, _ = run_main(capsys, "--teacher", gpt2, "--example", write_json(tmp_path, example))
    assert code == 0
    assert "## student: mistral_v3 (chat mode)" in out
    assert f"## teacher: {gpt2} (completion mode)" in out
    assert rendered_block(out, "teacher") == ["Translate 'cat' to French: ⟦le chat ☕⟧<|endoftext|>"]
    assert "end_of_turn: </s> ↔ <|endoftext|>" in out


MALFORMED = [
    pytest.param("{bad json", "JSONDecodeError", id="invalid-json"),
    pytest.param('{"foo": 1}', "ExampleError", id="no-messages"),
    pytest.param("[1, 2]", "ExampleError", id="messages-not-dicts"),
    pytest.param('[{"role": "user"}]', "ExampleError", id="no-content"),
    pytest.param('{"messages": "hi"}', "ExampleError", id="messages-not-a-list"),
    pytest.param('{"prompt": 1, "completion": "x"}', "ExampleError", id="prompt-not-text"),
    pytest.param("42", "ExampleError", id="json-number"),
    pytest.param('"hello"', "ExampleError", id="json-string"),
    pytest.param(b"\xff\xfe{}", "", id="not-utf8"),
]


@pytest.mark.parametrize(("content", "error"), MALFORMED)
def test_malformed_example_exits_2(
    content: str | bytes, error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "example.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    code, out, err = run_main(capsys, "--example", str(path))
    assert code == 2
    assert out == ""
    assert err.startswith("alignment inspect: ") and error in err


def test_missing_example_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    code, out, err = run_main(capsys, "--example", str(missing))
    assert code == 2 and out == ""
    assert err.startswith("alignment inspect: FileNotFoundError") and str(missing) in err


def test_python_dash_m_alignment_inspect() -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "alignment", "inspect", "--limit", "3"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("# alignment inspect: student mistral_v3 ↔ teacher smollm2")
    assert marked(result.stdout) == ASSISTANT * 2


def test_completion_teacher_with_a_multi_turn_chat_compares_the_last_turn(capsys: pytest.CaptureFixture[str]) -> None:
    # the student's chat rendering trains both assistant turns, the plain-format teacher only the last
    code, out, _ = run_main(capsys, "--teacher", str(VENDORED["gpt2"]))
    assert code == 0
    for side in ("student", "teacher"):
        block = "\n".join(rendered_block(out, side))
        assert block.count("⟦") == 1 and "⟦éfac ☕⟧" in block  # one marked completion on each side


@pytest.mark.integration
def test_template_variables_reach_each_side(capsys: pytest.CaptureFixture[str]) -> None:
    llama = str(REPO_ROOT.parent / "shared" / "tokenizers" / "llama3")
    code, out, _ = run_main(capsys, "--teacher", llama, "--teacher-var", "date_string=26 Jul 2024")
    assert code == 0
    assert "Today Date: 26 Jul 2024" in "\n".join(rendered_block(out, "teacher"))
    code, _, err = run_main(capsys, "--student-var", "no-equals-sign")
    assert code == 2 and "NAME=VALUE" in err
