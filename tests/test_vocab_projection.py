"""Tests of :func:`alignment.vocab.vocab_projection`: the classes that make two vocabularies' distributions comparable.

Goldens on the vendored tokenizers (digits, words, byte fallback); properties for every ordered pair of available
tokenizers (real and synthetic), both kinds, against byte strings computed here, independently of the package, from
the raw vocabulary pieces (``tests.test_spans.reference``). Anchors (the byte strings both sides hold as ordinary
tokens) are computed here too; the longest-anchor rule of ``"prefix"`` is checked by brute force on a sample of ids.
Projections are computed once per pair and kind (the file stays within about a minute with all nine families).
"""

from __future__ import annotations

import functools
import itertools
import zlib
from typing import Any

import numpy as np
import pytest

from alignment.types import VocabProjection
from alignment.vocab import vocab_projection
from tests.test_spans import CONTROL, NAMES, get_tokenizer, reference
from tests.tokenizers import SYNTHETIC, VENDORED

KINDS = ("prefix", "exact")
SAMPLE = 300  # random ids per side checked by brute force for the longest-anchor rule
PAIRS = list(itertools.product(NAMES, NAMES))
# both kinds of one pair back to back: the package caches the shared byte strings of the last few pairs
CASES = [(student, teacher, kind) for student, teacher in PAIRS for kind in KINDS]


@functools.lru_cache(maxsize=4)
def projected(student: str, teacher: str, kind: str) -> VocabProjection:
    return vocab_projection(get_tokenizer(student), get_tokenizer(teacher), kind=kind)  # type: ignore[arg-type]


# --- the test's own view of each vocabulary ---------------------------------------------------------------------------

_CODES: dict[bytes, int] = {}  # one integer per distinct byte string, across all tokenizers
_BYTES: list[bytes] = []  # the inverse: code -> byte string


def _code(data: bytes) -> int:
    code = _CODES.get(data)
    if code is None:
        code = _CODES[data] = len(_BYTES)
        _BYTES.append(data)
    return code


@functools.cache
def codes(name: str) -> np.ndarray:
    """``(V,)`` int64 code of each token's bytes; -1 for control tokens and tokens of no bytes."""
    ref = reference(name)
    return np.fromiter(
        (
            -1 if control or not data else _code(data)
            for data, control in zip(ref.token_bytes, ref.is_control, strict=True)
        ),
        dtype=np.int64,
        count=len(ref.token_bytes),
    )


@functools.cache
def ordinary_codes(name: str) -> np.ndarray:
    """Sorted distinct codes of the ordinary (non-control, non-empty) tokens."""
    return np.unique(codes(name)[codes(name) >= 0])


@functools.cache
def stop_ids(name: str) -> frozenset[int]:
    """The end-of-turn token (known per family, ``tests.test_spans.CONTROL``) and the EOS token."""
    tokenizer = get_tokenizer(name)
    stops = {tokenizer.convert_tokens_to_ids(CONTROL[name])}
    if tokenizer.eos_token_id is not None:
        stops.add(tokenizer.eos_token_id)
    return frozenset(stops)


def anchors(student: str, teacher: str) -> np.ndarray:
    """Sorted codes of the byte strings both vocabularies hold as ordinary tokens."""
    return np.intersect1d(ordinary_codes(student), ordinary_codes(teacher), assume_unique=True)


def longest_anchor(data: bytes, anchor_set: frozenset[bytes]) -> bytes | None:
    """Brute force: the longest byte string of ``anchor_set`` that ``data`` starts with."""
    found = [data[:end] for end in range(1, len(data) + 1) if data[:end] in anchor_set]
    return max(found, key=len) if found else None


@functools.cache
def rare_ids(name: str) -> np.ndarray:
    """Ids that uniform sampling rarely draws: control tokens, single bytes, numbers (at most 400)."""
    ref = reference(name)
    rare = [i for i, d in enumerate(ref.token_bytes) if ref.is_control[i] or len(d) == 1 or d.strip().isdigit()]
    return np.asarray(rare[:400], dtype=np.int64)


def sample_ids(name: str, size: int, seed: int) -> np.ndarray:
    """``SAMPLE`` random ids and the rare ones."""
    picked = np.random.default_rng(seed).choice(size, size=min(SAMPLE, size), replace=False)
    return np.unique(np.concatenate([picked, rare_ids(name)]))


# --- properties over every ordered pair -------------------------------------------------------------------------------


def check_structure(p: VocabProjection, student: str, teacher: str, kind: str) -> None:
    c = p.num_classes
    assert p.kind == kind
    assert p.student_classes.shape == (len(get_tokenizer(student)),)
    assert p.teacher_classes.shape == (len(get_tokenizer(teacher)),)
    for classes in (p.student_classes, p.teacher_classes):
        assert classes.dtype == np.int64 and not classes.flags.writeable
        assert classes.min() >= 0 and classes.max() < c
    assert c == len(anchors(student, teacher)) + 2  # one class per shared byte string, the stop class, "other"
    # every anchor class has members on both sides
    assert (np.bincount(p.student_classes, minlength=c)[: c - 2] > 0).all()
    assert (np.bincount(p.teacher_classes, minlength=c)[: c - 2] > 0).all()


