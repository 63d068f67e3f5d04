"""Tests of alignment.losses: one contract over every loss, parity with tests/reference.py and TRL, the beta end
points, sparse (top-k) teachers, chunking, ``-inf`` logits, and a typed error for each bad input."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from alignment._workspace import Workspace
from alignment.errors import AlignmentError
from alignment.losses import TopK, forward_kl, generalized_jsd, masked_kl, reverse_kl
from tests import reference

# (atol, rtol) against the float64 reference, per input dtype; the computation itself runs in float32 or wider.
DTYPE_TOLERANCES = {torch.bfloat16: (1e-2, 5e-2), torch.float16: (1e-3, 1e-3), torch.float32: (1e-6, 1e-5)}
FLOAT64_ATOL, FLOAT64_RTOL = 1e-6, 1e-6  # float64 implementation vs float64 reference, values and gradients
ROUNDING = 1e-12  # float64 round-off allowed below 0 and for "exactly equal" distributions
REDUCTIONS = ("none", "sum", "mean", "batchmean")
ODD_SHAPE = (3, 7, 11)
INF = math.inf


def top_k(teacher_logits: torch.Tensor, k: int) -> TopK:
    """What an inference server returns: the k most likely ids and their log-probabilities, no gradient."""
    values, ids = torch.log_softmax(teacher_logits.detach().double(), dim=-1).topk(k, dim=-1)
    return TopK(ids=ids, logprobs=values.to(teacher_logits.dtype))


@dataclass(frozen=True)
class Loss:
    """One loss variant: which public function, which beta (0 forward KL, 1 reverse KL), dense or top-k teacher."""

    name: str
    beta: float
    function: Callable[..., torch.Tensor]
    sparse: bool = False

    def teacher(self, teacher_logits: torch.Tensor) -> torch.Tensor | TopK:
        return top_k(teacher_logits, max(1, teacher_logits.shape[-1] // 2)) if self.sparse else teacher_logits

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor | TopK, *args: Any, **kw: Any) -> torch.Tensor:
        if self.function is generalized_jsd:
            kw["beta"] = self.beta
        return self.function(student, teacher, *args, **kw)

    def reference(self, student: torch.Tensor, teacher: torch.Tensor | TopK, temperature: float = 1.0) -> torch.Tensor:
        if isinstance(teacher, TopK):
            return reference.generalized_jsd_topk(student, teacher.ids, teacher.logprobs, beta=self.beta)
        return reference.generalized_jsd(student, teacher, beta=self.beta, temperature=temperature)


LOSSES = (
    Loss("jsd-0", 0.0, generalized_jsd),
    Loss("jsd-0.1", 0.1, generalized_jsd),
    Loss("jsd-0.5", 0.5, generalized_jsd),
    Loss("jsd-0.9", 0.9, generalized_jsd),
    Loss("jsd-1", 1.0, generalized_jsd),
    Loss("forward-kl", 0.0, forward_kl),
    Loss("reverse-kl", 1.0, reverse_kl),
    Loss("jsd-0.5-topk", 0.5, generalized_jsd, sparse=True),
    Loss("forward-kl-topk", 0.0, forward_kl, sparse=True),
    Loss("reverse-kl-topk", 1.0, reverse_kl, sparse=True),
)
ALL_LOSSES = [pytest.param(loss, id=loss.name) for loss in LOSSES]
DENSE_LOSSES = [pytest.param(loss, id=loss.name) for loss in LOSSES if not loss.sparse]


def draw(
    shape: tuple[int, ...], seed: int, *, dtype: torch.dtype = torch.float64, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student logits, teacher logits and a mask (about 70% True) from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    student = (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)
    teacher = (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)
    mask = torch.rand(shape[:-1], generator=gen) < 0.7
    return student, teacher, mask


def student_grad(loss: Loss, student: torch.Tensor, teacher: torch.Tensor | TopK, mask: Any, **kw: Any) -> torch.Tensor:
    leaf = student.detach().requires_grad_()
    (grad,) = torch.autograd.grad(loss(leaf, teacher, mask, **kw).sum(), leaf)
    return grad


# --- the contract, over every loss --------------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [1e4, math.nan], ids=["huge", "nan"])
@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_masked_positions_are_zero_and_have_no_influence(loss: Loss, garbage: float) -> None:
    student, teacher, mask = draw(ODD_SHAPE, seed=0)
    noise = garbage * torch.randn(ODD_SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dirty_student = torch.where(mask[..., None], student, noise)
    dirty_teacher = torch.where(mask[..., None], teacher, noise.flip(-1))
    if loss.sparse and math.isnan(garbage):
        dirty_teacher = teacher  # top-k of NaN logits is undefined; NaN logprobs are covered just below
    clean = loss(student, loss.teacher(teacher), mask, reduction="none")
    dirty = loss(dirty_student, loss.teacher(dirty_teacher), mask, reduction="none")
    torch.testing.assert_close(dirty, clean)
    assert (dirty[~mask] == 0).all()
    grad = student_grad(loss, dirty_student, loss.teacher(dirty_teacher), mask, reduction="none")
    assert (grad[~mask] == 0).all()
    torch.testing.assert_close(grad, student_grad(loss, student, loss.teacher(teacher), mask, reduction="none"))


def test_nan_top_k_logprobs_at_masked_positions_have_no_influence() -> None:
    student, teacher, mask = draw(ODD_SHAPE, seed=2)
    sparse = top_k(teacher, 4)
    dirty = TopK(ids=sparse.ids, logprobs=torch.where(mask[..., None], sparse.logprobs, math.nan))
    torch.testing.assert_close(generalized_jsd(student, dirty, mask), generalized_jsd(student, sparse, mask))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_all_false_mask_gives_zero_with_finite_gradients(loss: Loss, reduction: Any) -> None:
    student, teacher, _ = draw(ODD_SHAPE, seed=3)
    mask = torch.zeros(ODD_SHAPE[:-1], dtype=torch.bool)
    leaf = student.requires_grad_()
    value = loss(leaf, loss.teacher(teacher), mask, reduction=reduction)
    assert (value == 0).all()
    (grad,) = torch.autograd.grad(value.sum(), leaf)
    assert (grad == 0).all()


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_nonnegative_and_zero_for_equal_distributions(loss: Loss) -> None:
    student, teacher, mask = draw(ODD_SHAPE, seed=4, scale=3.0)
    assert (loss(student, loss.teacher(teacher), mask, reduction="none") >= -ROUNDING).all()
    same = loss(student, loss.teacher(student + 5.0), mask, reduction="none")  # a shift leaves softmax unchanged
    torch.testing.assert_close(same, torch.zeros_like(same), atol=ROUNDING, rtol=0)


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_non_contiguous_inputs_give_the_same_values_and_gradients(loss: Loss) -> None:
    gen = torch.Generator().manual_seed(5)
    student = torch.randn(7, 3, 11, generator=gen, dtype=torch.float64).transpose(0, 1)  # (3, 7, 11), strided
    teacher = torch.randn(3, 7, 22, generator=gen, dtype=torch.float64)[..., ::2]  # strided along V
    mask = (torch.rand(7, 3, generator=gen) < 0.7).T
    assert not (student.is_contiguous() or teacher.is_contiguous() or mask.is_contiguous())
    sparse, dense = loss.teacher(teacher), loss.teacher(teacher.contiguous())
    expected = loss(student.contiguous(), dense, mask.contiguous(), reduction="none")
    torch.testing.assert_close(loss(student, sparse, mask, reduction="none"), expected)
    torch.testing.assert_close(
        student_grad(loss, student, sparse, mask), student_grad(loss, student.contiguous(), dense, mask.contiguous())
    )


@pytest.mark.parametrize("dtype", list(DTYPE_TOLERANCES), ids=str)
@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_low_precision_inputs_match_the_float64_reference(loss: Loss, dtype: torch.dtype) -> None:
    atol, rtol = DTYPE_TOLERANCES[dtype]
    student, teacher_logits, mask = draw(ODD_SHAPE, seed=6, dtype=dtype, scale=2.0)
    teacher = loss.teacher(teacher_logits)
    actual = loss(student, teacher, mask, reduction="none")
    assert actual.dtype == torch.float32
    expected = reference.reduce(loss.reference(student, teacher), mask, "none")  # same rounded inputs, in float64
    torch.testing.assert_close(actual, expected.float(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_gradcheck_in_float64(loss: Loss) -> None:
    student, teacher, mask = draw((2, 3, 5), seed=7)
    student.requires_grad_()
    if loss.sparse:
        sparse = loss.teacher(teacher)
        assert torch.autograd.gradcheck(lambda s: loss(s, sparse, mask, reduction="none"), (student,))
    else:
        teacher.requires_grad_()
        assert torch.autograd.gradcheck(lambda s, t: loss(s, t, mask, reduction="none"), (student, teacher))


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_gradients_match_autograd_of_the_reference(loss: Loss) -> None:
    student, teacher_logits, mask = draw(ODD_SHAPE, seed=8, scale=2.0)
    weights = torch.randn(ODD_SHAPE[:-1], generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    inputs = [student.requires_grad_()] + ([] if loss.sparse else [teacher_logits.requires_grad_()])
    teacher = loss.teacher(teacher_logits)
    actual = torch.autograd.grad((loss(student, teacher, mask, reduction="none") * weights).sum(), inputs)
    expected_values = reference.reduce(loss.reference(student, teacher), mask, "none")
    expected = torch.autograd.grad((expected_values * weights).sum(), inputs)
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_gradients_reach_low_precision_inputs_in_their_dtype(loss: Loss) -> None:
    student, teacher, mask = draw(ODD_SHAPE, seed=10, dtype=torch.bfloat16)
    grad = student_grad(loss, student, loss.teacher(teacher), mask)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad).all()


# --- parity with the reference and with TRL ---------------------------------------------------------------------

betas = st.sampled_from([0.0, 1.0, 0.5]) | st.floats(0.01, 0.99)
temperatures = st.sampled_from([1.0, 0.5, 2.0]) | st.floats(0.1, 10.0)
shapes = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 12))
seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=30, deadline=None)
@given(
    shape=shapes,
    seed=seeds,
    beta=betas,
    temperature=temperatures,
    reduction=st.sampled_from(REDUCTIONS),
    scale=st.sampled_from([1.0, 10.0]),
    num_items=st.none() | st.integers(0, 50),
)
@example(shape=(1, 1, 1), seed=0, beta=0.5, temperature=1.0, reduction="batchmean", scale=1.0, num_items=None)
def test_generalized_jsd_matches_the_reference(
    shape: tuple[int, int, int],
    seed: int,
    beta: float,
    temperature: float,
    reduction: Any,
    scale: float,
    num_items: int | None,
) -> None:
    student, teacher, mask = draw(shape, seed, scale=scale)
    num_items = num_items if reduction in ("mean", "batchmean") else None
    actual = generalized_jsd(
        student, teacher, mask, beta=beta, temperature=temperature, reduction=reduction, num_items=num_items
    )
    values = reference.generalized_jsd(student, teacher, beta=beta, temperature=temperature)
    torch.testing.assert_close(
        actual, reference.reduce(values, mask, reduction, num_items), atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL
    )


@settings(max_examples=20, deadline=None)
@given(
    shape=shapes,
    seed=seeds,
    direction=st.sampled_from(["forward", "reverse"]),
    temperature=temperatures,
    reduction=st.sampled_from(REDUCTIONS),
)
def test_masked_kl_matches_the_reference(
    shape: tuple[int, int, int], seed: int, direction: Any, temperature: float, reduction: Any
) -> None:
    student, teacher, mask = draw(shape, seed)
    actual = masked_kl(student, teacher, mask, direction=direction, temperature=temperature, reduction=reduction)
    q, p = reference.probs(student, temperature), reference.probs(teacher, temperature)
    values = reference.kl(p, q) if direction == "forward" else reference.kl(q, p)
    torch.testing.assert_close(actual, reference.reduce(values, mask, reduction), atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd_equals_trl_generalized_jsd_loss(beta: float, temperature: float) -> None:
    student, teacher, mask = draw(ODD_SHAPE, seed=11, scale=3.0)
    labels = torch.where(mask, 1, -100)
    trl = reference.trl_generalized_jsd_loss(
        student, teacher, labels, beta=beta, temperature=temperature, reduction="none"
    )  # (counted positions, V)
    ours = generalized_jsd(student, teacher, mask, beta=beta, temperature=temperature, reduction="none")
    torch.testing.assert_close(ours[mask], trl.sum(dim=-1), atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)
    torch.testing.assert_close(
        generalized_jsd(student, teacher, mask, beta=beta, temperature=temperature),
        reference.trl_generalized_jsd_loss(student, teacher, labels, beta=beta, temperature=temperature),
        atol=FLOAT64_ATOL,
        rtol=FLOAT64_RTOL,
    )


def test_num_items_makes_accumulated_means_equal_the_full_batch_mean() -> None:
    student, teacher, mask = draw((4, 5, 9), seed=12)
    full = generalized_jsd(student, teacher, mask)
    halves = [
        generalized_jsd(student[i : i + 2], teacher[i : i + 2], mask[i : i + 2], num_items=mask.sum()) for i in (0, 2)
    ]
    torch.testing.assert_close(halves[0] + halves[1], full, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)
    torch.testing.assert_close(generalized_jsd(student, teacher, mask, num_items=int(mask.sum())), full)


# --- beta end points --------------------------------------------------------------------------------------------


def test_beta_end_points_are_the_two_kls() -> None:
    student, teacher, mask = draw(ODD_SHAPE, seed=13, scale=2.0)
    q, p = reference.probs(student), reference.probs(teacher)
    forward = reference.reduce(reference.kl(p, q), mask, "none")
    reverse = reference.reduce(reference.kl(q, p), mask, "none")
    for value in (
        generalized_jsd(student, teacher, mask, beta=0.0, reduction="none"),
        masked_kl(student, teacher, mask, direction="forward", reduction="none"),
        forward_kl(student, teacher, mask, reduction="none"),
    ):
        torch.testing.assert_close(value, forward, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)
    for value in (
        generalized_jsd(student, teacher, mask, beta=1.0, reduction="none"),
        masked_kl(student, teacher, mask, direction="reverse", reduction="none"),
        reverse_kl(student, teacher, mask, reduction="none"),
    ):
        torch.testing.assert_close(value, reverse, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)
    assert (forward - reverse).abs().max() > 0.1  # the two directions really differ on these inputs


@pytest.mark.parametrize("beta", [1e-3, 1e-6, 1 - 1e-3, 1 - 1e-6])
def test_interior_jsd_vanishes_towards_the_end_points(beta: float) -> None:
    student, teacher, _ = draw(ODD_SHAPE, seed=14, scale=2.0)
    jsd = generalized_jsd(student, teacher, beta=beta, reduction="none")
    assert (jsd <= 10 * min(beta, 1 - beta)).all()  # JSD_beta = O(beta (1 - beta)), far below either KL
    torch.testing.assert_close(
        jsd, reference.generalized_jsd(student, teacher, beta=beta), atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL
    )
    assert forward_kl(student, teacher) > 0.5 and reverse_kl(student, teacher) > 0.5


# --- sparse (top-k) teachers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_top_k_with_every_id_equals_the_dense_loss(beta: float) -> None:
    student, teacher, mask = draw(ODD_SHAPE, seed=15, scale=2.0)
    sparse = top_k(teacher, ODD_SHAPE[-1])
    torch.testing.assert_close(
        generalized_jsd(student, sparse, mask, beta=beta, reduction="none"),
        generalized_jsd(student, teacher, mask, beta=beta, reduction="none"),
        atol=FLOAT64_ATOL,
        rtol=FLOAT64_RTOL,
    )
    leaf = student.requires_grad_()
    sparse_grad = torch.autograd.grad(generalized_jsd(leaf, sparse, mask, beta=beta), leaf)[0]
    dense_grad = torch.autograd.grad(generalized_jsd(leaf, teacher, mask, beta=beta), leaf)[0]
    torch.testing.assert_close(sparse_grad, dense_grad, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=seeds, beta=betas, data=st.data())
def test_top_k_matches_the_bucket_reference(shape: tuple[int, int, int], seed: int, beta: float, data: Any) -> None:
    # k < V: with every id listed, the plain reference's tails are rounding noise (k = V is tested against dense)
    student, teacher, mask = draw(shape, seed, scale=2.0)
    sparse = top_k(teacher, data.draw(st.integers(1, max(1, shape[-1] - 1)), label="k"))
    values = reference.generalized_jsd_topk(student, sparse.ids, sparse.logprobs, beta=beta)
    torch.testing.assert_close(
        generalized_jsd(student, sparse, mask, beta=beta, reduction="none"),
        reference.reduce(values, mask, "none"),
        atol=FLOAT64_ATOL,
        rtol=FLOAT64_RTOL,
    )


def test_top_k_ids_are_ignored_where_masked() -> None:
    student, teacher, mask = draw(ODD_SHAPE, seed=16)
    sparse = top_k(teacher, 3)
    padded = TopK(ids=torch.where(mask[..., None], sparse.ids, -7), logprobs=sparse.logprobs)  # padding ids
    torch.testing.assert_close(forward_kl(student, padded, mask), forward_kl(student, sparse, mask))


# --- chunking ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 7, 10_000])
@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_chunking_changes_neither_values_nor_gradients(loss: Loss, chunk_size: int) -> None:
    student, teacher, mask = draw(ODD_SHAPE, seed=17)
    sparse = loss.teacher(teacher)
    torch.testing.assert_close(
        loss(student, sparse, mask, reduction="none", chunk_size=chunk_size),
        loss(student, sparse, mask, reduction="none"),
        atol=FLOAT64_ATOL,
        rtol=FLOAT64_RTOL,
    )
    torch.testing.assert_close(
        student_grad(loss, student, sparse, mask, chunk_size=chunk_size),
        student_grad(loss, student, sparse, mask),
        atol=FLOAT64_ATOL,
        rtol=FLOAT64_RTOL,
    )


# --- the gradient kept from the forward ----------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_backward_twice_through_one_graph_gives_the_same_gradients(loss: Loss) -> None:
    """The first backward scales the gradient kept by the forward in place; a second one recomputes it."""
    student, teacher, mask = draw(ODD_SHAPE, seed=31)
    leaf_s = student.requires_grad_()
    leaf_t = teacher.requires_grad_() if not loss.sparse else teacher
    weights = torch.rand(ODD_SHAPE[:-1], generator=torch.Generator().manual_seed(32), dtype=torch.float64)
    inputs = (leaf_s,) if loss.sparse else (leaf_s, leaf_t)
    value = (loss(leaf_s, loss.teacher(leaf_t), mask, reduction="none") * weights).sum()
    first = torch.autograd.grad(value, inputs, retain_graph=True)
    second = torch.autograd.grad(value, inputs)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("loss", DENSE_LOSSES)
def test_weighted_rows_give_the_weighted_reference_gradients(loss: Loss) -> None:
    """Per-row incoming gradients (a weighted sum of the unreduced loss) scale each row's kept gradient."""
    student, teacher, mask = draw(ODD_SHAPE, seed=33)
    weights = torch.randn(ODD_SHAPE[:-1], generator=torch.Generator().manual_seed(34), dtype=torch.float64)
    ours_s, ours_t = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    ref_s, ref_t = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    (loss(ours_s, ours_t, mask, reduction="none") * weights).sum().backward()
    (torch.where(mask, loss.reference(ref_s, ref_t), 0.0) * weights).sum().backward()
    for ours, ref in ((ours_s, ref_s), (ours_t, ref_t)):
        torch.testing.assert_close(ours.grad, ref.grad, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)


