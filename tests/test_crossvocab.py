"""Tests of alignment.crossvocab: projected next-token distributions (``project_logprobs``), token log-probabilities
(``token_logprobs``) and the chunk-likelihood loss (``chunk_likelihood_loss``).

Three tiers for each function: hand-computed goldens; hypothesis properties (shapes, class assignments, chunk
assignments and seeds drawn by hypothesis, values from a seeded ``torch.Generator``); and parity with the float64
references ``tests.reference.project`` and ``tests.reference.chunk_likelihood``, values and gradients. The X-Token
scenario (Llama 3's ``123`` against Qwen's ``1``) is checked on a hand-built projection and, with the real tokenizers,
as an integration test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from alignment.crossvocab import chunk_likelihood_loss, project_logprobs, token_logprobs
from alignment.errors import AlignmentError
from alignment.losses import generalized_jsd, masked_kl
from alignment.types import VocabProjection
from tests import reference

# (atol, rtol) against the float64 reference, per input dtype (the computation runs in float32 or wider).
DTYPE_TOLERANCES = {torch.bfloat16: (1e-2, 5e-2), torch.float16: (1e-3, 1e-3), torch.float32: (1e-6, 1e-5)}
FLOAT64_ATOL, FLOAT64_RTOL = 1e-6, 1e-6  # float64 implementation vs float64 reference, values and gradients
JSD_ATOL, JSD_RTOL = 1e-5, 1e-5  # JSD of projected log-probabilities vs JSD of the raw logits
ROUNDING = 1e-12  # float64 round-off allowed below 0
LARGE_KL = 50.0  # a projected KL "punishing" a token with all the mass: -log(smallest normal) is 87 (fp32), 708 (fp64)
TEMPERATURES = (0.5, 1.0, 2.0)
REDUCTIONS = ("none", "sum", "mean", "batchmean")
INF = math.inf


def projection(student: list[int], teacher: list[int], num_classes: int, kind: str = "prefix") -> VocabProjection:
    return VocabProjection(
        student_classes=np.asarray(student, dtype=np.int64),
        teacher_classes=np.asarray(teacher, dtype=np.int64),
        num_classes=num_classes,
        kind=kind,  # type: ignore[arg-type]
    )


def random_logits(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)


def padded(classes: list[int], width: int, num_classes: int) -> list[int]:
    """The class of every logit column: the tokenizer's classes, then the "other" class for the padding."""
    return [*classes, *[num_classes - 1] * (width - len(classes))]


def assert_projection_matches(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> None:
    """Compare a projection with the reference: probabilities everywhere, log-probabilities where non-zero."""
    torch.testing.assert_close(actual.double().exp(), expected.exp(), atol=atol, rtol=rtol)
    finite = torch.isfinite(expected)
    torch.testing.assert_close(actual.double()[finite], expected[finite], atol=atol, rtol=rtol)
    floor = math.log(torch.finfo(actual.dtype).tiny)  # an empty class is floored at the smallest normal number
    torch.testing.assert_close(actual[~finite], torch.full_like(actual[~finite], floor))


# --- project_logprobs: goldens ---------------------------------------------------------------------------------------


def test_project_golden_three_tokens_two_classes() -> None:
    # student: probabilities 0.5, 0.3, 0.2 with classes 0, 1, 0 -> (0.7, 0.3)
    # teacher: probabilities 0.25, 0.75 with classes 1, 0 -> (0.75, 0.25)
    p = projection([0, 1, 0], [1, 0], 2)
    s, t = project_logprobs(torch.log(torch.tensor([0.5, 0.3, 0.2])), torch.log(torch.tensor([0.25, 0.75])), p)
    torch.testing.assert_close(s.exp(), torch.tensor([0.7, 0.3]))
    torch.testing.assert_close(t.exp(), torch.tensor([0.75, 0.25]))
    assert s.dtype == t.dtype == torch.float32


def test_project_golden_with_temperature() -> None:
    # at temperature 2, logits (0, ln 4, ln 9) become probabilities (1, 2, 3) / 6; classes 0, 1, 0 -> (4/6, 2/6)
    # and teacher logits (0, ln 9) become (1, 3) / 4; classes 1, 0 -> (3/4, 1/4)
    p = projection([0, 1, 0], [1, 0], 2)
    student = torch.tensor([0.0, math.log(4.0), math.log(9.0)], dtype=torch.float64)
    teacher = torch.tensor([0.0, math.log(9.0)], dtype=torch.float64)
    s, t = project_logprobs(student, teacher, p, temperature=2.0)
    torch.testing.assert_close(s.exp(), torch.tensor([4 / 6, 2 / 6], dtype=torch.float64))
    torch.testing.assert_close(t.exp(), torch.tensor([3 / 4, 1 / 4], dtype=torch.float64))


def test_project_golden_empty_class_and_padding() -> None:
    # three classes: class 1 has no member on the student side; the student's padded fourth column goes to class 2
    p = projection([0, 2, 0], [0, 1, 2], 3)
    student = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))  # width 4 > 3 tokens
    s, t = project_logprobs(student, torch.zeros(3, dtype=torch.float64), p)
    torch.testing.assert_close(s.exp(), torch.tensor([0.4, 0.0, 0.6], dtype=torch.float64))
    assert s[1] == math.log(torch.finfo(torch.float64).tiny)  # floored, finite
    torch.testing.assert_close(t.exp(), torch.full((3,), 1 / 3, dtype=torch.float64))


# --- project_logprobs: properties and parity -------------------------------------------------------------------------


