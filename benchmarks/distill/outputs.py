"""What a distilled student writes: train one student of one arm and print its greedy answers to held-out prompts.

Run after ``python -m benchmarks.distill.run`` (it reads the cached teachers and warm-ups)::

    python -m benchmarks.distill.outputs --pair "qwen->llama" --arm aligned --steps 300

The student's tokens are printed one by one, so a student that writes a number in tokens its tokenizer would not
use (Llama 3's ``9`` then end of turn, where it would write ``901``) shows it.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import benchmarks.distill.run as distill
from benchmarks.distill.task import make_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", choices=list(distill.PAIRS), default="qwen->llama")
    parser.add_argument("--arm", choices=[*distill.ARMS, *distill.ABLATIONS], default="aligned")
    parser.add_argument("--teachers", choices=["matched", "final", "byte-matched"], default="matched")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup-steps", type=int, default=None, help="the common warm-up (default: the preset's)")
    parser.add_argument("--on-policy", type=float, default=None, help="share of batches on the student's samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beta", type=float, default=None, help="the generalized JSD's beta (default: the preset's)")
    parser.add_argument("--show", type=int, default=16, help="held-out prompts to print")
    parser.add_argument("--cache", default=str(distill.CACHE))
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = {
        **distill.COMMON,
        **distill.PRESETS["full"],
        "cache": args.cache,
        "teachers": args.teachers,
        "student_steps": args.steps,
        "eval_every": args.steps,
    }
    if args.warmup_steps is not None:
        config["warmup_steps"] = args.warmup_steps
    if args.on_policy is not None:
        config["on_policy"] = args.on_policy
    if args.beta is not None:
        config["beta"] = args.beta
    train, held_out = make_task(config["train"], config["eval"])
    for name in distill.PAIRS[args.pair]:  # the teachers first (cached), so that only the student's scores print
        distill.train_teacher(distill.load_family(name, train + held_out), train, held_out, config)
    evaluate = distill.evaluate

    def evaluate_and_show(model: Any, family: Any, examples: list[dict[str, Any]], prompts: list[list[int]]) -> float:
        accuracy = evaluate(model, family, examples, prompts)
        model.eval()
        outputs = distill.generate(model, family, prompts[: args.show], greedy=True)
        model.train()
        print(f"held-out exact match {accuracy:.3f}; the first {args.show} answers, token by token:")
        for tokens, example in zip(outputs, examples, strict=False):
            print(f"  {example['answer']!r:>10} -> {[family.tokenizer.decode([t]) for t in tokens]}")
        return accuracy

    distill.evaluate = evaluate_and_show  # called after the warm-up and at the end
    distill.run_student(args.pair, args.arm, args.seed, config)


if __name__ == "__main__":
    main()