def check_special_classes(p: VocabProjection, student: str, teacher: str) -> None:
    c = p.num_classes
    for name, classes in ((student, p.student_classes), (teacher, p.teacher_classes)):
        # the stop class holds exactly the end-of-turn and EOS tokens
        assert set(np.flatnonzero(classes == c - 2).tolist()) == stop_ids(name), name
        # every other control token, and any token of no bytes, is "other"
        ref = reference(name)
        others = (ref.is_control | (ref.lengths == 0)).copy()
        others[list(stop_ids(name))] = False
        assert (classes[others] == c - 1).all(), name


def anchor_of_class(p: VocabProjection, student: str, teacher: str) -> np.ndarray:
    """``(C - 2,)`` code of each anchor class's byte string, checked to be a bijection onto the shared byte strings.

    An ordinary token whose bytes are an anchor belongs, under either kind, to that anchor's own class (the longest
    anchor a byte string starts with is itself); these tokens fix which class stands for which byte string.
    """
    c = p.num_classes
    shared = anchors(student, teacher)
    of_class = np.full(c - 2, -1, dtype=np.int64)
    for name, classes in ((student, p.student_classes), (teacher, p.teacher_classes)):
        own = codes(name)
        is_anchor = np.isin(own, shared)
        is_anchor[list(stop_ids(name))] = False
        assert (classes[is_anchor] < c - 2).all(), (
            f"{name}: a token with a shared byte string is not in an anchor class"
        )
        of_class[classes[is_anchor]] = own[is_anchor]
    # consistent: every such token, on both sides, agrees with the class's byte string
    for name, classes in ((student, p.student_classes), (teacher, p.teacher_classes)):
        own = codes(name)
        is_anchor = np.isin(own, shared)
        is_anchor[list(stop_ids(name))] = False
        mismatch = np.flatnonzero(of_class[classes[is_anchor]] != own[is_anchor])
        assert len(mismatch) == 0, (
            f"{name}: tokens of different bytes share anchor class {classes[is_anchor][mismatch[0]]}"
        )
    assert np.array_equal(np.sort(of_class), shared)  # one class per shared byte string, none twice
    return of_class


def check_exact(p: VocabProjection, student: str, teacher: str, of_class: np.ndarray) -> None:
    c = p.num_classes
    shared = anchors(student, teacher)
    for name, classes in ((student, p.student_classes), (teacher, p.teacher_classes)):
        own = codes(name)
        free = np.ones(len(own), dtype=bool)
        free[list(stop_ids(name))] = False
        in_anchor = classes < c - 2
        # an anchor class holds only tokens of exactly its byte string
        assert np.array_equal(own[in_anchor], of_class[classes[in_anchor]]), name
        # a token without a counterpart is "other"
        lonely = free & ~np.isin(own, shared)
        assert (classes[lonely] == c - 1).all(), name


def check_prefix(p: VocabProjection, student: str, teacher: str, of_class: np.ndarray) -> None:
    c = p.num_classes
    anchor_set = frozenset(_BYTES[code] for code in anchors(student, teacher).tolist())
    seed = zlib.crc32(f"{student}->{teacher}".encode())
    for offset, (name, classes) in enumerate(((student, p.student_classes), (teacher, p.teacher_classes))):
        ref = reference(name)
        for token in sample_ids(name, len(classes), seed + offset).tolist():
            if token in stop_ids(name):
                continue
            data, found = ref.token_bytes[token], int(classes[token])
            expected = None if ref.is_control[token] else longest_anchor(data, anchor_set)
            if expected is None:
                assert found == c - 1, f"{name} token {token} {data!r}: no anchor starts it, but class {found}"
            else:
                assert found < c - 2, f"{name} token {token} {data!r}: expected the class of {expected!r}, got {found}"
                assert _BYTES[of_class[found]] == expected, (
                    f"{name} token {token} {data!r}: class of {_BYTES[of_class[found]]!r}, expected {expected!r}"
                )


@pytest.mark.parametrize(("student", "teacher", "kind"), CASES, ids=[f"{s}->{t}-{k}" for s, t, k in CASES])
def test_projection_properties(student: str, teacher: str, kind: str) -> None:
    p = projected(student, teacher, kind)
    check_structure(p, student, teacher, kind)
    check_special_classes(p, student, teacher)
    of_class = anchor_of_class(p, student, teacher)
    if kind == "exact":
        check_exact(p, student, teacher, of_class)
    else:
        check_prefix(p, student, teacher, of_class)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", [n for n in NAMES if n in VENDORED or n in SYNTHETIC])
