r"""Divergences between the student's and the teacher's next-token distributions (torch).

Every loss compares, at each position, :math:`q = \mathrm{softmax}(z_s/\tau)` (student) with
:math:`p = \mathrm{softmax}(z_t/\tau)` (teacher) and shares one contract: logits are ``(..., V)``; ``mask`` is
``(...)`` bool, ``True`` where a position counts; masked positions are exactly ``0`` and have no influence, not even
through NaN logits; ``-inf`` logits are probability ``0`` (``0 \log 0 = 0``). The teacher may also be sparse,
a :class:`TopK` as inference servers return it, or speak another vocabulary, summed with the student's into the
classes of a :class:`~alignment.VocabProjection` (``projection=``). Positions are processed in chunks inside one
autograd function that computes each chunk's value and gradient together and keeps only the gradient, so the memory
beyond the inputs is one tensor the size of the logits that need a gradient (which the backward returns anyway) plus
a chunk's temporaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from alignment import _triton
from alignment._checks import (
    check_choice,
    check_dtype,
    check_finite_rows,
    check_floating,
    check_in_range,
    check_index_values,
    check_mask,
    check_same_shape,
    upcast,
)
from alignment._workspace import Workspace
from alignment.errors import AlignmentError
from alignment.types import VocabProjection

__all__ = ["TopK", "forward_kl", "generalized_jsd", "masked_kl", "reverse_kl"]

Reduction = Literal["none", "sum", "mean", "batchmean"]
_REDUCTIONS = ("none", "sum", "mean", "batchmean")
# Default chunk, in logits: on CPU small enough that a chunk's float32 temporaries stay in cache (1 MiB each);
# on an accelerator large enough that each kernel has work (64 MiB each).
_CHUNK_ELEMENTS = {"cpu": 1 << 18, "other": 1 << 24}


def _default_chunk(width: int, device: torch.device) -> int:
    """Rows per chunk for rows of ``width`` logits on ``device`` (see ``_CHUNK_ELEMENTS``)."""
    return max(1, _CHUNK_ELEMENTS["cpu" if device.type == "cpu" else "other"] // width)


@dataclass(frozen=True, slots=True, kw_only=True)
class TopK:
    r"""A sparse teacher: its ``k`` most likely next tokens at each position, at temperature 1.

    The teacher distribution is the ``k`` listed probabilities plus one tail bucket holding the rest,
    :math:`1 - \sum_i p_i` (at least ``0``); the student is reduced to the same ``k + 1`` buckets.

    Attributes:
        ids: ``(..., k)`` int64 token ids, distinct at each position, in ``[0, V)`` where the position counts.
        logprobs: ``(..., k)`` float log-probabilities of those tokens (not logits), without gradient.

    Examples:
        >>> teacher_logprobs, teacher_ids = torch.log_softmax(torch.tensor([2.0, 1.0, 0.0, -1.0]), dim=-1).topk(2)
        >>> forward_kl(torch.zeros(4), TopK(ids=teacher_ids, logprobs=teacher_logprobs))  # over 3 buckets
        tensor(0.4255)
    """

    ids: torch.Tensor
    logprobs: torch.Tensor

    def __post_init__(self) -> None:
        check_dtype("TopK.ids", self.ids, torch.int64)
        check_floating("TopK.logprobs", self.logprobs)
        if self.ids.ndim == 0:
            raise AlignmentError("TopK.ids must have at least one axis (k), got a scalar")
        check_same_shape("TopK.logprobs", self.logprobs, self.ids.shape, like="TopK.ids")


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | TopK,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: Reduction = "batchmean",
    num_items: int | torch.Tensor | None = None,
    check_finite: bool = True,
    chunk_size: int | None = None,
    projection: VocabProjection | None = None,
    teacher_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Generalized Jensen-Shannon divergence between teacher and student, with the KLs at the end points.

    .. math::
        \mathrm{JSD}_\beta = \beta\,\mathrm{KL}(p \,\|\, m) + (1-\beta)\,\mathrm{KL}(q \,\|\, m), \quad
        m = \beta p + (1-\beta) q \quad (0 < \beta < 1); \qquad
        \mathrm{JSD}_0 = \mathrm{KL}(p \,\|\, q), \quad \mathrm{JSD}_1 = \mathrm{KL}(q \,\|\, p)

    The end points are a convention, not a limit: the interior formula tends to ``0`` as
    :math:`\beta \to 0` or :math:`\beta \to 1`. This matches TRL's ``GKDTrainer.generalized_jsd_loss``.
    The mixture is computed in log space (``logaddexp``, ``log1p(-beta)``).

    Args:
        student_logits: ``(..., V)`` float logits of the student. A slice along the positions of a tensor that
            needs a gradient (``logits[:, :-1]``) passes its gradient straight to that tensor, without the
            base-sized copy autograd would make: take gradients with respect to that tensor, not the slice (a slice
            with a hook or ``retain_grad()`` keeps autograd's way).
        teacher_logits: ``(..., V)`` float logits of the teacher on the student's positions and vocabulary,
            or a :class:`TopK` with ``(..., k)`` ids and log-probabilities (``temperature`` must then be ``1``);
            with ``projection``, ``(..., W)`` dense logits over the teacher's own vocabulary. Teacher gradients are
            computed when dense teacher logits require them.
        mask: ``(...)`` bool, ``True`` where a position counts; ``None`` counts every position.
        beta: weight of the teacher in the mixture, in ``[0, 1]``.
        temperature: :math:`\tau > 0` dividing both sides' logits; no :math:`\tau^2` rescaling.
        reduction: ``"none"`` per position; ``"sum"``; ``"mean"`` and ``"batchmean"`` (the same) divide the
            sum by the number of counted positions, at least ``1`` (not by ``V``, unlike ``F.kl_div``).
        num_items: denominator for ``"mean"``/``"batchmean"`` instead of the counted positions, e.g. the count
            over all gradient-accumulation steps; values below ``1`` count as ``1``.
        check_finite: check that counted positions have no NaN or ``+inf`` logits and not only ``-inf``
            (one device synchronisation); turn off in hot loops, where such rows give NaN. The ids of a
            :class:`TopK` teacher are always checked (an out-of-range id would fault the device).
        chunk_size: positions per chunk; ``None`` picks about :math:`2^{18}/V` on CPU (each float32 temporary
            near 1 MiB, in cache) and :math:`2^{24}/V` on an accelerator (near 64 MiB), ``V`` the student's.
        projection: a :class:`~alignment.VocabProjection` of the two tokenizers (from
            :func:`~alignment.vocab_projection`) when they differ: both distributions are summed into its classes
            and compared there, as ``generalized_jsd(*project_logprobs(student_logits, teacher_logits, projection,
            temperature=temperature), mask, beta=beta)`` compares them (equal up to rounding), but chunk by chunk,
            so no ``(..., C)`` class tensor is returned or kept: one call takes less memory and time than two.
        teacher_positions: ``(...)`` integer, the mask's shape (:attr:`TeacherBatch.positions
            <alignment.TeacherBatch.positions>`): position ``k`` is compared with the teacher's row
            ``teacher_positions[..., k]``, and ``teacher_logits`` is then ``(..., S, V)`` (``(..., S, W)`` with a
            projection) over the teacher's own positions, as its forward pass returns them. The loss reads the rows
            it compares chunk by chunk instead of a ``(..., T, V)`` copy of them (what
            :func:`~alignment.align_teacher_logits` makes): the same values and gradients, without that copy's
            memory and time (the fused GPU kernel follows the positions too). Values where ``mask`` is False are
            never read; counted ones must lie in ``[0, S)`` (checked: one device synchronisation). A teacher that
            needs a gradient is gathered first, and autograd spreads its gradient back to its positions.

    Returns:
        ``(...)`` per-position values for ``"none"``, exactly ``0.0`` where ``mask`` is False, else a scalar;
        float32 for half, bfloat16 and float32 inputs, float64 for float64.

    Raises:
        TypeError: a logits tensor is not floating point, ``mask`` is not ``torch.bool``, ``projection`` is not
            a :class:`~alignment.VocabProjection`, or ``teacher_positions`` is not an integer tensor.
        AlignmentError: (a ``ValueError``) shapes disagree, ``beta``, ``temperature`` or an option is out of
            range, a counted position has NaN or ``+inf`` logits or only ``-inf``, a top-k id is outside
            ``[0, V)`` or repeated, ``projection`` comes with a :class:`TopK` teacher or with logits narrower
            than its vocabularies, or ``teacher_positions`` comes with a :class:`TopK` teacher or holds a counted
            position outside the teacher's.

    Examples:
        >>> s, t = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [9.0, 9.0]]])
        >>> generalized_jsd(s, t, torch.tensor([[True, False]]), reduction="none")
        tensor([[0.1109, 0.0000]])
        >>> generalized_jsd(s, t, beta=0.0)  # KL(teacher || student), averaged over both positions
        tensor(0.4479)
        >>> own = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [5.0, 5.0]]])  # logits over the teacher's own 3 positions
        >>> at = torch.tensor([[1, 0]])  # position 0 is compared with the teacher's position 1
        >>> generalized_jsd(s, own, torch.tensor([[True, False]]), reduction="none", teacher_positions=at)
        tensor([[0.1109, 0.0000]])

    References:
        Agarwal et al., `On-Policy Distillation of Language Models: Learning from Self-Generated
        Mistakes <https://arxiv.org/abs/2306.13649>`_, ICLR 2024, Eq. (1).
    """
    check_in_range("beta", beta, low=0.0, high=1.0)
    return _loss(
        student_logits,
        teacher_logits,
        mask,
        beta=float(beta),
        temperature=temperature,
        reduction=reduction,
        num_items=num_items,
        check_finite=check_finite,
        chunk_size=chunk_size,
        projection=projection,
        teacher_positions=teacher_positions,
    )


