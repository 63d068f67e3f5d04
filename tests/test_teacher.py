"""Tests of the trainer seam: prepare_teacher_batch and align_teacher_logits, on real tokenizer pairs."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import alignment.teacher as teacher_module
from alignment import (
    ByteVocab,
    ContentRewrittenError,
    TemplateError,
    TokenizerError,
    align_teacher_logits,
    byte_vocab,
    decode_bytes,
    end_of_turn_id,
    generalized_jsd,
    prepare_teacher_batch,
    project_logprobs,
    render,
    render_prompt,
    vocab_projection,
)
from alignment.nextbyte import END, TEMPLATE
from alignment.render import prompt_messages
from alignment.types import Chunks
from tests.tokenizers import SHARED_DIR, SYNTHETIC, available_real_names, load_real, template_kwargs

NAMES = (*available_real_names(), *SYNTHETIC)
PAIRS = list(itertools.permutations(NAMES, 2))
PAIR_IDS = [f"{a}->{b}" for a, b in PAIRS]

EXAMPLES = [
    {
        "messages": [
            {"role": "system", "content": "Answer with the number only."},
            {"role": "user", "content": "What is 1234 + 5678?"},
            {"role": "assistant", "content": "reference answer, replaced by the student's sample"},
        ]
    },
    {"messages": [{"role": "user", "content": "Reverse the word 'café'."}]},
    {"prompt": "Sort these words: pear apple fig\n", "completion": "apple fig pear"},
]
ANSWERS = ["1234 + 5678 = 6912.", "éfac ☕ done", "apple fig pear"]


def tokenizer(name: str):
    return SYNTHETIC[name]() if name in SYNTHETIC else load_real(name)


def kwargs(name: str) -> dict:
    return {} if name in SYNTHETIC else template_kwargs(name)


def sample(name: str, example: dict, answer: str, *, canonical: bool = True, close: bool = True) -> list[int]:
    """What an on-policy student would emit after its prompt: the turn's tokens through its closing token.

    Taken from the student's rendering of the whole turn, from where its template text after the generation
    prompt begins. Non-canonical samples spell the answer one character at a time.
    """
    tok = tokenizer(name)
    if example.get("messages") is not None:
        full_example = {"messages": [*prompt_messages(example), {"role": "assistant", "content": answer}]}
    else:
        full_example = {"prompt": example["prompt"], "completion": answer}
    full = render(tok, full_example, turns="last", on_dropped="ignore", **kwargs(name))
    start = full.message_spans[-1][0] - len(teacher_module._separator(tok, example, "auto", kwargs(name)).encode())
    first = int(np.flatnonzero(full.byte_offsets[:, 0] >= start)[0])
    completion = full.input_ids[first : full.end_of_turn[-1] + 1].tolist()
    if not canonical:
        body = [t for ch in answer for t in tok.encode(ch, add_special_tokens=False)]
        completion = body + completion[-1:]
    return completion if close else completion[:-1]


def prepare(student: str, teacher: str, examples: list[dict], completions: list[list[int]], **options):
    """``prepare_teacher_batch`` with the two tokenizers and their template variables (Mistral NeMo may drop the
    system prompt, as its template does)."""
    return prepare_teacher_batch(
        examples,
        completions,
        student_tokenizer=tokenizer(student),
        teacher_tokenizer=tokenizer(teacher),
        student_template_kwargs=kwargs(student),
        teacher_template_kwargs=kwargs(teacher),
        on_dropped="ignore" if teacher == "mistral_nemo" else "raise",
        **options,
    )


def build(student: str, teacher: str, *, byte_frames: bool = False, **options):
    completions = [sample(student, e, a, **options) for e, a in zip(EXAMPLES, ANSWERS, strict=True)]
    return completions, prepare(student, teacher, EXAMPLES, completions, byte_frames=byte_frames)


def read_text(name: str, completion: list[int], frame: int, example: dict) -> bytes:
    """Content bytes the student has read before predicting completion token ``frame``."""
    sep = teacher_module._separator(tokenizer(name), example, "auto", kwargs(name)).encode()
    read = decode_bytes(tokenizer(name), completion[:frame])
    if sep.startswith(read):  # still inside the template's own text
        return b""
    return read[len(sep) :] if read.startswith(sep) else read


def expect_consistent(student: str, teacher: str, completions, batch) -> None:
    frames = max(len(c) for c in completions)
    assert batch.positions.shape == batch.mask.shape == (len(EXAMPLES), frames)
    assert batch.lengths.tolist() == [len(c) for c in completions]
    logits = torch.randn(*batch.input_ids.shape, 5)
    aligned = align_teacher_logits(logits, batch)
    assert aligned.shape == (len(EXAMPLES), frames, 5)  # exactly the student's completion length
    student_logits = torch.randn(len(EXAMPLES), frames, 5)
    in_place = generalized_jsd(student_logits, logits, batch.mask, reduction="none", teacher_positions=batch.positions)
    assert torch.equal(in_place, generalized_jsd(student_logits, aligned, batch.mask, reduction="none"))
    for b, (example, completion) in enumerate(zip(EXAMPLES, completions, strict=True)):
        assert not batch.mask[b, len(completion) :].any()
        rendering = batch.renderings[b]
        start = rendering.message_spans[rendering.trained_messages[-1]][0]
        raw = rendering.text.encode()
        for k in np.flatnonzero(batch.mask[b].numpy()):
            j = int(batch.positions[b, k])
            teacher_read = raw[start : max(int(rendering.byte_offsets[j, 1]), start)]
            assert read_text(student, completion, int(k), example) == teacher_read, (b, k, j)
            torch.testing.assert_close(aligned[b, k], logits[b, j])
        # the first token carrying content is predicted from a comparable prefix unless, on either side, that
        # token also covers template text before the content (the two would not have read the same text)
        first = next(k for k in range(len(completion)) if read_text(student, completion, k + 1, example))
        sep = teacher_module._separator(tokenizer(student), example, "auto", kwargs(student)).encode()
        student_straddles = len(decode_bytes(tokenizer(student), completion[:first])) < len(sep)
        head = int(np.flatnonzero(rendering.byte_offsets[:, 1] > start)[0])
        teacher_straddles = int(rendering.byte_offsets[head, 0]) < start
        assert bool(batch.mask[b, first]) == (not student_straddles and not teacher_straddles)


def test_template_alignment_keeps_token_counts_and_logprob_lengths_consistent_vendored() -> None:
    """The seed's acceptance test on a pair every clone has: SentencePiece student, byte-level teacher."""
    completions, batch = build("mistral_v3", "smollm2")
    expect_consistent("mistral_v3", "smollm2", completions, batch)
    assert batch.aligned and batch.coverage > 0.5