def test_projection_with_itself_classes_every_token_by_its_bytes(name: str, kind: str) -> None:
    p = projected(name, name, kind)
    assert np.array_equal(p.student_classes, p.teacher_classes)
    own = codes(name)
    ordinary = own >= 0
    ordinary[list(stop_ids(name))] = False
    # same bytes, same class; different bytes, different classes
    pairs = np.unique(np.stack([own[ordinary], p.student_classes[ordinary]], axis=1), axis=0)
    assert len(pairs) == len(np.unique(pairs[:, 0])) == len(np.unique(pairs[:, 1]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("first", "second"), [("mistral_v3", "smollm2"), ("synthetic_sp", "synthetic_bytebpe")])
def test_swapping_the_tokenizers_swaps_the_classes(first: str, second: str, kind: str) -> None:
    forward, backward = projected(first, second, kind), projected(second, first, kind)
    assert forward.num_classes == backward.num_classes
    # the same partition, up to renaming the classes
    for a, b in (
        (forward.student_classes, backward.teacher_classes),
        (forward.teacher_classes, backward.student_classes),
    ):
        pairs = np.unique(np.stack([a, b], axis=1), axis=0)
        assert len(pairs) == len(np.unique(pairs[:, 0])) == len(np.unique(pairs[:, 1]))


def test_unknown_kind_raises() -> None:
    tok = get_tokenizer("synthetic_bytebpe")
    for kind in ("longest", "Prefix", ""):
        with pytest.raises(ValueError, match="kind"):
            vocab_projection(tok, tok, kind=kind)  # type: ignore[arg-type]


# --- goldens ----------------------------------------------------------------------------------------------------------


def classes_of(p: VocabProjection, side: str, tokenizer: Any, pieces: list[str]) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(pieces)
    assert tokenizer.convert_ids_to_tokens(ids) == pieces, "a golden piece is not in the vocabulary"
    classes = p.student_classes if side == "student" else p.teacher_classes
    return [int(classes[i]) for i in ids]


def test_golden_numbers_gpt2_to_smollm2() -> None:
    # GPT-2 has "12", "123" and " 123"; SmolLM2 splits digits and has no " 1": the longest shared beginnings are
    # "1" and " ". GPT-2's " theoret" begins with " theor", which both hold (GPT-2 lacks " theore", SmolLM2 " theoret").
    gpt2, smollm2 = get_tokenizer("gpt2"), get_tokenizer("smollm2")
    assert not {"12", "123", "Ġ1", "Ġtheoret"} & set(smollm2.get_vocab())
    assert "Ġtheore" not in gpt2.get_vocab()
    p = projected("gpt2", "smollm2", "prefix")
    one, space, theor = classes_of(p, "teacher", smollm2, ["1", "Ġ", "Ġtheor"])
    assert classes_of(p, "student", gpt2, ["1", "12", "123"]) == [one, one, one]
    assert classes_of(p, "student", gpt2, ["Ġ", "Ġ1", "Ġ123"]) == [space, space, space]
    assert classes_of(p, "student", gpt2, ["Ġtheor", "Ġtheoret"]) == [theor, theor]
    assert len({one, space, theor}) == 3 and max(one, space, theor) < p.num_classes - 2
    exact = projected("gpt2", "smollm2", "exact")
    tail = exact.num_classes - 1
    one, space, theor = classes_of(exact, "teacher", smollm2, ["1", "Ġ", "Ġtheor"])
    assert classes_of(exact, "student", gpt2, ["1", "12", "123"]) == [one, tail, tail]
    assert classes_of(exact, "student", gpt2, ["Ġ", "Ġ1", "Ġ123"]) == [space, tail, tail]
    assert classes_of(exact, "student", gpt2, ["Ġtheor", "Ġtheoret"]) == [theor, tail]


@pytest.mark.parametrize("kind", KINDS)
def test_golden_sentencepiece_spelling_and_byte_fallback(kind: str) -> None:
    # Mistral's "▁the" is SmolLM2's "Ġthe" (both " the"); Mistral's byte piece "<0x31>" and its "1" are both "1"
    mistral, smollm2 = get_tokenizer("mistral_v3"), get_tokenizer("smollm2")
    p = projected("mistral_v3", "smollm2", kind)
    the, one, space = classes_of(p, "teacher", smollm2, ["Ġthe", "1", "Ġ"])
    assert classes_of(p, "student", mistral, ["▁the", "1", "<0x31>", "▁"]) == [the, one, one, space]
    assert len({the, one, space}) == 3
    # "▁theoret": Mistral lacks "▁theor", so the longest shared beginning is " the"
    assert "▁theor" not in mistral.get_vocab()
    expected = the if kind == "prefix" else p.num_classes - 1
    assert classes_of(p, "student", mistral, ["▁theoret"]) == [expected]
    # control tokens: "</s>" pairs with "<|im_end|>" in the stop class; "<s>" is "other"
    assert classes_of(p, "student", mistral, ["</s>", "<s>"]) == [p.num_classes - 2, p.num_classes - 1]
    assert classes_of(p, "teacher", smollm2, ["<|im_end|>", "<|im_start|>"]) == [p.num_classes - 2, p.num_classes - 1]
