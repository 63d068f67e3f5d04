"""How good each teacher is, byte by byte, on the student's held-out reference answers.

Run after ``python -m benchmarks.distill.run`` (it reads the cached teachers)::

    python -m benchmarks.distill.teachers

For each pair and each choice of checkpoints (``final``, ``matched``), both teachers a student of that pair learns
from (the cross-family teacher and the student's same-family one) score the student's held-out reference
completions; through
``prepare_teacher_batch(..., byte_frames=True)`` and ``next_byte_logprobs`` each gives its probability of every
next byte of the answer (and of the end of the turn). The mean of those probabilities says how much a student can
learn from that teacher, in the same units for every tokenizer.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.distill.run import (
    CACHE,
    COMMON,
    PAIRS,
    PRESETS,
    load_family,
    load_teacher,
    pick_checkpoint,
    reference_byte_probs,
    train_teacher,
)
from benchmarks.distill.task import make_task


def byte_probabilities(
    pair: str, teacher_name: str, config: dict, examples: int, teachers: str
) -> tuple[dict, np.ndarray]:
    """The checkpoint of the teacher a student of ``pair`` learns from, and its probability of each next byte of
    the student's held-out reference completions."""
    train, held_out = make_task(config["train"], config["eval"])
    families = {name: load_family(name, train + held_out) for name in PAIRS[pair]}
    curves = {name: train_teacher(family, train, held_out, config) for name, family in families.items()}
    used = pick_checkpoint(curves, teacher_name, teachers)
    model = load_teacher(families[teacher_name], config, used["step"])
    student = families[PAIRS[pair][1]]
    return used, reference_byte_probs(student, families[teacher_name], model, held_out[:examples])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(CACHE))
    parser.add_argument("--examples", type=int, default=200)
    args = parser.parse_args()
    config = {**COMMON, **PRESETS["full"], "cache": args.cache}
    print(
        "| pair | teachers | teacher | checkpoint step | held-out exact match | student's reference bytes scored | "
        "mean P(next byte) | share with P > 0.5 |"
    )
    print("|---|---|---|--:|--:|--:|--:|--:|")
    for pair, (cross, student) in PAIRS.items():
        for teachers in config["teachers"]:
            for teacher in (cross, student):
                used, probs = byte_probabilities(pair, teacher, config, args.examples, teachers)
                print(
                    f"| {pair} | {teachers} | {teacher} | {used['step']} | {used['eval']:.3f} | {len(probs)} | "
                    f"{probs.mean():.3f} | {(probs > 0.5).mean():.3f} |"
                )


if __name__ == "__main__":
    main()