def masked_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | TopK,
    mask: torch.Tensor | None = None,
    *,
    direction: Literal["forward", "reverse"] = "forward",
    temperature: float = 1.0,
    reduction: Reduction = "batchmean",
    num_items: int | torch.Tensor | None = None,
    check_finite: bool = True,
    chunk_size: int | None = None,
    projection: VocabProjection | None = None,
    teacher_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Kullback-Leibler divergence between teacher and student at the counted positions.

    .. math::
        \text{forward: } \mathrm{KL}(p \,\|\, q) = \sum_v p_v \log \frac{p_v}{q_v}, \qquad
        \text{reverse: } \mathrm{KL}(q \,\|\, p) = \sum_v q_v \log \frac{q_v}{p_v}

    Equal to :func:`generalized_jsd` with ``beta=0`` (forward) or ``beta=1`` (reverse). The loss is infinite
    where the reference side is ``0`` and the other is not (a ``-inf`` logit facing a finite one).

    Args:
        student_logits: ``(..., V)`` float logits of the student (:math:`q`); a slice along the positions passes
            its gradient straight to the tensor it slices, as for :func:`generalized_jsd`.
        teacher_logits: ``(..., V)`` float logits of the teacher (:math:`p`), or a :class:`TopK`.
        mask: ``(...)`` bool, ``True`` where a position counts; ``None`` counts every position.
        direction: ``"forward"`` is KL(teacher ‖ student), mass-covering; ``"reverse"`` is KL(student ‖ teacher),
            mode-seeking.
        temperature: :math:`\tau > 0` dividing both sides' logits; no :math:`\tau^2` rescaling.
        reduction: as in :func:`generalized_jsd`.
        num_items: as in :func:`generalized_jsd`.
        check_finite: as in :func:`generalized_jsd`.
        chunk_size: as in :func:`generalized_jsd`.
        projection: as in :func:`generalized_jsd`: compare the two distributions over its classes.
        teacher_positions: as in :func:`generalized_jsd`: the teacher's row of each position, in logits over the
            teacher's own positions.

    Returns:
        ``(...)`` per-position values for ``"none"``, exactly ``0.0`` where ``mask`` is False, else a scalar;
        float32 for half, bfloat16 and float32 inputs, float64 for float64.

    Raises:
        TypeError: as in :func:`generalized_jsd`.
        AlignmentError: as in :func:`generalized_jsd`, or ``direction`` is neither ``"forward"`` nor ``"reverse"``.

    Examples:
        >>> s, t = torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.0], [9.0, 9.0]])
        >>> masked_kl(s, t, reduction="none")
        tensor([0.4621, 0.4338])
        >>> masked_kl(s, t, torch.tensor([True, False]), direction="reverse")
        tensor(0.4621)

    References:
        Agarwal et al., `On-Policy Distillation of Language Models: Learning from Self-Generated
        Mistakes <https://arxiv.org/abs/2306.13649>`_, ICLR 2024, Sec. 3.
    """
    check_choice("direction", direction, ("forward", "reverse"))
    return _loss(
        student_logits,
        teacher_logits,
        mask,
        beta=0.0 if direction == "forward" else 1.0,
        temperature=temperature,
        reduction=reduction,
        num_items=num_items,
        check_finite=check_finite,
        chunk_size=chunk_size,
        projection=projection,
        teacher_positions=teacher_positions,
    )


def forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | TopK,
    mask: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    reduction: Reduction = "batchmean",
    num_items: int | torch.Tensor | None = None,
    check_finite: bool = True,
    chunk_size: int | None = None,
    projection: VocabProjection | None = None,
    teacher_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""KL(teacher ‖ student): :func:`masked_kl` with ``direction="forward"``; arguments as there.

    Examples:
        >>> forward_kl(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
        tensor(0.4621)
    """
    return masked_kl(
        student_logits,
        teacher_logits,
        mask,
        direction="forward",
        temperature=temperature,
        reduction=reduction,
        num_items=num_items,
        check_finite=check_finite,
        chunk_size=chunk_size,
        projection=projection,
        teacher_positions=teacher_positions,
    )


def reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | TopK,
    mask: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    reduction: Reduction = "batchmean",
    num_items: int | torch.Tensor | None = None,
    check_finite: bool = True,
    chunk_size: int | None = None,
    projection: VocabProjection | None = None,
    teacher_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""KL(student ‖ teacher): :func:`masked_kl` with ``direction="reverse"``; arguments as there.

    Examples:
        >>> reverse_kl(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
        tensor(0.4621)
    """
    return masked_kl(
        student_logits,
        teacher_logits,
        mask,
        direction="reverse",
        temperature=temperature,
        reduction=reduction,
        num_items=num_items,
        check_finite=check_finite,
        chunk_size=chunk_size,
        projection=projection,
        teacher_positions=teacher_positions,
    )


def _loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | TopK,
    mask: torch.Tensor | None,
    *,
    beta: float,
    temperature: float,
    reduction: Reduction,
    num_items: int | torch.Tensor | None,
    check_finite: bool,
    chunk_size: int | None,
    projection: VocabProjection | None,
    teacher_positions: torch.Tensor | None,
) -> torch.Tensor:
    """Validate the shared arguments, run the chunked divergence over flattened positions, then reduce."""
    check_floating("student_logits", student_logits)
    if student_logits.ndim == 0 or student_logits.shape[-1] == 0:
        raise AlignmentError(f"student_logits must have shape (..., V) with V >= 1, got {tuple(student_logits.shape)}")
    check_in_range("temperature", temperature, low=0.0, high=math.inf, low_open=True, high_open=True)
    check_choice("reduction", reduction, _REDUCTIONS)
    if num_items is not None and reduction in ("none", "sum"):
        raise AlignmentError(f"num_items only applies to reduction 'mean' or 'batchmean', got {reduction!r}")
    if chunk_size is not None:
        check_in_range("chunk_size", chunk_size, low=1, high=math.inf)
    batch_shape, vocab = student_logits.shape[:-1], student_logits.shape[-1]
    if mask is None:
        mask = torch.ones(batch_shape, dtype=torch.bool, device=student_logits.device)
    check_mask(mask, batch_shape)
    ids: torch.Tensor | None
    classes: _Classes | None = None
    index: torch.Tensor | None = None  # with teacher_positions: the teacher row of each position, flattened
    if isinstance(teacher_logits, TopK):
        if projection is not None:
            raise AlignmentError(
                "projection needs the teacher's dense logits over its own vocabulary, got a TopK teacher; "
                "a top-k list cannot be summed into classes (its tail is unknown)"
            )
        if teacher_positions is not None:
            raise AlignmentError(
                "teacher_positions index dense teacher logits over the teacher's own positions, got a TopK teacher; "
                "give the top-k lists of the compared positions instead"
            )
        teacher, ids = _topk_teacher(teacher_logits, mask, vocab=vocab, temperature=temperature)
    elif isinstance(teacher_logits, torch.Tensor):
        check_floating("teacher_logits", teacher_logits)
        if teacher_positions is not None:
            index = _teacher_index(teacher_positions, teacher_logits, student_logits, mask)
        rows_shape = student_logits.shape[:-1] if index is None else teacher_logits.shape[:-1]
        if projection is None:
            expected = (*rows_shape, vocab)
            like = "student_logits" if index is None else "the teacher's positions, then the student's vocabulary"
            check_same_shape("teacher_logits", teacher_logits, expected, like=like)
        else:
            classes = _classes(projection, student_logits, teacher_logits, same_rows=index is None)
        teacher, ids = teacher_logits, None
    else:
        raise TypeError(f"teacher_logits must be a torch.Tensor or a TopK, got {type(teacher_logits).__name__}")
    if check_finite:
        check_finite_rows("student_logits", student_logits, mask)
        check_finite_rows("teacher_logits" if ids is None else "teacher_logits.logprobs", teacher, mask, index=index)
    if index is not None and teacher.requires_grad and torch.is_grad_enabled():
        teacher, index = _gathered(teacher, index, mask.shape), None
    denominator = _denominator(mask, reduction, num_items)
    dtype = torch.promote_types(torch.promote_types(student_logits.dtype, teacher.dtype), torch.float32)
    weight = torch.ones((), dtype=dtype, device=student_logits.device)  # what the reduction multiplies each row by
    if denominator is not None:  # computed as the backward of `total / denominator` computes it: the same bits
        weight = weight / denominator
    window = _window(student_logits)
    rows: torch.Tensor = _ChunkedDivergence.apply(  # type: ignore[no-untyped-call]  # torch leaves apply untyped
        _as_rows(student_logits) if window is None else window[0],
        _as_rows(teacher),
        index,
        None if ids is None else ids.reshape(-1, ids.shape[-1]),
        mask.reshape(-1),
        weight,
        beta,
        temperature,
        chunk_size or _default_chunk(vocab, student_logits.device),  # the student's width, also with a projection
        torch.is_grad_enabled(),
        classes,
        None if window is None else window[1],
    )
    return _reduce(rows.reshape(batch_shape), reduction, denominator)


def _window(logits: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """``(base, (start, length))`` where ``logits`` is ``base.narrow(-2, start, length)`` made by one slice along the
    positions of a ``base`` that needs a gradient (``logits[:, :-1]`` in a training loop), so that the loss can hand
    autograd the base's gradient itself; None otherwise.

    Autograd would build the base's gradient from the slice's by zero-filling a tensor as large as the base and
    copying into it: a second gradient-sized tensor and two passes over it. The loss writes its gradient into the
    positions of a base-sized tensor instead and zeroes only the positions the slice leaves out. Only a slice whose
    rows the loss reads in place (:func:`_as_rows`) qualifies, so that the gradient is written where it belongs,
    and only one that asked nothing of its own gradient (no hook, no ``retain_grad``): the slice itself is then not
    in the graph.
    """
    base, node = logits._base, logits.grad_fn
    if base is None or node is None or type(node).__name__ != "SliceBackward0" or not torch.is_grad_enabled():
        return None
    if logits.retains_grad or logits._backward_hooks:
        return None  # the caller wants the slice's own gradient
    parent = node.next_functions[0][0]
    if parent is None or (parent is not base.grad_fn and getattr(parent, "variable", None) is not base):
        return None  # a slice of a slice, or of a view: autograd's own path
    if logits.ndim != base.ndim or logits.ndim < 2 or logits.stride() != base.stride():
        return None
    step = base.stride(-2)
    start, rest = divmod(int(logits.storage_offset() - base.storage_offset()), step) if step else (0, 1)
    if rest or start < 0 or start + logits.shape[-2] > base.shape[-2]:
        return None
    window = (start, logits.shape[-2])
    narrowed = base.narrow(-2, *window)
    if narrowed.shape != logits.shape or narrowed.storage_offset() != logits.storage_offset():
        return None
    rows = _as_rows(logits)
    if rows.data_ptr() != logits.data_ptr() or rows._base is None:
        return None  # read through a copy: autograd's own path
    return base, window


@dataclass(frozen=True, slots=True)
class _Classes:
    """A :class:`~alignment.types.VocabProjection` on the logits' device: each logit's class on either side (logits
    wider than the tokenizer put the extra entries in the last class, "other"), and the number of classes."""

    student: torch.Tensor
    teacher: torch.Tensor
    count: int


def _classes(
    projection: VocabProjection,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    same_rows: bool = True,
) -> _Classes:
    """Check logits against a projection and return its classes as index tensors on their device. The teacher's
    logits have the student's leading shape unless ``same_rows`` is False (they are over the teacher's own positions,
    checked by :func:`_teacher_index`)."""
    if not isinstance(projection, VocabProjection):
        kind = type(projection).__name__
        raise TypeError(f"projection must be a VocabProjection (from vocab_projection), got {kind}")
    if same_rows and student_logits.shape[:-1] != teacher_logits.shape[:-1]:
        raise AlignmentError(
            f"student_logits and teacher_logits must agree in all but the last axis, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    count, device = projection.num_classes, student_logits.device
    student = _class_index(projection.student_classes, student_logits.shape[-1], count, "student_logits")
    teacher = _class_index(projection.teacher_classes, teacher_logits.shape[-1], count, "teacher_logits")
    return _Classes(student.to(device), teacher.to(device), count)


def _teacher_index(
    positions: torch.Tensor, teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Check ``teacher_positions`` against both logits and return ``(N,)`` int64: the row of the teacher's flattened
    positions that each flattened position reads (``0`` where ``mask`` is False). Synchronises once."""
    if not isinstance(positions, torch.Tensor) or positions.is_floating_point() or positions.is_complex():
        kind = positions.dtype if isinstance(positions, torch.Tensor) else type(positions).__name__
        raise TypeError(f"teacher_positions must be an integer tensor, got {kind}")
    if positions.dtype == torch.bool:
        raise TypeError("teacher_positions must be an integer tensor, got torch.bool")
    check_same_shape("teacher_positions", positions, mask.shape, like="the mask's shape")
    lead = student_logits.shape[:-2]
    if student_logits.ndim < 2 or teacher_logits.ndim != student_logits.ndim or teacher_logits.shape[:-2] != lead:
        raise AlignmentError(
            "with teacher_positions, student_logits are (..., T, V) and teacher_logits (..., S, W) over the teacher's "
            f"own positions, with the same leading axes; got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}"
        )
    length = teacher_logits.shape[-2]
    if length == 0 and positions.numel():
        raise AlignmentError(
            f"teacher_logits {tuple(teacher_logits.shape)} have no positions, so teacher_positions have no row to read"
        )
    positions = positions.to(device=mask.device, dtype=torch.int64)
    outside = ((positions < 0) | (positions >= length)) & mask
    if bool(outside.any()):
        where = tuple(outside.nonzero()[0].tolist())
        raise AlignmentError(
            f"teacher_positions must lie in [0, {length}) (the teacher's positions) at every counted position, got "
            f"{int(positions[where])} at {where}"
        )
    first = torch.arange(math.prod(positions.shape[:-1]), device=mask.device) * length
    index = torch.where(mask, positions, 0) + first.view(*positions.shape[:-1], 1)
    return index.reshape(-1)


