"""Parity of the fused Triton kernel (``alignment._triton``) with a float64 closed-form reference.

With CUDA the compiled kernel runs on the GPU. Without it the same kernel runs on CPU tensors under Triton's
interpreter, which has to be chosen before triton is first imported, because triton wraps its own library functions
(``tl.max``, ``tl.sum``, ...) at import. So this module imports triton with ``TRITON_INTERPRET=1`` and then restores
the environment, so that the rest of the suite (and :func:`alignment._triton.available`) does not see the interpreter;
an autouse fixture sets the variable again for each test here. If something imported triton earlier without it, the
interpreter cannot run, and the module is skipped with that reason.
"""

from __future__ import annotations

import math

import pytest
import torch

from alignment import _triton
from tests import reference

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")

with pytest.MonkeyPatch.context() as _env:
    if not ON_GPU:
        _env.setenv("TRITON_INTERPRET", "1")
    triton = pytest.importorskip("triton")
    from triton.runtime.interpreter import InterpretedFunction

if not ON_GPU and not isinstance(triton.language.sum, InterpretedFunction):
    pytest.skip(
        "triton was imported before this module without TRITON_INTERPRET=1, so its interpreter cannot run here; "
        "run `pytest tests/test_triton.py` on its own",
        allow_module_level=True,
    )

# The interpreter computes with numpy, which warns where the kernel forms NaN or -inf in lanes it then discards
# (log m where p = q = 0, e.g. the ragged tail of a row).
pytestmark = [
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:divide by zero encountered in log2:RuntimeWarning"),  # log2 m where m = 0
]

BETAS = [0.0, 0.1, 0.5, 0.9, 1.0]
TEMPERATURES = [0.7, 1.0, 2.0]
ROWS_RTOL, ROWS_ATOL = 1e-5, 1e-6  # float32 math from the logits, whatever their dtype
# A gradient element is computed in float32, with an error of about 1e-5 of its row's largest element (cancellation in
# log q - log m - KL), then rounded once to its buffer's dtype (half an ulp: 2**-8 for bfloat16, 2**-11 for float16,
# and at most half the spacing of the subnormals, 2**-25 for float16).
GRAD_SCALE_ATOL = 1e-5
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