@pytest.mark.parametrize("factor", [1.0, 3.0, 0.0], ids=lambda f: f"times {f}")
@pytest.mark.parametrize("reduction", ["mean", "sum", "batchmean", "num_items"])
@pytest.mark.parametrize("loss", DENSE_LOSSES)
def test_a_reduced_loss_times_a_factor_gives_the_reference_gradients(loss: Loss, reduction: str, factor: float) -> None:
    """The kept gradient is computed times the reduction's weight: the backward of the plain mean or sum returns it
    as it is, and any other incoming gradient (a scaled loss) still scales it."""
    student, teacher, mask = draw(ODD_SHAPE, seed=35)
    ours_s, ours_t = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    ref_s, ref_t = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    kw: dict[str, Any] = {"reduction": reduction} if reduction != "num_items" else {"num_items": 40}
    (loss(ours_s, ours_t, mask, **kw) * factor).backward()
    rows = torch.where(mask, loss.reference(ref_s, ref_t), 0.0).sum()
    count = {"sum": 1, "num_items": 40}.get(reduction, int(mask.sum()))
    (rows / count * factor).backward()
    for ours, ref in ((ours_s, ref_s), (ours_t, ref_t)):
        torch.testing.assert_close(ours.grad, ref.grad, atol=FLOAT64_ATOL, rtol=FLOAT64_RTOL)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "batchmean", "num_items"])