@pytest.mark.integration
def test_template_alignment_keeps_token_counts_and_logprob_lengths_consistent() -> None:
    """The seed's acceptance test: a Llama 3 student and a Qwen3 teacher."""
    completions, batch = build("llama3", "qwen3")
    expect_consistent("llama3", "qwen3", completions, batch)
    assert "<|im_start|>assistant\n" in batch.renderings[0].text  # the teacher reads its own template
    assert "<|start_header_id|>" not in batch.renderings[0].text
    assert batch.coverage > 0.9  # every Llama token ends where some Qwen token ends on these answers


@pytest.mark.parametrize(("student", "teacher"), PAIRS, ids=PAIR_IDS)
def test_every_pair_keeps_lengths_and_byte_ends_consistent(student: str, teacher: str) -> None:
    completions, batch = build(student, teacher)
    expect_consistent(student, teacher, completions, batch)


@pytest.mark.parametrize(("student", "teacher"), [("mistral_v3", "smollm2"), ("smollm2", "phi3")], ids=str)
def test_non_canonical_samples_align_too(student: str, teacher: str) -> None:
    completions, batch = build(student, teacher, canonical=False)
    expect_consistent(student, teacher, completions, batch)


def test_an_unfinished_sample_cut_inside_a_character_is_compared_up_to_the_cut() -> None:
    tok = tokenizer("smollm2")
    example = {"prompt": "Say coffee: ", "completion": "x"}
    ids = tok.encode("☕☕", add_special_tokens=False)
    cut = ids[:-1]  # ends inside the second ☕
    assert decode_bytes(tok, cut).endswith(b"\xe2\x98") or len(decode_bytes(tok, cut)) % 3 != 0
    batch = prepare_teacher_batch([example], [cut], student_tokenizer=tok, teacher_tokenizer=tokenizer("mistral_v3"))
    rendering = batch.renderings[0]
    content = rendering.text.encode()[slice(*rendering.message_spans[rendering.trained_messages[-1]])]
    assert content == "☕".encode()
    assert batch.mask[0, 0] and not batch.mask[0, len(cut) - 1]


def test_the_token_holding_the_first_invalid_byte_ends_the_compared_text() -> None:
    # SmolLM2's token " \xe2\x80" begins a character that the next token does not finish. The content ends before that
    # token, not at the bad byte: clipped to "Hi ", the token would end where Mistral's space ends, and the frame
    # after it, which has read the bad bytes, would be compared with a teacher that read "Hi " only
    student, teacher = tokenizer("smollm2"), tokenizer("mistral_v3")
    head = student.encode("Hi", add_special_tokens=False)
    straddling = student.convert_tokens_to_ids("ĠâĢ")
    assert decode_bytes(student, [straddling]) == b" \xe2\x80"
    tail = student.encode("x there", add_special_tokens=False)
    completion = [*head, straddling, *tail, end_of_turn_id(student)]
    batch = prepare_teacher_batch([EXAMPLES[1]], [completion], student_tokenizer=student, teacher_tokenizer=teacher)
    rendering = batch.renderings[0]
    assert rendering.text.encode()[slice(*rendering.message_spans[rendering.trained_messages[-1]])] == b"Hi"
    assert batch.mask[0, len(head)]  # predicts the bad token from "Hi", as the teacher reads "Hi"
    assert not batch.mask[0, len(head) + 1 :].any()
    expect_same_text_read("smollm2", [EXAMPLES[1]], [completion], batch)


