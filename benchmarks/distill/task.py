"""A seeded synthetic chat task with exactly checkable answers and multi-digit numbers.

Two kinds of question, mixed half and half, both answered by a number of one to seven digits:

* ``copy``: "Copy the number 4821305." -> "4821305";
* ``lookup``: "b=97, a=4821305. What is a?" -> "4821305" (a two-entry key-value context).

Llama 3 writes numbers in chunks of up to three digits while Qwen splits every digit, so the two tokenizations
of an answer rarely line up (the case where a shared-vocabulary loss fails). Tiny models trained from scratch
learn copying quickly. Harder variants were tried first and dropped for the CPU budget: digit reversal (a tiny
Llama-tokenizer model stayed at 0% after 800 steps: it must learn the digits inside each three-digit token) and
a lookup among three or four keys (10-20% after 400 steps).
"""

from __future__ import annotations

import random
from typing import Any

KEYS = "abcdefghjkmnpqrstuvwxyz"


def _question(rng: random.Random) -> tuple[str, str]:
    number = str(rng.randint(0, 10 ** rng.randint(1, 7) - 1))
    if rng.random() < 0.5:
        return f"Copy the number {number}.", number
    keys = rng.sample(KEYS, 2)
    other = str(rng.randint(0, 10 ** rng.randint(1, 7) - 1))
    pairs = [(keys[0], number), (keys[1], other)]
    rng.shuffle(pairs)
    return f"{pairs[0][0]}={pairs[0][1]}, {pairs[1][0]}={pairs[1][1]}. What is {keys[0]}?", number


def make_split(count: int, seed: int, exclude: set[str] | None = None) -> list[dict[str, Any]]:
    """``count`` examples with distinct prompts (none in ``exclude``), as ``messages`` plus raw text."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    examples = []
    while len(examples) < count:
        prompt, answer = _question(rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        examples.append(
            {
                "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                "answer": answer,
            }
        )
    return examples


def make_task(train: int, evaluation: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A training split and a held-out split whose prompts never occur in training."""
    train_split = make_split(train, seed)
    held_out = make_split(evaluation, seed + 1, exclude={e["messages"][0]["content"] for e in train_split})
    return train_split, held_out
