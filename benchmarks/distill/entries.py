"""Which entries of the next-byte loss teach a student, on its own samples or on the reference answers.

Run after ``python -m benchmarks.distill.run`` (it reads the cached teachers and warm-ups)::

    python -m benchmarks.distill.entries --pair "llama->llama"

For the warm-up student of one seed and ``--examples`` prompts of the training split, the student samples an answer
to each (``--references``: the reference answers are read instead); the teacher of ``--teachers`` scores them, and
the aligned arm's loss (``byte_logprobs`` and ``generalized_jsd``, as in ``run.py``) is split by kind of entry:
bytes at a student token boundary (the text of the student's own template apart), bytes inside a student token, the
entries after a student token (does it stop there?), split again by whether the text ends the turn there. For each
kind this prints its mean loss, the norm of its gradient on the student's parameters (each kind's share of the loss
over all entries) and two cosines of the step it asks for (minus that gradient): with the gradient of the
log-probability of the same prompts' reference answers, and with the step of the token-level loss against the
student's own family's teacher on the same text (``same-family``, the loss the aligned arm is compared with).

More rows: the loss with every entry weighted by :func:`~alignment.prefix_weights` (the ``aligned-chain`` arm's
weights, without its branches); with a teacher of the student's own vocabulary (``llama->llama``), the entries
inside a token with the teacher read in the student's classes (its ``STOP``: its tokens that are exactly the bytes
read, which the folded reading leaves out) and the ``aligned-greedy`` arm (:func:`~alignment.teacher_path_logprobs`; on
other pairs it needs more teacher passes and is left out here). ``--rendered`` makes a teacher of the student's own
family render and tokenize the text itself (the ``llama->llama-rendered`` control of ``run.py``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from alignment import (
    align_teacher_logits,
    byte_logprobs,
    byte_vocab,
    generalized_jsd,
    next_byte_logprobs,
    prefix_weights,
    teacher_path_logprobs,
)
from alignment.nextbyte import END, STOP, TEMPLATE
from benchmarks.distill import run as distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=list(distill.PAIRS), default="llama->llama")
    parser.add_argument("--teachers", choices=["matched", "final", "byte-matched"], default="final")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--references", action="store_true", help="read the reference answers, not samples")
    parser.add_argument("--rendered", action="store_true", help="a same-family teacher renders the text itself")
    parser.add_argument("--cache", default=str(distill.CACHE))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config, train, families, curves = distill.cached_setup(args.pair, args.teachers, args.cache)
    student = families[distill.PAIRS[args.pair][1]]
    model, examples, prompts, references, samples = distill.warm_up_samples(
        student, train, config, args.seed, args.examples
    )
    texts = references if args.references else samples
    parameters = [p for p in model.parameters() if p.requires_grad]

    def gradient(loss: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(loss, parameters, allow_unused=True, retain_graph=True)
        pairs = zip(grads, parameters, strict=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in pairs])

    def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))

    targets, mask = distill.completion_targets(student, references)
    reference_logits = torch.log_softmax(distill.frames_logits(model, prompts, references), dim=-1)
    toward = gradient(reference_logits.gather(-1, targets[..., None])[..., 0][mask].sum())
    student_logits = distill.frames_logits(model, prompts, texts)

    same_name = distill.PAIRS[args.pair][1]
    _, same_used = distill.teacher_of(args.pair, "same-family", curves, config)
    same_model = distill.load_teacher(families[same_name], config, same_used["step"])
    same_batch = distill.teacher_batch(student, families[same_name], examples, texts, prompts, byte_frames=False)
    with torch.no_grad():
        same_logits = align_teacher_logits(distill.teacher_forward(same_model, same_batch), same_batch)
    token_loss = generalized_jsd(student_logits, same_logits, same_batch.mask, beta=config["beta"])
    token_step = -gradient(token_loss)

    right = sum(distill.answer_of(student, s) == e["answer"] for s, e in zip(samples, examples, strict=True))
    read = "reference answers" if args.references else f"samples ({right} right)"
    print(f"pair {args.pair}, teachers {args.teachers}, warm-up student of seed {args.seed}: {args.examples} {read}")
    print()
    print("| loss, entries | entries | mean loss | gradient norm | cosine with the references | with token-level |")
    print("|---|--:|--:|--:|--:|--:|")

    def row(label: str, total: torch.Tensor, entries: int, share: int, mean: float) -> None:
        step = -gradient(total / share)
        print(
            f"| {label} | {entries} | {mean:.3f} | {step.norm().item():.4f} | {cosine(step, toward):+.3f} "
            f"| {cosine(step, token_step):+.3f} |"
        )

    name, used = distill.teacher_of(args.pair, "aligned", curves, config)
    teacher = families[name]
    teacher_model = distill.load_teacher(teacher, config, used["step"])
    batch = distill.teacher_batch(student, teacher, examples, texts, prompts, rendered=args.rendered)
    with torch.no_grad():
        teacher_logits = distill.teacher_forward(teacher_model, batch)
    frames = batch.byte_frames.select(distill.spelled_by_head(batch.byte_frames, batch, teacher))  # as run.py
    vocabs = (
        byte_vocab(student.tokenizer).restrict(student.head_ids),
        byte_vocab(teacher.tokenizer).restrict(teacher.head_ids),
    )
    s, t = byte_logprobs(frames, student_logits, teacher_logits, student_vocab=vocabs[0], teacher_vocab=vocabs[1])
    per_entry = generalized_jsd(s, t, beta=config["beta"], reduction="none")
    ends = torch.from_numpy(frames.token_ends)
    inside = torch.from_numpy(np.array([len(p) > 0 for p in frames.student_prefixes])) & ~ends
    turn_ends = torch.from_numpy(frames.targets == END)
    template = torch.from_numpy(frames.teacher_positions == TEMPLATE)
    kinds = {
        "next-byte, every entry": torch.ones_like(ends),
        "next-byte, at a student token boundary (not the student's template)": ~inside & ~ends & ~template,
        "next-byte, the student's template text": template & ~inside & ~ends,
        "next-byte, inside a student token": inside,
        "next-byte, after a student token: the text ends the turn": ends & turn_ends,
        "next-byte, after a student token: the text goes on": ends & ~turn_ends,
    }
    for label, chosen in kinds.items():
        if bool(chosen.any()):
            total = per_entry[chosen].sum()
            row(label, total, int(chosen.sum()), len(frames), per_entry[chosen].mean().item())
    weights = prefix_weights(frames, t)
    row(
        "next-byte, every entry weighted by `prefix_weights`",
        (per_entry * weights).sum(),
        len(frames),
        len(frames),
        (per_entry * weights).mean().item(),
    )
    if vocabs[0].token_bytes == vocabs[1].token_bytes:  # a teacher with the student's vocabulary
        at = torch.from_numpy(np.flatnonzero(inside.numpy()))
        rows = torch.from_numpy(frames.rows)[at]
        chosen_prefixes = [frames.student_prefixes[i] for i in at.tolist()]
        student_inside = next_byte_logprobs(
            student_logits[rows, torch.from_numpy(frames.student_frames)[at]], vocabs[0], chosen_prefixes, stop=True
        )
        with torch.no_grad():
            teacher_inside = next_byte_logprobs(
                teacher_logits[rows, torch.from_numpy(frames.teacher_positions)[at]],
                vocabs[1],
                [frames.teacher_prefixes[i] for i in at.tolist()],
                stop=True,
            )
        exact = generalized_jsd(student_inside, teacher_inside, beta=config["beta"], reduction="none")
        row(
            "next-byte, inside a student token, the teacher read with its STOP",
            exact.sum(),
            len(exact),
            len(frames),
            exact.mean().item(),
        )
        total = per_entry[~inside].sum() + exact.sum()
        row(
            "next-byte, every entry, those inside read so",
            total,
            len(frames),
            len(frames),
            (total / len(frames)).item(),
        )
        print()
        print(f"inside a student token, the teacher's P(stop): folded {t[inside, STOP].exp().mean():.2e}, read with ")
        print(f"its STOP {teacher_inside[:, STOP].exp().mean():.3f}; the student's {s[inside, STOP].exp().mean():.3f}")
        path = teacher_path_logprobs(
            frames, student_logits, teacher_logits, student_vocab=vocabs[0], teacher_vocab=vocabs[1]
        )
        greedy = generalized_jsd(path.student, path.teacher, beta=config["beta"], reduction="none")
        count = len(frames) + len(greedy)
        print()
        print(
            "| `aligned-greedy` | entries | mean loss | gradient norm | cosine with the references | with token-level |"
        )
        print("|---|--:|--:|--:|--:|--:|")
        row(
            "the teacher's likeliest nodes off the sampled token",
            greedy.sum(),
            len(greedy),
            count,
            greedy.mean().item() if len(greedy) else 0.0,
        )
        total = per_entry.sum() + greedy.sum()
        row("every entry", total, count, count, (total / count).item())
    after = ends & turn_ends
    if bool(after.any()):
        print()
        teacher_stop, student_stop = t[after, STOP].exp().mean(), s[after, STOP].exp().mean()
        print(f"after a student token where the text ends the turn: P(stop) teacher {teacher_stop:.2f}, ", end="")
        print(f"student {student_stop:.2f}")
    print()
    print(f"token-level, the student's own family's teacher: loss {token_loss.item():.4f}, gradient norm ", end="")
    print(f"{token_step.norm():.4f}, cosine with the references {cosine(token_step, toward):+.3f}")


if __name__ == "__main__":
    main()