def test_a_character_split_before_the_token_holding_the_bad_byte_is_not_compared_either() -> None:
    # "\xd8" + "\x8d\xf0\x9f" + "\xf0\x9f" ...: the first bad byte is the \xf0 at byte 2, whose character the next
    # \xf0 cuts short; the token holding it also finishes the character "\xd8" begins, so the content ends before both
    student, teacher = tokenizer("synthetic_bytebpe"), tokenizer("smollm2")
    completion = [152, 422, 268, 251, 228, end_of_turn_id(student)]
    assert [decode_bytes(student, [t]) for t in completion[:3]] == [b"\xd8", b"\x8d\xf0\x9f", b"\xf0\x9f"]
    batch = prepare_teacher_batch([EXAMPLES[1]], [completion], student_tokenizer=student, teacher_tokenizer=teacher)
    assert not batch.mask[0].any()  # an empty, unfinished sample: nothing to compare


@pytest.mark.integration
def test_a_blank_sample_whose_first_token_holds_the_separator_too_is_masked() -> None:
    # Phi-3 in the completion format writes "  " after "Assistant:": the format's space and one of content, in one
    # token. Llama 3's template trims that content to nothing, and the student's token straddles its start: nothing
    # is compared (this raised an IndexError while the chunks were built)
    student, teacher = tokenizer("phi3"), tokenizer("llama3")
    completion = [259]
    assert decode_bytes(student, completion) == b"  "
    batch = prepare_teacher_batch(
        [EXAMPLES[1]],
        [completion],
        student_tokenizer=student,
        teacher_tokenizer=teacher,
        teacher_template_kwargs=kwargs("llama3"),
        student_mode="completion",
    )
    rendering = batch.renderings[0]
    span = rendering.message_spans[rendering.trained_messages[-1]]
    assert span[0] == span[1] and rendering.text.endswith("\n\n<|eot_id|>")  # the teacher read an empty turn
    assert not batch.mask.any() and (batch.student_chunks == -1).all()


@pytest.mark.integration
def test_a_sample_the_teacher_template_rewrites_is_refused_by_its_example() -> None:
    # Qwen3's template reads the "</think>" a student wrote as the end of its reasoning and moves the text before it
    # into its think block: the sample cannot be located, and the batch names it rather than mask it silently
    student = tokenizer("llama3")
    rewritten = [*student.encode("I think</think>It is 4.", add_special_tokens=False), end_of_turn_id(student)]
    completions = [sample("llama3", EXAMPLES[1], "ok"), rewritten]
    with pytest.raises(ContentRewrittenError, match=r"^example 1: .* does not appear verbatim"):
        prepare("llama3", "qwen3", [EXAMPLES[1], EXAMPLES[1]], completions)


def test_chunk_ids_leave_out_a_chunk_that_one_side_holds_no_token_of() -> None:
    # the first chunk holds the student's completion token 0 (offsets index 1) and no teacher token
    spans = np.array([[0, 0], [0, 5]], dtype=np.int64)
    student = np.array([[1, 2], [2, 4]], dtype=np.int64)
    teacher = np.array([[0, 0], [0, 3]], dtype=np.int64)
    chunks = Chunks(student=student, teacher=teacher, byte_spans=spans)
    one_row = (np.array([0]), 3), (np.array([0]), 4)
    student_ids, teacher_ids = teacher_module._chunk_ids(chunks, np.array([2]), *one_row)
    assert student_ids.tolist() == [-1, 0, 0] and teacher_ids.tolist() == [0, 0, 0, -1]


def test_chunk_ids_of_a_batch_are_numbered_within_each_row() -> None:
    # row 0: the chunks of the test above, in 3 frames and 4 teacher tokens; row 1 (from frame 3 and teacher token 4):
    # two chunks of one completion token and one teacher token each, in 3 frames and 2 teacher tokens
    student = np.array([[1, 2], [2, 4], [0, 2], [2, 3]], dtype=np.int64)
    teacher = np.array([[0, 0], [0, 3], [0, 1], [1, 2]], dtype=np.int64)
    chunks = Chunks(student=student, teacher=teacher, byte_spans=np.zeros((4, 2), dtype=np.int64))
    layouts = (np.array([0, 3]), 6), (np.array([0, 4]), 6)
    student_ids, teacher_ids = teacher_module._chunk_ids(chunks, np.array([2, 2]), *layouts)
    assert student_ids.tolist() == [-1, 0, 0, 0, 1, -1]
    assert teacher_ids.tolist() == [0, 0, 0, -1, 0, 1]