@pytest.fixture(autouse=True)
def _interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    if not ON_GPU:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def closed_form(
    student: torch.Tensor, teacher: torch.Tensor, *, beta: float, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 rows, student gradient and teacher gradient from the closed forms, with ``0 log 0 = 0``."""
    log_q = torch.log_softmax(student.double() / temperature, dim=-1)
    log_p = torch.log_softmax(teacher.double() / temperature, dim=-1)
    q, p = log_q.exp(), log_p.exp()

    def kl(a: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (log_a - log_b), 0.0).sum(dim=-1)

    def centred(a: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
        # d KL(a || b) / d logits of a, with b held fixed (where b is the mixture, its own terms cancel)
        return torch.where(a > 0, a * (log_a - log_b - kl(a, log_a, log_b)[..., None]), 0.0) / temperature

    if beta == 0:
        return kl(p, log_p, log_q), (q - p) / temperature, centred(p, log_p, log_q)
    if beta == 1:
        return kl(q, log_q, log_p), centred(q, log_q, log_p), (p - q) / temperature
    log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
    rows = beta * kl(p, log_p, log_m) + (1 - beta) * kl(q, log_q, log_m)
    return rows, (1 - beta) * centred(q, log_q, log_m), beta * centred(p, log_p, log_m)


def random_logits(
    shape: tuple[int, int], *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    student, teacher = 2 * torch.randn(shape, generator=gen), 2 * torch.randn(shape, generator=gen)
    return student.to(DEVICE, dtype), teacher.to(DEVICE, dtype)


def fused(
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    temperature: float = 1.0,
    grads: tuple[bool, bool] = (True, True),
    grad_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Run the kernel with gradient buffers prefilled with NaN, so that an element it fails to write shows."""
    grad_student, grad_teacher = (torch.full_like(student, math.nan) if want else None for want in grads)
    rows = _triton.jsd_rows(
        student,
        teacher,
        mask,
        beta=beta,
        temperature=temperature,
        grad_student=grad_student,
        grad_teacher=grad_teacher,
        grad_scale=grad_scale,
    )
    return rows, grad_student, grad_teacher


def assert_matches(
    actual: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    expected: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    assert actual[0].dtype == torch.float32
    torch.testing.assert_close(actual[0].double(), expected[0], rtol=ROWS_RTOL, atol=ROWS_ATOL)
    for grad, want in zip(actual[1:], expected[1:], strict=True):
        if grad is not None:
            finfo = torch.finfo(grad.dtype)
            atol = GRAD_SCALE_ATOL * want.abs().max().item() + finfo.smallest_normal * finfo.eps
            torch.testing.assert_close(grad.double(), want, rtol=GRAD_RTOL[grad.dtype], atol=atol)


def test_closed_form_matches_autograd_of_the_reference() -> None:
    student, teacher = (x.cpu().double().requires_grad_() for x in random_logits((3, 11)))
    for beta in BETAS:
        rows, grad_student, grad_teacher = closed_form(student, teacher, beta=beta, temperature=0.7)
        values = reference.generalized_jsd(student, teacher, beta=beta, temperature=0.7)
        torch.testing.assert_close(rows, values)
        torch.testing.assert_close((grad_student, grad_teacher), torch.autograd.grad(values.sum(), (student, teacher)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("temperature", TEMPERATURES, ids=lambda t: f"tau={t}")
@pytest.mark.parametrize("beta", BETAS, ids=lambda b: f"beta={b}")
def test_matches_closed_form(beta: float, temperature: float, dtype: torch.dtype) -> None:
    student, teacher = random_logits((6, 1000), dtype=dtype, seed=1)
    mask = torch.tensor([True, True, False, True, True, False], device=DEVICE)
    expected = closed_form(student[mask], teacher[mask], beta=beta, temperature=temperature)
    student[~mask], teacher[~mask] = math.nan, math.nan  # masked rows are never read
    rows, grad_student, grad_teacher = fused(student, teacher, mask, beta=beta, temperature=temperature)
    assert grad_student is not None and grad_teacher is not None
    assert_matches((rows[mask], grad_student[mask], grad_teacher[mask]), expected)
    assert (rows[~mask] == 0).all() and (grad_student[~mask] == 0).all() and (grad_teacher[~mask] == 0).all()


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0], ids=lambda b: f"beta={b}")
@pytest.mark.parametrize("vocab", [1, 37, 4096, 5003, 9001], ids=lambda v: f"V={v}")
def test_ragged_and_multi_block_rows(vocab: int, beta: float) -> None:
    # blocks hold up to 4096 columns: 5003 and 9001 end in a partial block, 1 and 37 are one partial block
    student, teacher = random_logits((3, vocab), seed=vocab)
    mask = torch.ones(3, dtype=torch.bool, device=DEVICE)
    expected = closed_form(student, teacher, beta=beta, temperature=1.5)
    assert_matches(fused(student, teacher, mask, beta=beta, temperature=1.5), expected)


@pytest.mark.parametrize("grads", [(False, False), (True, False), (False, True)], ids=str)
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0], ids=lambda b: f"beta={b}")
def test_gradient_buffers_are_optional(beta: float, grads: tuple[bool, bool]) -> None:
    student, teacher = random_logits((4, 300), seed=2)
    mask = torch.tensor([True, False, True, True], device=DEVICE)
    rows, student_grad, teacher_grad = closed_form(student, teacher, beta=beta, temperature=0.7)
    expected = (
        torch.where(mask, rows, 0.0),
        torch.where(mask[:, None], student_grad, 0.0),
        torch.where(mask[:, None], teacher_grad, 0.0),
    )
    actual = fused(student, teacher, mask, beta=beta, temperature=0.7, grads=grads)
    assert (actual[1] is not None, actual[2] is not None) == grads
    assert_matches(actual, expected)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0], ids=lambda b: f"beta={b}")
