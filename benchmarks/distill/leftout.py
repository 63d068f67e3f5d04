"""How much of its belief the teacher's next-byte distribution leaves out inside its tokens: on the reference answers
and on the student's own samples.

Run after ``python -m benchmarks.distill.run`` (it reads the cached teachers and warm-ups)::

    python -m benchmarks.distill.leftout --pair "gpt2->mistral"

Inside a teacher token, after it has read ``u`` of it, the teacher's next byte comes from its tokens that begin with
``u`` and go on; the tokens that are exactly ``u`` (the token ends there, another begins) are left out, because
the teacher has no frame after them (:mod:`alignment.nextbyte`). On text the teacher would write that mass is
small. On a student's wrong sample the teacher's own tokens split the text elsewhere than it expects, and its belief
can sit on exactly the left-out tokens. For the warm-up student of one seed, this prints, for the teacher of
``--teachers``, the share of its mass on the left-out tokens at each content byte read inside one of its tokens.

Then, at the first byte where each sample leaves the right answer (what on-policy distillation has to correct),
the probability each teacher gives the right byte there and before it: the cross-family teacher through
``byte_logprobs`` without and with its branches (``TeacherBatch.branched_inputs()``, ``branched=True``), and the
student's same-family teacher.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from alignment import byte_logprobs, byte_vocab
from alignment.nextbyte import END, TEMPLATE
from benchmarks.distill import run as distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=list(distill.PAIRS), default="gpt2->mistral")
    parser.add_argument("--teachers", choices=["matched", "final", "byte-matched"], default="byte-matched")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=str(distill.CACHE))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config, train, families, curves = distill.cached_setup(args.pair, args.teachers, args.cache)
    name, used = distill.teacher_of(args.pair, "aligned", curves, config)
    student, teacher = families[distill.PAIRS[args.pair][1]], families[name]
    teacher_model = distill.load_teacher(teacher, config, used["step"])
    student_model, examples, prompts, references, samples = distill.warm_up_samples(
        student, train, config, args.seed, args.examples
    )
    vocab = byte_vocab(teacher.tokenizer).restrict(teacher.head_ids)
    print(
        f"{args.pair}: teacher {name} step {used['step']}, warm-up student seed {args.seed}, {len(examples)} examples"
    )
    print()
    print("| completions | right | content bytes | read inside a teacher token | mean mass left out | share > 0.5 |")
    print("|---|--:|--:|--:|--:|--:|")
    for label, completions in (("reference answers", references), ("student's samples", samples)):
        right = sum(distill.answer_of(student, c) == e["answer"] for c, e in zip(completions, examples, strict=True))
        batch = distill.teacher_batch(student, teacher, examples, completions, prompts)
        frames = batch.byte_frames
        content = ~frames.token_ends & (frames.teacher_positions >= 0)
        inside = content & np.array([len(p) > 0 for p in frames.teacher_prefixes], dtype=np.bool_)
        inside &= distill.spelled_by_head(frames, batch, teacher)  # the frames the aligned arm compares
        with torch.no_grad():
            logits = teacher_model(batch.input_ids, batch.attention_mask)
            left_out = distill.teacher_left_out(frames.select(inside), logits, vocab, 1.0).numpy()
        shares = f"{left_out.mean():.3f} | {(left_out > 0.5).mean():.3f}" if len(left_out) else "n/a | n/a"
        print(f"| {label} | {right}/{len(examples)} | {int(content.sum())} | {int(inside.sum())} | {shares} |")
    print()
    print("| teacher | reads | samples with an error | P(right byte) at the first error | before it |")
    print("|---|---|--:|--:|--:|")
    student_logits = distill.frames_logits(student_model, prompts, samples).detach()
    for arm in ("aligned", "same-family"):
        name, used = distill.teacher_of(args.pair, arm, curves, config)
        model = distill.load_teacher(families[name], config, used["step"])
        for branched in (False, True) if arm == "aligned" else (False,):
            first, before = first_error(
                student, families[name], model, examples, prompts, samples, student_logits, branched
            )
            reads = "same-family" if arm == "same-family" else ("with branches" if branched else "without branches")
            means = " | ".join(f"{np.mean(values):.3f}" if values else "n/a" for values in (first, before))
            print(f"| {name} (step {used['step']}) | {reads} | {len(first)} | {means} |")


def first_error(
    student: distill.Family,
    teacher: distill.Family,
    model: distill.TinyLM,
    examples: list[dict],
    prompts: list[list[int]],
    samples: list[list[int]],
    student_logits: torch.Tensor,
    branched: bool,
) -> tuple[list[float], list[float]]:
    """The teacher's probability of the right byte (or of the end of the turn) at the first content byte where each
    sample leaves the answer, and at the bytes before it."""
    batch = distill.teacher_batch(student, teacher, examples, samples, prompts)
    frames = batch.byte_frames.select(distill.spelled_by_head(batch.byte_frames, batch, teacher))
    with torch.no_grad():
        logits = distill.teacher_forward(model, batch, branched=branched)
        _, t = byte_logprobs(
            frames,
            student_logits,
            logits,
            student_vocab=byte_vocab(student.tokenizer).restrict(student.head_ids),
            teacher_vocab=byte_vocab(teacher.tokenizer).restrict(teacher.head_ids),
            branched=branched,
        )
    first, before = [], []
    for b, example in enumerate(examples):
        rows = np.flatnonzero((frames.rows == b) & ~frames.token_ends & (frames.teacher_positions != TEMPLATE))
        got = frames.targets[rows]
        separator = student.separator
        if not batch.aligned and separator and bytes(got[: len(separator)].tolist()) == separator:
            rows, got = rows[len(separator) :], got[len(separator) :]  # the identity path reads it as content
        want = [*example["answer"].encode(), END]
        for n, (row, byte) in enumerate(zip(rows.tolist(), got.tolist(), strict=True)):
            right = want[n] if n < len(want) else END
            if byte != right:
                first.append(float(t[row, right].exp()))
                break
            before.append(float(t[row, right].exp()))
    return first, before


if __name__ == "__main__":
    main()