MODES = [("auto", "auto"), ("completion", "auto"), ("auto", "completion")]  # the student's and the teacher's


def random_sample(name: str, example: dict, rng: np.random.Generator, mode: str = "auto") -> list[int]:
    """What an untrained student might sample: pieces of text with spaces, newlines, accents, emoji, CJK and markup,
    ids drawn from the whole vocabulary (control tokens, byte pieces that leave a character unfinished), with or
    without the template's own text first (in the student's ``mode``) and the closing token last, sometimes with more
    after it."""
    tok = tokenizer(name)
    texts = ["Hello world", " é", "☕", "日本語", "a\n\nb", "  ", "\n", "e\u0301", "🙂🙂", "</s>", "\t", "  two"]
    separator = teacher_module._separator(tok, example, mode, kwargs(name))
    ids: list[int] = tok.encode(separator, add_special_tokens=False) if separator and rng.random() < 0.5 else []
    for _ in range(int(rng.integers(0, 12))):
        ids += tok.encode(str(rng.choice(texts)), add_special_tokens=False) if rng.random() < 0.5 else []
        ids += [int(rng.integers(len(tok)))] if rng.random() < 0.5 else []
    ids += [int(rng.choice(sorted(teacher_module._closing_ids(tok))))] if rng.random() < 0.7 else []
    ids += [int(i) for i in rng.integers(len(tok), size=3)] if rng.random() < 0.1 else []
    return ids


def expect_same_text_read(
    student: str, examples: list[dict], completions: list[list[int]], batch, mode: str = "auto"
) -> None:
    """Every compared frame has read the same content as the teacher at its position: the student's bytes after the
    template's text, less the leading whitespace the teacher's template trimmed (a trailing run it trimmed may stay
    on the student's side at the end)."""
    tok = tokenizer(student)
    for b, (example, completion) in enumerate(zip(examples, completions, strict=True)):
        rendering = batch.renderings[b]
        if not rendering.trained_messages:
            assert not batch.mask[b].any()
            continue
        message = rendering.trained_messages[-1]
        (low, high), (lead, trail) = rendering.message_spans[message], rendering.trimmed[message]
        raw = rendering.text.encode()
        separator = teacher_module._separator(tok, example, mode, kwargs(student)).encode()
        skip = len(separator) if separator and decode_bytes(tok, completion).startswith(separator) else 0
        for k in np.flatnonzero(batch.mask[b].numpy()).tolist():
            read = decode_bytes(tok, completion[:k])[skip + lead :]
            teacher_read = raw[low : max(int(rendering.byte_offsets[int(batch.positions[b, k]), 1]), low)]
            trimmed_tail = trail and teacher_read == raw[low:high] and not read[high - low :].strip()
            assert read == teacher_read or (trimmed_tail and read.startswith(teacher_read)), (b, k, completion)


@pytest.mark.parametrize("modes", MODES, ids=str)
@pytest.mark.parametrize(("student", "teacher"), PAIRS, ids=PAIR_IDS)
def test_random_samples_are_compared_only_where_both_read_the_same_text(
    student: str, teacher: str, modes: tuple[str, str]
) -> None:
    rng = np.random.default_rng([PAIRS.index((student, teacher)), MODES.index(modes)])
    examples = [EXAMPLES[k % len(EXAMPLES)] for k in range(6)]
    completions = [random_sample(student, example, rng, modes[0]) for example in examples]
    if teacher == "qwen3":  # its template reads a "</think>" in the answer as the end of reasoning and rewrites it
        kept = [b"</think>" not in decode_bytes(tokenizer(student), c) for c in completions]
        examples = [e for e, keep in zip(examples, kept, strict=True) if keep]
        completions = [c for c, keep in zip(completions, kept, strict=True) if keep]
    options = {"student_mode": modes[0], "teacher_mode": modes[1], "byte_frames": True}
    batch = prepare(student, teacher, examples, completions, **options)
    expect_same_text_read(student, examples, completions, batch, modes[0])
    expect_byte_entries_point_at_their_bytes(student, teacher, completions, batch)


@functools.cache
def vocab_of(name: str) -> ByteVocab:
    return byte_vocab(tokenizer(name))


