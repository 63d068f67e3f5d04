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
from pathlib import Path

import numpy as np
import torch

from alignment import byte_vocab, next_byte_logprobs, prepare_teacher_batch, render_prompt
from benchmarks.distill.run import (
    COMMON,
    PAIRS,
    PRESETS,
    frames_logits,
    load_family,
    load_teacher,
    pick_checkpoint,
    reference_completion,
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
    student, teacher = families[PAIRS[pair][1]], families[teacher_name]
    curves = {name: train_teacher(family, train, held_out, config) for name, family in families.items()}
    used = pick_checkpoint(curves, teacher_name, teachers)
    model = load_teacher(teacher, config, used["step"])
    chosen = held_out[:examples]
    prompts = [render_prompt(student.tokenizer, e, **student.kwargs).input_ids.tolist() for e in chosen]
    completions = [reference_completion(student, e) for e in chosen]
    batch = prepare_teacher_batch(
        chosen,
        completions,
        student_tokenizer=student.tokenizer,
        teacher_tokenizer=teacher.tokenizer,
        prompt_ids=prompts,
        student_template_kwargs=student.kwargs,
        teacher_template_kwargs=teacher.kwargs,
        byte_frames=True,
    )
    everything = batch.byte_frames  # each content byte once: not the token ends, not the student's template
    frames = everything.select(~everything.token_ends & (everything.teacher_positions >= 0))
    rows = torch.from_numpy(frames.rows)
    with torch.no_grad():
        if batch.aligned:
            logits = model(batch.input_ids, batch.attention_mask)[rows, torch.from_numpy(frames.teacher_positions)]
        else:  # the same family: the teacher reads the student's ids
            logits = frames_logits(model, prompts, completions)[rows, torch.from_numpy(frames.student_frames)]
        logprobs = next_byte_logprobs(
            logits, byte_vocab(teacher.tokenizer).restrict(teacher.head_ids), frames.teacher_prefixes
        )
    return used, logprobs.gather(1, torch.from_numpy(frames.targets)[:, None])[:, 0].exp().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "alignment-distill"))
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