@st.composite
def projection_cases(draw: st.DrawFn) -> dict[str, Any]:
    num_classes = draw(st.integers(1, 6))
    vocab = draw(st.integers(1, 9))
    other_vocab = draw(st.integers(1, 9))
    return {
        "lead": tuple(draw(st.lists(st.integers(1, 3), max_size=2))),
        "num_classes": num_classes,
        "student": draw(st.lists(st.integers(0, num_classes - 1), min_size=vocab, max_size=vocab)),
        "teacher": draw(st.lists(st.integers(0, num_classes - 1), min_size=other_vocab, max_size=other_vocab)),
        "student_pad": draw(st.integers(0, 3)),
        "teacher_pad": draw(st.integers(0, 3)),
        "temperature": draw(st.sampled_from(TEMPERATURES)),
        "scale": draw(st.sampled_from((0.1, 3.0, 20.0))),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@given(case=projection_cases())
def test_project_matches_reference(case: dict[str, Any]) -> None:
    c = case["num_classes"]
    p = projection(case["student"], case["teacher"], c)
    s_width, t_width = len(case["student"]) + case["student_pad"], len(case["teacher"]) + case["teacher_pad"]
    student = random_logits((*case["lead"], s_width), case["seed"], scale=case["scale"])
    teacher = random_logits((*case["lead"], t_width), case["seed"] + 1, scale=case["scale"])
    s, t = project_logprobs(student, teacher, p, temperature=case["temperature"])
    assert s.shape == t.shape == (*case["lead"], c)
    assert s.dtype == t.dtype == torch.float64
    expected_s = reference.project(student, padded(case["student"], s_width, c), c, case["temperature"])
    expected_t = reference.project(teacher, padded(case["teacher"], t_width, c), c, case["temperature"])
    assert_projection_matches(s, expected_s, FLOAT64_ATOL, FLOAT64_RTOL)
    assert_projection_matches(t, expected_t, FLOAT64_ATOL, FLOAT64_RTOL)
    # proper distributions: the floor of an empty class adds at most C * 1e-308
    zeros = torch.zeros(case["lead"], dtype=torch.float64)
    torch.testing.assert_close(torch.logsumexp(s, dim=-1), zeros, atol=FLOAT64_ATOL, rtol=0)
    torch.testing.assert_close(torch.logsumexp(t, dim=-1), zeros, atol=FLOAT64_ATOL, rtol=0)
    assert torch.isfinite(s).all() and torch.isfinite(t).all()


@pytest.mark.parametrize("dtype", list(DTYPE_TOLERANCES), ids=str)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_project_low_precision_matches_reference(dtype: torch.dtype, temperature: float) -> None:
    atol, rtol = DTYPE_TOLERANCES[dtype]
    classes, c = [0, 1, 1, 2, 0, 3, 3, 3, 1, 2, 2], 5  # class 4 is empty
    p = projection(classes, classes, c)
    student = random_logits((3, 7, 11), seed=1, dtype=dtype)
    s, t = project_logprobs(student, student, p, temperature=temperature)
    assert s.dtype == t.dtype == torch.float32
    expected = reference.project(student, classes, c, temperature)
    assert_projection_matches(s, expected, atol, rtol)
    torch.testing.assert_close(s, t, atol=0, rtol=0)


@given(
    lead=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    vocab=st.integers(1, 9),
    beta=st.sampled_from((0.0, 0.1, 0.5, 0.9, 1.0)),
    temperature=st.sampled_from(TEMPERATURES),
    seed=st.integers(0, 2**31 - 1),
)
def test_identity_projection_preserves_generalized_jsd(
    lead: tuple[int, ...], vocab: int, beta: float, temperature: float, seed: int
) -> None:
    # each token its own class; the stop and "other" classes (C - 2, C - 1) stay empty on both sides
    p = projection(list(range(vocab)), list(range(vocab)), vocab + 2)
    student = random_logits((*lead, vocab), seed)
    teacher = random_logits((*lead, vocab), seed + 1)
    s, t = project_logprobs(student, teacher, p, temperature=temperature)
    projected = generalized_jsd(s, t, beta=beta, reduction="none")
    direct = generalized_jsd(student, teacher, beta=beta, temperature=temperature, reduction="none")
    torch.testing.assert_close(projected, direct, atol=JSD_ATOL, rtol=JSD_RTOL)


@given(
    num_classes=st.integers(1, 5),
    data=st.data(),
    temperature=st.sampled_from(TEMPERATURES),
    direction=st.sampled_from(("forward", "reverse")),
    seed=st.integers(0, 2**31 - 1),
)
def test_same_model_same_classes_has_zero_kl(
    num_classes: int, data: st.DataObject, temperature: float, direction: str, seed: int
) -> None:
    # a shared vocabulary mapped identically on both sides: the projected KL of a model with itself is 0
    vocab = data.draw(st.integers(1, 9))
    classes = data.draw(st.lists(st.integers(0, num_classes - 1), min_size=vocab, max_size=vocab))
    p = projection(classes, classes, num_classes)
    logits = random_logits((2, 3, vocab), seed)
    s, t = project_logprobs(logits, logits.clone(), p, temperature=temperature)
    loss = masked_kl(s, t, direction=direction, reduction="none")  # type: ignore[arg-type]
    torch.testing.assert_close(loss, torch.zeros_like(loss), atol=FLOAT64_ATOL, rtol=0)


def test_project_gradients_match_reference() -> None:
    classes_s, classes_t, c = [0, 1, 1, 2, 0, 3, 1], [2, 0, 1, 3, 3], 5  # class 4 empty on both sides
    p = projection(classes_s, classes_t, c)
    student = random_logits((2, 3, 8), seed=5).requires_grad_()  # one padded column
    teacher = random_logits((2, 3, 5), seed=6).requires_grad_()
    weights = random_logits((2, 3, c), seed=7)
    weights[..., 4] = 0.0  # the floored log-probability of an empty class has no gradient anyway
    s, t = project_logprobs(student, teacher, p, temperature=1.5)
    grad_s, grad_t = torch.autograd.grad(((s + 2 * t) * weights).sum(), (student, teacher))
    student_ref = student.detach().clone().requires_grad_()
    teacher_ref = teacher.detach().clone().requires_grad_()
    ref_s = reference.project(student_ref, padded(classes_s, 8, c), c, 1.5)
    ref_t = reference.project(teacher_ref, classes_t, c, 1.5)
    finite = torch.isfinite(ref_s) & torch.isfinite(ref_t)
    expected = torch.autograd.grad((((ref_s + 2 * ref_t) * weights)[finite]).sum(), (student_ref, teacher_ref))
    torch.testing.assert_close(grad_s, expected[0], atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)
    torch.testing.assert_close(grad_t, expected[1], atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("temperature", [1.0, 1.5])
@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_project_in_chunks_equals_one_chunk(
    dtype: torch.dtype, temperature: float, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of rows (a smaller last chunk included) give the values and gradients of one chunk, bit for bit."""
    classes_s, classes_t, c = [0, 1, 1, 2, 0, 3, 1], [2, 0, 1, 3, 3], 5

    def run(rows: int) -> tuple[torch.Tensor, ...]:
        monkeypatch.setattr("alignment.crossvocab._default_chunk", lambda width, device: rows)
        student = random_logits((3, 7, 7), seed=8, dtype=dtype).requires_grad_()
        teacher = random_logits((3, 7, 5), seed=9, dtype=dtype).requires_grad_()
        s, t = project_logprobs(student, teacher, projection(classes_s, classes_t, c), temperature=temperature)
        weights = random_logits((3, 7, c), seed=10, dtype=s.dtype)
        return s, t, *torch.autograd.grad(((s + 2 * t) * weights).sum(), (student, teacher))

    for got, expected in zip(run(chunk), run(10_000), strict=True):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_project_gradcheck() -> None:
    p = projection([0, 1, 1, 0], [1, 2, 0], 4)  # class 3 empty; the student logits carry one padded column
    student = random_logits((2, 5), seed=8).requires_grad_()
    teacher = random_logits((2, 3), seed=9).requires_grad_()
    assert torch.autograd.gradcheck(lambda s, t: project_logprobs(s, t, p, temperature=0.7), (student, teacher))


def test_wider_logits_put_the_padding_in_the_last_class() -> None:
    p = projection([0, 1, 2], [0, 1, 2], 4)
    student = torch.tensor([0.0, 0.0, 0.0, 30.0, 30.0], dtype=torch.float64)  # a padded embedding, 2 extra rows
    teacher = torch.zeros(3, dtype=torch.float64)
    s, t = project_logprobs(student, teacher, p)
    total = 3 + 2 * math.exp(30.0)
    expected = torch.tensor([1 / total, 1 / total, 1 / total, 2 * math.exp(30.0) / total], dtype=torch.float64)
    torch.testing.assert_close(s.exp(), expected, atol=0, rtol=FLOAT64_RTOL)
    assert t[3] == math.log(torch.finfo(torch.float64).tiny)  # the teacher is not padded: its last class is empty


@pytest.mark.parametrize("side", ["student", "teacher"])
def test_narrower_logits_raise(side: str) -> None:
    p = projection([0, 1, 2], [0, 1, 2, 1], 4)
    student = torch.zeros(2 if side == "student" else 3)
    teacher = torch.zeros(3 if side == "teacher" else 4)
    with pytest.raises(AlignmentError, match=f"{side}_logits"):
        project_logprobs(student, teacher, p)


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"),
    [((2, 3), (3, 3)), ((2, 3), (3,)), ((3,), (1, 3)), ((2, 4, 3), (2, 3, 3))],
    ids=["batch", "extra-student-axis", "extra-teacher-axis", "positions"],
)
def test_mismatched_leading_shapes_raise(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
    p = projection([0, 1, 2], [0, 1, 2], 4)
    with pytest.raises(AlignmentError, match="agree"):
        project_logprobs(torch.zeros(student_shape), torch.zeros(teacher_shape), p)


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan], ids=["zero", "negative", "nan"])
def test_project_bad_temperature_raises(temperature: float) -> None:
    p = projection([0, 1], [0, 1], 3)
    with pytest.raises(AlignmentError, match="temperature"):
        project_logprobs(torch.zeros(2), torch.zeros(2), p, temperature=temperature)


@pytest.mark.parametrize("side", ["student", "teacher"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool], ids=str)
def test_project_integer_logits_raise(side: str, dtype: torch.dtype) -> None:
    p = projection([0, 1], [0, 1], 3)
    student = torch.zeros(2, dtype=dtype if side == "student" else torch.float32)
    teacher = torch.zeros(2, dtype=dtype if side == "teacher" else torch.float32)
    with pytest.raises(TypeError, match=f"{side}_logits"):
        project_logprobs(student, teacher, p)


# --- the X-Token scenario: a student token the teacher lacks ---------------------------------------------------------

# student tokens "1", "2", "3", "123"; teacher tokens "1", "2", "3". Classes 0-2 are the anchors "1", "2", "3",
# class 3 the stop class (empty here), class 4 the tail.
DIGIT_CLASSES = {"prefix": [0, 1, 2, 0], "exact": [0, 1, 2, 4]}
ALL_ON = torch.tensor([-INF, -INF, -INF, 0.0])  # the student puts all its mass on "123"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_prefix_projection_credits_a_token_the_teacher_lacks(dtype: torch.dtype) -> None:
    student = torch.tensor([-INF, -INF, -INF, 0.0], dtype=dtype)  # "123"
    teacher = torch.tensor([0.0, -INF, -INF], dtype=dtype)  # "1"
    kl = {}
    for kind, classes in DIGIT_CLASSES.items():
        s, t = project_logprobs(student, teacher, projection(classes, [0, 1, 2], 5, kind))
        kl[kind] = masked_kl(s, t, direction="forward")
    torch.testing.assert_close(kl["prefix"], torch.zeros((), dtype=dtype), atol=FLOAT64_ATOL, rtol=0)
    assert kl["exact"] > LARGE_KL  # KL = -log(smallest normal): the teacher's "1" gets no student mass
    # a student split between "1" and "123" is also credited in full under "prefix" only
    mixed = torch.tensor([0.0, -INF, -INF, 0.0], dtype=dtype)
    s, t = project_logprobs(mixed, teacher, projection(DIGIT_CLASSES["prefix"], [0, 1, 2], 5))
    torch.testing.assert_close(masked_kl(s, t), torch.zeros((), dtype=dtype), atol=FLOAT64_ATOL, rtol=0)
    s, t = project_logprobs(mixed, teacher, projection(DIGIT_CLASSES["exact"], [0, 1, 2], 5, "exact"))
    torch.testing.assert_close(masked_kl(s, t), torch.tensor(math.log(2.0), dtype=dtype))  # log(1 / 0.5)


@pytest.mark.integration
def test_real_llama_numbers_share_qwen_digit_class() -> None:
    from alignment.vocab import vocab_projection
    from tests.tokenizers import load_real

    llama, qwen = load_real("llama3"), load_real("qwen3")
    llama_123, llama_1, qwen_1 = (
        llama.convert_tokens_to_ids("123"),
        llama.convert_tokens_to_ids("1"),
        qwen.convert_tokens_to_ids("1"),
    )
    assert llama.convert_ids_to_tokens(llama_123) == "123" and qwen.convert_ids_to_tokens(qwen_1) == "1"
    assert "123" not in qwen.get_vocab() and "12" not in qwen.get_vocab()  # Qwen splits every digit
    prefix = vocab_projection(llama, qwen, kind="prefix")
    exact = vocab_projection(llama, qwen, kind="exact")
    assert prefix.student_classes[llama_123] == prefix.teacher_classes[qwen_1] == prefix.student_classes[llama_1]
    assert prefix.teacher_classes[qwen_1] < prefix.num_classes - 2
    assert exact.student_classes[llama_123] == exact.num_classes - 1  # no counterpart: the tail class
    assert exact.student_classes[llama_1] == exact.teacher_classes[qwen_1] != exact.student_classes[llama_123]
    # the student says "123", the teacher "1": credited under prefix, punished under exact
    student = torch.full((len(llama),), -INF)
    student[llama_123] = 0.0
    teacher = torch.full((len(qwen) + 3,), -INF)  # a padded teacher embedding
    teacher[qwen_1] = 0.0
    s, t = project_logprobs(student, teacher, prefix)
    torch.testing.assert_close(masked_kl(s, t), torch.zeros(()), atol=FLOAT64_ATOL, rtol=0)
    s, t = project_logprobs(student, teacher, exact)
    assert masked_kl(s, t) > LARGE_KL


# --- the losses with projection=: the projection inside the loss ----------------------------------------------------


def one_call_and_two(
    student: torch.Tensor, teacher: torch.Tensor, proj: VocabProjection, loss: str, **options: Any
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Value and gradients (student, teacher) of ``loss`` with ``projection=``, and of the same loss on
    ``project_logprobs``' output; the teacher gets a gradient too."""
    results = []
    temperature = options.pop("temperature", 1.0)
    for one_call in (True, False):
        s, t = student.detach().clone().requires_grad_(), teacher.detach().clone().requires_grad_()
        function = {"jsd": generalized_jsd, "kl": masked_kl}[loss]
        if one_call:
            value = function(s, t, projection=proj, temperature=temperature, **options)
        else:
            value = function(*project_logprobs(s, t, proj, temperature=temperature), **options)
        weights = torch.linspace(0.5, 2.0, value.numel(), dtype=value.dtype).reshape(value.shape)
        grads = torch.autograd.grad((value * weights).sum(), (s, t))  # weighted: not the plain mean's backward
        results.append((value.detach(), *grads))
    return results[0], results[1]


@given(
    rows=st.integers(1, 7),
    widths=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    extra=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    num_classes=st.integers(1, 6),
    beta=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    temperature=st.sampled_from(TEMPERATURES),
    reduction=st.sampled_from(REDUCTIONS),
    chunk_size=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 2**16),
)
def test_loss_with_projection_equals_the_loss_of_projected_logprobs(
    rows: int,
    widths: tuple[int, int],
    extra: tuple[int, int],
    num_classes: int,
    beta: float,
    temperature: float,
    reduction: str,
    chunk_size: int | None,
    seed: int,
) -> None:
    """In float64, for any classes (empty ones too), padded logits, masks, reductions and chunkings: the same
    values and gradients on both sides as projecting first."""
    generator = np.random.default_rng(seed)
    classes = [generator.integers(0, num_classes, width).tolist() for width in widths]
    proj = projection(classes[0], classes[1], num_classes)
    student = random_logits((rows, widths[0] + extra[0]), seed)
    teacher = random_logits((rows, widths[1] + extra[1]), seed + 1)
    mask = torch.from_numpy(generator.random(rows) < 0.7)
    options = {"beta": beta, "temperature": temperature, "reduction": reduction, "chunk_size": chunk_size}
    one, two = one_call_and_two(student, teacher, proj, "jsd", mask=mask, **options)
    for actual, expected in zip(one, two, strict=True):
        torch.testing.assert_close(actual, expected, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)
    assert one[1][~mask].eq(0).all() and one[2][~mask].eq(0).all()  # masked rows pass no gradient


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_masked_kl_with_projection_equals_the_kl_of_projected_logprobs(direction: str) -> None:
    proj = projection([0, 0, 1, 2, 2], [1, 0, 0, 2], 4)  # class 3, "other", is empty on both sides
    student, teacher = random_logits((2, 3, 5), seed=3), random_logits((2, 3, 4), seed=4)
    one, two = one_call_and_two(student, teacher, proj, "kl", direction=direction, reduction="none")
    for actual, expected in zip(one, two, strict=True):
        torch.testing.assert_close(actual, expected, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_loss_with_projection_in_low_precision(dtype: torch.dtype) -> None:
    """Low-precision logits are converted chunk by chunk and computed in float32: as projecting the float32 logits."""
    proj = projection([0, 1, 1, 2, 3, 3], [0, 0, 1, 2, 3], 5)
    student, teacher = random_logits((4, 6), seed=5).to(dtype), random_logits((4, 5), seed=6).to(dtype)
    one, two = one_call_and_two(student, teacher, proj, "jsd", temperature=2.0)
    one_fp32, two_fp32 = one_call_and_two(student.float(), teacher.float(), proj, "jsd", temperature=2.0)
    assert one[0].dtype == torch.float32 and one[1].dtype == one[2].dtype == dtype  # gradients as the logits
    torch.testing.assert_close(one[0], two_fp32[0], atol=1e-6, rtol=1e-5)
    for actual, expected in zip(one, two, strict=True):
        torch.testing.assert_close(actual.float(), expected.float(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(one_fp32[1], two_fp32[1], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_loss_with_projection_floors_as_project_logprobs_floors(beta: float) -> None:
    """A class whose float32 mass is below the smallest normal number (its only token at a subnormal probability)
    is floored and passes no gradient, as in two calls; read through the unfloored mass instead, its token's
    gradient would be of order ``q / tiny``, here about 1e-4."""
    proj = projection([0, 1, 2], [0, 1, 2], 3)
    student = torch.tensor([[0.0, 0.0, -95.0]])  # exp(-95) = 5.5e-42, subnormal in float32
    teacher = torch.tensor([[0.0, 0.0, 0.0]])
    one, two = one_call_and_two(student, teacher, proj, "jsd", beta=beta)
    for actual, expected in zip(one, two, strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-7, rtol=1e-6)
    assert one[1][0, 2].abs() < 1e-30


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_loss_with_projection_gradcheck(beta: float) -> None:
    """Both sides' analytic gradients against finite differences; gradcheck's repeated backward passes also run the
    path that recomputes a gradient the first backward consumed."""
    proj = projection([0, 0, 1, 2], [1, 0, 0, 2, 2], 4)  # class 3, "other", is empty
    student = random_logits((3, 4), seed=15).requires_grad_()
    teacher = random_logits((3, 5), seed=16).requires_grad_()
    mask = torch.tensor([True, False, True])

    def loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return generalized_jsd(s, t, mask, beta=beta, temperature=2.0, reduction="none", projection=proj)

    assert torch.autograd.gradcheck(loss, (student, teacher))


def test_loss_with_an_identity_projection_is_the_loss() -> None:
    student, teacher = random_logits((3, 4, 7), seed=7), random_logits((3, 4, 7), seed=8)
    identity = projection(list(range(7)), list(range(7)), 8)  # class 7, "other", is empty
    mask = torch.tensor([[True, True, False, True]] * 3)
    for beta in (0.0, 0.5, 1.0):
        expected = generalized_jsd(student, teacher, mask, beta=beta, reduction="none")
        actual = generalized_jsd(student, teacher, mask, beta=beta, reduction="none", projection=identity)
        torch.testing.assert_close(actual, expected, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)


def test_loss_with_projection_ignores_masked_positions_with_nan_logits() -> None:
    proj = projection([0, 1, 1], [0, 1], 3)
    student, teacher = random_logits((3, 3), seed=9), random_logits((3, 2), seed=10)
    student[1], teacher[2] = math.nan, math.nan
    mask = torch.tensor([True, False, False])
    student.requires_grad_()
    value = generalized_jsd(student, teacher, mask, projection=proj)
    value.backward()
    expected = generalized_jsd(*project_logprobs(student[:1], teacher[:1], proj))
    torch.testing.assert_close(value, expected)
    assert student.grad is not None and student.grad[1:].eq(0).all() and student.grad[0].isfinite().all()


def test_loss_with_projection_credits_a_token_the_teacher_lacks() -> None:
    """The X-Token case in one call: the student's "123" and the teacher's "1" share the prefix class."""
    student, teacher = ALL_ON.clone(), torch.tensor([0.0, -INF, -INF])
    prefix = projection(DIGIT_CLASSES["prefix"], [0, 1, 2], 5)
    exact = projection(DIGIT_CLASSES["exact"], [0, 1, 2], 5, "exact")
    torch.testing.assert_close(masked_kl(student, teacher, projection=prefix), torch.zeros(()), atol=1e-7, rtol=0)
    assert masked_kl(student, teacher, projection=exact) > LARGE_KL


def test_loss_with_projection_rejects_bad_input() -> None:
    from alignment.losses import TopK, forward_kl, reverse_kl

    proj = projection([0, 1, 1], [0, 1], 3)
    student, teacher = torch.zeros(2, 3), torch.zeros(2, 2)
    with pytest.raises(AlignmentError, match="all but the last axis"):
        generalized_jsd(student, torch.zeros(3, 2), projection=proj)
    with pytest.raises(AlignmentError, match="teacher_logits have 1 entries"):
        forward_kl(student, teacher[:, :1], projection=proj)
    with pytest.raises(AlignmentError, match="student_logits have 2 entries"):
        reverse_kl(student[:, :2], teacher, projection=proj)
    top = TopK(ids=torch.zeros(2, 1, dtype=torch.int64), logprobs=torch.zeros(2, 1))
    with pytest.raises(AlignmentError, match="dense logits"):
        generalized_jsd(student, top, projection=proj)
    with pytest.raises(TypeError, match="VocabProjection"):
        generalized_jsd(student, teacher, projection=(proj.student_classes, proj.teacher_classes))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="VocabProjection"):  # the same check, shared with project_logprobs
        project_logprobs(student, teacher, (proj.student_classes, proj.teacher_classes))  # type: ignore[arg-type]
    with pytest.raises(AlignmentError, match="teacher_logits must have shape"):
        generalized_jsd(student, teacher)  # different widths without a projection: still an error


def _large_allocations_with_projection(chunk: int | None) -> int:
    """How many operators of one forward + backward allocate at least half of an ``(N, C)`` float32 tensor (``N`` =
    256 rows, ``C`` = 2,000 classes): with ``projection=`` in chunks of ``chunk`` rows, or (``None``) through
    ``project_logprobs`` first."""
    classes = np.arange(4096) % 2000
    proj = projection(classes.tolist(), classes[:3000].tolist(), 2000)
    student, teacher = random_logits((256, 4096), 11, torch.float32), random_logits((256, 3000), 12, torch.float32)
    student.requires_grad_()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        if chunk is None:
            generalized_jsd(*project_logprobs(student, teacher, proj)).backward()
        else:
            generalized_jsd(student, teacher, projection=proj, chunk_size=chunk).backward()
    return sum(event.self_cpu_memory_usage >= 256 * 2000 * 4 // 2 for event in profile.events())


def test_loss_with_projection_keeps_no_class_tensor_the_size_of_the_batch() -> None:
    """The student's gradient is the one tensor as large as the batch's classes: no ``(N, C)`` class
    log-probabilities are returned or kept, as two calls keep them, and chunks of 4 rows allocate no more than
    chunks of 16 (each chunk's temporaries are allocated once per call)."""
    assert _large_allocations_with_projection(chunk=4) == _large_allocations_with_projection(chunk=16) == 1
    assert _large_allocations_with_projection(chunk=None) >= 4  # two outputs, their gradient, the logits' gradient


@pytest.mark.parametrize("one_call", [True, False], ids=["projection=", "project_logprobs"])
def test_logits_sliced_along_positions_project_as_their_copies(one_call: bool) -> None:
    """``logits[:, :-1]`` is read in place by both ways of projecting, with chunks that would cross from one
    sequence to the next: the values and gradients of contiguous copies (the base's gradient written by the loss,
    zero at the position left out, equals the one autograd builds through a copy), and no forward allocation of
    its size."""
    proj = projection([0, 1, 1, 2, 2, 3, 0], [1, 1, 0, 2, 3], 5)
    student, teacher = random_logits((3, 6, 7), seed=41), random_logits((3, 6, 5), seed=42)
    mask = torch.rand(3, 5, generator=torch.Generator().manual_seed(43)) < 0.7

    def loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if one_call:
            return generalized_jsd(s, t, mask, projection=proj, chunk_size=4, reduction="none")
        return generalized_jsd(*project_logprobs(s, t, proj), mask, reduction="none")

    results = []
    for sliced in (True, False):
        leaves = (student.clone().requires_grad_(), teacher.clone().requires_grad_())
        views = tuple(x[:, :-1] if sliced else x[:, :-1].contiguous() for x in leaves)
        values = loss(*views)
        weights = torch.linspace(0.5, 2.0, values.numel(), dtype=values.dtype).reshape(values.shape)
        grads = torch.autograd.grad((values * weights).sum(), leaves)
        results.append((values, *grads))
    assert results[0][1][:, -1].abs().max() == 0.0
    for actual, expected in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-12, rtol=1e-12)
    big_s, big_t = random_logits((4, 257, 8192), 44, torch.float32), random_logits((4, 257, 4096), 45, torch.float32)
    classes = np.arange(8192) % 500
    wide = projection(classes.tolist(), classes[:4096].tolist(), 500)
    with (
        torch.no_grad(),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile,
    ):
        if one_call:
            generalized_jsd(big_s[:, :-1], big_t[:, :-1], projection=wide)
        else:
            project_logprobs(big_s[:, :-1], big_t[:, :-1], wide)
    half = 4 * 256 * 4096 * 4 // 2  # half of the teacher's sliced logits; a chunk's temporaries are 1 MiB
    assert not any(event.self_cpu_memory_usage >= half for event in profile.events())
    leaf = big_s.requires_grad_()  # forward and backward: the base's gradient is the one tensor of its size
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        if one_call:
            generalized_jsd(leaf[:, :-1], big_t[:, :-1], projection=wide).backward()
        else:
            generalized_jsd(*project_logprobs(leaf[:, :-1], big_t[:, :-1], wide)).backward()
    assert sum(event.self_cpu_memory_usage >= 2 * half for event in profile.events()) == 1


@pytest.mark.integration
def test_loss_with_projection_on_real_vocabularies() -> None:
    """Vendored Mistral v0.3 / SmolLM2 (a fresh clone has them): one call and two agree in float32 on real classes."""
    from alignment.vocab import vocab_projection
    from tests.tokenizers import load_real

    proj = vocab_projection(load_real("mistral_v3"), load_real("smollm2"))
    width = (len(proj.student_classes), len(proj.teacher_classes))
    student, teacher = random_logits((2, 5, width[0]), 13, torch.float32), random_logits((2, 5, width[1]), 14)
    mask = torch.tensor([[True, True, False, True, True], [False, True, True, True, True]])
    one, two = one_call_and_two(student, teacher.float(), proj, "jsd", mask=mask, beta=0.5)
    for actual, expected in zip(one, two, strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-4)


# --- token_logprobs --------------------------------------------------------------------------------------------------


def test_token_logprobs_golden() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=torch.float64))
    out = token_logprobs(logits, torch.tensor([1, 2]))
    torch.testing.assert_close(out, torch.log(torch.tensor([0.3, 0.8], dtype=torch.float64)))
    # temperature 2 on logits (0, ln 4, ln 9): probabilities (1, 2, 3) / 6
    hot = token_logprobs(torch.tensor([0.0, math.log(4.0), math.log(9.0)]), torch.tensor(2), temperature=2.0)
    torch.testing.assert_close(hot, torch.tensor(math.log(0.5)))


@given(
    lead=st.lists(st.integers(1, 4), max_size=2).map(tuple),
    vocab=st.integers(1, 12),
    temperature=st.sampled_from(TEMPERATURES),
    dtype=st.sampled_from((torch.float32, torch.float64)),
    seed=st.integers(0, 2**31 - 1),
)
def test_token_logprobs_matches_log_softmax_gather(
    lead: tuple[int, ...], vocab: int, temperature: float, dtype: torch.dtype, seed: int
) -> None:
    logits = random_logits((*lead, vocab), seed, dtype=dtype)
    ids = torch.randint(0, vocab, lead, generator=torch.Generator().manual_seed(seed + 1))
    out = token_logprobs(logits, ids, temperature=temperature)
    assert out.shape == lead and out.dtype == dtype
    expected = F.log_softmax(logits.double() / temperature, dim=-1).gather(-1, ids[..., None]).squeeze(-1)
    atol, rtol = DTYPE_TOLERANCES.get(dtype, (FLOAT64_ATOL, FLOAT64_RTOL))
    torch.testing.assert_close(out.double(), expected, atol=atol, rtol=rtol)


def test_token_logprobs_bfloat16_upcasts() -> None:
    logits = random_logits((3, 7, 11), seed=3, dtype=torch.bfloat16)
    ids = torch.randint(0, 11, (3, 7), generator=torch.Generator().manual_seed(4))
    out = token_logprobs(logits, ids)
    assert out.dtype == torch.float32
    expected = F.log_softmax(logits.double(), dim=-1).gather(-1, ids[..., None]).squeeze(-1)
    torch.testing.assert_close(out.double(), expected, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)


def test_token_logprobs_gradcheck() -> None:
    logits = random_logits((2, 3, 5), seed=10).requires_grad_()
    ids = torch.tensor([[0, 4, 2], [1, 1, 3]])
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, ids, temperature=0.8), (logits,))


@pytest.mark.parametrize("ids_shape", [(2,), (2, 3, 1), (3, 2), ()], ids=["short", "extra-axis", "swapped", "scalar"])
def test_token_logprobs_shape_mismatch_raises(ids_shape: tuple[int, ...]) -> None:
    with pytest.raises(AlignmentError, match="ids must have shape"):
        token_logprobs(torch.zeros(2, 3, 5), torch.zeros(ids_shape, dtype=torch.int64))


def test_token_logprobs_bad_inputs_raise() -> None:
    with pytest.raises(TypeError, match="logits"):
        token_logprobs(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))
    for temperature in (0.0, -1.0):
        with pytest.raises(AlignmentError, match="temperature"):
            token_logprobs(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64), temperature=temperature)