def expect_byte_entries_point_at_their_bytes(student: str, teacher: str, completions: list[list[int]], batch) -> None:
    """Each byte entry reads, on each side, a token that begins with the prefix read and then the target byte (or
    that ends the turn, for END; a token-end entry reads the student's whole token), and the content bytes the
    entries ask for are the teacher's content, in order, less those a side's token does not spell (a normaliser
    rewrote them). Entries of the student's own template text are not checked on the student's side: a student that
    left that text out is asked to write it."""
    frames, s_vocab, t_vocab = batch.byte_frames, vocab_of(student), vocab_of(teacher)
    for n in range(len(frames)):
        b, target, position = int(frames.rows[n]), int(frames.targets[n]), int(frames.teacher_positions[n])
        s_token = completions[b][int(frames.student_frames[n])]
        s_prefix, t_prefix = frames.student_prefixes[n], frames.teacher_prefixes[n]
        if position == TEMPLATE:
            assert t_prefix == b"" and target != END, n
            continue
        t_token = int(batch.input_ids[b, position + 1])
        if target == END:
            assert t_token in t_vocab.ends and t_prefix == b"", n
        else:
            assert t_vocab.token_bytes[t_token].startswith(t_prefix + bytes([target])), n
        if frames.token_ends[n]:
            assert s_prefix == s_vocab.token_bytes[s_token], n
        elif target == END:
            assert s_token in s_vocab.ends and s_prefix == b"", n
        else:
            assert s_vocab.token_bytes[s_token].startswith(s_prefix + bytes([target])), n
    for b, rendering in enumerate(batch.renderings):
        if rendering.trained_messages:
            start, stop = rendering.message_spans[rendering.trained_messages[-1]]
            asked = (frames.rows == b) & ~frames.token_ends & (frames.teacher_positions != TEMPLATE)
            content = iter(rendering.text.encode()[start:stop])
            assert all(target in content for target in frames.targets[asked].tolist() if target != END), b


CLOSED_AT_ONCE = [
    ("smollm2", "phi3"),
    ("mistral_v3", "smollm2"),
    ("gpt2", "phi3"),
    ("synthetic_sp", "synthetic_bytebpe"),
]


@pytest.mark.parametrize(("student_name", "teacher_name"), CLOSED_AT_ONCE, ids=[f"{a}->{b}" for a, b in CLOSED_AT_ONCE])
def test_a_sample_closed_at_once_asks_the_teacher_whether_it_stops_there(student_name: str, teacher_name: str) -> None:
    # a student that answers nothing must still hear that the teacher would not stop there: the frame that
    # predicts its end of turn is compared with the teacher's last position before the (empty) content
    student, teacher = tokenizer(student_name), tokenizer(teacher_name)
    example = EXAMPLES[1]
    closer = end_of_turn_id(student) if student_name != "gpt2" else student.eos_token_id
    batch = prepare_teacher_batch(
        [example, example],
        [[closer], sample(student_name, example, "ok")],
        student_tokenizer=student,
        teacher_tokenizer=teacher,
        byte_frames=True,
    )
    rendering = batch.renderings[0]
    span = rendering.message_spans[rendering.trained_messages[-1]]
    assert span is not None and span[0] == span[1]  # the teacher read an empty turn
    before = int(np.searchsorted(rendering.byte_offsets[:, 1], span[0], side="right")) - 1
    assert batch.mask[0, :1].tolist() == [True] and not batch.mask[0, 1:].any()
    assert int(batch.positions[0, 0]) == before and rendering.end_of_turn[-1] == before + 1  # its next token closes
    assert batch.input_ids[0, : len(rendering.input_ids)].tolist() == rendering.input_ids.tolist()
    frames = batch.byte_frames
    assert frames is not None
    ours = frames.rows == 0
    end = ours & (frames.targets == END)
    assert frames.student_frames[end].tolist() == [0] and frames.teacher_positions[end].tolist() == [before]
    assert not (ours & ~end & (frames.teacher_positions != TEMPLATE)).any()  # nothing else but the student's template


@pytest.mark.parametrize("teacher_name", ["mistral_v3", "gpt2", "synthetic_sp"], ids=str)
def test_a_sample_closed_at_once_is_masked_where_the_teacher_cannot_read_an_empty_turn(teacher_name: str) -> None:
    # Mistral v3's template refuses an empty assistant turn; GPT-2 (completion format) and the SentencePiece
    # synthetic one would read it after a lone space, which an answer's first token always absorbs
    student, teacher = tokenizer("smollm2"), tokenizer(teacher_name)
    example = EXAMPLES[1]
    batch = prepare_teacher_batch(
        [example, example],
        [[end_of_turn_id(student)], sample("smollm2", example, "ok")],
        student_tokenizer=student,
        teacher_tokenizer=teacher,
    )
    assert not batch.mask[0].any() and batch.mask[1].any()
    prompt = render_prompt(teacher, example)
    assert batch.input_ids[0, : len(prompt.input_ids)].tolist() == prompt.input_ids.tolist()


def test_an_unfinished_empty_sample_has_nothing_compared() -> None:
    student, teacher = tokenizer("smollm2"), tokenizer("phi3")
    batch = prepare_teacher_batch([EXAMPLES[1]], [[]], student_tokenizer=student, teacher_tokenizer=teacher)
    assert batch.mask.shape[1] == 0 and int(batch.lengths[0]) == 0


