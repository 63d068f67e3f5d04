"""Tests for :mod:`alignment.vocab`: ``vocab_map`` (byte-identical token pairs) and ``end_of_turn_id``.

Goldens on the vendored tokenizers; properties for every ordered pair of available tokenizers (real and synthetic)
against a reference computed here from the raw vocabulary pieces (``tests.test_spans.reference``), independently of
the package: every row is byte-identical, no row holds a control token, and no pair is missing.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from alignment.types import VocabMap
from alignment.vocab import end_of_turn_id, vocab_map
from tests.test_spans import CONTROL, NAMES, get_tokenizer, reference
from tests.tokenizers import SYNTHETIC, VENDORED

# The token that closes an assistant turn, by the family's chat template (no template: the EOS token).
END_OF_TURN = CONTROL
SMALL = tuple(n for n in NAMES if n in VENDORED or n in SYNTHETIC)  # quick enough for a literal set reference
SPECIAL_ROLES = ("bos", "eos", "end_of_turn")


@functools.cache
def mapped(student: str, teacher: str) -> VocabMap:
    return vocab_map(get_tokenizer(student), get_tokenizer(teacher))


_CODES: dict[bytes, int] = {}


@functools.cache
def codes(name: str) -> np.ndarray:
    """``(V,)`` int64: one shared integer per distinct byte string across all tokenizers; -1 for control/empty."""
    ref = reference(name)
    return np.fromiter(
        (
            -1 if control or not data else _CODES.setdefault(data, len(_CODES))
            for data, control in zip(ref.token_bytes, ref.is_control, strict=True)
        ),
        dtype=np.int64,
        count=len(ref.token_bytes),
    )


def teachers_of(vm: VocabMap, student_id: int) -> set[int]:
    return set(vm.pairs[vm.pairs[:, 0] == student_id, 1].tolist())


def students_of(vm: VocabMap, teacher_id: int) -> set[int]:
    return set(vm.pairs[vm.pairs[:, 1] == teacher_id, 0].tolist())


# --- end_of_turn_id ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_end_of_turn_id(name: str) -> None:
    tok = get_tokenizer(name)
    index = end_of_turn_id(tok)
    assert isinstance(index, int)
    assert tok.convert_ids_to_tokens(index) == END_OF_TURN[name]
    assert reference(name).is_control[index]


def test_end_of_turn_without_template_is_eos() -> None:
    tok = get_tokenizer("gpt2")
    assert not tok.chat_template
    assert end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|endoftext|>") == 50256


# --- tier 1: goldens --------------------------------------------------------------------------------------------------


def test_golden_pairs_mistral_to_smollm2() -> None:
    student, teacher = get_tokenizer("mistral_v3"), get_tokenizer("smollm2")
    s, t = student.convert_tokens_to_ids, teacher.convert_tokens_to_ids
    vm = mapped("mistral_v3", "smollm2")
    assert teachers_of(vm, s("▁the")) == {t("Ġthe")}  # " the": ▁ and Ġ both spell the space byte
    assert teachers_of(vm, s("▁")) == {t("Ġ")}
    assert teachers_of(vm, s("<0xE2>")) == {t("â")}  # the lone byte 0xE2: byte fallback vs byte-level
    assert teachers_of(vm, s("<0x0A>")) == {t("Ċ")}  # newline
    assert students_of(vm, t("A")) == {s("A"), s("<0x41>")}  # one byte string twice in the student vocabulary
    assert students_of(vm, t("the")) == {s("the")}
    assert teachers_of(vm, s("é")) == {t("Ã©")}  # U+00E9 = C3 A9
    assert students_of(vm, t("Ã")) == {s("<0xC3>")}  # the lone byte C3, not the character Ã (C3 83)
    for control in ("<s>", "</s>", "[INST]", "[/INST]"):
        assert teachers_of(vm, s(control)) == set()
    for control in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert students_of(vm, t(control)) == set()


def test_golden_special_pairs_by_role() -> None:
    student, teacher = get_tokenizer("mistral_v3"), get_tokenizer("smollm2")
    s, t = student.convert_tokens_to_ids, teacher.convert_tokens_to_ids
    vm = mapped("mistral_v3", "smollm2")
    assert vm.special_roles == SPECIAL_ROLES
    assert vm.special_pairs.tolist() == [
        [s("<s>"), t("<|im_start|>")],  # SmolLM2 declares <|im_start|> as its BOS
        [s("</s>"), t("<|im_end|>")],
        [s("</s>"), t("<|im_end|>")],
    ]
    gpt2 = get_tokenizer("gpt2")
    vm = mapped("mistral_v3", "gpt2")
    assert vm.special_roles == SPECIAL_ROLES
    assert vm.special_pairs.tolist() == [[s("<s>"), 50256], [s("</s>"), 50256], [s("</s>"), 50256]]
    assert gpt2.convert_ids_to_tokens(50256) == "<|endoftext|>"


@pytest.mark.integration
def test_golden_special_pairs_without_bos() -> None:
    llama, qwen = get_tokenizer("llama3"), get_tokenizer("qwen3")
    vm = mapped("llama3", "qwen3")
    assert qwen.bos_token_id is None
    assert vm.special_roles == ("eos", "end_of_turn")
    assert [llama.convert_ids_to_tokens(r) for r in vm.special_pairs[:, 0].tolist()] == [
        "<|end_of_text|>",
        "<|eot_id|>",
    ]
    assert [qwen.convert_ids_to_tokens(r) for r in vm.special_pairs[:, 1].tolist()] == ["<|im_end|>", "<|im_end|>"]


@pytest.mark.integration
def test_golden_pairs_across_families() -> None:
    gemma, qwen, llama = get_tokenizer("gemma3"), get_tokenizer("qwen3"), get_tokenizer("llama3")
    g, q = gemma.convert_tokens_to_ids, qwen.convert_tokens_to_ids
    vm = mapped("gemma3", "qwen3")
    assert teachers_of(vm, g("▁the")) == {q("Ġthe")}
    assert teachers_of(vm, g("☕")) == {q("âĺķ")}  # one piece each for E2 98 95
    assert teachers_of(vm, g("<end_of_turn>")) == set()
    assert llama.convert_tokens_to_ids("âĺķ") is None  # Llama 3 has no single token for ☕
    assert teachers_of(mapped("gemma3", "llama3"), g("☕")) == set()


def test_result_type() -> None:
    vm = mapped("mistral_v3", "smollm2")
    assert vm.student_size == 32768 and vm.teacher_size == 49152
    for array in (vm.pairs, vm.special_pairs):
        assert array.dtype == np.int64 and array.ndim == 2 and array.shape[1] == 2
        assert not array.flags.writeable
    with pytest.raises(AttributeError):
        vm.pairs = vm.pairs  # type: ignore[misc]


# --- tier 2: properties for every ordered pair ------------------------------------------------------------------------

PAIRS = [pytest.param(s, t, id=f"{s}->{t}") for s, t in itertools.product(NAMES, NAMES)]


@pytest.mark.parametrize(("student", "teacher"), PAIRS)
def test_pairs_are_exactly_the_byte_identical_ordinary_tokens(student: str, teacher: str) -> None:
    vm = mapped(student, teacher)
    s_codes, t_codes = codes(student), codes(teacher)
    pairs = vm.pairs
    assert vm.student_size == len(s_codes) and vm.teacher_size == len(t_codes)
    # sorted by student id, then teacher id, without repeats
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    assert (order == np.arange(len(pairs))).all()
    assert len(np.unique(pairs[:, 0] * len(t_codes) + pairs[:, 1])) == len(pairs)
    # every row: both tokens ordinary (not control, not empty) and spelling the same bytes
    assert (s_codes[pairs[:, 0]] >= 0).all() and (t_codes[pairs[:, 1]] >= 0).all()
    mismatch = np.flatnonzero(s_codes[pairs[:, 0]] != t_codes[pairs[:, 1]])
    assert len(mismatch) == 0, pairs[mismatch[:5]].tolist()
    # complete: as many distinct rows as the reference has (sum over byte strings of the two multiplicities)
    size = int(max(s_codes.max(), t_codes.max())) + 1
    s_count = np.bincount(s_codes[s_codes >= 0], minlength=size)
    t_count = np.bincount(t_codes[t_codes >= 0], minlength=size)
    assert len(pairs) == int((s_count * t_count).sum())
    # shares: ids with a twin on the other side
    assert vm.student_shared == pytest.approx(np.count_nonzero(t_count[s_codes[s_codes >= 0]]) / len(s_codes))
    assert vm.teacher_shared == pytest.approx(np.count_nonzero(s_count[t_codes[t_codes >= 0]]) / len(t_codes))


@pytest.mark.parametrize(
    ("student", "teacher"),
    [pytest.param(s, t, id=f"{s}<->{t}") for s, t in itertools.combinations(NAMES, 2)],
)
def test_swapping_the_sides_swaps_the_columns(student: str, teacher: str) -> None:
    forward, backward = mapped(student, teacher), mapped(teacher, student)
    swapped = backward.pairs[:, ::-1]
    swapped = swapped[np.lexsort((swapped[:, 1], swapped[:, 0]))]
    assert np.array_equal(swapped, forward.pairs)
    assert (forward.student_shared, forward.teacher_shared) == (backward.teacher_shared, backward.student_shared)


@pytest.mark.parametrize(("student", "teacher"), PAIRS)
def test_special_pairs_by_role(student: str, teacher: str) -> None:
    vm = mapped(student, teacher)
    s_tok, t_tok = get_tokenizer(student), get_tokenizer(teacher)
    expected = {
        "bos": (s_tok.bos_token_id, t_tok.bos_token_id),
        "eos": (s_tok.eos_token_id, t_tok.eos_token_id),
        "end_of_turn": (
            s_tok.convert_tokens_to_ids(END_OF_TURN[student]),
            t_tok.convert_tokens_to_ids(END_OF_TURN[teacher]),
        ),
    }
    present = [role for role in SPECIAL_ROLES if None not in expected[role]]
    assert vm.special_roles == tuple(present)
    assert vm.special_pairs.tolist() == [list(expected[role]) for role in present]
    assert reference(student).is_control[vm.special_pairs[:, 0]].all()
    assert reference(teacher).is_control[vm.special_pairs[:, 1]].all()


def _set_reference(student: str, teacher: str) -> set[tuple[int, int]]:
    """The plainest definition: every (s, t) of ordinary, non-empty tokens whose bytes are equal."""
    s_ref, t_ref = reference(student), reference(teacher)
    by_bytes: dict[bytes, list[int]] = {}
    for t, data in enumerate(t_ref.token_bytes):
        if data and not t_ref.is_control[t]:
            by_bytes.setdefault(data, []).append(t)
    return {
        (s, t)
        for s, data in enumerate(s_ref.token_bytes)
        if data and not s_ref.is_control[s]
        for t in by_bytes.get(data, ())
    }


@pytest.mark.parametrize(("student", "teacher"), [p for p in PAIRS if p.values[0] in SMALL and p.values[1] in SMALL])
def test_pairs_equal_a_set_reference(student: str, teacher: str) -> None:
    vm = mapped(student, teacher)
    expected = _set_reference(student, teacher)
    assert set(map(tuple, vm.pairs.tolist())) == expected
    assert vm.student_shared == len({s for s, _ in expected}) / len(get_tokenizer(student))
    assert vm.teacher_shared == len({t for _, t in expected}) / len(get_tokenizer(teacher))


@pytest.mark.parametrize("name", NAMES)
def test_a_vocabulary_maps_onto_itself(name: str) -> None:
    vm = mapped(name, name)
    ordinary = np.flatnonzero(codes(name) >= 0)
    identity = vm.pairs[vm.pairs[:, 0] == vm.pairs[:, 1], 0]
    assert identity.tolist() == ordinary.tolist()
    assert vm.student_shared == vm.teacher_shared == len(ordinary) / len(get_tokenizer(name))
    if name not in ("mistral_v3", "gemma3", "phi3", "synthetic_sp"):  # byte-level: every byte string is unique
        assert len(vm.pairs) == len(ordinary)