def _class_index(classes: Any, width: int, num_classes: int, name: str) -> torch.Tensor:
    """``(width,)`` int64 class of each logit: the tokenizer's ``classes``, then the last class ("other") for the
    entries of a padded embedding beyond them. Raises :class:`AlignmentError` when the logits are narrower."""
    if width < len(classes):
        raise AlignmentError(
            f"{name} have {width} entries in the last axis but the tokenizer has {len(classes)} tokens; "
            "the logits must cover the whole vocabulary"
        )
    index = torch.full((width,), num_classes - 1, dtype=torch.int64)
    index[: len(classes)] = torch.tensor(classes, dtype=torch.int64)
    return index


def _topk_teacher(
    teacher: TopK, mask: torch.Tensor, *, vocab: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a sparse teacher; return its ``(..., k + 1)`` bucket log-probs and ids made safe where masked."""
    if temperature != 1.0:
        raise AlignmentError(f"temperature must be 1.0 with a TopK teacher (its tail is unknown), got {temperature}")
    if teacher.logprobs.requires_grad:
        raise AlignmentError("teacher_logits.logprobs must not require grad: a TopK teacher is constant; detach it")
    k = teacher.ids.shape[-1]
    check_same_shape("teacher_logits.ids", teacher.ids, (*mask.shape, k), like="positions of student_logits, k")
    if k > vocab:
        raise AlignmentError(f"teacher_logits.ids must have k <= V = {vocab} ids per position, got k = {k}")
    check_index_values("teacher_logits.ids", teacher.ids, vocab, mask)
    ids = torch.where(mask[..., None], teacher.ids, torch.arange(k, device=teacher.ids.device))
    logprobs = upcast(teacher.logprobs)
    tail = _log1mexp(logprobs.logsumexp(dim=-1, keepdim=True))
    return torch.cat([logprobs, _floor(tail)], dim=-1), ids


def _denominator(mask: torch.Tensor, reduction: Reduction, num_items: int | torch.Tensor | None) -> torch.Tensor | None:
    """What a ``"mean"``/``"batchmean"`` reduction divides the summed rows by; None for ``"none"`` and ``"sum"``."""
    if reduction in ("none", "sum"):
        return None
    count = mask.sum() if num_items is None else torch.as_tensor(num_items, device=mask.device)
    return count.clamp_min(1)


def _reduce(values: torch.Tensor, reduction: Reduction, denominator: torch.Tensor | None) -> torch.Tensor:
    if reduction == "none":
        return values
    total = values.sum()
    return total if denominator is None else total / denominator


class _ChunkedDivergence(torch.autograd.Function):
    """Per-row divergence of ``(N, V)`` student logits from ``(N, V)`` teacher logits (or from the teacher's rows
    ``index`` of them, where an index is given), or from ``(N, k + 1)`` teacher bucket log-probs with ``(N, k)`` ids,
    ``chunk`` rows at a time.

    The gradient of each row with respect to the logits that need one is computed in the same pass as the value,
    times ``weight`` (a 0-d tensor: the factor by which the caller's reduction scales every row, ``1 / count`` for
    a mean), and kept: one tensor the size of those logits, which the backward must return anyway. When the
    incoming per-row gradient is exactly ``weight`` on every row that counts (``loss.backward()`` on a mean or a
    sum), the backward returns it as it is: no pass over the logits; otherwise it scales it in place by the
    incoming gradient over ``weight``. Where the fused kernel can run (CUDA with Triton), a kernel tells the two
    apart row by row on the device, so the host never waits; elsewhere it reads one boolean back. A second
    backward through the same graph (``retain_graph=True``) recomputes the gradient from the saved inputs.
    """

    @staticmethod
    def forward(
        ctx: Any,
        student: torch.Tensor,
        teacher: torch.Tensor,
        index: torch.Tensor | None,
        ids: torch.Tensor | None,
        mask: torch.Tensor,
        weight: torch.Tensor,
        beta: float,
        temperature: float,
        chunk: int,
        grad_enabled: bool,
        classes: _Classes | None,
        window: tuple[int, int] | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(student, teacher, index, ids, mask, weight)
        ctx.options = (beta, temperature, chunk, classes)
        ctx.window = window
        need = (grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1])
        rows, *grads = _windowed(student, teacher, index, ids, mask, weight, ctx.options, window, need)
        ctx.grads = grads
        return rows

    @staticmethod
    def backward(ctx: Any, grad_rows: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grads, ctx.grads = ctx.grads, None
        student, teacher, index, ids, mask, weight = ctx.saved_tensors
        if grads is None:  # a second backward: the kept gradients may have been scaled in place by the first
            need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
            _, *grads = _windowed(student, teacher, index, ids, mask, weight, ctx.options, ctx.window, need)
        grad_student, grad_teacher, student_rows = grads
        kept = [grad for grad in (student_rows, grad_teacher) if grad is not None]
        on_device = all(_triton.available(grad) and grad.stride(-1) == 1 for grad in kept)  # rows contiguous
        if kept and on_device:  # the device tells a plain mean or sum from the rest, row by row: no sync
            for grad in kept:
                _triton.scale_rows(grad, grad_rows, weight, mask)
        elif kept and bool(torch.where(mask, grad_rows != weight, False).any()):  # not the plain mean or sum
            scale = torch.where(mask, grad_rows / weight, 0.0)[:, None]
            for grad in kept:  # by chunks: a low-precision gradient times a float32 scale makes float32 temporaries
                for part in _chunks(len(mask), ctx.options[2], _block(grad)):
                    _take(grad, part).mul_(scale[part])
        return grad_student, grad_teacher, None, None, None, None, None, None, None, None, None, None


def _windowed(
    student: torch.Tensor,
    teacher: torch.Tensor,
    index: torch.Tensor | None,
    ids: torch.Tensor | None,
    mask: torch.Tensor,
    weight: torch.Tensor,
    options: tuple[float, float, int, _Classes | None],
    window: tuple[int, int] | None,
    need: tuple[bool, bool],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """:func:`_rows_and_grads`, where ``window`` says ``student`` is the base whose positions ``window`` the loss
    reads (:func:`_window`): then the student's gradient is as large as the base, zero outside the window. Returns
    the rows, both gradients as autograd takes them, and the student's gradient as the rows the loss wrote (with a
    window, a view of the base-sized one), which a scaled backward rescales."""
    if window is None:
        rows, grad_student, grad_teacher = _rows_and_grads(
            student, teacher, index, ids, mask, weight, *options, need=need
        )
        return rows, grad_student, grad_teacher, grad_student
    full, inside = _base_gradient(student, window) if need[0] else (None, None)
    rows_of = _as_rows(student.narrow(-2, *window))
    rows, student_rows, grad_teacher = _rows_and_grads(
        rows_of, teacher, index, ids, mask, weight, *options, need=need, student_out=inside
    )
    return rows, full, grad_teacher, student_rows


def _base_gradient(base: torch.Tensor, window: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A gradient for ``base`` that is zero outside the positions ``window`` (:func:`_window`), and the rows of
    those positions (:func:`_as_rows`, a view) for the caller to fill. Contiguous whatever the base's strides,
    so that those rows are always a view."""
    full = base.new_empty(base.shape)
    start, length = window
    full.narrow(-2, 0, start).zero_()
    full.narrow(-2, start + length, full.shape[-2] - start - length).zero_()
    return full, _as_rows(full.narrow(-2, start, length))