def test_gradients_are_times_the_scale_the_kernel_reads(beta: float) -> None:
    student, teacher = random_logits((4, 300), seed=3)
    mask = torch.tensor([True, False, True, True], device=DEVICE)
    plain = fused(student, teacher, mask, beta=beta, temperature=0.7)
    scale = torch.tensor(0.375, device=DEVICE)  # a power-of-two fraction: the product is exact in float32
    rows, grad_student, grad_teacher = fused(student, teacher, mask, beta=beta, temperature=0.7, grad_scale=scale)
    assert grad_student is not None and grad_teacher is not None
    assert plain[1] is not None and plain[2] is not None
    torch.testing.assert_close(rows, plain[0], atol=0.0, rtol=0.0)  # the value is not scaled
    torch.testing.assert_close(grad_student, plain[1] * 0.375, atol=0.0, rtol=1e-6)
    torch.testing.assert_close(grad_teacher, plain[2] * 0.375, atol=0.0, rtol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0], ids=lambda b: f"beta={b}")
def test_fully_masked_rows_give_exact_zeros(beta: float) -> None:
    student = torch.full((3, 50), math.nan, device=DEVICE)
    rows, grad_student, grad_teacher = fused(
        student, student.clone(), torch.zeros(3, dtype=torch.bool, device=DEVICE), beta=beta
    )
    assert grad_student is not None and grad_teacher is not None
    assert (rows == 0).all() and (grad_student == 0).all() and (grad_teacher == 0).all()


@pytest.mark.parametrize("beta", BETAS, ids=lambda b: f"beta={b}")
def test_neg_inf_on_both_sides_adds_nothing(beta: float) -> None:
    student, teacher = random_logits((3, 200), seed=3)
    student[:, ::3], teacher[:, ::3] = -math.inf, -math.inf
    mask = torch.ones(3, dtype=torch.bool, device=DEVICE)
    rows, grad_student, grad_teacher = fused(student, teacher, mask, beta=beta, temperature=0.7)
    assert grad_student is not None and grad_teacher is not None
    assert (grad_student[:, ::3] == 0).all() and (grad_teacher[:, ::3] == 0).all()
    kept = torch.ones(200, dtype=torch.bool, device=DEVICE)
    kept[::3] = False
    expected = closed_form(student[:, kept], teacher[:, kept], beta=beta, temperature=0.7)
    assert_matches((rows, grad_student[:, kept], grad_teacher[:, kept]), expected)


@pytest.mark.parametrize(
    ("side", "beta"),
    [("teacher", 0.0), ("student", 0.5), ("teacher", 0.5), ("student", 0.9), ("student", 1.0)],
    ids=str,
)
def test_neg_inf_on_one_side_where_the_kl_stays_finite(side: str, beta: float) -> None:
    # a -inf logit facing a finite one: a zero probability in the first argument of a KL, or in a mixture
    student, teacher = random_logits((3, 200), seed=4)
    (student if side == "student" else teacher)[:, :50] = -math.inf
    actual = fused(student, teacher, torch.ones(3, dtype=torch.bool, device=DEVICE), beta=beta, temperature=0.7)
    assert torch.isfinite(actual[0]).all()
    assert_matches(actual, closed_form(student, teacher, beta=beta, temperature=0.7))


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9], ids=lambda b: f"beta={b}")
def test_a_mixture_that_underflows_to_zero_adds_nothing(beta: float) -> None:
    # Where the other side's logit is -inf, the mixture of a probability near the smallest subnormal is rounded
    # to 0; its log must not be -inf, which would make q (log q - log m) infinite. (Compiled, the exponential
    # flushes such a probability to 0 first; the interpreter computes it, so this runs the kernel's fallback.)
    student, teacher = random_logits((2, 64), seed=9)
    for side, other, column in ((student, teacher, 0), (teacher, student, 1)):  # each side once
        side[:, column] = side[:, 2:].double().logsumexp(-1) - 103.6  # probability e^-103.6: 2^-149 in float32
        other[:, column] = -math.inf
    actual = fused(student, teacher, torch.ones(2, dtype=torch.bool, device=DEVICE), beta=beta, temperature=1.0)
    assert torch.isfinite(actual[0]).all()
    assert_matches(actual, closed_form(student, teacher, beta=beta, temperature=1.0))