# --- chunk_likelihood_loss -------------------------------------------------------------------------------------------


def chunk_tensor(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


@st.composite
def chunk_cases(draw: st.DrawFn) -> dict[str, Any]:
    batch = draw(st.integers(1, 3))
    student_len, teacher_len = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    groups = draw(st.integers(1, 4))
    ids = st.integers(-1, groups - 1)
    return {
        "student_chunks": [draw(st.lists(ids, min_size=student_len, max_size=student_len)) for _ in range(batch)],
        "teacher_chunks": [draw(st.lists(ids, min_size=teacher_len, max_size=teacher_len)) for _ in range(batch)],
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def chunk_inputs(case: dict[str, Any], dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """Token log-probabilities in [-3, -0.05] (so chunk probabilities stay clear of 1), and the chunk ids."""
    student_chunks, teacher_chunks = chunk_tensor(case["student_chunks"]), chunk_tensor(case["teacher_chunks"])
    generator = torch.Generator().manual_seed(case["seed"])
    student = -(0.05 + 2.95 * torch.rand(student_chunks.shape, generator=generator, dtype=torch.float64))
    teacher = -(0.05 + 2.95 * torch.rand(teacher_chunks.shape, generator=generator, dtype=torch.float64))
    return student.to(dtype), teacher.to(dtype), student_chunks, teacher_chunks


def num_chunks(student_chunks: torch.Tensor, teacher_chunks: torch.Tensor) -> int:
    return 1 + max(int(student_chunks.max()), int(teacher_chunks.max()))


@given(case=chunk_cases())
def test_chunk_loss_matches_reference(case: dict[str, Any]) -> None:
    student, teacher, student_chunks, teacher_chunks = chunk_inputs(case)
    expected, present = reference.chunk_likelihood(
        student, teacher, student_chunks, teacher_chunks, num_chunks(student_chunks, teacher_chunks)
    )
    per_chunk = chunk_likelihood_loss(student, teacher, student_chunks, teacher_chunks, reduction="none")
    assert per_chunk.dtype == torch.float64
    torch.testing.assert_close(per_chunk, expected, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)
    assert (per_chunk >= -ROUNDING).all()
    assert (per_chunk[~present] == 0).all()
    total = chunk_likelihood_loss(student, teacher, student_chunks, teacher_chunks, reduction="sum")
    torch.testing.assert_close(total, expected.sum(), atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)
    for reduction in ("mean", "batchmean"):
        mean = chunk_likelihood_loss(student, teacher, student_chunks, teacher_chunks, reduction=reduction)
        torch.testing.assert_close(
            mean, expected.sum() / max(int(present.sum()), 1), atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL
        )
        assert mean >= -ROUNDING


@given(case=chunk_cases())
def test_chunk_loss_float32_matches_reference(case: dict[str, Any]) -> None:
    student, teacher, student_chunks, teacher_chunks = chunk_inputs(case, torch.float32)
    expected, _ = reference.chunk_likelihood(
        student, teacher, student_chunks, teacher_chunks, num_chunks(student_chunks, teacher_chunks)
    )
    per_chunk = chunk_likelihood_loss(student, teacher, student_chunks, teacher_chunks, reduction="none")
    assert per_chunk.dtype == torch.float32
    atol, rtol = DTYPE_TOLERANCES[torch.float32]
    torch.testing.assert_close(per_chunk.double(), expected, atol=atol * 10, rtol=rtol)


@given(case=chunk_cases())
def test_chunk_loss_gradients_match_reference(case: dict[str, Any]) -> None:
    student, teacher, student_chunks, teacher_chunks = chunk_inputs(case)
    student.requires_grad_()
    teacher.requires_grad_()
    loss = chunk_likelihood_loss(student, teacher, student_chunks, teacher_chunks, reduction="sum")
    grads = torch.autograd.grad(loss, (student, teacher))
    student_ref, teacher_ref = student.detach().clone().requires_grad_(), teacher.detach().clone().requires_grad_()
    expected, _ = reference.chunk_likelihood(
        student_ref, teacher_ref, student_chunks, teacher_chunks, num_chunks(student_chunks, teacher_chunks)
    )
    expected_grads: tuple[torch.Tensor | None, ...] = (None, None)  # no chunk present on both sides: no gradient
    if expected.requires_grad:
        expected_grads = torch.autograd.grad(expected.sum(), (student_ref, teacher_ref), allow_unused=True)
    for grad, expected_grad, like in zip(grads, expected_grads, (student, teacher), strict=True):
        expected = torch.zeros_like(like) if expected_grad is None else expected_grad
        torch.testing.assert_close(grad, expected, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)


def test_chunk_loss_gradcheck() -> None:
    case = {
        "student_chunks": [[0, 0, 1, 2, -1], [-1, 0, 1, 1, 1]],
        "teacher_chunks": [[-1, 0, 1, 1], [-1, 0, 0, 1]],
        "seed": 11,
    }
    student, teacher, student_chunks, teacher_chunks = chunk_inputs(case)
    assert torch.autograd.gradcheck(
        lambda s, t: chunk_likelihood_loss(s, t, student_chunks, teacher_chunks, reduction="none"),
        (student.requires_grad_(), teacher.requires_grad_()),
    )


def test_chunk_loss_zero_when_likelihoods_agree_across_tokenizations() -> None:
    # chunk 0: student one token of probability 0.25, teacher two tokens of 0.5 each (and a token before it);
    # chunk 1: student two tokens 0.8 * 0.5, teacher one token 0.4
    student = torch.log(torch.tensor([[0.25, 0.8, 0.5]]))
    teacher = torch.log(torch.tensor([[0.9, 0.5, 0.5, 0.4]]))
    s_chunks, t_chunks = chunk_tensor([[0, 1, 1]]), chunk_tensor([[-1, 0, 0, 1]])
    for reduction in REDUCTIONS:
        loss = chunk_likelihood_loss(student, teacher, s_chunks, t_chunks, reduction=reduction)
        torch.testing.assert_close(loss, torch.zeros_like(loss), atol=FLOAT64_ATOL, rtol=0)


def test_chunk_loss_golden() -> None:
    # one chunk: p_s = 0.5 (two tokens 0.5 and 1), p_t = 0.25; KL(Bern(0.25) || Bern(0.5)) = 0.25 ln 0.5 + 0.75 ln 1.5
    student = torch.log(torch.tensor([[0.5, 1.0]], dtype=torch.float64))
    teacher = torch.log(torch.tensor([[0.7, 0.25]], dtype=torch.float64))
    loss = chunk_likelihood_loss(student, teacher, chunk_tensor([[0, 0]]), chunk_tensor([[-1, 0]]), reduction="none")
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    torch.testing.assert_close(loss, torch.tensor([[expected]], dtype=torch.float64), atol=1e-12, rtol=0)


def test_chunk_loss_reductions_golden() -> None:
    # example 0: chunk 0 present (p_s 0.5, p_t 0.25), chunk 1 student only; example 1: chunk 0 (p_s 0.25, p_t 0.5)
    # and chunk 1 (p_s = p_t = 0.3, loss 0)
    student = torch.log(torch.tensor([[0.5, 0.6], [0.25, 0.3]], dtype=torch.float64))
    teacher = torch.log(torch.tensor([[0.9, 0.25, 0.9], [0.9, 0.5, 0.3]], dtype=torch.float64))
    s_chunks, t_chunks = chunk_tensor([[0, 1], [0, 1]]), chunk_tensor([[-1, 0, -1], [-1, 0, 1]])
    a = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    b = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    expected = torch.tensor([[a, 0.0], [b, 0.0]], dtype=torch.float64)
    kw = {"student_chunks": s_chunks, "teacher_chunks": t_chunks}
    torch.testing.assert_close(chunk_likelihood_loss(student, teacher, reduction="none", **kw), expected)
    torch.testing.assert_close(chunk_likelihood_loss(student, teacher, reduction="sum", **kw), expected.sum())
    for reduction in ("mean", "batchmean"):  # three chunks present on both sides
        loss = chunk_likelihood_loss(student, teacher, reduction=reduction, **kw)
        torch.testing.assert_close(loss, torch.tensor((a + b) / 3, dtype=torch.float64))


@pytest.mark.parametrize("filler", [0.0, -1.0, -INF, math.nan], ids=["zero", "minus-one", "-inf", "nan"])
def test_chunk_loss_ignores_positions_outside_chunks(filler: float) -> None:
    case = {"student_chunks": [[-1, 0, 1, -1, 1]], "teacher_chunks": [[-1, 0, 0, 1, -1]], "seed": 12}
    student, teacher, s_chunks, t_chunks = chunk_inputs(case)
    base = chunk_likelihood_loss(student, teacher, s_chunks, t_chunks, reduction="none")
    student_filled = torch.where(s_chunks < 0, filler, student).requires_grad_()
    teacher_filled = torch.where(t_chunks < 0, filler, teacher).requires_grad_()
    filled = chunk_likelihood_loss(student_filled, teacher_filled, s_chunks, t_chunks, reduction="none")
    torch.testing.assert_close(filled, base, atol=0, rtol=0)
    grads = torch.autograd.grad(filled.sum(), (student_filled, teacher_filled))
    for grad, chunks in zip(grads, (s_chunks, t_chunks), strict=True):
        assert torch.isfinite(grad).all()
        assert (grad[chunks < 0] == 0).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("lengths", [(4, 3), (0, 0), (0, 3)], ids=["all-minus-one", "empty", "empty-student"])
def test_chunk_loss_without_chunks_is_zero_with_finite_gradient(reduction: str, lengths: tuple[int, int]) -> None:
    student = torch.full((2, lengths[0]), -0.5, dtype=torch.float64, requires_grad=True)
    teacher = torch.full((2, lengths[1]), -0.5, dtype=torch.float64, requires_grad=True)
    s_chunks = torch.full((2, lengths[0]), -1, dtype=torch.int64)
    t_chunks = torch.full((2, lengths[1]), -1, dtype=torch.int64)
    loss = chunk_likelihood_loss(student, teacher, s_chunks, t_chunks, reduction=reduction)
    assert (loss == 0).all()
    if reduction != "none":
        grads = torch.autograd.grad(loss, (student, teacher), allow_unused=True)
        for grad in grads:
            assert grad is None or (torch.isfinite(grad).all() and (grad == 0).all())


def test_chunk_loss_present_on_one_side_only_is_zero() -> None:
    student = torch.log(torch.tensor([[0.1, 0.2]]))
    teacher = torch.log(torch.tensor([[0.9, 0.3]]))
    loss = chunk_likelihood_loss(student, teacher, chunk_tensor([[0, 1]]), chunk_tensor([[-1, 2]]), reduction="none")
    assert loss.shape == (1, 3) and (loss == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    ("student_p", "teacher_p"), [(1.0, 1.0), (1.0, 0.5), (0.5, 1.0)], ids=["both-certain", "student", "teacher"]
)
def test_chunk_loss_finite_gradient_at_probability_one(dtype: torch.dtype, student_p: float, teacher_p: float) -> None:
    # a chunk of probability exactly 1 (log-likelihood 0) on one or both sides: finite loss and gradients
    student = torch.log(torch.tensor([[student_p, 1.0]], dtype=dtype)).requires_grad_()
    teacher = torch.log(torch.tensor([[0.3, teacher_p]], dtype=dtype)).requires_grad_()
    loss = chunk_likelihood_loss(student, teacher, chunk_tensor([[0, 0]]), chunk_tensor([[-1, 0]]))
    assert torch.isfinite(loss) and loss >= 0
    if student_p == teacher_p:
        assert loss == 0
    for grad in torch.autograd.grad(loss, (student, teacher)):
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape", "s_chunks_shape", "t_chunks_shape"),
    [
        ((2, 3), (2, 4), (2, 4), (2, 4)),  # student chunks disagree with the student log-probabilities
        ((2, 3), (2, 4), (2, 3), (2, 3)),  # teacher chunks disagree with the teacher log-probabilities
        ((2, 3), (3, 4), (2, 3), (3, 4)),  # batch sizes differ
        ((3,), (4,), (3,), (4,)),  # not (B, length)
        ((1, 2, 3), (1, 2, 3), (1, 2, 3), (1, 2, 3)),  # too many axes
    ],
    ids=["student-chunks", "teacher-chunks", "batch", "one-axis", "three-axes"],
)
def test_chunk_loss_shape_mismatch_raises(
    student_shape: tuple[int, ...],
    teacher_shape: tuple[int, ...],
    s_chunks_shape: tuple[int, ...],
    t_chunks_shape: tuple[int, ...],
) -> None:
    with pytest.raises(AlignmentError):
        chunk_likelihood_loss(
            torch.full(student_shape, -0.5),
            torch.full(teacher_shape, -0.5),
            torch.zeros(s_chunks_shape, dtype=torch.int64),
            torch.zeros(t_chunks_shape, dtype=torch.int64),
        )


def test_chunk_loss_bad_inputs_raise() -> None:
    chunks = torch.zeros((1, 2), dtype=torch.int64)
    with pytest.raises(TypeError, match="student_logprobs"):
        chunk_likelihood_loss(torch.zeros((1, 2), dtype=torch.int64), torch.zeros(1, 2), chunks, chunks)
    with pytest.raises(TypeError, match="teacher_logprobs"):
        chunk_likelihood_loss(torch.zeros(1, 2), torch.zeros((1, 2), dtype=torch.int64), chunks, chunks)
    with pytest.raises(AlignmentError, match="reduction"):
        chunk_likelihood_loss(torch.zeros(1, 2), torch.zeros(1, 2), chunks, chunks, reduction="mean_chunk")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_chunk_loss_teacher_probability_zero(dtype: torch.dtype) -> None:
    # a teacher log-probability of -inf (probability 0) in a chunk: KL(Bern(0) || Bern(p_s)) = -log(1 - p_s), with
    # 0 log 0 = 0, and d/dl_s = p_s / (1 - p_s). Here p_s = 0.5: loss log 2, student gradient 1, and a -800
    # log-probability (the same, to double precision) gives the same.
    student = torch.log(torch.tensor([[0.5]], dtype=dtype)).requires_grad_()
    chunks = chunk_tensor([[0]])
    for value in (-800.0, -INF):
        teacher = torch.tensor([[value]], dtype=dtype, requires_grad=True)
        loss = chunk_likelihood_loss(student, teacher, chunks, chunks, reduction="sum")
        torch.testing.assert_close(loss, torch.tensor(math.log(2.0), dtype=dtype), msg=f"teacher log-prob {value}")
        grad_s, grad_t = torch.autograd.grad(loss, (student, teacher))
        torch.testing.assert_close(grad_s, torch.ones_like(grad_s))
        assert torch.isfinite(grad_t).all(), f"teacher log-prob {value}: gradient {grad_t}"


def test_chunk_loss_student_probability_zero_is_infinite() -> None:
    # the student gives a chunk the teacher finds likely probability 0: the forward KL is +inf (as in masked_kl)
    loss = chunk_likelihood_loss(
        torch.tensor([[-INF]]), torch.log(torch.tensor([[0.5]])), chunk_tensor([[0]]), chunk_tensor([[0]])
    )
    assert loss == INF


@pytest.mark.parametrize("dtype", [torch.int32, torch.float32], ids=str)
@pytest.mark.parametrize("side", ["student", "teacher"])
def test_chunk_loss_chunk_ids_of_another_dtype(side: str, dtype: torch.dtype) -> None:
    # the docstring asks for int64 chunk ids; another dtype is either accepted (int32) or a TypeError naming the
    # argument (STYLE B.4), never an error from inside torch
    student, teacher = torch.log(torch.tensor([[0.5, 0.6]])), torch.log(torch.tensor([[0.9, 0.25]]))
    s_chunks, t_chunks = chunk_tensor([[0, 0]]), chunk_tensor([[-1, 0]])
    expected = chunk_likelihood_loss(student, teacher, s_chunks, t_chunks)
    if side == "student":
        s_chunks = s_chunks.to(dtype)
    else:
        t_chunks = t_chunks.to(dtype)
    try:
        loss = chunk_likelihood_loss(student, teacher, s_chunks, t_chunks)
    except TypeError as error:
        assert f"{side}_chunks" in str(error)
    else:
        assert not dtype.is_floating_point, "float chunk ids were accepted"
        torch.testing.assert_close(loss, expected)


# --- project_logprobs(teacher_positions=): the teacher's rows read in place --------------------------------------


def gathered_rows(teacher: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``teacher[b, positions[b, k]]`` for every ``(b, k)``: what ``align_teacher_logits`` hands over."""
    return teacher[torch.arange(len(positions))[:, None], positions]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_project_logprobs_reads_the_teachers_rows_through_its_positions(dtype: torch.dtype) -> None:
    """Bit for bit the teacher classes of the gathered rows, over chunks that read consecutive rows and others; the
    student's side is unchanged; rows no position reads may hold NaN."""
    proj = projection([0, 1, 1, 2], [2, 0, 1, 1, 0], 3)
    student = random_logits((2, 6, 4), seed=60, dtype=dtype)
    teacher = random_logits((2, 9, 5), seed=61, dtype=dtype)
    positions = torch.tensor([[0, 1, 2, 3, 7, 8], [4, 4, 0, 5, 6, 1]])
    teacher[0, 4:7] = math.nan  # read by no position
    in_place = project_logprobs(student, teacher, proj, teacher_positions=positions, temperature=0.7)
    expected = project_logprobs(student, gathered_rows(teacher, positions), proj, temperature=0.7)
    for ours, theirs in zip(in_place, expected, strict=True):
        assert ours.shape == (2, 6, 3)
        torch.testing.assert_close(ours, theirs, rtol=0.0, atol=0.0)


def test_project_logprobs_gives_a_teacher_read_through_positions_its_gradient() -> None:
    """A teacher that needs a gradient gets it at its own positions, summed over the positions that read a row."""
    proj = projection([0, 1, 1, 2], [2, 0, 1, 1, 0], 3)
    student = random_logits((2, 3, 4), seed=62).requires_grad_()
    teacher = random_logits((2, 5, 5), seed=63).requires_grad_()
    positions = torch.tensor([[0, 0, 4], [3, 1, 2]])
    weights = random_logits((2, 3, 3), seed=64)
    grads = []
    for kwargs in ({"teacher_positions": positions}, {}):
        given = teacher if kwargs else gathered_rows(teacher, positions)
        s, t = project_logprobs(student, given, proj, **kwargs)
        grads.append(torch.autograd.grad(((s + 2 * t) * weights).sum(), (student, teacher)))
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0.0, atol=1e-15)
    assert grads[0][1][0, 1:4].abs().max() == 0.0


def test_project_logprobs_refuses_teacher_positions_outside_the_teachers() -> None:
    proj = projection([0, 1, 1], [0, 1], 2)
    student, teacher = torch.zeros(2, 3, 3), torch.zeros(2, 4, 2)
    with pytest.raises(AlignmentError, match=r"teacher_positions must lie in \[0, 4\).*got 4 at \(1, 2\)"):
        project_logprobs(student, teacher, proj, teacher_positions=torch.tensor([[0, 1, 2], [3, 0, 4]]))
    with pytest.raises(AlignmentError, match="teacher_positions must have shape"):
        project_logprobs(student, teacher, proj, teacher_positions=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="teacher_positions must be an integer tensor"):
        project_logprobs(student, teacher, proj, teacher_positions=torch.zeros(2, 3))
    with pytest.raises(AlignmentError, match="all but the last axis"):  # without positions, the shapes must agree
        project_logprobs(student, teacher, proj)