def test_the_backward_of_a_plain_mean_or_sum_does_not_scale_the_kept_gradient(
    reduction: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kept gradient already holds the reduction's weight, so ``loss.backward()`` makes no pass over it (on a
    GPU that pass cost as much as the fused kernel); a scaled loss makes one."""
    from alignment import losses

    passes: list[int] = []
    chunks = losses._chunks
    monkeypatch.setattr(losses, "_chunks", lambda rows, *args: passes.append(rows) or chunks(rows, *args))
    student, teacher, mask = draw(ODD_SHAPE, seed=36, dtype=dtype)
    kw: dict[str, Any] = {"reduction": reduction} if reduction != "num_items" else {"num_items": 40}
    for factor, scaling_passes in ((1.0, 0), (2.0, 1)):
        value = generalized_jsd(student.clone().requires_grad_(), teacher, mask, **kw)
        before = len(passes)
        (value * factor).backward()
        assert len(passes) - before == scaling_passes


@pytest.mark.parametrize("loss", ALL_LOSSES)
def test_no_gradient_is_computed_when_none_is_needed(loss: Loss, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``torch.no_grad`` (or with inputs that need none) the forward keeps no gradient tensor."""
    import alignment.losses as losses

    kept: list[tuple[Any, ...]] = []
    original = losses._rows_and_grads

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        kept.append(result[1:])
        return result

    monkeypatch.setattr(losses, "_rows_and_grads", spy)
    student, teacher, mask = draw(ODD_SHAPE, seed=35)
    with torch.no_grad():
        loss(student.requires_grad_(), loss.teacher(teacher), mask)
    loss(student.detach(), loss.teacher(teacher), mask)
    assert kept == [(None, None), (None, None)]