def _rows_and_grads(
    student: torch.Tensor,
    teacher: torch.Tensor,
    index: torch.Tensor | None,
    ids: torch.Tensor | None,
    mask: torch.Tensor,
    weight: torch.Tensor,
    beta: float,
    temperature: float,
    chunk: int,
    classes: _Classes | None,
    *,
    need: tuple[bool, bool],
    student_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per-row divergences (``0`` where masked) and, where ``need`` asks, their gradients with respect to the
    student's and the teacher's logits times ``weight`` (a 0-d tensor), row by row (``0`` where masked), chunk by
    chunk; over the projection's classes when ``classes`` is given. ``student`` and ``teacher`` are ``(N, ·)`` rows
    or ``(N / T, T, ·)`` blocks of them (:func:`_as_rows`); the gradients have their shapes, the student's written
    into ``student_out`` where given. With ``index``, row ``i`` is compared with the teacher's row ``index[i]``
    (no teacher gradient is then asked: the caller gathers a teacher that needs one)."""
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    fusable = ids is None and classes is None and student.dtype == teacher.dtype
    if fusable and _triton.available(student):  # one fused kernel per row, over (N, V) rows: blocks are copied
        if index is not None and teacher.ndim != 2:  # blocks of rows (a slice): no one row stride for the kernel
            teacher, index = _rows_at(teacher, index), None
        flat = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
        # rows contiguous, as the kernel writes them: empty_like would copy the strides of transposed logits
        grads = [
            torch.empty(x.shape, dtype=x.dtype, device=x.device) if wanted else None
            for x, wanted in zip(flat, need, strict=True)
        ]
        rows = _triton.jsd_rows(
            _rows_contiguous(flat[0]),
            _rows_contiguous(flat[1]),
            mask,
            beta=beta,
            temperature=temperature,
            grad_student=grads[0],
            grad_teacher=grads[1],
            grad_scale=weight.float(),
            teacher_index=index,
        )
        shaped = [None if g is None else g.view(x.shape) for g, x in zip(grads, (student, teacher), strict=True)]
        if student_out is not None and shaped[0] is not None:
            shaped[0] = student_out.copy_(shaped[0])
        return rows, shaped[0], shaped[1]
    grad_student = (torch.empty_like(student) if student_out is None else student_out) if need[0] else None
    if index is not None and need[1]:
        raise AssertionError("a teacher read through an index has no gradient here; the caller gathers it")
    grad_teacher = torch.empty_like(teacher) if need[1] else None
    rows = torch.zeros(len(mask), dtype=dtype, device=student.device)
    cpu = student.device.type == "cpu"
    scale = float(weight) if cpu else weight  # a Python number costs nothing on CPU and would sync a GPU
    work = Workspace(dtype, student.device)
    gathered = Workspace(teacher.dtype, teacher.device)  # with an index, the teacher's rows of a chunk
    runs = _runs(index) if index is not None and cpu and teacher.ndim == 2 else None
    for part in _chunks(len(mask), chunk, _block(student) if index is not None else _block(student, teacher)):
        keep = mask[part, None]
        s = _take(student, part)
        if index is None:
            t = _take(teacher, part)
        elif runs is not None and runs[1][part.start] == runs[1][part.stop - 1]:  # consecutive rows: a slice
            t = teacher[runs[0][part.start] : runs[0][part.start] + part.stop - part.start]
        else:
            t = _rows_at(teacher, index[part], out=gathered(0, part.stop - part.start, teacher.shape[-1]))
        # every kind of chunk writes its gradients, times scale, straight into its rows of the gradients: no copy
        outs = (
            None if grad_student is None else _take(grad_student, part),
            None if grad_teacher is None else _take(grad_teacher, part),
        )
        if classes is not None:
            value = _projected_chunk(s, t, classes, beta, temperature, need, work, outs, scale)
        elif ids is None:
            value = _dense_chunk(s, t, beta, temperature, need, work, outs, scale)
        else:
            value = _sparse_chunk(s, t, ids[part], beta, temperature, work, outs[0], scale)
        rows[part] = value.masked_fill_(~keep[:, 0], 0.0)
        every = cpu and bool(keep.all())  # nothing to zero; testing costs nothing on CPU (no device to sync)
        for out in outs:
            if out is not None and not every:
                out.masked_fill_(~keep, 0.0)
    return rows, grad_student, grad_teacher


def _as_rows(logits: torch.Tensor) -> torch.Tensor:
    """``(..., V)`` logits as ``(N, V)`` rows, a view where the leading axes merge; otherwise, where only the axes
    before the last two do (a slice along the positions, such as ``logits[:, :-1]``), as a view of ``(N / T, T, V)``
    blocks of rows, so the loss reads them in place instead of copying them all; else a copy."""
    width = logits.shape[-1]
    try:
        return logits.view(-1, width)
    except RuntimeError:  # the leading axes do not merge without a copy
        pass
    if logits.ndim >= 3:
        try:
            return logits.view(-1, logits.shape[-2], width)
        except RuntimeError:
            pass
    return logits.reshape(-1, width)


def _runs(index: torch.Tensor) -> tuple[list[int], list[int]]:
    """``index`` as a list, and for each entry the number of steps before it that were not ``+1``: the entries
    ``a..b`` are consecutive rows where the two counts at ``a`` and ``b`` are equal, and a chunk of them is a slice
    of the teacher's rows rather than a copy (Llama 3 / Qwen3 text: every chunk). Read on CPU only (no sync)."""
    breaks = torch.zeros(len(index), dtype=torch.int64)
    torch.cumsum(index.diff() != 1, dim=0, out=breaks[1:])
    return index.tolist(), breaks.tolist()


def _gathered(logits: torch.Tensor, index: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Rows ``index`` of ``logits``'s flattened positions as a ``(*shape, W)`` tensor: for logits that need a gradient,
    which autograd then spreads back to the positions read."""
    return _rows_at(_as_rows(logits), index).view(*shape, logits.shape[-1])


def _rows_at(rows: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``index`` of ``(N, ·)`` rows or of ``(N / T, T, ·)`` blocks (:func:`_as_rows`), as ``(len(index), ·)``:
    written into ``out`` where given and the rows are ``(N, ·)``, else a new tensor."""
    if rows.ndim == 2:
        return torch.index_select(rows, 0, index) if out is None else torch.index_select(rows, 0, index, out=out)
    block = rows.shape[1]
    return rows[torch.div(index, block, rounding_mode="floor"), index % block]


def _block(*tensors: torch.Tensor) -> int | None:
    """Rows per block of the ``(N / T, T, ·)`` tensors among ``tensors`` (``T``), None where all are ``(N, ·)``."""
    return next((x.shape[1] for x in tensors if x.ndim == 3), None)


def _take(logits: torch.Tensor, part: slice) -> torch.Tensor:
    """Rows ``part`` of ``(N, ·)`` rows or of ``(N / T, T, ·)`` blocks, as a 2-D view; a part of a block lies in
    one block (:func:`_chunks`)."""
    if logits.ndim == 2:
        return logits[part]
    block, start = divmod(part.start, logits.shape[1])
    return logits[block, start : start + part.stop - part.start]


def _rows_contiguous(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.stride(-1) == 1 else logits.contiguous()


def _chunks(rows: int, chunk: int, block: int | None = None) -> list[slice]:
    """Slices of at most ``chunk`` of ``rows`` rows, none across a boundary of ``block`` rows (when given)."""
    block = block or max(rows, 1)
    return [
        slice(start, min(start + chunk, base + block, rows))
        for base in range(0, rows, block)
        for start in range(base, min(base + block, rows), chunk)
    ]


def _dense_chunk(
    student: torch.Tensor,
    teacher: torch.Tensor,
    beta: float,
    temperature: float,
    need: tuple[bool, bool],
    work: Workspace,
    outs: tuple[torch.Tensor | None, torch.Tensor | None],
    scale: float | torch.Tensor,
) -> torch.Tensor:
    r"""Row values of :math:`\mathrm{JSD}_\beta`, computed in ``work``'s temporaries; the gradients ``need`` asks
    for, with respect to both sides' logits, are written into ``outs`` times ``scale``.

    With :math:`L = \beta\,\mathrm{KL}(p\|m) + (1-\beta)\,\mathrm{KL}(q\|m)` the terms through the mixture
    cancel: :math:`\partial L / \partial z_q = (1-\beta)\, q \odot (\log q - \log m - \mathrm{KL}(q\|m)) / \tau`;
    at the end points, :math:`\partial \mathrm{KL}(p\|q) / \partial z_q = (q - p) / \tau`.
    """
    log_q, log_p, q, p, spare = (work(k, *student.shape) for k in range(5))
    for logits, log_x, x in ((student, log_q, q), (teacher, log_p, p)):
        scaled = _scaled_into(logits, temperature, work, 5)
        torch.log_softmax(scaled, dim=-1, out=log_x)
        torch.softmax(scaled, dim=-1, out=x)  # fused: faster than exp on CPU
    return _divergence(q, log_q, p, log_p, spare, beta, temperature, need, outs, scale)[0]


def _divergence(
    q: torch.Tensor,
    log_q: torch.Tensor,
    p: torch.Tensor,
    log_p: torch.Tensor,
    spare: torch.Tensor,
    beta: float,
    temperature: float,
    need: tuple[bool, bool],
    outs: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
    scale: float | torch.Tensor = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """:func:`_dense_chunk` from both sides' probabilities and log-probabilities, which it overwrites, as it does
    ``spare``; each gradient is written times ``scale`` into its ``outs`` entry where one is given (one pass less
    than scaling it afterwards), else into those temporaries, and returned."""
    factor = scale / temperature
    if beta == 0.0 or beta == 1.0:
        (x, log_x, y, log_y) = (p, log_p, q, log_q) if beta == 0.0 else (q, log_q, p, log_p)
        (out_x, out_y) = (outs[1], outs[0]) if beta == 0.0 else outs
        terms, value = _terms(x, torch.sub(log_x, log_y, out=spare))
        grad_x = (
            _times_into(terms.addcmul_(x, value[:, None], value=-1.0), factor, out_x) if need[beta == 0.0] else None
        )
        grad_y = _times_into(y.sub_(x), factor, out_y) if need[beta == 1.0] else None
        return (value, grad_y, grad_x) if beta == 0.0 else (value, grad_x, grad_y)
    log_m = torch.lerp(q, p, beta, out=spare).log_()
    (terms_q, kl_q), (terms_p, kl_p) = _terms(q, log_q.sub_(log_m)), _terms(p, log_p.sub_(log_m))
    value = beta * kl_p + (1.0 - beta) * kl_q
    grad_q = (
        _times_into(terms_q.addcmul_(q, kl_q[:, None], value=-1.0), (1.0 - beta) * factor, outs[0]) if need[0] else None
    )
    grad_p = _times_into(terms_p.addcmul_(p, kl_p[:, None], value=-1.0), beta * factor, outs[1]) if need[1] else None
    return value, grad_q, grad_p


def _times_into(values: torch.Tensor, factor: float | torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``values * factor``, into ``out`` where given, else in place (no pass where ``factor`` is the number 1)."""
    if out is not None:
        return torch.mul(values, factor, out=out)
    return values if isinstance(factor, float) and factor == 1.0 else values.mul_(factor)


def _projected_chunk(
    student: torch.Tensor,
    teacher: torch.Tensor,
    classes: _Classes,
    beta: float,
    temperature: float,
    need: tuple[bool, bool],
    work: Workspace,
    outs: tuple[torch.Tensor | None, torch.Tensor | None],
    scale: float | torch.Tensor,
) -> torch.Tensor:
    r"""Row values of the divergence between both sides' class distributions :math:`Q_c = \sum_{v \in c} q_v` and
    :math:`P_c`, computed in ``work``'s temporaries; the gradients ``need`` asks for, times ``scale``, are written
    into ``outs`` (the chunk's rows of the gradient tensors).

    The class probabilities are floored at the dtype's smallest normal number, as :func:`project_logprobs`
    floors them, and the divergence on them is :func:`_dense_chunk`'s, so the values are those of
    ``generalized_jsd(*project_logprobs(...))`` up to rounding (the classes are not normalised a second time).
    With :math:`h_c` its gradient with respect to the class log-probabilities as logits, the gradient with respect
    to a logit is
    :math:`\partial L / \partial z_v = q_v\,(h_{c(v)} / Q_{c(v)} - \sum_c h_c) / \tau`, over the classes whose mass
    was not floored (the floor passes no gradient). ``scale / τ`` multiplies the class terms, not the logits' row.
    """
    tiny = torch.finfo(work.dtype).tiny
    rows, count = student.shape[0], classes.count
    on_cpu = student.device.type == "cpu"
    # work's slots, student/teacher: 6/9 scaled logits (in low precision, later the gradient); 7/10 probabilities;
    # 8/11 class mass; 0/1 its log; 12/13 its inverse; 2 the divergence's spare
    sides = ((student, classes.student, 6), (teacher, classes.teacher, 9))
    probs, mass, log_mass, floored, inverse = [], [], [], [], []
    for side, (logits, index, slot) in enumerate(sides):
        x = torch.softmax(_scaled_into(logits, temperature, work, slot), dim=-1, out=work(slot + 1, *logits.shape))
        m = work(slot + 2, rows, count).zero_().index_add_(-1, index, x)
        # on CPU reading the lowest mass back costs nothing, and the floor's passes run only where a class needs it
        low = None if on_cpu and float(m.amin()) > tiny else m <= tiny
        if low is not None:
            m.clamp_min_(tiny)
        probs.append(x)
        mass.append(m)
        floored.append(low)
        log_mass.append(torch.log(m, out=work(side, rows, count)))
        # the divergence may overwrite the mass, so its inverse is taken first, for a side whose gradient is asked
        inverse.append(torch.reciprocal(m, out=work(12 + side, rows, count)) if need[side] else None)
    value, *class_grads = _divergence(mass[0], log_mass[0], mass[1], log_mass[1], work(2, rows, count), beta, 1.0, need)
    factor = scale / temperature
    for h, x, low, inv, out, (_, index, slot) in zip(class_grads, probs, floored, inverse, outs, sides, strict=True):
        if h is None or inv is None or out is None:
            continue
        if low is not None:
            h.masked_fill_(low, 0.0)
        total = h.sum(dim=-1, keepdim=True)
        per_class = h.mul_(inv).sub_(total).mul_(factor)  # all but the factor q_v, over the classes
        grad = out if out.dtype == x.dtype else work(slot, *x.shape)  # low-precision logits: converted at the end
        # a gather with the index expanded over the rows: on CPU about twice as fast as index_select on the last axis
        torch.gather(per_class, -1, index.expand(x.shape[0], -1), out=grad).mul_(x)
        if grad is not out:
            out.copy_(grad)
    return value


def _scaled_into(logits: torch.Tensor, temperature: float, work: Workspace, slot: int) -> torch.Tensor:
    """``logits / temperature`` in ``work``'s dtype: ``logits`` itself when that changes nothing, else in temporary
    ``slot`` (converted first)."""
    if logits.dtype == work.dtype and temperature == 1.0:
        return logits
    out = work(slot, *logits.shape)
    if logits.dtype != out.dtype:
        logits = out.copy_(logits)
    return logits if temperature == 1.0 else torch.div(logits, temperature, out=out)


def _terms(x: torch.Tensor, log_ratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The terms ``x * log_ratio`` of a KL, in place of ``log_ratio``, and their row sums; a term is exactly 0
    where ``x`` is 0. On CPU the zeroing runs only for a chunk whose sums came out NaN (``0 * inf``, which needs a
    ``-inf`` logit), since it costs as much as the rest of the chunk; elsewhere always, as testing would sync."""
    terms = log_ratio.mul_(x)
    sums = terms.sum(dim=-1)
    if terms.device.type != "cpu" or bool(sums.isnan().any()):
        sums = terms.masked_fill_(x == 0.0, 0.0).sum(dim=-1)
    return terms, sums


def _times(x: torch.Tensor, log_ratio: torch.Tensor) -> torch.Tensor:
    """``x * log_ratio`` elementwise, exactly 0 where ``x`` is 0 (``log_ratio`` may be infinite or NaN there)."""
    return log_ratio.mul_(x).masked_fill_(x == 0.0, 0.0)


def _sparse_chunk(
    student: torch.Tensor,
    teacher: torch.Tensor,
    ids: torch.Tensor,
    beta: float,
    temperature: float,
    work: Workspace,
    out: torch.Tensor | None,
    scale: float | torch.Tensor,
) -> torch.Tensor:
    """Row values against a top-k teacher's ``k + 1`` bucket log-probs (the student is reduced to the same buckets:
    the listed ids, and a tail holding the rest, floored), computed in ``work``'s temporaries; the student's
    gradient, times ``scale``, is written into ``out`` where given."""
    log_q_all = torch.log_softmax(_scaled_into(student, temperature, work, 2), dim=-1, out=work(0, *student.shape))
    log_p = teacher.to(work.dtype)
    rest = torch.exp(log_q_all, out=work(1, *student.shape)).scatter_(-1, ids, 0.0)  # the unlisted ids' mass
    log_q = torch.cat([log_q_all.gather(-1, ids), _floor(rest.sum(dim=-1, keepdim=True).log_())], dim=-1)
    if beta == 0.0:
        value, grad_buckets = _kl(log_p, log_q), log_q.exp() - log_p.exp()
    elif beta == 1.0:
        value, grad_buckets = _kl(log_q, log_p), _kl_grad(log_q, log_p)
    else:
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
        value = beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
        grad_buckets = (1.0 - beta) * _kl_grad(log_q, log_m)
    if out is not None:
        torch.mul(_unbucket(grad_buckets, rest, log_q, ids), scale / temperature, out=out)
    return value


def _kl(log_x: torch.Tensor, log_y: torch.Tensor) -> torch.Tensor:
    return _times(log_x.exp(), log_x - log_y).sum(dim=-1)


def _kl_grad(log_x: torch.Tensor, log_y: torch.Tensor) -> torch.Tensor:
    """Gradient of ``KL(x || y)`` with respect to the logits of ``x``: ``x * (log x - log y - KL)``."""
    x = log_x.exp()
    return _times(x, log_x - log_y - _kl(log_x, log_y)[..., None])


def _unbucket(grad_buckets: torch.Tensor, rest: torch.Tensor, log_q: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Spread gradients with respect to bucket logits over the vocabulary, in place of ``rest`` (the student's
    probabilities, 0 at the listed ids): a listed id takes its bucket's, an unlisted id ``j`` the share
    ``q_j / q_tail`` (at most 1) of the tail bucket's."""
    share = rest.mul_(torch.exp(-log_q[..., -1:])).clamp_max_(1.0)
    return share.mul_(grad_buckets[..., -1:]).scatter_(-1, ids, grad_buckets[..., :-1])


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0`` (larger ``x`` is clamped to 0), accurate on both sides of ``-log 2``."""
    x = x.clamp_max(0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _floor(log_x: torch.Tensor) -> torch.Tensor:
    """Floor a tail log-mass at the smallest normal number, so a tail lost to rounding stays finite."""
    return log_x.clamp_min(math.log(torch.finfo(log_x.dtype).tiny))
