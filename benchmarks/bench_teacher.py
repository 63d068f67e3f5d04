"""Teacher-side preparation of a batch against plain tokenization, and the cost of the same-tokenizer path.

Run from the repo root: ``python -m benchmarks.bench_teacher [--quick]``

**Cross-family** (``llama3`` student / ``qwen3`` teacher from ``../shared/tokenizers``, else the vendored
``mistral_v3`` / ``smollm2``): ``B`` chat examples (a system prompt and a user turn of real text), each with the
student's completion: its own tokens of a 200-500-token answer (this repository's docs) through its end-of-turn
token, as sampling would leave them.

* ours: :func:`alignment.prepare_teacher_batch` with ``align_teacher_template=True``: render every conversation in
  the teacher's chat template, tokenize it, byte spans, align with the student's completion;
* ours with ``byte_frames=True`` too (what the next-byte losses need: an entry for every byte of content), a row
  of its own that the target does not cover;
* peer: ``teacher_tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)``: plain batched
  tokenization of the same rendered teacher texts (``batch.renderings[b].text``), what a trainer pays without any
  alignment. The texts hold their special tokens already (``apply_chat_template(..., tokenize=True)`` tokenizes them
  so too); Qwen3 adds none either way, Phi-3 and Llama 3 would add a second BOS.

Both are timed twice: back to back (each call right after the one before), then each call after 10 ms asleep, as
it runs inside a training step, where the model's forward and backward come between two batches. Back to back, the
peer's call finds the tokenizer's worker threads still awake from its last call; ours, whose own Python runs first,
does not. After a pause neither does.

Then where ours spends its time, by wall clock (the functions each group names are wrapped with timers): Jinja
rendering (``apply_chat_template``), the tokenizer's calls (its Rust encoding of each distinct piece of text), the
ids and byte offsets of the rendered tokens, the student's completion bytes and spans, alignment (``align_each_turn``
and the chunk ids) and the rest (locating messages, assembling renderings and rows, padding).
The peer's ids are checked equal to ours before anything is timed. Last, the teacher's encode of the same texts
alone, called back to back (as the peer is timed) and after 10 ms of Python on the calling thread (as inside ours):
on a machine whose idle cores are slow to wake, the tokenizer's second thread often joins too late in the second
case.

**Same tokenizer** (``mistral_v3`` on both sides, template included): :func:`alignment.prepare_teacher_batch`
(identity path: the teacher reads the student's ``prompt_ids`` + completion) and
:func:`alignment.align_teacher_logits`, against a training step's loss: :func:`alignment.generalized_jsd`
forward + backward on ``(8, 512, 32000)`` float32 logits. The direct alternative (feeding the student's padded ids
to the teacher and taking each row's frames of its logits by hand, no library) is timed too, and the overhead is
what the library adds beyond it: once with prompts of one length (a left-padded batch: both sides slice the teacher
logits) and once with prompts of different lengths (both sides gather), each side also run on one column of the
teacher logits, which is what the overhead compares: the frames' copy is the same torch call on both sides.

Times are medians over ``--runs`` rounds; in each round ours and the peer run one after the other (median of
``--repeats``), and ratios are medians of the per-round ratios. The same-tokenizer case, whose loss step takes
seconds on a CPU, runs 6 rounds of 5 repeats (2 of 2 with `--quick`); every other round runs the steps in reverse
order.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import os
import platform
import statistics
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import tokenizers
import torch
import transformers

from alignment import align_teacher_logits, generalized_jsd, prepare_teacher_batch, render, render_prompt
from benchmarks._measure import median_ms
from tests.tokenizers import SHARED_DIR, load_real, template_kwargs

ROOT = Path(__file__).resolve().parents[1]
BREAKDOWN_RUNS = 20
PAUSE = 0.01  # seconds asleep before each call in the second pass of the cross-family case
SYSTEM = "You are a helpful assistant. Answer precisely and cite the documentation where you can."


def default_pair() -> tuple[str, str]:
    return ("llama3", "qwen3") if SHARED_DIR.is_dir() else ("mistral_v3", "smollm2")


def corpus(*tokenizers: Any) -> str:
    """This repository's README and docs, NFC-normalised, without ``▁`` (SentencePiece reads it as a space) and
    without the tokenizers' control tokens (``<|im_end|>``, ``<think>``, ...: message content never becomes one,
    while plain tokenization of the rendered text would make it one)."""
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = unicodedata.normalize("NFC", "\n\n".join(path.read_text(encoding="utf-8") for path in paths))
    controls = {token for tokenizer in tokenizers for token in tokenizer.get_added_vocab()} | {"<think>", "</think>"}
    for control in sorted(controls, key=len, reverse=True):
        text = text.replace(control, control.replace("<", "(").replace(">", ")").replace("[", "(").replace("]", ")"))
    return text.replace("\u2581", "_")


def conversations(
    tokenizers: tuple[Any, Any], count: int, lengths: tuple[int, int], seed: int = 0
) -> list[tuple[dict, str]]:
    """``count`` (prompt example, answer) pairs: a user question and an answer of ``lengths`` student tokens."""
    student = tokenizers[0]
    ids = np.asarray(student.encode(corpus(*tokenizers), add_special_tokens=False))
    rng = np.random.default_rng(seed)
    pairs, cursor = [], 0
    for _ in range(count):
        question_length, answer_length = 40, int(rng.integers(*lengths))
        if cursor + question_length + answer_length > len(ids):
            cursor = 0
        question = student.decode(ids[cursor : cursor + question_length].tolist()).strip()
        answer = student.decode(ids[cursor + question_length : cursor + question_length + answer_length].tolist())
        cursor += question_length + answer_length
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Explain: {question}"}]
        pairs.append(({"messages": messages}, answer.strip()))
    return pairs


def sample(student: Any, example: dict, answer: str, kwargs: dict) -> tuple[np.ndarray, np.ndarray]:
    """The student's prompt ids and what sampling ``answer`` after them leaves: its tokens through end of turn."""
    prompt = render_prompt(student, example, **kwargs).input_ids
    full = render(student, {"messages": [*example["messages"], {"role": "assistant", "content": answer}]}, **kwargs)
    if full.input_ids[: len(prompt)].tolist() != prompt.tolist():
        raise RuntimeError("the student's prompt does not tokenize as a prefix of its full conversation")
    return prompt, full.input_ids[len(prompt) : full.end_of_turn[-1] + 1]