# --- -inf logits ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", DENSE_LOSSES)
def test_shared_minus_inf_entries_drop_out_of_the_loss(loss: Loss) -> None:
    student, teacher, mask = draw(ODD_SHAPE, seed=18)
    banned = torch.zeros(ODD_SHAPE[-1], dtype=torch.bool)
    banned[[0, 4, 5]] = True
    leaf = student.masked_fill(banned, -INF).requires_grad_()
    value = loss(leaf, teacher.masked_fill(banned, -INF), mask, reduction="none")
    torch.testing.assert_close(value, loss(student[..., ~banned], teacher[..., ~banned], mask, reduction="none"))
    (grad,) = torch.autograd.grad(value.sum(), leaf)
    assert torch.isfinite(grad).all() and (grad[..., banned] == 0).all()


def test_minus_inf_on_one_side_only() -> None:
    student, teacher = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 1.0, -INF])
    assert torch.isfinite(forward_kl(student, teacher))  # the teacher's zero costs nothing in KL(teacher || student)
    assert torch.isfinite(generalized_jsd(student, teacher, beta=0.5))
    assert reverse_kl(student, teacher) == INF  # the student puts mass where the teacher has none


def test_check_finite_false_skips_the_check() -> None:
    student = torch.tensor([[0.0, math.nan], [0.0, 1.0]])
    values = forward_kl(student, torch.zeros(2, 2), reduction="none", check_finite=False)
    assert values[0].isnan() and values[1].isfinite()


# --- bad input: a typed error naming the argument ---------------------------------------------------------------

S = torch.zeros(2, 3, 5)


def with_nan(x: torch.Tensor) -> torch.Tensor:
    return x.index_put((torch.tensor(1), torch.tensor(2), torch.tensor(0)), torch.tensor(math.nan))


def sparse(ids: list[int], k: int = 2) -> TopK:
    return TopK(ids=torch.tensor(ids).expand(2, 3, k), logprobs=torch.full((2, 3, k), -1.0))


