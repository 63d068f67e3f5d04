"""Launch settings of the fused Triton JSD kernel, and where the time of a GPU loss step goes. Needs CUDA.

Run: ``python -m benchmarks.sweep_triton [--shape 4,2048,151936]``

At the issue's GPU shape (bfloat16), for each loss (beta 0.5, 0 and 1):

* the kernel alone (:func:`alignment._triton.jsd_rows` with the student's gradient, what ``generalized_jsd`` launches
  in its forward) at each columns-per-block and warps-per-program setting, timed with ``triton.testing.do_bench``
  (median), against the bytes that launch must move (its passes over both logits, and the gradient written once)
  at the device-to-device copy bandwidth measured in the same run;
* then, with the fastest setting and with the default one, a whole ``generalized_jsd`` step split into its parts:
  forward without gradient, forward with it (the kernel), and forward + backward (until `4f5cd97` the backward
  scaled the kept gradient in a pass of its own).
"""

from __future__ import annotations

import argparse
import functools

import torch

from alignment import _triton, generalized_jsd
from benchmarks.bench_losses import LOSSES, copy_bandwidth, inputs

BLOCKS = (1024, 2048, 4096, 8192)
WARPS = (4, 8, 16)


def passes(beta: float) -> int:
    """Reads of both logits by one launch with the student's gradient (see :mod:`alignment._triton_kernel`)."""
    return 2 if beta == 0.0 else 3


def main() -> None:
    import triton  # type: ignore[import-untyped, import-not-found, unused-ignore]

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4,2048,151936", help="batch,seq,vocab")
    args = parser.parse_args()
    batch, seq, vocab = map(int, args.shape.split(","))
    student, teacher, labels = inputs(batch, seq, vocab, "bfloat16", "cuda")
    mask = (labels != -100).reshape(-1)
    flat_s, flat_t = student.detach().reshape(-1, vocab), teacher.reshape(-1, vocab)
    grad = torch.empty_like(flat_s)
    tensor_bytes = flat_s.numel() * flat_s.element_size()
    bandwidth = copy_bandwidth("cuda")
    print(f"# Triton JSD kernel, {batch}x{seq}x{vocab} bfloat16 on {torch.cuda.get_device_name()},")
    print(f"# torch {torch.__version__}, triton {triton.__version__}; copy bandwidth {bandwidth / 1e12:.2f} TB/s")
    print("# bytes of a launch: its passes x 2 logits + the gradient written once; do_bench median")
    print()
    print("| loss | block | warps | kernel ms | its bytes' floor ms | kernel / its floor |")
    print("|---|--:|--:|--:|--:|--:|")
    best = {}
    for name, beta in LOSSES.items():
        floor_ms = (2 * passes(beta) + 1) * tensor_bytes / bandwidth * 1e3
        for block in BLOCKS:
            for warps in WARPS:

                def launch(block: int = block, warps: int = warps, beta: float = beta) -> None:
                    _triton.jsd_rows(
                        flat_s,
                        flat_t,
                        mask,
                        beta=beta,
                        temperature=1.0,
                        grad_student=grad,
                        grad_teacher=None,
                        block=block,
                        num_warps=warps,
                    )

                try:
                    ms = triton.testing.do_bench(launch, warmup=25, rep=100, return_mode="median")
                except Exception as error:  # a setting the compiler rejects (too many registers, say)
                    print(f"| {name} | {block} | {warps} | {type(error).__name__} | | |")
                    continue
                print(f"| {name} | {block} | {warps} | {ms:.2f} | {floor_ms:.2f} | {ms / floor_ms:.2f} |")
                if ms < best.get(name, (float("inf"),))[0]:
                    best[name] = (ms, block, warps)
    print()
    print("| loss | setting | forward, no grad, ms | forward with grad ms | forward + backward ms |")
    print("|---|---|--:|--:|--:|")
    original = _triton.jsd_rows
    for name, beta in LOSSES.items():
        if name not in best:
            continue
        _, block, warps = best[name]
        fastest = {"block": block, "num_warps": warps}
        for label, settings in (("default", {}), (f"block {block}, {warps} warps", fastest)):
            _triton.jsd_rows = functools.partial(original, **settings)  # type: ignore[assignment]

            def loss(beta: float = beta) -> torch.Tensor:
                return generalized_jsd(student, teacher, labels != -100, beta=beta, check_finite=False)

            def no_grad() -> None:
                with torch.no_grad():
                    loss()

            def step() -> None:
                student.grad = None
                loss().backward()

            times = [
                triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median") for f in (no_grad, loss, step)
            ]
            print(f"| {name} | {label} | " + " | ".join(f"{t:.2f}" for t in times) + " |")
    _triton.jsd_rows = original


if __name__ == "__main__":
    main()
