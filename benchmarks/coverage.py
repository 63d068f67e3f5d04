"""Alignment coverage for every ordered pair of real tokenizers. Run: python -m benchmarks.coverage

For each pair, a few conversations are rendered in each side's own format and aligned turn by turn
(:func:`alignment.align_renderings`). Coverage is the share of the student's trained tokens (turn start, content,
end of turn) that have a 1:1 teacher partner ending at the same byte. Refusals are listed with their reason.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from alignment import AlignmentError, align_renderings, render

SHARED = Path(__file__).resolve().parents[2] / "shared" / "tokenizers"
NAMES = ("llama3", "qwen3", "mistral_v3", "mistral_nemo", "gemma3", "gpt2", "phi3", "smollm2", "deepseek_v3")
CONVERSATIONS = {
    "numbers": [
        {"role": "user", "content": "What is 1234 + 5678?"},
        {"role": "assistant", "content": "1234 + 5678 = 6912, and 6912 * 2 = 13824."},
    ],
    "prose": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Explain tokenization in one sentence."},
        {"role": "assistant", "content": "Tokenization splits text into pieces a model reads, like words or bytes."},
    ],
    "unicode": [
        {"role": "user", "content": "Translate 'coffee' to Japanese and add an emoji."},
        {"role": "assistant", "content": "コーヒー ☕ — café, naïve 👩‍💻"},
    ],
    "code": [
        {"role": "user", "content": "Write a Python function that adds two numbers."},
        {"role": "assistant", "content": "def add(a, b):\n    return a + b\n"},
    ],
}


def main() -> None:
    from transformers import AutoTokenizer

    tokenizers = {n: AutoTokenizer.from_pretrained(str(SHARED / n)) for n in NAMES}
    options = {n: ({"date_string": "26 Jul 2024"} if n == "llama3" else {}) for n in NAMES}
    print("| student → teacher | " + " | ".join(CONVERSATIONS) + " | all |")
    print("|---|" + "--:|" * (len(CONVERSATIONS) + 1))
    refusals: dict[str, str] = {}
    for student, teacher in itertools.permutations(NAMES, 2):
        cells, paired, total = [], 0, 0
        for name, messages in CONVERSATIONS.items():
            try:
                s = render(tokenizers[student], {"messages": messages}, turns="last", **options[student])
                t = render(tokenizers[teacher], {"messages": messages}, turns="last", **options[teacher])
                alignment = align_renderings(s, t)
            except AlignmentError as error:
                cells.append("refused")
                refusals[f"{student} → {teacher} ({name})"] = f"{type(error).__name__}: {str(error)[:140]}"
                continue
            cells.append(f"{alignment.student_coverage:.2f}")
            paired, total = paired + len(alignment.pairs), total + alignment.num_student
        print(f"| {student} → {teacher} | " + " | ".join(cells) + f" | {paired / total:.3f} |")
    if refusals:
        print("\nRefused:")
        for where, why in refusals.items():
            print(f"- {where}: {why}")


if __name__ == "__main__":
    main()
