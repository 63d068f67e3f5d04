"""Time and memory of generalized_jsd against sequence length, ours and TRL's. Run: python -m benchmarks.bench_scaling

Forward + backward of the generalized JSD (beta 0.5, float32, batch 1, vocabulary ``--vocab``, default 16,384) at
``T`` = 1k, 2k, 4k, ... up to ``--max-tokens`` (default 32k), each case in its own process
(:mod:`benchmarks._measure`): median time, and peak memory beyond the inputs (student and teacher logits). A
linear curve has constant time and memory per 1k tokens. TRL's ``GKDTrainer.generalized_jsd_loss`` runs on the
same inputs up to the largest ``T`` that fits: a case whose predicted memory (from the case before it) exceeds
three quarters of the memory available is skipped, and every case runs under an address-space limit so that an
allocation that does not fit fails in its own process instead of pushing the machine into the OOM killer. The
curves go to ``--plot`` (log-log, default ``docs/results/scaling.png``; ``--plot ''`` for none).

On a machine shared with other jobs, ``--threads 1`` gives steadier numbers: with more OpenMP threads than free
cores, each parallel region waits for a descheduled thread, which slows many small operations (ours works in
chunks) far more than a few large ones.

``--device cuda`` runs the same cases on a GPU (default bfloat16 at vocabulary 151,936, the issue's GPU vocabulary):
memory is then the peak allocated GPU memory beyond the inputs, a case is skipped when its prediction exceeds three
quarters of the GPU's free memory, and the plot goes to ``docs/results/scaling-gpu.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch

from benchmarks._measure import MIB, ROOT, isolated
from benchmarks.bench_losses import DTYPES, inputs

BETA = 0.5
GIB = 1 << 30
PLOT = "docs/results/scaling.png"
GPU_PLOT = "docs/results/scaling-gpu.png"


def ours(
    *, seq: int, vocab: int, threads: int | None = None, dtype: str = "float32", device: str = "cpu"
) -> Callable[[], None]:
    from alignment import generalized_jsd

    if threads:
        torch.set_num_threads(threads)
    student, teacher, labels = inputs(1, seq, vocab, dtype, device)
    mask = labels != -100

    def step() -> None:
        student.grad = None
        generalized_jsd(student, teacher, mask, beta=BETA, check_finite=False).backward()

    return step


def trl(
    *, seq: int, vocab: int, threads: int | None = None, dtype: str = "float32", device: str = "cpu"
) -> Callable[[], None]:
    from trl.experimental.gkd import GKDTrainer

    if threads:
        torch.set_num_threads(threads)
    student, teacher, labels = inputs(1, seq, vocab, dtype, device)

    def step() -> None:
        student.grad = None
        GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=BETA).backward()

    return step


def available_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def limit_children(fraction: float = 0.9) -> int:
    """Cap the address space of this process and the case processes it starts at ``fraction`` of the memory
    available now (plus 2 GiB for the virtual reservations of the Python and torch runtime); return the cap."""
    cap = int(fraction * available_bytes()) + 2 * GIB
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    return cap


def plot(rows: dict[str, list[tuple[int, dict[str, float]]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, label in ((axes[0], "ms", "time, fwd + bwd (ms)"), (axes[1], "peak_mib", "peak memory (MiB)")):
        for name, points in rows.items():
            done = [(t, r[key]) for t, r in points if "error" not in r and r[key] > 0]
            if done:
                axis.plot(*zip(*done, strict=True), marker="o", label=name)
        reference = [(t, r[key]) for t, r in rows["ours"] if "error" not in r and r[key] > 0]
        if reference:
            t0, y0 = reference[0]
            ts = [t for t, _ in rows["ours"]]
            axis.plot(ts, [y0 * t / t0 for t in ts], linestyle=":", color="grey", label="linear")
        axis.set(xscale="log", yscale="log", xlabel="sequence length T (tokens)", ylabel=label)
        axis.set_xticks([t for t, _ in rows["ours"]], [f"{t // 1024}k" for t, _ in rows["ours"]])
        axis.legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=None, help="default 16,384 on CPU, 151,936 on GPU")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--max-tokens", type=int, default=32_768, help="largest T (default 32768)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case, after the first (memory) run")
    parser.add_argument("--plot", default=None, help=f"PNG path, '' for none (default {PLOT}; none with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per case (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="T = 1k, 2k at vocabulary 1,024, one run: smoke test")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    vocab = args.vocab or (151_936 if cuda else 16_384)
    vocab, max_tokens, repeats = (1024, 2048, 1) if args.quick else (vocab, args.max_tokens, args.repeats)
    dtype = args.dtype or ("bfloat16" if cuda else "float32")
    item = torch.finfo(DTYPES[dtype]).bits // 8
    lengths = [1024 << k for k in range(16) if 1024 << k <= max_tokens]
    if cuda:  # an address-space cap would break CUDA, which reserves far more virtual memory than it uses
        memory, where = "allocated GPU memory", torch.cuda.get_device_name(args.device)
    else:
        cap = limit_children()
        memory, where = "RSS", f"{os.cpu_count()} cores, threads {args.threads or torch.get_num_threads()}"

    import trl

    title = (
        f"generalized_jsd (beta {BETA}) fwd + bwd, {dtype}, batch 1, vocab {vocab}; "
        f"{platform.machine()}, {where}, torch {torch.__version__}, trl {trl.__version__}"
    )
    print(f"# {title}")
    inputs_mib = 2 * vocab * item * 1024 / MIB
    print(f"# median of {repeats} runs after a first run that measures memory: peak {memory} beyond the inputs")
    limit = "" if cuda else f"; processes capped at {cap / GIB:.1f} GiB"
    print(f"# (student and teacher logits, {inputs_mib:.0f} MiB per 1k tokens){limit}")
    print()
    print("| loss | T | ms | peak MiB | ms per 1k tokens | MiB per 1k tokens |")
    print("|---|--:|--:|--:|--:|--:|")
    rows: dict[str, list[tuple[int, dict[str, float]]]] = {"ours": [], "TRL": []}
    for name, case in (("ours", "ours"), ("TRL", "trl")):
        needed = 0.0  # bytes the next case is predicted to need: inputs plus peak, doubled from the case before
        for seq in lengths:
            free = torch.cuda.mem_get_info(args.device)[0] if cuda else available_bytes()
            if rows[name] and "error" in rows[name][-1][1]:
                result = {"error": "skipped: a shorter T did not run"}
            elif needed > 0.75 * free:  # leave a quarter to whoever else shares the machine
                result = {"error": f"skipped: needs about {needed / GIB:.1f} GiB, over 3/4 of {free / GIB:.1f} free"}
            else:
                shape = {"seq": seq, "vocab": vocab, "threads": args.threads, "dtype": dtype, "device": args.device}
                result = isolated(f"benchmarks.bench_scaling:{case}", repeats=repeats, **shape)
            rows[name].append((seq, result))
            if "error" in result:
                print(f"| {name} | {seq} | {result['error']} | | | |")
                continue
            needed = 2 * (result["peak_mib"] * MIB + 2 * seq * vocab * item) + GIB
            per_1k = 1024 / seq
            print(
                f"| {name} | {seq} | {result['ms']:.1f} | {result['peak_mib']:.0f} | {result['ms'] * per_1k:.1f} "
                f"| {result['peak_mib'] * per_1k:.1f} |"
            )
    target = ("" if args.quick else GPU_PLOT if cuda else PLOT) if args.plot is None else args.plot
    if target:
        path = Path(target) if Path(target).is_absolute() else ROOT / target
        plot(rows, path, title)
        print(f"\nplot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