@pytest.mark.parametrize("name", ["smollm2", "mistral_v3"], ids=str)
def test_identity_path_returns_the_students_ids_and_the_plain_loss(name: str, monkeypatch) -> None:
    tok = tokenizer(name)
    prompts = [render_prompt(tok, e).input_ids for e in EXAMPLES]
    completions = [sample(name, e, a) for e, a in zip(EXAMPLES, ANSWERS, strict=True)]
    monkeypatch.setattr(teacher_module, "render", None)  # no re-rendering and no tokenization may happen
    monkeypatch.setattr(teacher_module, "render_prompt", None)
    monkeypatch.setattr(teacher_module, "render_each", None)
    for flag in (False, True):  # flag off, or the same tokenizer on both sides
        batch = prepare_teacher_batch(
            EXAMPLES,
            completions,
            student_tokenizer=tok,
            teacher_tokenizer=tok,
            align_teacher_template=flag,
            prompt_ids=prompts,
        )
        assert not batch.aligned and batch.renderings == ()
        for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            n = len(p) + len(c)
            assert batch.input_ids[b, :n].tolist() == [*p.tolist(), *c]
            assert batch.positions[b, : len(c)].tolist() == list(range(len(p) - 1, n - 1))
        # the loss through the seam equals the plain same-vocabulary loss on the student's own positions
        gen = torch.Generator().manual_seed(0)
        student_logits = torch.randn(*batch.input_ids.shape, 11, generator=gen)
        teacher_logits = torch.randn(*batch.input_ids.shape, 11, generator=gen)
        frames = batch.positions  # the student's logits predicting each completion token sit at the same places
        student_frames = torch.gather(student_logits, 1, frames[..., None].expand(-1, -1, 11))
        aligned = align_teacher_logits(teacher_logits, batch)
        seam = generalized_jsd(student_frames, aligned, batch.mask, reduction="none")
        for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            rows = slice(len(p) - 1, len(p) - 1 + len(c))
            plain = generalized_jsd(student_logits[b, rows], teacher_logits[b, rows], reduction="none")
            assert torch.equal(seam[b, : len(c)], plain)
        mean = generalized_jsd(student_frames, aligned, batch.mask)
        torch.testing.assert_close(mean, seam.sum() / sum(len(c) for c in completions), rtol=1e-6, atol=0)


def test_flag_off_with_different_tokenizers_is_refused() -> None:
    with pytest.raises(TokenizerError, match="align_teacher_template=True"):
        prepare_teacher_batch(
            EXAMPLES[:1],
            [[1, 2]],
            student_tokenizer=tokenizer("smollm2"),
            teacher_tokenizer=tokenizer("phi3"),
            align_teacher_template=False,
        )


def test_an_id_outside_the_vocabulary_is_named_in_its_own_example() -> None:
    student, teacher = tokenizer("smollm2"), tokenizer("mistral_v3")
    completions = [student.encode("Fine.", add_special_tokens=False), [1, 10**7]]
    with pytest.raises(TokenizerError, match=r"^example 1: ids\[1\] = 10000000 is outside the vocabulary"):
        prepare_teacher_batch(EXAMPLES[:2], completions, student_tokenizer=student, teacher_tokenizer=teacher)


def test_bad_inputs_are_refused() -> None:
    student, teacher = tokenizer("smollm2"), tokenizer("mistral_v3")
    with pytest.raises(ValueError, match="one entry per example"):
        prepare_teacher_batch(EXAMPLES, [[1]], student_tokenizer=student, teacher_tokenizer=teacher)
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        prepare_teacher_batch(EXAMPLES[:1], [[10**7]], student_tokenizer=student, teacher_tokenizer=teacher)
    _, batch = build("smollm2", "mistral_v3")
    short = torch.zeros(len(EXAMPLES), batch.input_ids.shape[1] - 1, 4)
    with pytest.raises(ValueError, match=r"S >= \d+"):
        align_teacher_logits(short, batch)
    with pytest.raises(ValueError, match="B = 3"):
        align_teacher_logits(torch.zeros(2, batch.input_ids.shape[1], 4), batch)


@settings(deadline=None)
@given(parts=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4)), max_size=10), tail=st.integers(0, 3))
def test_label_ranges_marks_each_range_and_nothing_else(parts: list[tuple[int, int]], tail: int) -> None:
    # disjoint, increasing, non-empty ranges, each after a gap of 0 or more (a chunk right after the one before)
    lows, highs, cursor = [], [], 0
    for gap, length in parts:
        lows.append(cursor + gap)
        highs.append(cursor + gap + length)
        cursor = highs[-1]
    size = cursor + tail
    expected = [-1] * size
    for k, (low, high) in enumerate(zip(lows, highs, strict=True)):
        expected[low:high] = [k] * (high - low)
    bounds = np.array(lows, dtype=np.int64), np.array(highs, dtype=np.int64)
    labels = teacher_module._label_ranges(size, *bounds, np.arange(len(lows)))
    assert labels.dtype == np.int64 and labels.tolist() == expected