@pytest.mark.parametrize(("side", "beta"), [("student", 0.0), ("teacher", 1.0)], ids=str)
def test_kl_is_inf_where_its_second_distribution_is_zero(side: str, beta: float) -> None:
    # forward KL(p || q) with q = 0 < p, reverse KL(q || p) with p = 0 < q. Of the gradients only the one without
    # the KL in its formula, the -inf side's (q - p) / tau or (p - q) / tau, is finite, and checked.
    student, teacher = random_logits((3, 200), seed=4)
    (student if side == "student" else teacher)[:, :50] = -math.inf
    rows, grad_student, grad_teacher = fused(
        student, teacher, torch.ones(3, dtype=torch.bool, device=DEVICE), beta=beta
    )
    expected_rows, expected_student, expected_teacher = closed_form(student, teacher, beta=beta, temperature=1.0)
    assert (rows == math.inf).all() and (expected_rows == math.inf).all()
    grad, want = (grad_student, expected_student) if side == "student" else (grad_teacher, expected_teacher)
    assert grad is not None
    torch.testing.assert_close(grad.double(), want, rtol=GRAD_RTOL[torch.float32], atol=1e-7)


def test_row_stride_and_gradient_dtype_may_differ() -> None:
    student, teacher = random_logits((4, 130), dtype=torch.bfloat16, seed=5)
    padded = torch.zeros(4, 160, dtype=torch.bfloat16, device=DEVICE)
    padded[:, :130] = student  # rows 160 apart, 130 long
    grad_student = torch.full((4, 130), math.nan, device=DEVICE)  # float32 buffer for bfloat16 logits
    mask = torch.ones(4, dtype=torch.bool, device=DEVICE)
    rows = _triton.jsd_rows(
        padded[:, :130], teacher, mask, beta=0.5, temperature=1.0, grad_student=grad_student, grad_teacher=None
    )
    assert_matches((rows, grad_student, None), closed_form(student, teacher, beta=0.5, temperature=1.0))


def test_available(monkeypatch: pytest.MonkeyPatch) -> None:
    student = torch.zeros(2, 3, device=DEVICE)
    assert _triton.available(student)
    assert not _triton.available(student.double())  # float64 stays on the torch path (gradcheck)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # unset on a GPU machine
    assert _triton.available(student) is ON_GPU


@pytest.mark.skipif(ON_GPU, reason="the interpreter runs only without CUDA here")
def test_the_interpreter_runs_the_kernel_itself() -> None:
    for name in ("jsd_rows_kernel", "scale_rows_kernel"):
        assert isinstance(_triton._kernel(name, True), InterpretedFunction)
        assert _triton._kernel(name, True).fn.__name__ == name