def rounds(
    steps: dict[str, Callable[[], object]], runs: int, repeats: int, pause: float = 0.0
) -> dict[str, list[float]]:
    """Milliseconds of each step per round (median of ``repeats``, each after ``pause`` seconds asleep); every other
    round runs the steps in reverse, so that no step always follows the same one (the steps of the same-tokenizer
    case allocate hundreds of MiB)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for run in range(runs):
        order = list(steps.items())
        for name, step in order[::-1] if run % 2 else order:
            times[name].append(median_ms(step, repeats=repeats, warmup=1, pause=pause))
    return times


def ratio(times: dict[str, list[float]], top: str, bottom: str) -> float:
    return statistics.median(a / b for a, b in zip(times[top], times[bottom], strict=True))


# --- cross-family ----------------------------------------------------------------------------------------------
def cross_family(names: tuple[str, str], batch_size: int, runs: int, repeats: int) -> None:
    student, teacher = load_real(names[0]), load_real(names[1])
    kwargs = (template_kwargs(names[0]), template_kwargs(names[1]))
    pairs = conversations((student, teacher), batch_size, (200, 500))
    examples = [example for example, _ in pairs]
    completions = [sample(student, example, answer, kwargs[0])[1] for example, answer in pairs]
    options = {
        "student_tokenizer": student,
        "teacher_tokenizer": teacher,
        "align_teacher_template": True,
        "student_template_kwargs": kwargs[0],
        "teacher_template_kwargs": kwargs[1],
    }
    batch = prepare_teacher_batch(examples, completions, **options)
    texts = [rendering.text for rendering in batch.renderings]
    rows = [row[:length].tolist() for row, length in zip(batch.input_ids, batch.attention_mask.sum(1), strict=True)]
    plain = {"add_special_tokens": False, "return_offsets_mapping": True}
    if rows != [list(ids) for ids in teacher(texts, **plain)["input_ids"]]:
        raise AssertionError("the teacher's own tokenization of its texts differs from prepare_teacher_batch's ids")
    steps = {
        "ours": lambda: prepare_teacher_batch(examples, completions, **options),
        "peer": lambda: teacher(texts, **plain),
    }
    times = rounds(steps, runs, repeats)
    rested = rounds(steps, runs, repeats, pause=PAUSE)
    framing = {  # rounds of their own: its many small objects must not slow the steps above
        "byte frames": lambda: prepare_teacher_batch(examples, completions, byte_frames=True, **options),
        "peer": steps["peer"],
    }
    framed_times = rounds(framing, runs, repeats)
    ours, peer = statistics.median(times["ours"]), statistics.median(times["peer"])
    lengths = [len(c) for c in completions]
    print(f"## Cross-family: {names[0]} student, {names[1]} teacher, batch of {batch_size}")
    print(
        f"completions {min(lengths)}-{max(lengths)} student tokens (mean {np.mean(lengths):.0f}); teacher rows "
        f"{int(batch.attention_mask.sum(1).min())}-{batch.input_ids.shape[1]} tokens; coverage {batch.coverage:.3f}"
    )
    print()
    print("| | ms per batch | ours / peer (median ratio) |")
    print("|---|--:|--:|")
    print(f"| peer: teacher_tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True) | {peer:.1f} | |")
    measured = ratio(times, "ours", "peer")
    print(f"| ours: prepare_teacher_batch(align_teacher_template=True) | {ours:.1f} | {measured:.2f} |")
    framed = statistics.median(framed_times["byte frames"])
    framed_ratio = ratio(framed_times, "byte frames", "peer")
    print(f"| ours with byte_frames=True (for the next-byte losses) | {framed:.1f} | {framed_ratio:.2f} |")
    print()
    rested_ratio = ratio(rested, "ours", "peer")
    print(f"each call after {1e3 * PAUSE:.0f} ms asleep, as in a training step (the tokenizer's threads asleep too):")
    print()
    print("| | ms per batch | ours / peer (median ratio) |")
    print("|---|--:|--:|")
    print(f"| peer | {statistics.median(rested['peer']):.1f} | |")
    print(f"| ours | {statistics.median(rested['ours']):.1f} | {rested_ratio:.2f} |")
    print()
    print(f"target: ours <= 1.3 x peer; measured {measured:.2f} x back to back, {rested_ratio:.2f} x after a pause")
    print()
    chat = any(rendering.mode == "chat" for rendering in batch.renderings)
    breakdown(lambda: prepare_teacher_batch(examples, completions, **options), BREAKDOWN_RUNS, chat=chat)
    print()
    after_python(teacher, texts, BREAKDOWN_RUNS)


def after_python(tokenizer: Any, texts: list[str], runs: int) -> None:
    """The teacher's encode of the same texts (``encode_batch_fast``, no offsets) called back to back, as the peer is
    timed, and after 10 ms of Python on the calling thread, as inside ours (Jinja and planning come first): how often
    it runs at its parallel speed, and how often at one core's."""
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # tokenizers >= 0.21 has the fast one

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    print(
        "| the teacher's encode of the same texts | median ms | fastest ms | slowest ms | calls over 1.5x the fastest |"
    )
    print("|---|--:|--:|--:|--:|")
    for label, before in (("back to back", 0.0), ("after 10 ms of Python", 0.01)):
        times = []
        for _ in range(runs + 1):
            spin(before)
            start = time.perf_counter()
            encode(texts)
            times.append(1e3 * (time.perf_counter() - start))
        times = times[1:]  # the first call warms up
        slow = sum(t > 1.5 * min(times) for t in times)
        print(f"| {label} | {statistics.median(times):.1f} | {min(times):.1f} | {max(times):.1f} | {slow} of {runs} |")