def test_chunks_hold_the_same_text_on_both_sides() -> None:
    completions, batch = build("mistral_v3", "smollm2")
    student, teacher = tokenizer("mistral_v3"), tokenizer("smollm2")
    for b, completion in enumerate(completions):
        rendering = batch.renderings[b]
        content = rendering.message_spans[rendering.trained_messages[-1]]
        raw = rendering.text.encode()
        for g in range(int(batch.student_chunks[b].max()) + 1):
            s_ids = [completion[k] for k in np.flatnonzero(batch.student_chunks[b].numpy() == g)]
            t_idx = np.flatnonzero(batch.teacher_chunks[b].numpy() == g)
            if end_of_turn_id(student) in s_ids:
                assert [int(batch.input_ids[b, j]) for j in t_idx] == [end_of_turn_id(teacher)]
                continue
            t_bytes = b"".join(
                raw[max(int(rendering.byte_offsets[j, 0]), content[0]) : int(rendering.byte_offsets[j, 1])]
                for j in t_idx
            )
            assert decode_bytes(student, s_ids).lstrip(b" ") == t_bytes.lstrip(b" ")


def test_projected_loss_runs_end_to_end_with_gradients() -> None:
    student, teacher = tokenizer("mistral_v3"), tokenizer("smollm2")
    _, batch = build("mistral_v3", "smollm2")
    projection = vocab_projection(student, teacher)
    student_logits = torch.randn(batch.mask.shape[0], batch.mask.shape[1], len(student), requires_grad=True)
    teacher_logits = torch.randn(*batch.input_ids.shape, len(teacher))
    s, t = project_logprobs(student_logits, align_teacher_logits(teacher_logits, batch), projection)
    loss = generalized_jsd(s, t, batch.mask, beta=0.5)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert student_logits.grad is not None and torch.isfinite(student_logits.grad).all()
    assert (student_logits.grad[~batch.mask] == 0).all()
    # in one call, reading the teacher's rows through the batch's positions: the same value and gradient
    one_call = generalized_jsd(
        student_logits, align_teacher_logits(teacher_logits, batch), batch.mask, beta=0.5, projection=projection
    )
    (expected,) = torch.autograd.grad(one_call, student_logits)
    in_place = generalized_jsd(
        student_logits, teacher_logits, batch.mask, beta=0.5, projection=projection, teacher_positions=batch.positions
    )
    assert torch.equal(in_place, one_call)
    assert torch.equal(torch.autograd.grad(in_place, student_logits)[0], expected)


@pytest.mark.integration
def test_a_teacher_template_that_drops_the_system_prompt_is_refused_unless_accepted() -> None:
    completions = [sample("llama3", EXAMPLES[0], ANSWERS[0])]
    options = {
        "student_tokenizer": load_real("llama3"),
        "teacher_tokenizer": load_real("mistral_nemo"),
        "student_template_kwargs": template_kwargs("llama3"),
    }
    with pytest.raises(ContentRewrittenError, match="dropped message"):
        prepare_teacher_batch(EXAMPLES[:1], completions, **options)
    assert (
        "Answer with the number only."
        not in prepare_teacher_batch(EXAMPLES[:1], completions, on_dropped="ignore", **options).renderings[0].text
    )


@pytest.mark.integration
def test_qwen3_student_think_block_is_not_compared() -> None:
    completions, batch = build("qwen3", "llama3")
    think = load_real("qwen3").encode("<think>\n\n</think>\n\n", add_special_tokens=False)
    assert completions[1][: len(think)] == think
    assert not batch.mask[1, 1 : len(think)].any() and batch.mask[1, len(think)]
    assert SHARED_DIR.is_dir()


@pytest.mark.integration
def test_a_whitespace_sample_the_teacher_template_trims_away_is_compared_where_both_read_the_same() -> None:
    student, teacher = load_real("llama3"), load_real("qwen3")
    example = EXAMPLES[1]
    newline = [*student.encode("\n", add_special_tokens=False), end_of_turn_id(student)]
    batch = prepare_teacher_batch(
        [example, example],
        [newline, sample("llama3", example, "ok")],
        student_tokenizer=student,
        teacher_tokenizer=teacher,
        student_template_kwargs=template_kwargs("llama3"),
    )
    # Qwen3 strips the newline, so the teacher reads an empty turn: the student's first frame (it has read the
    # prompt, as the teacher has) is compared with the teacher's last position before the content; the frame after
    # the newline, which the teacher never reads, is not
    rendering = batch.renderings[0]
    span = rendering.message_spans[rendering.trained_messages[-1]]
    assert span is not None and span[0] == span[1]
    assert batch.mask[0].tolist() == [True, False] and batch.mask[1].any()
    assert int(batch.positions[0, 0]) + 1 == rendering.end_of_turn[-1]