BAD_INPUTS = {
    "batch size": (lambda: generalized_jsd(S, torch.zeros(3, 3, 5)), AlignmentError, "teacher_logits"),
    "vocab size": (lambda: masked_kl(S, torch.zeros(2, 3, 6)), AlignmentError, "teacher_logits"),
    "nan student": (lambda: generalized_jsd(with_nan(S), S), AlignmentError, "student_logits.*NaN"),
    "+inf teacher": (
        lambda: masked_kl(S, S.index_fill(-1, torch.tensor(1), INF)),
        AlignmentError,
        r"teacher_logits.*\+inf",
    ),
    "all -inf row": (
        lambda: generalized_jsd(S.index_fill(1, torch.tensor(2), -INF), S),
        AlignmentError,
        "student_logits.*only -inf",
    ),
    "nan top-k": (
        lambda: forward_kl(S, TopK(ids=sparse([0, 1]).ids, logprobs=with_nan(torch.zeros(2, 3, 2)))),
        AlignmentError,
        "logprobs",
    ),
    "integer logits": (lambda: generalized_jsd(S.long(), S), TypeError, "student_logits"),
    "teacher type": (lambda: generalized_jsd(S, S.numpy()), TypeError, "teacher_logits"),  # type: ignore[arg-type]
    "mask shape": (lambda: generalized_jsd(S, S, torch.ones(2, 5, dtype=torch.bool)), AlignmentError, "mask"),
    "mask dtype": (lambda: masked_kl(S, S, torch.ones(2, 3)), TypeError, "mask"),
    "mask labels": (lambda: masked_kl(S, S, torch.full((2, 3), -100)), TypeError, "mask"),
    "temperature 0": (lambda: generalized_jsd(S, S, temperature=0.0), AlignmentError, "temperature"),
    "temperature < 0": (lambda: masked_kl(S, S, temperature=-1.0), AlignmentError, "temperature"),
    "temperature nan": (lambda: masked_kl(S, S, temperature=math.nan), AlignmentError, "temperature"),
    "beta < 0": (lambda: generalized_jsd(S, S, beta=-0.1), AlignmentError, "beta"),
    "beta > 1": (lambda: generalized_jsd(S, S, beta=1.5), AlignmentError, "beta"),
    "beta nan": (lambda: generalized_jsd(S, S, beta=math.nan), AlignmentError, "beta"),
    "id too large": (lambda: generalized_jsd(S, sparse([0, 5])), AlignmentError, "ids.*id 5"),
    "id negative": (lambda: reverse_kl(S, sparse([-1, 2])), AlignmentError, "ids.*id -1"),
    "id repeated": (lambda: forward_kl(S, sparse([3, 3])), AlignmentError, "ids.*distinct"),
    "k > V": (lambda: forward_kl(S, sparse([0, 1, 2, 3, 4, 0], k=6)), AlignmentError, "ids.*k"),
    "top-k positions": (
        lambda: forward_kl(S, TopK(ids=torch.zeros(2, 4, 1, dtype=torch.long), logprobs=torch.zeros(2, 4, 1))),
        AlignmentError,
        "ids",
    ),
    "top-k temperature": (lambda: forward_kl(S, sparse([0, 1]), temperature=2.0), AlignmentError, "temperature"),
    "top-k grad": (
        lambda: forward_kl(S, TopK(ids=sparse([0, 1]).ids, logprobs=torch.zeros(2, 3, 2, requires_grad=True))),
        AlignmentError,
        "logprobs.*grad",
    ),
    "top-k ids dtype": (lambda: TopK(ids=torch.zeros(2, dtype=torch.int32), logprobs=torch.zeros(2)), TypeError, "ids"),
    "top-k logprobs shape": (
        lambda: TopK(ids=torch.zeros(2, dtype=torch.long), logprobs=torch.zeros(3)),
        AlignmentError,
        "logprobs",
    ),
    "direction": (lambda: masked_kl(S, S, direction="backward"), AlignmentError, "direction"),  # type: ignore[arg-type]
    "reduction": (lambda: masked_kl(S, S, reduction="avg"), AlignmentError, "reduction"),  # type: ignore[arg-type]
    "num_items with sum": (lambda: masked_kl(S, S, reduction="sum", num_items=3), AlignmentError, "num_items"),
    "chunk_size": (lambda: masked_kl(S, S, chunk_size=0), AlignmentError, "chunk_size"),
    "teacher_positions float": (
        lambda: generalized_jsd(S, S, teacher_positions=torch.zeros(2, 3)),
        TypeError,
        "teacher_positions.*integer",
    ),
    "teacher_positions bool": (
        lambda: generalized_jsd(S, S, teacher_positions=torch.zeros(2, 3, dtype=torch.bool)),
        TypeError,
        "teacher_positions.*integer",
    ),
    "teacher_positions list": (
        lambda: generalized_jsd(S, S, teacher_positions=[[0, 1, 2]] * 2),  # type: ignore[arg-type]
        TypeError,
        "teacher_positions.*integer",
    ),
    "teacher_positions shape": (
        lambda: generalized_jsd(S, S, teacher_positions=torch.zeros(2, 4, dtype=torch.long)),
        AlignmentError,
        "teacher_positions.*mask",
    ),
    "teacher_positions too large": (
        lambda: forward_kl(S, torch.zeros(2, 4, 5), teacher_positions=torch.tensor([[0, 1, 2], [3, 4, 0]])),
        AlignmentError,
        r"teacher_positions must lie in \[0, 4\).*got 4 at \(1, 1\)",
    ),
    "teacher_positions negative": (
        lambda: reverse_kl(S, torch.zeros(2, 4, 5), teacher_positions=torch.tensor([[0, -1, 2], [3, 0, 0]])),
        AlignmentError,
        "teacher_positions.*got -1",
    ),
    "teacher_positions batch": (
        lambda: generalized_jsd(S, torch.zeros(3, 4, 5), teacher_positions=torch.zeros(2, 3, dtype=torch.long)),
        AlignmentError,
        "teacher_positions.*leading axes",
    ),
    "teacher_positions rank": (
        lambda: generalized_jsd(S, torch.zeros(8, 5), teacher_positions=torch.zeros(2, 3, dtype=torch.long)),
        AlignmentError,
        "teacher_positions.*leading axes",
    ),
    "teacher_positions vocab": (
        lambda: masked_kl(S, torch.zeros(2, 4, 6), teacher_positions=torch.zeros(2, 3, dtype=torch.long)),
        AlignmentError,
        "teacher_logits.*teacher's positions",
    ),
    "teacher_positions, no teacher positions": (
        lambda: forward_kl(
            S, torch.zeros(2, 0, 5), torch.zeros(2, 3, dtype=torch.bool), teacher_positions=torch.zeros(2, 3).long()
        ),
        AlignmentError,
        r"teacher_logits \(2, 0, 5\) have no positions",
    ),
    "teacher_positions top-k": (
        lambda: forward_kl(S, sparse([0, 1]), teacher_positions=torch.zeros(2, 3, dtype=torch.long)),
        AlignmentError,
        "teacher_positions.*TopK",
    ),
    "teacher_positions nan row": (
        lambda: forward_kl(S, with_nan(torch.zeros(2, 4, 5)), teacher_positions=torch.tensor([[0, 1, 2], [0, 2, 3]])),
        AlignmentError,
        r"teacher_logits.*position \(1, 1\) has a NaN",
    ),
}


