"""Which entries of the next-byte loss teach a student its reference answers, on the student's own samples.

Run after ``python -m benchmarks.distill.run`` (it reads the cached teachers and warm-ups)::

    python -m benchmarks.distill.entries --pair "llama->llama"

For the warm-up student of one seed and ``--examples`` prompts of the training split, the student samples an answer
to each; the teacher of ``--teachers`` scores the samples, and the aligned arm's loss (``byte_logprobs`` and
``generalized_jsd``, as in ``run.py``) is split by kind of entry: bytes at a student token boundary, bytes inside a
student token, the entries after a student token (does it stop there?), split again by whether the text ends the
turn there. For each kind this prints its mean loss, the norm of its gradient on the student's parameters (each
kind's share of the loss over all entries) and the cosine between the step it asks for (minus that gradient) and
the gradient of the log-probability of the same prompts' reference answers: positive, the kind teaches the
references; negative, it pushes the student away from them. The token-level loss against the student's own family's
teacher (``same-family``) is printed beside it for scale. ``--rendered`` makes a teacher of the student's own family
render and tokenize the text itself (the ``llama->llama-rendered`` control of ``run.py``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from alignment import align_teacher_logits, byte_logprobs, byte_vocab, generalized_jsd
from alignment.nextbyte import END, STOP
from benchmarks.distill import run as distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=list(distill.PAIRS), default="llama->llama")
    parser.add_argument("--teachers", choices=["matched", "final", "byte-matched"], default="final")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rendered", action="store_true", help="a same-family teacher renders the text itself")
    parser.add_argument("--cache", default=str(distill.CACHE))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config, train, families, curves = distill.cached_setup(args.pair, args.teachers, args.cache)
    student = families[distill.PAIRS[args.pair][1]]
    model, examples, prompts, references, samples = distill.warm_up_samples(
        student, train, config, args.seed, args.examples
    )
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
    right = sum(distill.answer_of(student, s) == e["answer"] for s, e in zip(samples, examples, strict=True))
    print(f"pair {args.pair}, teachers {args.teachers}, warm-up student of seed {args.seed}: {args.examples} samples")
    print(f"({right} right); cosine with the gradient of log p(reference answers) of the same prompts")
    print()
    print("| loss, entries | entries | mean loss | gradient norm | cosine with the references |")
    print("|---|--:|--:|--:|--:|")

    name, used = distill.teacher_of(args.pair, "aligned", curves, config)
    teacher = families[name]
    teacher_model = distill.load_teacher(teacher, config, used["step"])
    batch = distill.teacher_batch(student, teacher, examples, samples, prompts, rendered=args.rendered)
    with torch.no_grad():
        teacher_logits = distill.teacher_forward(teacher_model, batch)
    student_logits = distill.frames_logits(model, prompts, samples)
    frames = batch.byte_frames
    s, t = byte_logprobs(
        frames,
        student_logits,
        teacher_logits,
        student_vocab=byte_vocab(student.tokenizer).restrict(student.head_ids),
        teacher_vocab=byte_vocab(teacher.tokenizer).restrict(teacher.head_ids),
    )
    per_entry = generalized_jsd(s, t, beta=config["beta"], reduction="none")
    ends = torch.from_numpy(frames.token_ends)
    inside = torch.from_numpy(np.array([len(p) > 0 for p in frames.student_prefixes])) & ~ends
    turn_ends = torch.from_numpy(frames.targets == END)
    kinds = {
        "next-byte, every entry": torch.ones_like(ends),
        "next-byte, at a student token boundary": ~inside & ~ends,
        "next-byte, inside a student token": inside,
        "next-byte, after a student token: the text ends the turn": ends & turn_ends,
        "next-byte, after a student token: the text goes on": ends & ~turn_ends,
    }
    for label, chosen in kinds.items():
        if not bool(chosen.any()):
            continue
        step = -gradient(per_entry[chosen].sum() / len(frames))
        print(
            f"| {label} | {int(chosen.sum())} | {per_entry[chosen].mean().item():.3f} | {step.norm().item():.4f} | "
            f"{cosine(step, toward):+.3f} |"
        )
    after = ends & turn_ends
    if bool(after.any()):
        print()
        teacher_stop, student_stop = t[after, STOP].exp().mean(), s[after, STOP].exp().mean()
        print(f"after a student token where the text ends the turn: P(stop) teacher {teacher_stop:.2f}, ", end="")
        print(f"student {student_stop:.2f}")

    same_name = distill.PAIRS[args.pair][1]
    _, same_used = distill.teacher_of(args.pair, "same-family", curves, config)
    same_model = distill.load_teacher(families[same_name], config, same_used["step"])
    same_batch = distill.teacher_batch(student, families[same_name], examples, samples, prompts, byte_frames=False)
    with torch.no_grad():
        same_logits = align_teacher_logits(distill.teacher_forward(same_model, same_batch), same_batch)
    loss = generalized_jsd(student_logits, same_logits, same_batch.mask, beta=config["beta"])
    step = -gradient(loss)
    print()
    print(f"token-level, the student's own family's teacher: loss {loss.item():.3f}, gradient norm {step.norm():.4f},")
    print(f"cosine with the references {cosine(step, toward):+.3f}")


if __name__ == "__main__":
    main()
