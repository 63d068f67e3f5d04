"""Cross-vocabulary aligned loss against TRL GOLD's hybrid ULD loss, forward and backward.

Run from the repo root: ``python -m benchmarks.bench_crossvocab [--pair llama3,qwen3] [--quick]``

Both sides get the same inputs: ``B`` rows of real text (this repository's README and docs) tokenized by a real
student and a real teacher tokenizer (default the vendored Mistral v0.3 / SmolLM2 pair; ``--pair llama3,qwen3``
needs ``../shared/tokenizers``), each row exactly ``T`` student tokens (a window starting and ending where both
tokenizations cut the text), the teacher's tokens of the same bytes, an EOS on each side as GOLD's collators
append it, exact UTF-8 byte offsets of every token, and seeded random logits as wide as the tokenizers.

* TRL: ``ULDLoss`` from ``trl.experimental.gold`` in the hybrid mode (``uld_use_hybrid_loss=True``,
  ``use_extended_uld=True``: tokens grouped by byte offsets, matched vocabulary compared with a JSD, the rest with
  sorted-probability L1), every other option at ``GOLDConfig``'s default. Its ``__init__`` (the vocabulary
  mapping) runs outside the timed region; its call aligns the two tokenizations, merges and compares.
* ours: what a training loop does per batch: byte spans (:func:`alignment.token_byte_spans`) and alignment
  (:func:`alignment.align_spans`) of each row, then :func:`alignment.generalized_jsd` (beta 0.5) over the aligned
  frames with a :func:`alignment.vocab_projection` built once outside the timed region. In one call (the first row
  of ours): ``generalized_jsd(..., projection=, teacher_positions=)``, which reads the teacher's aligned rows in
  place. In two (``--profile`` profiles this one, stage by stage): ``project_logprobs(..., teacher_positions=)``,
  which reads them in place too, then the loss on both sides' class log-probabilities.

The two are different losses over the same alignment; before timing, the script checks that GOLD's byte-offset
groups end exactly at our aligned pairs. Each case runs in its own process (:mod:`benchmarks._measure`): median
time of forward + backward, and peak memory beyond the inputs. Byte offsets are computed with
:func:`alignment.token_byte_spans` for both sides (TRL's own ``encode_with_byte_offsets`` accepts only byte-level
BPE tokenizers, not Mistral's SentencePiece). On a machine shared with other jobs, ``--threads 1`` gives steadier
numbers (see :mod:`benchmarks.bench_scaling`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import numpy as np
import torch

from benchmarks._measure import isolated

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAIR = "mistral_v3,smollm2"  # vendored in alignment/assets/tokenizers: runs on a fresh clone
BETA = 0.5
GOLD_READS = (  # the GOLDConfig attributes that ULDLoss reads (trl 1.16)
    "beta",
    "uld_crossentropy_weight",
    "uld_distillation_weight",
    "uld_hybrid_matched_weight",
    "uld_hybrid_unmatched_weight",
    "uld_skip_student_eos",
    "uld_skip_teacher_eos",
    "uld_student_temperature",
    "uld_teacher_temperature",
    "uld_token_merge_strategy",
    "uld_use_hybrid_loss",
    "use_extended_uld",
)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Seeded logits, ids, labels and byte offsets of ``B`` rows, padded as GOLD's collators pad them."""

    student_logits: torch.Tensor  # (B, T + 1, V) float32, requires grad; the last position is the EOS
    teacher_logits: torch.Tensor  # (B, S + 1, W) float32
    student_ids: torch.Tensor  # (B, T + 1) int64: T text tokens, then EOS
    teacher_ids: torch.Tensor  # (B, S + 1) int64: S_b text tokens, EOS, then padding
    student_labels: torch.Tensor  # (B, T + 1) int64, -100 on padding
    teacher_labels: torch.Tensor  # (B, S + 1) int64, -100 on padding
    student_offsets: torch.Tensor  # (B, T + 1, 2) int64 byte offsets; EOS at (len, len), padding (0, 0)
    teacher_offsets: torch.Tensor  # (B, S + 1, 2) int64
    teacher_lengths: tuple[int, ...]  # S_b, the teacher's text tokens in row b


@cache
def tokenizer(name: str) -> Any:
    from tests.tokenizers import load_real

    return load_real(name)