@pytest.mark.parametrize(("call", "error", "pattern"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_raises_a_typed_error_naming_the_argument(
    call: Callable[[], object], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        call()


def test_value_errors_are_value_errors() -> None:
    assert issubclass(AlignmentError, ValueError)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(S, S, beta=2.0)


def test_workspace_hands_out_one_buffer_per_slot_and_grows_it() -> None:
    work = Workspace(torch.float32, torch.device("cpu"))
    first = work(0, 4, 3)
    smaller, other = work(0, 2, 3), work(1, 4, 3)
    assert first.shape == (4, 3) and smaller.shape == (2, 3) and smaller.data_ptr() == first.data_ptr()
    assert other.data_ptr() != first.data_ptr() and other.dtype == torch.float32
    grown = work(0, 5, 3)
    assert grown.shape == (5, 3) and work(0, 4, 3).data_ptr() == grown.data_ptr()


def _large_allocations(teacher_kind: str, beta: float, chunk: int) -> int:
    """How many operators of one forward + backward allocate at least half of a 4-row chunk's temporary."""
    student, dense, _ = draw((64, 4096), seed=21, dtype=torch.float32)
    teacher = top_k(dense, 5) if teacher_kind == "top-k" else dense
    student.requires_grad_()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        generalized_jsd(student, teacher, beta=beta, chunk_size=chunk).backward()
    return sum(event.self_cpu_memory_usage >= 4 * 4096 * 4 // 2 for event in profile.events())


@pytest.mark.parametrize("teacher_kind", ["dense", "top-k"])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_chunks_reuse_their_temporaries(teacher_kind: str, beta: float) -> None:
    """Sixteen chunks allocate no more large tensors than one: a chunk's temporaries are allocated once per call
    (allocated per chunk, on CPU they were faulted in afresh by every chunk, which cost more than the arithmetic)."""
    assert _large_allocations(teacher_kind, beta, chunk=4) == _large_allocations(teacher_kind, beta, chunk=64)


# --- logits sliced along the positions (``logits[:, :-1]``): read in place, not copied --------------------------------


def _sliced_and_copied(
    shape: tuple[int, ...], teacher_kind: str, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The same student and teacher logits as slices ``[..., :-1, :]`` of longer tensors (their leading axes do not
    merge without a copy) and as contiguous copies, each a leaf that needs a gradient."""
    longer = (*shape[:-2], shape[-2] + 1, shape[-1])
    student, teacher, _ = draw(longer, seed)
    sliced = student.requires_grad_(), teacher.requires_grad_()
    copied = tuple(x.detach()[..., :-1, :].contiguous().requires_grad_() for x in sliced)
    return (sliced[0], sliced[1]), (copied[0], copied[1])


@pytest.mark.parametrize("teacher_kind", ["dense", "top-k"])
@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 2, 4, 6)], ids=str)
@pytest.mark.parametrize("chunk", [None, 1, 3, 8])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_logits_sliced_along_positions_give_what_their_copies_give(
    teacher_kind: str, shape: tuple[int, ...], chunk: int | None, beta: float
) -> None:
    """Values and both gradients as for contiguous copies, with chunks that would cross from one sequence's rows to
    the next (3 and 8 rows against 5 or 4 positions) and a weighted backward (the path that rescales the kept
    gradients)."""
    (s, t), (s_copy, t_copy) = _sliced_and_copied(shape, teacher_kind, seed=31)
    mask = torch.rand(shape[:-1], generator=torch.Generator().manual_seed(32)) < 0.7
    results = []
    for student, teacher_logits in ((s, t), (s_copy, t_copy)):
        view = student[..., :-1, :] if student is s else student
        teacher_view = teacher_logits[..., :-1, :] if teacher_logits is t else teacher_logits
        teacher: torch.Tensor | TopK = teacher_view if teacher_kind == "dense" else top_k(teacher_view.detach(), 3)
        values = generalized_jsd(view, teacher, mask, beta=beta, reduction="none", chunk_size=chunk)
        weights = torch.linspace(0.5, 2.0, values.numel(), dtype=values.dtype).reshape(values.shape)
        wanted = (student, teacher_logits) if teacher_kind == "dense" else (student,)
        grads = torch.autograd.grad((values * weights).sum(), wanted)
        results.append((values, *(g[..., :-1, :] if student is s else g for g in grads)))
    for actual, expected in zip(*results, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def _large_forward_allocations(logits: torch.Tensor, teacher: torch.Tensor) -> int:
    """Operators of a forward without gradients that allocate at least half of the student's logits."""
    with (
        torch.no_grad(),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile,
    ):
        generalized_jsd(logits, teacher)
    return sum(event.self_cpu_memory_usage >= logits.numel() * logits.element_size() // 2 for event in profile.events())


def test_logits_sliced_along_positions_are_not_copied() -> None:
    """``logits[:, :-1]`` of ``(4, 65, 4096)`` logits is read in place: no allocation of its size, where flattening
    it to rows would copy it. Logits whose batch axes do not merge either (two of them, swapped) are still copied."""
    student, teacher, _ = draw((4, 65, 4096), seed=33, dtype=torch.float32)
    assert _large_forward_allocations(student[:, :-1], teacher[:, :-1]) == 0
    swapped = [x.reshape(2, 2, 65, 4096).transpose(0, 1) for x in (student, teacher)]
    assert _large_forward_allocations(*swapped) >= 1


# --- a slice's gradient written into its base: no second gradient as large as the logits -------------------------

WINDOWS = {  # slices along the positions of (B, 7, V) or (B, H, 7, V) logits
    ":-1": lambda x: x[..., :-1, :],
    "1:": lambda x: x[..., 1:, :],
    "2:5": lambda x: x[..., 2:5, :],
    "narrow": lambda x: x.narrow(-2, 1, 5),
    "slice of a slice": lambda x: x[..., :-1, :][..., 1:, :],
    "every other": lambda x: x[..., ::2, :],
    "all": lambda x: x[..., :, :],
}


def _base_gradients(
    base: torch.Tensor, slicer: Callable[[torch.Tensor], torch.Tensor], *, non_leaf: bool, **kw: Any
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Values and the gradient of the base (a leaf, or a tensor computed from one) through ``slicer``'s view, and
    through a copy of that view (autograd's own path: the copy's gradient goes back through the slice), for a
    weighted backward."""
    results = []
    for copied in (False, True):
        leaf = base.detach().requires_grad_()
        view = slicer(leaf * 1.5 if non_leaf else leaf)
        view = view.contiguous() if copied else view
        teacher = torch.randn(view.shape, generator=torch.Generator().manual_seed(5), dtype=view.dtype)
        mask = torch.rand(view.shape[:-1], generator=torch.Generator().manual_seed(6)) < 0.7
        values = generalized_jsd(view, teacher, mask, reduction="none", **kw)
        weights = torch.linspace(0.5, 2.0, values.numel(), dtype=values.dtype).reshape(values.shape)
        (grad,) = torch.autograd.grad((values * weights).sum(), leaf)
        results.append((values, grad))
    return results


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("shape", [(3, 7, 6), (2, 2, 7, 5)], ids=str)
@pytest.mark.parametrize("non_leaf", [False, True], ids=["leaf", "non-leaf"])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_a_slices_base_gets_the_gradient_autograd_would_give_it(
    window: str, shape: tuple[int, ...], non_leaf: bool, beta: float
) -> None:
    """Values and the base's gradient (zero at the positions the slice leaves out) equal those through a copy of
    the slice, for every kind of slice, of a leaf and of a computed tensor, 3-D and 4-D, with chunks that would
    cross from one sequence to the next."""
    base = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours, theirs = _base_gradients(base, WINDOWS[window], non_leaf=non_leaf, beta=beta, chunk_size=4)
    for actual, expected in zip(ours, theirs, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_a_slices_base_gets_its_gradient_again_in_a_second_backward() -> None:
    """``retain_graph=True``: the second backward recomputes the base-sized gradient, zeros included, and it
    equals the first."""
    base = torch.randn(2, 7, 6, dtype=torch.float64, requires_grad=True)
    loss = generalized_jsd(base[:, 1:-1], torch.randn(2, 5, 6, dtype=torch.float64))
    (first,) = torch.autograd.grad(loss * 3.0, base, retain_graph=True)
    (second,) = torch.autograd.grad(loss * 3.0, base)
    assert first[:, [0, -1]].abs().max() == 0.0
    torch.testing.assert_close(first, second, rtol=0.0, atol=0.0)


def _large_backward_allocations(logits: torch.Tensor, teacher: torch.Tensor) -> int:
    """Operators of a forward and backward that allocate at least half as much as ``logits`` (a slice)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
        generalized_jsd(logits, teacher).backward()
    return sum(event.self_cpu_memory_usage >= logits.numel() * logits.element_size() // 2 for event in profile.events())


def test_a_slices_backward_allocates_one_gradient_as_large_as_its_base() -> None:
    """The base's gradient is the only large tensor a forward and backward of ``logits[:, :-1]`` allocate: autograd
    would allocate the slice's gradient and then a zero-filled one of the base's size to copy it into, as it still
    does for a slice of a slice (once per slice)."""
    student, teacher, _ = draw((4, 65, 4096), seed=34, dtype=torch.float32)
    assert _large_backward_allocations(student.requires_grad_()[:, :-1], teacher[:, :-1]) == 1
    assert _large_backward_allocations(student[:, 1:][:, :-1], teacher[:, 1:-1]) == 3


def test_a_slice_that_asks_for_its_own_gradient_gets_it() -> None:
    """A slice with ``retain_grad()`` or a hook keeps autograd's path, so its own gradient is there; a plain slice
    passes its gradient to the base, and asking autograd for the slice's then fails loudly, never with a silent
    zero."""
    base = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 5, 5, dtype=torch.float64)
    (expected,) = torch.autograd.grad(generalized_jsd(base[:, :-1].contiguous(), teacher), base)
    kept = base[:, :-1]
    kept.retain_grad()
    generalized_jsd(kept, teacher).backward()
    assert kept.grad is not None
    torch.testing.assert_close(base.grad, expected, rtol=0.0, atol=1e-15)
    torch.testing.assert_close(kept.grad, expected[:, :-1], rtol=0.0, atol=1e-15)
    seen = []
    hooked = base[:, :-1]
    hooked.register_hook(lambda grad: seen.append(grad.shape))
    generalized_jsd(hooked, teacher).backward()
    assert seen == [torch.Size([2, 5, 5])]
    plain = base[:, :-1]
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.autograd.grad(generalized_jsd(plain, teacher), plain)


# --- teacher_positions: the teacher's rows read in place ---------------------------------------------------------


def teacher_rows(
    shape: tuple[int, ...], teacher_length: int, seed: int, *, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student logits ``shape``, teacher logits over ``teacher_length`` positions of their own, a mask, and the
    teacher position of every student position: in range where the mask counts it, out of range elsewhere (never
    read), with the teacher's rows that no counted position reads set to NaN (never read either)."""
    generator = torch.Generator().manual_seed(seed)
    *lead, frames, vocab = shape
    student = torch.randn(shape, generator=generator).to(dtype)
    teacher = torch.randn((*lead, teacher_length, vocab), generator=generator).to(dtype)
    mask = torch.rand((*lead, frames), generator=generator) < 0.7
    positions = torch.randint(0, teacher_length, (*lead, frames), generator=generator)
    positions = torch.where(mask, positions, teacher_length + 5)
    reads = torch.zeros((*lead, teacher_length), dtype=torch.long).scatter_add_(-1, positions * mask, mask.long())
    teacher = teacher.masked_fill(reads[..., None] == 0, math.nan)
    return student, teacher, mask, positions


def gathered(teacher: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What ``align_teacher_logits`` hands the loss: the teacher's row of every position, gathered."""
    safe = torch.where(mask, positions, 0)
    if safe.ndim == 1:
        return teacher[safe]
    lead = torch.meshgrid(*(torch.arange(n) for n in safe.shape[:-1]), indexing="ij")
    return teacher[(*(axis[..., None] for axis in lead), safe)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(3, 7, 11), (2, 2, 5, 6), (9, 4)], ids=["3-d", "4-d", "2-d"])
@pytest.mark.parametrize("loss", DENSE_LOSSES)
def test_teacher_positions_give_what_the_gathered_rows_give(
    loss: Loss, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    """Bit for bit, values and the student's gradient: the loss reads the same rows, chunk by chunk (a chunk of 2
    positions here), that the gathered copy holds; masked positions pointing outside the teacher's positions and
    NaN rows that no counted position reads change nothing."""
    student, teacher, mask, positions = teacher_rows(shape, teacher_length=shape[-2] + 3, seed=40, dtype=dtype)
    copy = gathered(teacher, positions, mask)
    results = []
    for kwargs in ({"teacher_positions": positions}, {}):
        leaf = student.clone().requires_grad_()
        given_teacher = teacher if kwargs else copy
        values = loss(leaf, given_teacher, mask, reduction="none", chunk_size=2, **kwargs)
        (grad,) = torch.autograd.grad((values * 1.5).sum(), leaf)
        results.append((values, grad))
    for ours, expected in zip(*results, strict=True):
        torch.testing.assert_close(ours, expected, rtol=0.0, atol=0.0)
    assert results[0][0].isfinite().all()


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 8])
def test_teacher_positions_that_run_consecutively_give_what_the_gathered_rows_give(chunk_size: int) -> None:
    """Positions that step by one (aligned text, the identity path) are read as a slice of the teacher's rows on
    CPU, the others copied: chunks of either kind, and a chunk that crosses from one sequence to the next, give the
    gathered rows' values and gradient."""
    generator = torch.Generator().manual_seed(45)
    student = torch.randn(2, 8, 6, generator=generator)
    teacher = torch.randn(2, 13, 6, generator=generator)
    positions = torch.tensor([[2, 3, 4, 5, 9, 10, 11, 12], [0, 1, 2, 3, 4, 5, 7, 8]])
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 6] = False
    results = []
    for kwargs in ({"teacher_positions": positions}, {}):
        leaf = student.clone().requires_grad_()
        given_teacher = teacher if kwargs else gathered(teacher, positions, mask)
        values = generalized_jsd(leaf, given_teacher, mask, reduction="none", chunk_size=chunk_size, **kwargs)
        results.append((values, *torch.autograd.grad((values * 1.5).sum(), leaf)))
    for ours, expected in zip(*results, strict=True):
        torch.testing.assert_close(ours, expected, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_teacher_positions_with_a_projection_give_what_the_gathered_rows_give(beta: float) -> None:
    """The same over a projection's classes, with teacher logits wider than the student's and a slice of the
    student's logits (its gradient written into the base)."""
    from alignment.types import VocabProjection

    classes = (torch.tensor([0, 0, 1, 2, 2, 3]), torch.tensor([1, 0, 2, 3, 3, 0, 1, 2]))
    projection = VocabProjection(
        student_classes=classes[0].numpy(), teacher_classes=classes[1].numpy(), num_classes=4, kind="prefix"
    )
    generator = torch.Generator().manual_seed(41)
    base = torch.randn(2, 6, 6, generator=generator)
    teacher = torch.randn(2, 9, 8, generator=generator)
    mask = torch.tensor([[True, True, False, True, True], [False, True, True, True, True]])
    positions = torch.tensor([[0, 2, 99, 3, 8], [-7, 1, 4, 5, 6]])
    grads, values = [], []
    for kwargs in ({"teacher_positions": positions}, {}):
        leaf = base.clone().requires_grad_()
        given_teacher = teacher if kwargs else gathered(teacher, positions, mask)
        value = generalized_jsd(
            leaf[:, :-1], given_teacher, mask, beta=beta, projection=projection, chunk_size=3, **kwargs
        )
        (grad,) = torch.autograd.grad(value * 2.0, leaf)
        values.append(value)
        grads.append(grad)
    torch.testing.assert_close(values[0], values[1], rtol=0.0, atol=0.0)
    torch.testing.assert_close(grads[0], grads[1], rtol=0.0, atol=0.0)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_a_teacher_read_through_positions_gets_its_gradient(beta: float) -> None:
    """A teacher that needs a gradient gets, at its own positions, the sum of what each position that read a row
    passes back (two positions read row 1 of the first example); rows nobody read get 0."""
    generator = torch.Generator().manual_seed(42)
    student = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 6, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, False], [True, False, True, True]])
    positions = torch.tensor([[1, 1, 3, 0], [0, 9, 2, 5]])
    ours = torch.autograd.grad(generalized_jsd(student, teacher, mask, beta=beta, teacher_positions=positions), teacher)
    expected = torch.autograd.grad(
        generalized_jsd(student, gathered(teacher, positions, mask), mask, beta=beta), teacher
    )
    torch.testing.assert_close(ours[0], expected[0], rtol=0.0, atol=1e-15)
    assert ours[0][0, [0, 2, 4, 5]].abs().max() == 0.0 and ours[0][0, 1].abs().max() > 0.0


def test_teacher_positions_read_a_teacher_whose_positions_do_not_merge() -> None:
    """``teacher_logits[:, :-1]`` of a longer tensor (its leading axes cannot merge into rows without a copy): the
    loss reads its rows through the blocks, as it reads such a student."""
    student, teacher, mask, positions = teacher_rows((3, 5, 7), teacher_length=6, seed=43)
    longer = torch.cat([teacher, torch.full((3, 1, 7), math.nan)], dim=1)[:, :-1]
    assert not longer.is_contiguous()
    ours = generalized_jsd(student, longer, mask, reduction="none", teacher_positions=positions, chunk_size=2)
    expected = generalized_jsd(student, gathered(teacher, positions, mask), mask, reduction="none", chunk_size=2)
    torch.testing.assert_close(ours, expected, rtol=0.0, atol=0.0)


def test_teacher_positions_make_no_copy_of_the_compared_rows() -> None:
    """No operator of a forward with ``teacher_positions`` allocates a tenth of the rows the positions read (a
    chunk's copy of them is 16 rows of 512), where the gathered path allocates them all."""
    student, teacher, mask, positions = teacher_rows((2, 512, 4096), teacher_length=520, seed=44)
    teacher = teacher.nan_to_num()
    size = student.numel() * student.element_size() // 10

    def large(call: Callable[[], object]) -> int:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profile:
            call()
        return sum(event.self_cpu_memory_usage >= size for event in profile.events())

    with torch.no_grad():
        assert large(lambda: generalized_jsd(student, teacher, mask, teacher_positions=positions)) == 0
        assert large(lambda: generalized_jsd(student, gathered(teacher, positions, mask), mask)) >= 1


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 3),
    frames=st.integers(1, 9),
    extra=st.integers(0, 4),
    vocab=st.integers(1, 6),
    chunk_size=st.integers(1, 10),
    beta=st.sampled_from([0.0, 0.3, 1.0]),
    sliced=st.booleans(),
    data=st.data(),
)
def test_teacher_positions_match_the_gathered_rows_for_any_runs_and_chunks(
    rows: int, frames: int, extra: int, vocab: int, chunk_size: int, beta: float, sliced: bool, data: st.DataObject
) -> None:
    """Any mix of positions that step by one (a slice on CPU) and positions that do not (a copy), any chunking and
    mask, a student that is or is not a slice of a larger tensor: bit for bit the gathered rows' values and
    gradient."""
    length = frames + extra
    starts = data.draw(st.lists(st.integers(0, extra), min_size=rows, max_size=rows))
    jumps = data.draw(st.lists(st.booleans(), min_size=rows * frames, max_size=rows * frames))
    seed = data.draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    consecutive = torch.tensor(starts)[:, None] + torch.arange(frames)  # within [0, length)
    scattered = torch.randint(0, length, (rows, frames), generator=generator)
    positions = torch.where(torch.tensor(jumps).view(rows, frames), scattered, consecutive)
    mask = torch.rand(rows, frames, generator=generator) < 0.8
    base = torch.randn(rows, frames + int(sliced), vocab, generator=generator, dtype=torch.float64)
    teacher = torch.randn(rows, length, vocab, generator=generator, dtype=torch.float64)
    results = []
    for kwargs in ({"teacher_positions": positions}, {}):
        leaf = base.clone().requires_grad_()
        student = leaf[:, :frames] if sliced else leaf
        given_teacher = teacher if kwargs else gathered(teacher, positions, mask)
        values = generalized_jsd(
            student, given_teacher, mask, beta=beta, reduction="none", chunk_size=chunk_size, **kwargs
        )
        results.append((values, *torch.autograd.grad((values * 1.25).sum(), leaf)))
    for ours, expected in zip(*results, strict=True):
        torch.testing.assert_close(ours, expected, rtol=0.0, atol=0.0)