def test_a_projection_stays_on_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel compares two rows of one vocabulary; with ``projection=`` the loss must run its chunked torch path
    (the two sides' widths differ), where the kernel would otherwise be taken."""
    import numpy as np

    from alignment import generalized_jsd, project_logprobs
    from alignment.types import VocabProjection

    calls = []
    kernel = _triton.jsd_rows
    monkeypatch.setattr(_triton, "jsd_rows", lambda *args, **kwargs: calls.append(1) or kernel(*args, **kwargs))
    generator = torch.Generator().manual_seed(5)
    student = torch.randn(3, 6, generator=generator).to(DEVICE)
    teacher = torch.randn(3, 4, generator=generator).to(DEVICE)
    classes = np.array([0, 0, 1, 2, 2, 3]), np.array([1, 0, 2, 3])
    projection = VocabProjection(student_classes=classes[0], teacher_classes=classes[1], num_classes=4, kind="prefix")
    one_call = generalized_jsd(student, teacher, projection=projection)
    assert not calls
    two_calls = generalized_jsd(*project_logprobs(student, teacher, projection))
    assert calls == [1]  # the same loss on one vocabulary takes the kernel here
    torch.testing.assert_close(one_call, two_calls, rtol=ROWS_RTOL, atol=ROWS_ATOL)


def test_a_slices_base_gets_the_kernels_gradient_at_its_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    """``logits[:, :-1]``: the kernel reads a copy of the slice's rows, and its gradient is written into the base's
    positions of the slice, zero at the one left out, as the torch path writes it."""
    from alignment import generalized_jsd

    calls = []
    kernel = _triton.jsd_rows
    monkeypatch.setattr(_triton, "jsd_rows", lambda *args, **kwargs: calls.append(1) or kernel(*args, **kwargs))
    generator = torch.Generator().manual_seed(6)
    base = torch.randn(2, 5, 7, generator=generator).to(DEVICE)
    teacher = torch.randn(2, 4, 7, generator=generator).to(DEVICE)
    grads = []
    for on_kernel in (True, False):
        if not on_kernel:
            monkeypatch.setattr(_triton, "available", lambda *_: False)
        leaf = base.clone().requires_grad_()
        (grad,) = torch.autograd.grad(generalized_jsd(leaf[:, :-1], teacher, beta=0.5) * 3.0, leaf)
        grads.append(grad)
    assert calls == [1]
    assert grads[0][:, -1].abs().max() == 0.0
    torch.testing.assert_close(grads[0], grads[1], rtol=GRAD_RTOL[torch.float32], atol=GRAD_SCALE_ATOL)


def test_a_strided_mask_is_read_as_given() -> None:
    """A mask with a stride (every other entry of a longer one) means its own entries, on the kernel and in the
    loss, as on the torch path."""
    from alignment import generalized_jsd

    student, teacher = random_logits((6, 9), seed=10)
    longer = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1], dtype=torch.bool, device=DEVICE)
    mask = longer[::2]
    assert mask.stride() == (2,) and mask.tolist() == [True, False, True, True, False, True]
    rows, grad_student, _ = fused(student, teacher, mask, beta=0.5, temperature=1.0)
    expected_rows, expected_student, _ = closed_form(student, teacher, beta=0.5, temperature=1.0)
    assert_matches((rows, grad_student, None), (expected_rows * mask, expected_student * mask[:, None], None))
    leaf = student.clone().requires_grad_()
    value = generalized_jsd(leaf, teacher, mask, beta=0.5, reduction="none")
    torch.testing.assert_close(value.double(), expected_rows * mask, rtol=ROWS_RTOL, atol=ROWS_ATOL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["rows", "blocks of a larger tensor"])