def corpus() -> str:
    """Real text: this repository's README and docs, with a leading space so that SentencePiece's ``▁`` prefix
    spells a byte of the text, and without the ``▁`` character itself (SentencePiece reads it as a space)."""
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n\n".join(path.read_text(encoding="utf-8") for path in paths)
    return " " + text.replace("\u2581", "_")


def windows(student_name: str, teacher_name: str, batch: int, seq: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``batch`` disjoint windows of the corpus, each exactly ``seq`` student tokens and the teacher tokens of the
    same bytes: both ends are byte positions where both tokenizations cut the text."""
    from alignment import decode_bytes, token_byte_spans

    student, teacher = tokenizer(student_name), tokenizer(teacher_name)
    text = corpus()
    s_ids = np.asarray(student.encode(text, add_special_tokens=False), dtype=np.int64)
    t_ids = np.asarray(teacher.encode(text, add_special_tokens=False), dtype=np.int64)
    if decode_bytes(student, s_ids) != decode_bytes(teacher, t_ids):
        raise RuntimeError(f"{student_name} and {teacher_name} do not spell the corpus with the same bytes")
    s_ends, t_ends = token_byte_spans(student, s_ids)[:, 1], token_byte_spans(teacher, t_ids)[:, 1]
    common = np.isin(s_ends, t_ends)  # student token k ends where a teacher token ends
    starts_ok = np.r_[True, common[:-1]]
    ok = np.flatnonzero(starts_ok[: len(s_ids) - seq + 1] & common[seq - 1 :])
    rows, cursor = [], 0
    for _ in range(batch):
        later = ok[ok >= cursor]
        if not len(later):
            raise ValueError(f"the corpus has {len(s_ids)} student tokens: too few for {batch} rows of {seq}")
        k = int(later[0])
        cursor = k + seq
        low = s_ends[k - 1] if k else 0
        high = s_ends[k + seq - 1]
        t_first, t_stop = np.searchsorted(t_ends, low, side="right"), np.searchsorted(t_ends, high, side="right")
        rows.append((s_ids[k : k + seq], t_ids[t_first:t_stop]))
    return rows


def make_batch(student_name: str, teacher_name: str, batch: int, seq: int, device: str = "cpu") -> Batch:
    from alignment import token_byte_spans

    student, teacher = tokenizer(student_name), tokenizer(teacher_name)
    rows = windows(student_name, teacher_name, batch, seq)
    width = 1 + max(len(t) for _, t in rows)
    s_ids = torch.full((batch, seq + 1), student.eos_token_id, dtype=torch.int64)
    pad = teacher.eos_token_id if teacher.pad_token_id is None else teacher.pad_token_id
    t_ids = torch.full((batch, width), pad, dtype=torch.int64)
    t_labels = torch.full((batch, width), -100, dtype=torch.int64)
    s_offsets = torch.zeros((batch, seq + 1, 2), dtype=torch.int64)
    t_offsets = torch.zeros((batch, width, 2), dtype=torch.int64)
    for b, (s, t) in enumerate(rows):
        s_spans, t_spans = token_byte_spans(student, s), token_byte_spans(teacher, t)
        end = int(s_spans[-1, 1])
        s_ids[b, :seq] = torch.from_numpy(s)
        s_offsets[b, :seq], s_offsets[b, seq] = torch.from_numpy(s_spans), end
        t_ids[b, : len(t)], t_ids[b, len(t)] = torch.from_numpy(t), teacher.eos_token_id
        t_labels[b, : len(t) + 1] = t_ids[b, : len(t) + 1]
        t_offsets[b, : len(t)], t_offsets[b, len(t)] = torch.from_numpy(t_spans), end
    generator = torch.Generator(device=device).manual_seed(0)
    s_logits = 2 * torch.randn((batch, seq + 1, len(student)), generator=generator, device=device)
    t_logits = 2 * torch.randn((batch, width, len(teacher)), generator=generator, device=device)
    return Batch(
        student_logits=s_logits.requires_grad_(),
        teacher_logits=t_logits,
        student_ids=s_ids.to(device),
        teacher_ids=t_ids.to(device),
        student_labels=s_ids.to(device),
        teacher_labels=t_labels.to(device),
        student_offsets=s_offsets.to(device),
        teacher_offsets=t_offsets.to(device),
        teacher_lengths=tuple(len(t) for _, t in rows),
    )


def gold_loss(student_name: str, teacher_name: str, device: str = "cpu") -> Any:
    """TRL GOLD's ``ULDLoss`` in the hybrid, byte-offset mode; every other option at ``GOLDConfig``'s default."""
    from trl.experimental.gold import GOLDConfig
    from trl.experimental.gold.gold_trainer import ULDLoss

    defaults = {f.name: f.default for f in dataclasses.fields(GOLDConfig) if f.name in GOLD_READS}
    config = SimpleNamespace(**{**defaults, "use_extended_uld": True, "uld_use_hybrid_loss": True, "beta": BETA})
    student, teacher = tokenizer(student_name), tokenizer(teacher_name)
    return ULDLoss(config, student_tokenizer=student, teacher_tokenizer=teacher, device=torch.device(device))


def gold_step(loss: Any, batch: Batch) -> torch.Tensor:
    value: torch.Tensor = loss(
        batch.student_logits,
        batch.teacher_logits,
        batch.student_labels,
        batch.teacher_labels,
        batch.student_ids,
        batch.teacher_ids,
        student_byte_offsets=batch.student_offsets,
        teacher_byte_offsets=batch.teacher_offsets,
    )
    return value


def positions(student_name: str, teacher_name: str, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Our per-batch alignment: byte spans and :func:`alignment.align_spans` of each row (vectorised, no loop over
    tokens). Returns the ``(B, T)`` teacher position of each student frame and the ``(B, T)`` mask of aligned frames
    (what :class:`alignment.TeacherBatch` holds as ``positions`` and ``mask``)."""
    from alignment import align_spans, token_byte_spans

    student, teacher = tokenizer(student_name), tokenizer(teacher_name)
    rows, frames = batch.student_ids.shape[0], batch.student_ids.shape[1] - 1
    found = np.zeros((rows, frames), dtype=np.int64)
    mask = np.zeros((rows, frames), dtype=np.bool_)
    for b, length in enumerate(batch.teacher_lengths):
        s_spans = token_byte_spans(student, batch.student_ids[b, :frames].cpu().numpy())
        t_spans = token_byte_spans(teacher, batch.teacher_ids[b, :length].cpu().numpy())
        pairs = align_spans(s_spans, t_spans).pairs
        found[b, pairs[:, 0]], mask[b, pairs[:, 0]] = pairs[:, 1], True
    device = batch.teacher_logits.device
    return torch.from_numpy(found).to(device), torch.from_numpy(mask).to(device)


def our_step(projection: Any, student_name: str, teacher_name: str, batch: Batch) -> torch.Tensor:
    """One training-loop step of ours, forward: align, project, loss over the aligned frames."""
    from alignment import generalized_jsd, project_logprobs

    with torch.profiler.record_function("ours: align"):  # labels for --profile; near free otherwise
        found, mask = positions(student_name, teacher_name, batch)
    with torch.profiler.record_function("ours: project_logprobs"):
        student_logits = batch.student_logits[:, : mask.shape[1]]
        student, teacher = project_logprobs(student_logits, batch.teacher_logits, projection, teacher_positions=found)
    with torch.profiler.record_function("ours: generalized_jsd"):
        return generalized_jsd(student, teacher, mask, beta=BETA, check_finite=False)


def one_call_step(projection: Any, student_name: str, teacher_name: str, batch: Batch) -> torch.Tensor:
    """The same loss in one call: :func:`alignment.generalized_jsd` with ``projection=``, which sums each chunk's
    probabilities into the classes inside the loss instead of returning both sides' class log-probabilities, and
    ``teacher_positions=``, with which it reads the aligned rows of the teacher's logits in place of a gathered
    copy."""
    from alignment import generalized_jsd

    found, mask = positions(student_name, teacher_name, batch)
    student_logits = batch.student_logits[:, : mask.shape[1]]
    teacher_logits = batch.teacher_logits
    return generalized_jsd(
        student_logits,
        teacher_logits,
        mask,
        beta=BETA,
        check_finite=False,
        projection=projection,
        teacher_positions=found,
    )


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def trl(
    *, student: str, teacher: str, batch: int, seq: int, threads: int | None = None, device: str = "cpu"
) -> Callable[[], None]:
    set_threads(threads)
    inputs, loss = make_batch(student, teacher, batch, seq, device), gold_loss(student, teacher, device)

    def step() -> None:
        inputs.student_logits.grad = None
        gold_step(loss, inputs).backward()

    return step


def ours(
    *, student: str, teacher: str, batch: int, seq: int, threads: int | None = None, device: str = "cpu"
) -> Callable[[], None]:
    """The projection in two calls: ``project_logprobs``, then the loss."""
    return projected(our_step, student, teacher, batch, seq, threads, device)


def one_call(
    *, student: str, teacher: str, batch: int, seq: int, threads: int | None = None, device: str = "cpu"
) -> Callable[[], None]:
    """The projection inside the loss: ``generalized_jsd(..., projection=)``."""
    return projected(one_call_step, student, teacher, batch, seq, threads, device)


def projected(
    loss: Callable[[Any, str, str, Batch], torch.Tensor],
    student: str,
    teacher: str,
    batch: int,
    seq: int,
    threads: int | None,
    device: str,
) -> Callable[[], None]:
    """A case timing ``loss`` (``our_step`` or ``one_call_step``), forward and backward, on one batch."""
    from alignment import vocab_projection

    set_threads(threads)
    inputs = make_batch(student, teacher, batch, seq, device)
    projection = vocab_projection(tokenizer(student), tokenizer(teacher))

    def step() -> None:
        inputs.student_logits.grad = None
        loss(projection, student, teacher, inputs).backward()

    return step


def ours_align(
    *, student: str, teacher: str, batch: int, seq: int, threads: int | None = None, device: str = "cpu"
) -> Callable[[], None]:
    """Stage 1 of ours alone: alignment (the teacher position of every student frame)."""
    set_threads(threads)
    inputs = make_batch(student, teacher, batch, seq, device)

    def step() -> None:
        positions(student, teacher, inputs)

    return step


def ours_project(
    *, student: str, teacher: str, batch: int, seq: int, threads: int | None = None, device: str = "cpu"
) -> Callable[[], None]:
    """Stage 2 of ours alone: :func:`alignment.project_logprobs` of both sides, backward into the student logits."""
    from alignment import project_logprobs, vocab_projection

    set_threads(threads)
    inputs = make_batch(student, teacher, batch, seq, device)
    projection = vocab_projection(tokenizer(student), tokenizer(teacher))
    found, _ = positions(student, teacher, inputs)
    teacher_logits = inputs.teacher_logits
    student_logits = inputs.student_logits.detach()[:, :seq].contiguous().requires_grad_()
    del inputs

    def step() -> None:
        student_logits.grad = None
        student_logprobs, _ = project_logprobs(student_logits, teacher_logits, projection, teacher_positions=found)
        student_logprobs.sum().backward()

    return step


def ours_loss(
    *, student: str, teacher: str, batch: int, seq: int, threads: int | None = None, device: str = "cpu"
) -> Callable[[], None]:
    """Stage 3 of ours alone: :func:`alignment.generalized_jsd` on the projected log-probabilities."""
    from alignment import generalized_jsd, project_logprobs, vocab_projection

    set_threads(threads)
    inputs = make_batch(student, teacher, batch, seq, device)
    projection = vocab_projection(tokenizer(student), tokenizer(teacher))
    found, mask = positions(student, teacher, inputs)
    with torch.no_grad():
        student_logprobs, teacher_logprobs = project_logprobs(
            inputs.student_logits[:, :seq], inputs.teacher_logits, projection, teacher_positions=found
        )
    student_logprobs.requires_grad_()
    del inputs

    def step() -> None:
        student_logprobs.grad = None
        generalized_jsd(student_logprobs, teacher_logprobs, mask, beta=BETA, check_finite=False).backward()

    return step


PROMPT = "Read on:"  # the raw prompt before each window, for the next-byte case


def next_byte(
    *, student: str, teacher: str, batch: int, seq: int, threads: int | None = None, device: str = "cpu"
) -> Callable[[], None]:
    """Ours with the next-byte loss, the one for vocabularies that split text differently (Llama 3's three-digit
    numbers against Qwen3's digits): the same windows as raw prompt/completion text, from the student's ids to
    ``prepare_teacher_batch(..., byte_frames=True)`` (render for the teacher, tokenize, align, byte frames), then
    :func:`alignment.byte_logprobs` of both sides and :func:`alignment.generalized_jsd` over every compared byte,
    forward + backward. The preparation is timed too, though GOLD is handed its tokenization."""
    from alignment import byte_logprobs, byte_vocab, generalized_jsd, prepare_teacher_batch

    set_threads(threads)
    student_tok, teacher_tok = tokenizer(student), tokenizer(teacher)
    completions = [ids for ids, _ in windows(student, teacher, batch, seq)]
    examples = [{"prompt": PROMPT} for _ in completions]
    options: dict[str, Any] = {
        "student_tokenizer": student_tok,
        "teacher_tokenizer": teacher_tok,
        "student_mode": "completion",
        "teacher_mode": "completion",
        "byte_frames": True,
    }
    shape = prepare_teacher_batch(examples, completions, **options).input_ids.shape
    generator = torch.Generator(device=device).manual_seed(0)
    student_logits = 2 * torch.randn((batch, seq, len(student_tok)), generator=generator, device=device)
    teacher_logits = 2 * torch.randn((*shape, len(teacher_tok)), generator=generator, device=device)
    student_logits.requires_grad_()
    vocabs = byte_vocab(student_tok), byte_vocab(teacher_tok)

    def step() -> None:
        student_logits.grad = None
        frames = prepare_teacher_batch(examples, completions, **options).byte_frames
        s, t = byte_logprobs(frames, student_logits, teacher_logits, student_vocab=vocabs[0], teacher_vocab=vocabs[1])
        generalized_jsd(s, t, beta=BETA, check_finite=False).backward()

    return step


CASES = {
    "TRL GOLD cross-vocab ULD, hybrid": "trl",
    "ours: align + generalized_jsd(projection=, teacher_positions=)": "one_call",
    "ours, two calls: align + project_logprobs(teacher_positions=) + generalized_jsd": "ours",
    "ours, next-byte: prepare + byte_logprobs + generalized_jsd": "next_byte",
    "ours, stage: align": "ours_align",
    "ours, stage: project_logprobs": "ours_project",
    "ours, stage: generalized_jsd on classes": "ours_loss",
}


def check_alignment(student: str, teacher: str, batch: int, seq: int, device: str = "cpu") -> float:
    """Check that GOLD's byte-offset groups end at our aligned pairs; return the share of frames aligned."""
    from trl.experimental.gold.gold_trainer import ULDLoss

    from alignment import align_spans

    inputs = make_batch(student, teacher, batch, seq, device)
    aligned = 0
    for b, length in enumerate(inputs.teacher_lengths):
        s_spans = inputs.student_offsets[b, :seq].cpu().numpy()
        t_spans = inputs.teacher_offsets[b, :length].cpu().numpy()
        s_groups, t_groups = ULDLoss._align_by_byte_offsets(s_spans.tolist(), t_spans.tolist())
        gold_pairs = [(s[-1], t[-1]) for s, t in zip(s_groups, t_groups, strict=True)]
        pairs = align_spans(s_spans, t_spans).pairs
        if gold_pairs != [tuple(p) for p in pairs.tolist()]:
            raise AssertionError(f"row {b}: GOLD's groups and align_spans' pairs differ")
        aligned += len(pairs)
    return aligned / (batch * seq)


def profile(student: str, teacher: str, batch: int, seq: int, *, top: int = 15) -> None:
    """Where our step's time and memory go: one forward + backward under ``torch.profiler`` after a warm-up run;
    the forward stages, then the operators (backward ones included) with the most self CPU time."""
    from alignment import vocab_projection

    inputs = make_batch(student, teacher, batch, seq)
    projection = vocab_projection(tokenizer(student), tokenizer(teacher))

    def step() -> None:
        inputs.student_logits.grad = None
        our_step(projection, student, teacher, inputs).backward()

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e3
    print(f"\nprofile of one step of ours ({total:.0f} ms of CPU time under the profiler; memory: allocated by each")
    print("operator itself, not freed within it)\n")
    print("| stage or operator | calls | CPU ms (self) | CPU ms (total) | share | MiB allocated (self) |")
    print("|---|--:|--:|--:|--:|--:|")
    stages = [e for e in events if e.key.startswith("ours:")]
    ops = sorted((e for e in events if not e.key.startswith("ours:")), key=lambda e: -e.self_cpu_time_total)
    for event in [*stages, *ops[:top]]:
        self_ms, total_ms = event.self_cpu_time_total / 1e3, event.cpu_time_total / 1e3
        share = (total_ms if event in stages else self_ms) / total
        mib = max(event.self_cpu_memory_usage, 0) / 2**20
        name = f"**{event.key}** (forward)" if event in stages else f"`{event.key}`"
        print(f"| {name} | {event.count} | {self_ms:.1f} | {total_ms:.1f} | {share:.0%} | {mib:.0f} |")


def revision() -> str:
    """The commit measured, marked ``+ local changes`` when ``alignment/`` differs from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return commit + (" + local changes in alignment/" if git("status", "--porcelain", "alignment") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default=DEFAULT_PAIR, help=f"student,teacher tokenizers (default {DEFAULT_PAIR})")
    parser.add_argument("--shape", default="2,256", help="batch,seq: rows and student tokens per row (default 2,256)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of each case of ours, after the first")
    parser.add_argument("--trl-repeats", type=int, default=3, help="timed runs of TRL's (slow) case, after the first")
    parser.add_argument("--no-stages", action="store_true", help="skip the rows that time each stage of ours alone")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per case (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="after the table, profile one step of ours")
    parser.add_argument("--quick", action="store_true", help="one row of 64 tokens, one run: a smoke test")
    parser.add_argument("--device", default="cpu", help="where the logits live (cuda: memory is allocated GPU memory)")
    args = parser.parse_args()
    student, teacher = args.pair.split(",")
    batch, seq = (1, 64) if args.quick else tuple(map(int, args.shape.split(",")))
    repeats, trl_repeats = (1, 1) if args.quick else (args.repeats, args.trl_repeats)

    import trl

    from alignment import vocab_projection

    inputs = make_batch(student, teacher, batch, seq, args.device)
    classes = vocab_projection(tokenizer(student), tokenizer(teacher)).num_classes
    coverage = check_alignment(student, teacher, batch, seq, args.device)
    vocab, width = inputs.student_logits.shape[-1], inputs.teacher_logits.shape[-1]
    lengths = inputs.teacher_lengths
    del inputs  # on a GPU, the cases' processes need its memory
    print(f"# cross-vocabulary loss, forward + backward, float32 on {args.device}: student {student} (V={vocab}),")
    print(f"# teacher {teacher} (W={width}), {classes} projected classes; {batch} rows x {seq} student tokens + EOS,")
    print(f"# teacher {lengths} tokens + EOS; {coverage:.1%} of frames aligned (GOLD's groups: same pairs)")
    threads = args.threads or torch.get_num_threads()
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, threads {threads}, torch {torch.__version__}")
    print(f"# trl {trl.__version__}; alignment at {revision()}")
    memory = "allocated GPU memory" if args.device.startswith("cuda") else "RSS"
    print(f"# median of {trl_repeats} (TRL) or {repeats} (ours) runs after a first run that measures memory (peak")
    print(f"# {memory} beyond the inputs); each case in its own process")
    print()
    print("| loss | ms | peak MiB | speed-up vs TRL (TRL ms / ms) | memory vs TRL (MiB / TRL MiB) |")
    print("|---|--:|--:|--:|--:|")
    shape = {"student": student, "teacher": teacher, "batch": batch, "seq": seq, "threads": args.threads}
    if args.device != "cpu":
        shape["device"] = args.device
    results = {}
    for name, case in CASES.items():
        if not (args.no_stages and case.startswith("ours_")):
            runs = trl_repeats if case == "trl" else repeats
            results[name] = isolated(f"benchmarks.bench_crossvocab:{case}", repeats=runs, **shape)
    peer = results["TRL GOLD cross-vocab ULD, hybrid"]
    for name, result in results.items():
        if "error" in result:
            print(f"| {name} | {result['error']} | | | |")
            continue
        ms, mib = result["ms"], result["peak_mib"]
        stage = CASES[name].startswith("ours_")  # a stage alone is not comparable
        compared = CASES[name] != "trl" and not stage and "error" not in peer
        speed = f"{peer['ms'] / ms:.1f}x" if compared else ""
        memory = f"{mib / max(peer['peak_mib'], 1e-9):.3f}" if compared else ""
        print(f"| {name} | {ms:.1f} | {mib:.0f} | {speed} | {memory} |")
    if args.profile:
        set_threads(args.threads)
        profile(student, teacher, batch, seq)


if __name__ == "__main__":
    main()
