"""Same-vocabulary losses against TRL, forward and backward. Run: python -m benchmarks.bench_losses

For each loss (generalized JSD at beta 0.5, forward KL = JSD at beta 0, reverse KL = JSD at beta 1) ours and
TRL's ``GKDTrainer.generalized_jsd_loss`` run on the same seeded logits, each case in its own process
(:mod:`benchmarks._measure`): median time of forward + backward, peak memory beyond the inputs, and the ratio
ours / TRL. The values are checked equal before anything is timed. ``--device cuda`` runs the issue's GPU shape.
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch

from benchmarks._measure import isolated

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LOSSES = {"generalized_jsd, beta=0.5": 0.5, "masked_kl forward (beta=0)": 0.0, "masked_kl reverse (beta=1)": 1.0}


def inputs(
    batch: int, seq: int, vocab: int, dtype: str, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded student logits (requiring grad), teacher logits, and labels with the first eighth of each row at -100
    (the prompt), as a trainer holds them."""
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (batch, seq, vocab)
    student = (2 * torch.randn(shape, generator=generator, device=device)).to(DTYPES[dtype]).requires_grad_()
    teacher = (2 * torch.randn(shape, generator=generator, device=device)).to(DTYPES[dtype])
    labels = torch.randint(0, vocab, (batch, seq), generator=generator, device=device)
    labels[:, : seq // 8] = -100
    return student, teacher, labels


def trl_loss(beta: float) -> Callable[..., torch.Tensor]:
    from trl.experimental.gkd import GKDTrainer

    def loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta)

    return loss


def our_loss(beta: float) -> Callable[..., torch.Tensor]:
    from alignment import generalized_jsd

    def loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return generalized_jsd(student, teacher, labels != -100, beta=beta, check_finite=False)

    return loss


def _case(make: Callable[[float], Callable[..., torch.Tensor]]) -> Callable[..., Callable[[], None]]:
    def setup(*, batch: int, seq: int, vocab: int, dtype: str, device: str, beta: float) -> Callable[[], None]:
        student, teacher, labels = inputs(batch, seq, vocab, dtype, device)
        loss = make(beta)

        def step() -> None:
            student.grad = None
            loss(student, teacher, labels).backward()

        return step

    return setup


trl = _case(trl_loss)
ours = _case(our_loss)


def check_equal(batch: int, seq: int, vocab: int, dtype: str, device: str, beta: float) -> float:
    """Largest relative difference between our loss and TRL's, and between their gradients; raises if too large."""
    student, teacher, labels = inputs(batch, seq, vocab, dtype, device)
    values, grads = [], []
    for make in (trl_loss, our_loss):
        student.grad = None
        value = make(beta)(student, teacher, labels)
        value.backward()
        values.append(value.float())
        grads.append(student.grad.float())
    tolerance = 1e-4 if dtype == "float32" else 2e-2
    value_error = float((values[0] - values[1]).abs() / values[0].abs())
    grad_error = float((grads[0] - grads[1]).abs().max() / grads[0].abs().max())
    if value_error > tolerance or grad_error > tolerance:
        raise AssertionError(f"beta={beta}: ours differs from TRL by {value_error:.2e} (loss), {grad_error:.2e} (grad)")
    return max(value_error, grad_error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--shape", default=None, help="batch,seq,vocab (default: 2,512,32000 on CPU, 4,2048,151936 on GPU)"
    )
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    batch, seq, vocab = map(int, (args.shape or ("4,2048,151936" if cuda else "2,512,32000")).split(","))
    dtype = args.dtype or ("bfloat16" if cuda else "float32")
    shape = {"batch": batch, "seq": seq, "vocab": vocab, "dtype": dtype, "device": args.device}
    logits_mib = batch * seq * vocab * torch.finfo(DTYPES[dtype]).bits / 8 / 2**20
    print(f"# losses, forward + backward, shape {batch}x{seq}x{vocab} {dtype} on {args.device}")
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"# one logits tensor: {logits_mib:.0f} MiB; median of {args.repeats} runs; memory = peak beyond the inputs")
    print()
    print("| loss | max rel. diff vs TRL | TRL ms | ours ms | time ratio | TRL MiB | ours MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, beta in LOSSES.items():
        check = {**shape, "batch": 1, "seq": min(seq, 256)}
        difference = check_equal(**check, beta=beta)
        peer = isolated("benchmarks.bench_losses:trl", repeats=args.repeats, **shape, beta=beta)
        mine = isolated("benchmarks.bench_losses:ours", repeats=args.repeats, **shape, beta=beta)
        if "error" in peer or "error" in mine:
            print(f"| {name} | {difference:.1e} | {peer.get('error', '')} | {mine.get('error', '')} | | | | |")
            continue
        print(
            f"| {name} | {difference:.1e} | {peer['ms']:.1f} | {mine['ms']:.1f} | {mine['ms'] / peer['ms']:.3f} "
            f"| {peer['peak_mib']:.0f} | {mine['peak_mib']:.0f} | {mine['peak_mib'] / peer['peak_mib']:.3f} |"
        )


if __name__ == "__main__":
    main()