@pytest.mark.parametrize("incoming_kind", ["per row", "expanded scalar"])
def test_scale_rows_scales_only_the_rows_that_ask(dtype: torch.dtype, layout: str, incoming_kind: str) -> None:
    generator = torch.Generator().manual_seed(11)
    weight = torch.tensor(0.25, device=DEVICE)
    if layout == "rows":
        base = torch.randn(6, 5000, generator=generator).to(DEVICE, dtype)  # two blocks of columns per row
        grad = base
    else:
        base = torch.randn(2, 4, 5000, generator=generator).to(DEVICE, dtype)
        grad = base[:, 1:]  # (2, 3, 5000) blocks, strides (20000, 5000, 1): position 0 of each block outside
    mask = torch.tensor([True, True, False, True, True, True], device=DEVICE)
    if incoming_kind == "per row":
        incoming = torch.tensor([0.25, 0.5, 3.0, 0.25, -1.0, 0.375], device=DEVICE)
    else:
        incoming = torch.tensor(0.75, device=DEVICE).expand(6)  # what autograd hands the backward of a sum
    before = base.clone()
    scaled = mask & (incoming != weight)
    expected = grad.reshape(6, -1).float() * torch.where(scaled, incoming / weight, 1.0)[:, None]
    _triton.scale_rows(grad, incoming, weight, mask)
    actual = grad.reshape(6, -1)
    # rounded once to the gradient's dtype (the interpreter rounds to bfloat16 toward zero, a GPU to nearest)
    torch.testing.assert_close(actual[scaled].float(), expected[scaled], rtol=GRAD_RTOL[dtype], atol=0.0)
    assert torch.equal(actual[~scaled], before[:, 1:].reshape(6, -1)[~scaled] if layout != "rows" else before[~scaled])
    if layout != "rows":
        assert torch.equal(base[:, 0], before[:, 0])  # outside the view: never written


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 40), (2, 3, 40)], ids=["rows", "batch"])
def test_a_scaled_backward_on_the_device_matches_the_torch_path(
    monkeypatch: pytest.MonkeyPatch, reduction: str, shape: tuple[int, ...]
) -> None:
    """``loss * 3`` and per-row weights reach the kept gradient through :func:`_triton.scale_rows`, as the torch
    path scales it; a plain ``loss.backward()`` too."""
    from alignment import generalized_jsd

    generator = torch.Generator().manual_seed(12)
    student = torch.randn(shape, generator=generator).to(DEVICE)
    teacher = torch.randn(shape, generator=generator).to(DEVICE)
    mask = torch.rand(shape[:-1], generator=generator).to(DEVICE) > 0.3
    weights = torch.arange(1.0, 1.0 + mask.numel(), device=DEVICE).reshape(mask.shape)
    results = []
    for on_device in (True, False):
        if not on_device:
            monkeypatch.setattr(_triton, "available", lambda *_: False)
        grads = []
        for outer in ("plain", "times 3", "weighted"):
            leaf = student.clone().requires_grad_()
            value = generalized_jsd(leaf, teacher, mask, beta=0.5, reduction=reduction)
            if outer == "weighted" and reduction != "none":
                continue
            total = (value * weights).sum() if outer == "weighted" else value.sum() * (3.0 if outer == "times 3" else 1)
            (grad,) = torch.autograd.grad(total, leaf)
            grads.append(grad)
        results.append(grads)
    for on_device, on_torch in zip(*results, strict=True):
        torch.testing.assert_close(on_device, on_torch, rtol=GRAD_RTOL[torch.float32], atol=GRAD_SCALE_ATOL)