# where ours spends its time: (module, function) timed by wall clock while ours runs, and the group it counts in
TIMED = (
    ("alignment._locate", "apply_template", "Jinja"),
    ("alignment.spans", "_encode_plain", "tokenizer"),
    ("alignment._plans", "encode_segments_batch", "segments"),
    ("alignment.teacher", "_spell_turns", "student"),
    ("alignment.teacher", "_completion_text", "student"),
    ("alignment.teacher", "align_each_turn", "alignment"),
    ("alignment.teacher", "_chunk_ids", "alignment"),
)
GROUPS = {
    "Jinja": "Jinja rendering (apply_chat_template)",
    "tokenizer": "tokenizer calls (the Rust encode of each distinct piece of text)",
    "segments": "ids and byte offsets of the rendered tokens (beyond the tokenizer calls)",
    "student": "the student's completion: its bytes and token spans",
    "alignment": "alignment (align_each_turn, chunk ids)",
}


@contextlib.contextmanager
def timed(targets: tuple[tuple[str, str, str], ...]) -> Iterator[dict[str, list[float]]]:
    """Wrap each ``(module, function)`` so that its calls add their wall-clock seconds to their group's list."""
    spent: dict[str, list[float]] = {group: [] for _, _, group in targets}
    originals = []
    for module_name, name, group in targets:
        module = importlib.import_module(module_name)
        original = getattr(module, name)  # a renamed function raises here rather than counting as 0
        originals.append((module, name, original))

        def wrapper(*args: Any, _original: Callable = original, _spent: list = spent[group], **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                _spent.append(time.perf_counter() - start)

        setattr(module, name, wrapper)
    try:
        yield spent
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def breakdown(step: Callable[[], object], runs: int, *, chat: bool = True) -> None:
    """Where ours spends its time, by wall clock (a profiler would slow Python more than the tokenizer's Rust):
    the functions of :data:`TIMED` are wrapped with timers over ``runs`` runs, nested ones taken out of the group
    that calls them; the rest of the total is the other Python. Without ``chat`` (a teacher rendered in the plain
    completion format) no Jinja runs."""
    step()  # warm caches as in the timed runs
    gc.disable()
    try:
        with timed(TIMED) as spent:
            start = time.perf_counter()
            for _ in range(runs):
                step()
            everything = (time.perf_counter() - start) / runs
    finally:
        gc.enable()
    missing = [group for group, times in spent.items() if not times and (chat or group != "Jinja")]
    if missing:
        raise RuntimeError(f"never called: {missing}; did a function move?")
    ms = {group: 1e3 * sum(times) / runs for group, times in spent.items()}
    ms["segments"] -= ms["tokenizer"]  # _encode_plain runs inside encode_segments_batch
    rows = {GROUPS[group]: value for group, value in ms.items()}
    other = 1e3 * everything - sum(ms.values())
    rows["other Python (locating messages, assembling renderings and rows, padding)"] = other
    print(f"| where ours spends its time (wall clock, {runs} runs) | ms per batch | share |")
    print("|---|--:|--:|")
    for name, value in rows.items():
        print(f"| {name} | {value:.1f} | {value / (1e3 * everything):.0%} |")
    print(f"| total | {1e3 * everything:.1f} | |")


# --- same tokenizer --------------------------------------------------------------------------------------------
def identity(name: str, shape: tuple[int, int, int], runs: int, repeats: int) -> None:
    """The identity path against the same step without the library, for prompts of one length (left-padded
    batches: the teacher logits are a slice) and of different lengths (a gather on both sides)."""
    batch_size, frames, vocab = shape
    tok = load_real(name)
    kwargs = template_kwargs(name)
    pairs = conversations((tok, tok), batch_size, (frames + 8, frames + 9), seed=1)
    sampled = [sample(tok, example, answer, kwargs) for example, answer in pairs]
    completions = [completion[:frames] for _, completion in sampled]  # every row fills the frame
    examples = [example for example, _ in pairs]
    shortest = min(len(prompt) for prompt, _ in sampled)
    generator = torch.Generator().manual_seed(0)
    student_logits = torch.randn(batch_size, frames, vocab, generator=generator, requires_grad=True)
    print(f"## Same tokenizer and template ({name} on both sides): identity path, logits {shape} float32")
    print()
    print(
        "| prompts | loss step ms | ours: prepare + align ms | direct ms | ours, one column of the logits ms "
        "| direct, one column ms | overhead (share of the step) |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for label, prompts in (
        ("one length (left-padded batch)", [prompt[-shortest:] for prompt, _ in sampled]),
        ("different lengths", [prompt for prompt, _ in sampled]),
    ):
        options = {"student_tokenizer": tok, "teacher_tokenizer": tok, "prompt_ids": prompts}
        batch = prepare_teacher_batch(examples, completions, **options)
        assert not batch.aligned and tuple(batch.mask.shape) == (batch_size, frames)
        teacher_logits = torch.randn(*batch.input_ids.shape, vocab, generator=generator)
        aligned = align_teacher_logits(teacher_logits, batch)

        def loss_step(aligned: torch.Tensor = aligned, mask: torch.Tensor = batch.mask) -> None:
            student_logits.grad = None
            generalized_jsd(student_logits, aligned, mask).mean().backward()

        def ours(options: dict = options, teacher_logits: torch.Tensor = teacher_logits) -> object:
            return align_teacher_logits(teacher_logits, prepare_teacher_batch(examples, completions, **options))

        def direct(prompts: list = prompts, teacher_logits: torch.Tensor = teacher_logits) -> object:
            # no library: pad the student's ids for the teacher, then take each row's frames by hand
            rows = [torch.from_numpy(np.concatenate([p, c])) for p, c in zip(prompts, completions, strict=True)]
            ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=int(tok.pad_token_id or 0))
            starts = torch.tensor([len(p) - 1 for p in prompts])
            if bool((starts == starts[0]).all()):
                return ids, teacher_logits[:, int(starts[0]) : int(starts[0]) + frames]
            index = (starts[:, None] + torch.arange(frames))[..., None].expand(-1, -1, teacher_logits.shape[-1])
            return ids, torch.gather(teacher_logits, 1, index)

        column = teacher_logits[..., :1]  # the same calls on one column of the logits: all but the frames' copy
        steps = {
            "loss step": loss_step,
            "ours": ours,
            "direct": direct,
            "ours index": functools.partial(ours, teacher_logits=column),
            "direct index": functools.partial(direct, teacher_logits=column),
        }
        times = rounds(steps, runs, repeats)
        ms = {step: statistics.median(values) for step, values in times.items()}
        overhead = ratio(times, "ours index", "loss step") - ratio(times, "direct index", "loss step")
        print(
            f"| {label} | {ms['loss step']:.1f} | {ms['ours']:.3f} | {ms['direct']:.3f} | {ms['ours index']:.3f} "
            f"| {ms['direct index']:.3f} | {overhead:.3%} |"
        )
    print()
    print(
        "target: overhead <= 1% of the step. Both sides copy the frames with the same torch call (a slice, or a "
        "gather of the same index); the overhead compares the two on one column of the logits, since that copy of a "
        "few hundred MiB varies by +-10% from run to run."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default=",".join(default_pair()), help="student,teacher real tokenizer names")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--identity", default="mistral_v3", help="tokenizer of the same-tokenizer case")
    parser.add_argument("--shape", default="8,512,32000", help="batch,frames,vocab of the loss step")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small batch and shapes; CI smoke test")
    args = parser.parse_args()
    shape = tuple(map(int, args.shape.split(",")))
    if args.quick:
        args.batch, args.runs, args.repeats, shape = 4, 2, 2, (2, 64, 1000)
    print("# prepare_teacher_batch: cross-family preparation and the same-tokenizer path")
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}, numpy {np.__version__}"
    )
    print(f"# times: median of {args.runs} rounds x {args.repeats} repeats (ours and peer alternate within a round)")
    print()
    cross_family(tuple(args.pair.split(",")), args.batch, args.runs, args.repeats)  # type: ignore[arg-type]
    print()
    identity(args.identity, shape, 2 if args.quick else 6, 2 if args.quick else 5)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