@pytest.mark.integration
def test_a_qwen3_student_that_writes_its_think_block_and_stops_is_compared_where_it_stops() -> None:
    student, teacher = load_real("qwen3"), load_real("llama3")
    think = student.encode("<think>\n\n</think>\n\n", add_special_tokens=False)
    batch = prepare_teacher_batch(
        [EXAMPLES[1]],
        [[*think, end_of_turn_id(student)]],
        student_tokenizer=student,
        teacher_tokenizer=teacher,
        teacher_template_kwargs=template_kwargs("llama3"),
    )
    assert batch.mask[0].nonzero().flatten().tolist() == [len(think)]  # only the frame predicting the end of turn
    assert int(batch.positions[0, len(think)]) + 1 == batch.renderings[0].end_of_turn[-1]


@pytest.mark.integration
def test_a_sample_framed_by_newlines_is_compared_on_what_the_teacher_template_keeps() -> None:
    # Qwen3 strips the newlines in front of the last assistant turn but keeps a trailing one: the frame that predicts
    # the student's leading newline has no teacher counterpart (masked); every later one is compared
    student, teacher = load_real("llama3"), load_real("qwen3")
    example = EXAMPLES[1]
    completion = [*student.encode("\n 42 apples\n", add_special_tokens=False), end_of_turn_id(student)]
    batch = prepare_teacher_batch(
        [example],
        [completion],
        student_tokenizer=student,
        teacher_tokenizer=teacher,
        student_template_kwargs=template_kwargs("llama3"),
        byte_frames=True,
    )
    assert batch.renderings[0].trimmed[-1] == (1, 0)
    assert [student.decode([t]) for t in completion[:3]] == ["\n", " ", "42"]
    assert batch.mask[0].tolist() == [False] + [True] * (len(completion) - 1)
    frames = batch.byte_frames
    assert bytes(frames.targets[(frames.targets < 256) & ~frames.token_ends].astype(np.uint8)) == b" 42 apples\n"
    assert frames.targets[frames.token_ends].tolist() == [*b"4 \n", END]  # after " ", "42", " apples" and "\n"


def test_the_first_failing_example_raises_as_it_would_alone() -> None:
    # the batch is rendered and tokenized in one go, but errors surface in the order of the examples
    student, teacher = tokenizer("smollm2"), tokenizer("mistral_v3")
    fine = (EXAMPLES[1], sample("smollm2", EXAMPLES[1], ANSWERS[1]))
    assistant_first = {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}
    rejected = (assistant_first, sample("smollm2", EXAMPLES[1], ANSWERS[1]))  # Mistral's template refuses it
    unknown_id = (EXAMPLES[1], [len(student) + 5])  # outside the student's vocabulary
    for batch, error in [([fine, rejected, unknown_id], TemplateError), ([fine, unknown_id, rejected], TokenizerError)]:
        with pytest.raises(error, match=r"^example 1: "):  # named, as align_spans_batch names it
            prepare_teacher_batch(
                [e for e, _ in batch], [c for _, c in batch], student_tokenizer=student, teacher_tokenizer=teacher
            )
    # the same on the identity path: the prompt of example 2 is refused when it is rendered for the ids
    examples = [EXAMPLES[1], EXAMPLES[1], assistant_first]
    with pytest.raises(TemplateError, match=r"^example 2: the chat template of .* rejected the conversation"):
        prepare_teacher_batch(examples, [[1], [1], [1]], student_tokenizer=teacher, teacher_tokenizer=teacher)


def test_align_teacher_logits_is_a_view_when_every_frame_sits_at_one_offset() -> None:
    """Prompts of one length on the identity path: the slice a trainer would take, not a copy; else a gather."""
    tok = tokenizer("smollm2")
    completions = [[10, 11, 12], [13, 14], [15, 16, 17]]
    for prompts, view in (([[1, 2], [3, 4], [5, 6]], True), ([[1, 2], [3], [5, 6, 7]], False)):
        batch = prepare_teacher_batch(
            [{"prompt": "x", "completion": "y"}] * 3,
            completions,
            student_tokenizer=tok,
            teacher_tokenizer=tok,
            prompt_ids=prompts,
        )
        logits = torch.randn(*batch.input_ids.shape, 7)
        aligned = align_teacher_logits(logits, batch)
        assert (aligned._base is logits) == view
        for b, completion in enumerate(completions):
            for k in range(len(completion)):
                torch.testing.assert_close(aligned[b, k], logits[b, len(prompts[b]) - 1 + k])
