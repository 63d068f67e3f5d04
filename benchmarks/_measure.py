"""Measuring one benchmark case honestly: its own process, its peak memory, the median of several runs.

A case is a function ``setup(**params) -> step`` in a benchmark module: ``setup`` builds the inputs, ``step`` runs
the measured work once (forward and backward, say) and leaves nothing behind that the next run would add to.
:func:`isolated` runs one case in a fresh Python process, so one case's allocations cannot hide or inflate another's:

* memory: the peak extra memory of the first ``step``, over what the inputs already hold. On CUDA that is
  ``max_memory_allocated`` minus ``memory_allocated`` before the step; on CPU the process's peak resident set
  (``VmHWM``, reset through ``/proc/self/clear_refs``) minus its resident set before the step;
* time: the median wall time of ``repeats`` further steps (CUDA synchronised before and after each).

Run by hand: ``python -m benchmarks._measure benchmarks.bench_losses:ours '{"rows": 1024, "vocab": 32000}'``.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def isolated(case: str, *, repeats: int = 5, timeout: float = 900.0, **params: Any) -> dict[str, float]:
    """Run ``case`` (``"module:function"``) with ``params`` in a fresh process; return ``ms`` and ``peak_mib``.

    A case that fails (out of memory, say) returns ``{"error": message}`` instead of raising, so a table can
    show it beside the others.
    """
    command = [sys.executable, "-m", "benchmarks._measure", case, json.dumps(params), str(repeats)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median_ms(
    step: Callable[[], object], *, repeats: int = 5, warmup: int = 1, cuda: bool = False, pause: float = 0.0
) -> float:
    """Median wall time of ``step`` in milliseconds, after ``warmup`` untimed runs; with ``pause``, each timed run
    starts after that many seconds asleep (untimed), as a call inside a training step starts."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        _sync(cuda)
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        step()
        _sync(cuda)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _sync(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # "5" resets the peak resident set size (Linux >= 4.0)


def _measure(case: str, params: dict[str, Any], repeats: int) -> dict[str, float]:
    module_name, function_name = case.split(":")
    setup = getattr(importlib.import_module(module_name), function_name)
    cuda = params.get("device", "cpu").startswith("cuda")
    step = setup(**params)
    gc.collect()
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        _reset_peak_rss()
        before = _rss_bytes()
        step()
        peak = _peak_rss_bytes() - before
    ms = median_ms(step, repeats=repeats, warmup=0, cuda=cuda)
    return {"ms": ms, "peak_mib": max(peak, 0) / MIB}


if __name__ == "__main__":
    print(json.dumps(_measure(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))))