def test_the_backward_on_the_device_reads_nothing_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel runs, the backward never waits for the device: no value goes back to the host (which on
    CUDA would stall it until the loss's kernel ends). The torch path reads one boolean."""
    from torch.profiler import profile

    from alignment import generalized_jsd

    student, teacher = random_logits((2, 3, 16), seed=13)
    read_back = {"aten::item", "aten::_local_scalar_dense", "aten::is_nonzero"}
    seen = []
    for on_device in (True, False):
        if not on_device:
            monkeypatch.setattr(_triton, "available", lambda *_: False)
        leaf = student.clone().requires_grad_()
        loss = generalized_jsd(leaf, teacher, beta=0.5) * 2.0
        with profile() as prof:
            loss.backward()
        seen.append({event.name for event in prof.events()} & read_back)
    assert seen[0] == set()
    assert seen[1] == read_back  # the check itself can fail


@pytest.mark.gpu
def test_on_cuda_the_backward_never_synchronizes() -> None:
    """On CUDA, torch's sync debug mode raises at any host-device synchronization inside the backward."""
    from alignment import generalized_jsd

    student, teacher = random_logits((2, 3, 5000), dtype=torch.bfloat16, seed=14)
    for outer in (1.0, 3.0):  # a plain mean, and one whose gradient must be scaled
        leaf = student.clone().requires_grad_()
        loss = generalized_jsd(leaf, teacher, beta=0.5, check_finite=False) * outer
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("outer", ["plain", "weighted"])
def test_logits_whose_rows_are_not_contiguous_get_the_right_gradients(
    monkeypatch: pytest.MonkeyPatch, outer: str
) -> None:
    """Transposed logits (each row strided): the kernel reads a contiguous copy, and its gradients go into
    buffers of their own layout, not into ones with the logits' strides, which it would write out of place."""
    from alignment import generalized_jsd

    generator = torch.Generator().manual_seed(15)
    student = torch.randn(9, 6, generator=generator).to(DEVICE)  # (V, N): .t() is (N, V) with stride (1, N)
    teacher = torch.randn(9, 6, generator=generator).to(DEVICE)
    weights = torch.arange(1.0, 7.0, device=DEVICE) if outer == "weighted" else torch.ones(6, device=DEVICE)
    results = []
    for on_kernel in (True, False):
        if not on_kernel:
            monkeypatch.setattr(_triton, "available", lambda *_: False)
        leaves = student.clone().requires_grad_(), teacher.clone().requires_grad_()
        value = generalized_jsd(leaves[0].t(), leaves[1].t(), beta=0.5, reduction="none")
        results.append((value, *torch.autograd.grad((value * weights).sum(), leaves)))
    for on_kernel, on_torch in zip(*results, strict=True):
        torch.testing.assert_close(on_kernel, on_torch, rtol=GRAD_RTOL[torch.float32], atol=GRAD_SCALE_ATOL)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_the_kernel_reads_the_teacher_through_its_positions(beta: float) -> None:
    """``jsd_rows(..., teacher_index=)``: row ``i`` is compared with the teacher's row ``teacher_index[i]`` of a
    teacher with more rows than the student; a masked row's index is never followed (it points at a NaN row)."""
    student, _ = random_logits((5, 37), seed=16)
    teacher, _ = random_logits((8, 37), seed=17)
    teacher[6] = math.nan
    index = torch.tensor([3, 0, 6, 7, 3], device=DEVICE)
    mask = torch.tensor([True, True, False, True, True], device=DEVICE)
    expected_rows, expected_grad, _ = closed_form(
        student, teacher[torch.where(mask, index, 0)], beta=beta, temperature=1.0
    )
    expected = (torch.where(mask, expected_rows, 0.0), torch.where(mask[:, None], expected_grad, 0.0), expected_grad)
    grad = torch.full_like(student, math.nan)
    indexed = _triton.jsd_rows(
        student, teacher, mask, beta=beta, temperature=1.0, grad_student=grad, grad_teacher=None, teacher_index=index
    )
    assert_matches((indexed, grad, None), expected)


@pytest.mark.parametrize("merge", [True, False], ids=["rows", "blocks"])
def test_teacher_positions_on_the_kernel_match_the_torch_path(monkeypatch: pytest.MonkeyPatch, merge: bool) -> None:
    """The loss with ``teacher_positions`` on the kernel path: it hands the kernel the index where the teacher's
    positions merge into rows, and a gathered copy where they do not (a slice along them); values and the student's
    gradient match the torch path."""
    from alignment import generalized_jsd

    indices = []
    kernel = _triton.jsd_rows
    monkeypatch.setattr(_triton, "jsd_rows", lambda *a, **k: indices.append(k.get("teacher_index")) or kernel(*a, **k))
    generator = torch.Generator().manual_seed(18)
    student = torch.randn(2, 4, 9, generator=generator).to(DEVICE)
    teacher = torch.randn(2, 7 if merge else 8, 9, generator=generator).to(DEVICE)
    teacher = teacher if merge else teacher[:, :-1]
    mask = torch.tensor([[True, False, True, True], [True, True, True, False]], device=DEVICE)
    positions = torch.tensor([[6, 99, 2, 0], [1, 1, 5, -3]], device=DEVICE)
    results = []
    for on_kernel in (True, False):
        if not on_kernel:
            monkeypatch.setattr(_triton, "available", lambda *_: False)
        leaf = student.clone().requires_grad_()
        value = generalized_jsd(leaf, teacher, mask, beta=0.5, reduction="none", teacher_positions=positions)
        results.append((value, *torch.autograd.grad((value * 2.0).sum(), leaf)))
    assert len(indices) == 1 and (indices[0] is not None) == merge
    for on_kernel, on_torch in zip(*results, strict=True):
        torch.testing.assert_close(on_kernel, on_torch, rtol=GRAD_RTOL[torch.float32], atol=GRAD_SCALE_ATOL)
