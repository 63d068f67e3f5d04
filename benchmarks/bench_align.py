"""Speed of :func:`alignment.align_spans` against TRL GOLD's byte-offset aligner and a bare numpy pairing.

Run from the repo root: ``python -m benchmarks.bench_align [--quick]``

The spans are real: windows of ``T`` student tokens of a fixed corpus (this repository's docs and package sources
and the test suite's multilingual corpus, NFC-normalised), tokenized by a real student and a real teacher
(``llama3`` / ``qwen3`` from ``../shared/tokenizers`` when present, else the vendored ``mistral_v3`` /
``smollm2``). Student spans are :func:`alignment.token_byte_spans` of the window's ids; the teacher tokenizes the
same bytes, so both sides tile them.

* **batch**: ``B`` windows, in one call of ``align_spans_batch`` and in one call of ``align_spans`` per window,
  compiled where numba is installed and on its numpy path (what runs without numba), against TRL's
  ``ULDLoss._align_by_byte_offsets`` (pure Python over lists of ``[start, stop]``, its native input; the
  ``.tolist()`` that GOLD's trainer runs before each call is left out, in TRL's favour) and against bare numpy
  pairings of the same arrays that only pair the tokens ending at the same byte: two bitmaps over the bytes (the
  leanest we found), ``np.searchsorted`` and ``np.intersect1d(..., return_indices=True)``. Ours also checks both
  inputs (ordered, disjoint, same bytes covered) and returns the chunks besides the pairs. Before timing, every
  bare pairing must equal our pairs and TRL's groups must equal our chunks.
* **scaling**: one window of 1k to 32k student tokens.

Times are medians over ``--runs`` rounds, each round timing every contender one after the other in this process
(a batch is the sum of each call's median of 5 repeats); ratios are medians of the per-round ratios, so load from
other processes largely cancels out.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from alignment import _numba, align_spans, align_spans_batch, decode_bytes, token_byte_spans
from alignment.align import _align_numpy, _as_spans
from alignment.types import TokenAlignment
from benchmarks._measure import median_ms
from tests.tokenizers import CORPUS, SHARED_DIR, load_real

ROOT = Path(__file__).resolve().parents[1]
Spans = tuple[np.ndarray, np.ndarray]


def default_pair() -> tuple[str, str]:
    return ("llama3", "qwen3") if SHARED_DIR.is_dir() else ("mistral_v3", "smollm2")


def corpus() -> str:
    """Prose, code and multilingual text, NFC-normalised (Qwen's normaliser) and without SentencePiece's ``▁``."""
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "alignment").glob("*.py"))]
    text = "\n\n".join([*(path.read_text(encoding="utf-8") for path in paths), *CORPUS])
    return unicodedata.normalize("NFC", text).replace("\u2581", "_")


def windows(student: Any, teacher: Any, tokens: int, count: int) -> list[Spans]:
    """``count`` windows of about ``tokens`` student tokens, spread over the corpus (repeated as needed)."""
    text = corpus()
    ids = np.asarray(student.encode(text, add_special_tokens=False), dtype=np.int64)
    while len(ids) < 2 * tokens:
        ids = np.concatenate([ids, ids])
    step = max((len(ids) - tokens) // max(count, 1), 1)
    return [_window(student, teacher, ids[k * step : k * step + tokens]) for k in range(count)]


def _window(student: Any, teacher: Any, ids: np.ndarray) -> Spans:
    """Student spans of ``ids`` (trimmed to whole characters) and the teacher's spans of the same bytes."""
    while decode_bytes(student, ids[:1])[:1] and decode_bytes(student, ids[:1])[0] & 0xC0 == 0x80:
        ids = ids[1:]  # starts inside a character (a byte-fallback piece)
    while True:
        raw = decode_bytes(student, ids)
        try:
            text = raw.decode()
            break
        except UnicodeDecodeError:
            ids = ids[:-1]  # ends inside a character
    teacher_ids = teacher.encode(text, add_special_tokens=False)
    if decode_bytes(teacher, teacher_ids) != raw:
        raise RuntimeError("the teacher does not spell the window's bytes back; pick another pair")
    return token_byte_spans(student, ids), token_byte_spans(teacher, teacher_ids)


# --- contenders: each pairs the tokens of both sides that end at the same byte -----------------------------------
def bare_bitmap(student: np.ndarray, teacher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two bitmaps over the bytes; a token is paired when the other side also has a token ending there."""
    s_stop, t_stop = student[:, 1], teacher[:, 1]
    s_mark = np.zeros(int(s_stop[-1]) + 1, dtype=np.bool_)
    t_mark = np.zeros(len(s_mark), dtype=np.bool_)
    s_mark[s_stop] = True
    t_mark[t_stop] = True
    return t_mark[s_stop].nonzero()[0], s_mark[t_stop].nonzero()[0]


def bare_searchsorted(student: np.ndarray, teacher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s_stop, t_stop = student[:, 1], teacher[:, 1]
    where = np.searchsorted(t_stop, s_stop).clip(max=len(t_stop) - 1)
    hit = (t_stop[where] == s_stop).nonzero()[0]
    return hit, where[hit]


def bare_intersect1d(student: np.ndarray, teacher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, s_index, t_index = np.intersect1d(student[:, 1], teacher[:, 1], assume_unique=True, return_indices=True)
    return s_index, t_index


BARE = {"bitmap": bare_bitmap, "searchsorted": bare_searchsorted, "intersect1d": bare_intersect1d}


def align_spans_numpy(student: np.ndarray, teacher: np.ndarray) -> TokenAlignment:
    """``align_spans`` on its numpy path, as run without numba (the same checks and results, no compiled merge)."""
    return _align_numpy(_as_spans(student, "student_spans"), _as_spans(teacher, "teacher_spans"))


def trl_align() -> Callable[[list[list[int]], list[list[int]]], tuple[list[list[int]], list[list[int]]]]:
    from trl.experimental.gold.gold_trainer import ULDLoss

    return ULDLoss._align_by_byte_offsets  # type: ignore[no-any-return]


def check_same_work(batch: list[Spans], lists: list[tuple[list[Any], list[Any]]]) -> None:
    """Every bare pairing equals our pairs, and TRL's groups equal our chunks, on every window."""
    trl = trl_align()
    together = align_spans_batch([s for s, _ in batch], [t for _, t in batch])
    for b, ((student, teacher), (s_list, t_list)) in enumerate(zip(batch, lists, strict=True)):
        ours = align_spans(student, teacher)
        if not (
            np.array_equal(together[b].pairs, ours.pairs)
            and np.array_equal(together[b].chunks.byte_spans, ours.chunks.byte_spans)
        ):
            raise AssertionError("align_spans_batch differs from align_spans")
        numpy_path = align_spans_numpy(student, teacher)
        if not (
            np.array_equal(numpy_path.pairs, ours.pairs)
            and np.array_equal(numpy_path.chunks.byte_spans, ours.chunks.byte_spans)
        ):
            raise AssertionError("align_spans' numpy path differs from align_spans")
        for name, bare in BARE.items():
            s_index, t_index = bare(student, teacher)
            if not (np.array_equal(s_index, ours.pairs[:, 0]) and np.array_equal(t_index, ours.pairs[:, 1])):
                raise AssertionError(f"bare {name} pairs differ from align_spans")
        s_groups, t_groups = trl(s_list, t_list)
        for groups, chunks in ((s_groups, ours.chunks.student), (t_groups, ours.chunks.teacher)):
            if [[g[0], g[-1] + 1] for g in groups] != chunks.tolist():
                raise AssertionError("TRL's groups differ from align_spans' chunks")


# --- tables ----------------------------------------------------------------------------------------------------
def rounds(steps: dict[str, list[Callable[[], object]]], runs: int) -> dict[str, list[float]]:
    """Milliseconds of every contender's calls, ``runs`` rounds, the contenders one after the other in each round.

    A contender's time is the sum over its calls of the median of 5 repeats of that call, so that a slow peer's
    long step is not the only one that other processes preempt. The garbage collector is off while timing, as in
    :mod:`timeit`: with it on, the lists of all ``B`` windows held for TRL make its calls walk them (about 8x
    slower at 32 x 2048 tokens here).
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    gc.disable()
    try:
        for _ in range(runs):
            for name, calls in steps.items():
                times[name].append(sum(median_ms(call, repeats=5, warmup=1) for call in calls))
    finally:
        gc.enable()
    return times


def calls(function: Callable[[Any, Any], object], arguments: list[Any]) -> list[Callable[[], object]]:
    return [lambda pair=pair: function(*pair) for pair in arguments]


def ratio(times: dict[str, list[float]], top: str, bottom: str) -> float:
    return statistics.median(a / b for a, b in zip(times[top], times[bottom], strict=True))


def batch_table(batch: list[Spans], runs: int) -> None:
    lists = [(s.tolist(), t.tolist()) for s, t in batch]
    check_same_work(batch, lists)
    trl = trl_align()
    students, teachers = [s for s, _ in batch], [t for _, t in batch]
    steps = {
        "align_spans_batch (ours), one call": [lambda: align_spans_batch(students, teachers)],
        "align_spans (ours)": calls(align_spans, batch),
        "align_spans, numpy path (ours without numba)": calls(align_spans_numpy, batch),
        "TRL GOLD _align_by_byte_offsets": calls(trl, lists),
        **{f"bare numpy, {name}": calls(function, batch) for name, function in BARE.items()},
    }
    times = rounds(steps, runs)
    ours, one_call = "align_spans (ours)", "align_spans_batch (ours), one call"
    print(f"| {len(batch)} sequences | ms per batch | µs per sequence | batch call / this (median ratio) |")
    print("|---|--:|--:|--:|")
    for name in steps:
        ms = statistics.median(times[name])
        print(f"| {name} | {ms:.3f} | {1e3 * ms / len(batch):.1f} | {ratio(times, one_call, name):.3f} |")
    print()
    trl_name, bitmap = "TRL GOLD _align_by_byte_offsets", "bare numpy, bitmap"
    print(f"speed-up over TRL: {ratio(times, trl_name, one_call):.1f}x in one batch call (target >= 100x), ", end="")
    print(f"{ratio(times, trl_name, ours):.1f}x in a call per sequence")
    print(
        f"ours / leanest bare numpy (bitmap): {ratio(times, one_call, bitmap):.2f}x in one batch call (target <= 2x), "
        f"{ratio(times, ours, bitmap):.2f}x in a call per sequence"
    )
    numpy_path = "align_spans, numpy path (ours without numba)"
    print(
        f"without numba: {ratio(times, trl_name, numpy_path):.1f}x TRL, {ratio(times, numpy_path, bitmap):.2f}x bitmap"
    )


def scaling_table(student: Any, teacher: Any, sizes: list[int], runs: int) -> None:
    print(
        "| student tokens | teacher tokens | ours ms | ours ns per token | numpy path ms | bare bitmap ms | TRL ms "
        "| TRL / ours |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for size in sizes:
        [(s, t)] = windows(student, teacher, size, 1)
        times = one_sequence(s, t, runs)
        ms = {name: statistics.median(values) for name, values in times.items()}
        print(
            f"| {len(s)} | {len(t)} | {ms['ours']:.3f} | {1e6 * ms['ours'] / len(s):.0f} | {ms['numpy']:.3f} "
            f"| {ms['bare']:.3f} "
            f"| {ms['trl']:.2f} | {ratio(times, 'trl', 'ours'):.1f} |"
        )


def one_sequence(student: np.ndarray, teacher: np.ndarray, runs: int) -> dict[str, list[float]]:
    lists = [(student.tolist(), teacher.tolist())]
    steps = {
        "ours": calls(align_spans, [(student, teacher)]),
        "numpy": calls(align_spans_numpy, [(student, teacher)]),
        "bare": calls(bare_bitmap, [(student, teacher)]),
        "trl": calls(trl_align(), lists),
    }
    return rounds(steps, runs)


def _numba_version() -> str:
    import numba

    return str(numba.__version__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default=",".join(default_pair()), help="student,teacher real tokenizer names")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=2048, help="student tokens per sequence")
    parser.add_argument("--runs", type=int, default=7, help="rounds; times and ratios are medians over them")
    parser.add_argument("--quick", action="store_true", help="a tiny batch and two sizes; CI smoke test")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.tokens, args.runs = 4, 256, 3
    sizes = [256, 1024] if args.quick else [1024, 2048, 4096, 8192, 16384, 32768]
    import trl

    student_name, teacher_name = args.pair.split(",")
    student, teacher = load_real(student_name), load_real(teacher_name)
    batch = windows(student, teacher, args.tokens, args.batch)
    teacher_tokens = sum(len(t) for _, t in batch) / len(batch)
    print(f"# align_spans, {student_name} student / {teacher_name} teacher spans of real text")
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, numpy {np.__version__}, trl {trl.__version__}"
    )
    print(f"# align_spans runs {'compiled (numba ' + _numba_version() + ')' if _numba.enabled() else 'on numpy'}")
    print(
        f"# batch: {len(batch)} sequences x {args.tokens} student tokens (teacher {teacher_tokens:.0f} on average); "
        f"times: median of {args.runs} rounds x 5 repeats"
    )
    print()
    scaling_table(student, teacher, sizes, args.runs)  # first: after the batch's many lists, TRL's own run slower
    print()
    batch_table(batch, args.runs)


if __name__ == "__main__":
    main()
