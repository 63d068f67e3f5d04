"""Same-vocabulary losses against TRL, forward and backward. Run: python -m benchmarks.bench_losses

For each loss (generalized JSD at beta 0.5, forward KL = JSD at beta 0, reverse KL = JSD at beta 1) ours and
TRL's ``GKDTrainer.generalized_jsd_loss`` run on the same seeded logits, each case in its own process
(:mod:`benchmarks._measure`): median time of forward + backward, peak memory beyond the inputs, and the ratio
ours / TRL. Both are first checked against TRL's function run in float64 on the same inputs (ours must be
within the dtype's tolerance; TRL's error is printed beside it). ``--device cuda`` runs the issue's GPU shape, and a
second table: ours with the fused Triton kernel (what ``generalized_jsd`` uses on CUDA) and on its torch fallback,
against the memory-bandwidth floor (read both logits, write the student's gradient once, at the device-to-device
copy bandwidth measured in the same run).
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


def torch_path_loss(beta: float) -> Callable[..., torch.Tensor]:
    """Ours with the fused Triton kernel switched off: the chunked torch path it falls back to."""
    from alignment import _triton

    _triton.available = lambda student: False  # this case runs in its own process
    return our_loss(beta)


trl = _case(trl_loss)
ours = _case(our_loss)
ours_torch = _case(torch_path_loss)


def copy_bandwidth(device: str, *, gib: float = 2.0, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes per second, counting bytes read and bytes written (median of
    ``repeats`` copies of ``gib`` GiB, timed with CUDA events)."""
    source = torch.randn(int(gib * 2**30) // 4, device=device)
    target = torch.empty_like(source)
    times = []
    for _ in range(repeats + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        target.copy_(source)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    seconds = sorted(times[3:])[repeats // 2]
    return 2 * source.numel() * source.element_size() / seconds


def floor_table(
    shape: dict[str, object], repeats: int, logits_bytes: float, kernel: dict[str, dict[str, float]]
) -> None:
    """On CUDA: ours (``kernel``: the results of the first table, by loss; and the torch path, run here) against the
    bandwidth floor."""
    bandwidth = copy_bandwidth(str(shape["device"]))
    floor_ms = 3 * logits_bytes / bandwidth * 1e3
    print()
    print(f"# bandwidth floor: read both logits and write the gradient, 3 x {logits_bytes / 2**30:.2f} GiB at the")
    print(f"# measured copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write): {floor_ms:.2f} ms; floor memory:")
    print(f"# the gradient, {logits_bytes / 2**20:.0f} MiB")
    print()
    print("| loss | path | ms | peak MiB | time / floor | memory / floor |")
    print("|---|---|--:|--:|--:|--:|")
    for name, beta in LOSSES.items():
        fallback = isolated("benchmarks.bench_losses:ours_torch", repeats=repeats, **shape, beta=beta)
        for path, result in (("Triton kernel", kernel[name]), ("torch (fallback)", fallback)):
            if "error" in result:
                print(f"| {name} | {path} | {result['error']} | | | |")
                continue
            print(
                f"| {name} | {path} | {result['ms']:.2f} | {result['peak_mib']:.0f} | {result['ms'] / floor_ms:.2f} "
                f"| {result['peak_mib'] * 2**20 / logits_bytes:.2f} |"
            )


def check_equal(batch: int, seq: int, vocab: int, dtype: str, device: str, beta: float) -> tuple[float, float]:
    """Largest relative error of the loss and its gradient, ours and TRL's, against TRL's function run in float64
    on the same (upcast) inputs; raises if ours is off by more than the dtype's tolerance. In bfloat16 TRL's own
    error is larger than ours (it computes in bfloat16, ours in float32), so only ours is held to it."""
    student, teacher, labels = inputs(batch, seq, vocab, dtype, device)
    exact = student.detach().double().requires_grad_()
    reference = trl_loss(beta)(exact, teacher.double(), labels)
    reference.backward()
    errors = []
    for make in (our_loss, trl_loss):
        student.grad = None
        value = make(beta)(student, teacher, labels)
        value.backward()
        value_error = float((value.detach().double() - reference.detach()).abs() / reference.detach().abs())
        grad_error = float((student.grad.double() - exact.grad).abs().max() / exact.grad.abs().max())
        errors.append(max(value_error, grad_error))
    tolerance = 1e-4 if dtype == "float32" else 2e-2
    if errors[0] > tolerance:
        raise AssertionError(f"beta={beta}: ours differs from the float64 reference by {errors[0]:.2e}")
    return errors[0], errors[1]


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
    print("| loss | max rel. error ours / TRL | TRL ms | ours ms | time ratio | TRL MiB | ours MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    kernel = {}
    for name, beta in LOSSES.items():
        check = {**shape, "batch": 1, "seq": min(seq, 256)}
        ours_error, trl_error = check_equal(**check, beta=beta)
        difference = f"{ours_error:.1e} / {trl_error:.1e}"
        peer = isolated("benchmarks.bench_losses:trl", repeats=args.repeats, **shape, beta=beta)
        mine = kernel[name] = isolated("benchmarks.bench_losses:ours", repeats=args.repeats, **shape, beta=beta)
        if "error" in peer or "error" in mine:
            print(f"| {name} | {difference} | {peer.get('error', '')} | {mine.get('error', '')} | | | | |")
            continue
        print(
            f"| {name} | {difference} | {peer['ms']:.1f} | {mine['ms']:.1f} | {mine['ms'] / peer['ms']:.3f} "
            f"| {peer['peak_mib']:.0f} | {mine['peak_mib']:.0f} | {mine['peak_mib'] / peer['peak_mib']:.3f} |"
        )
    if cuda:
        floor_table(shape, args.repeats, logits_mib * 2**20, kernel)


if __name__ == "__main__":
    main()
