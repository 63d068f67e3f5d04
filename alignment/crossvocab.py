r"""Losses across two vocabularies: projected next-token distributions, and chunk likelihoods (torch).

Two ways to compare a student and a teacher that do not share a vocabulary, at the positions
:func:`~alignment.prepare_teacher_batch` aligned:

* :func:`project_logprobs` maps both next-token distributions onto the classes of a
  :class:`~alignment.VocabProjection`; any same-vocabulary loss (:func:`~alignment.generalized_jsd`,
  :func:`~alignment.masked_kl`) then applies. Needs the teacher's full distribution (dense logits). For those two
  losses, passing the projection to the loss (``generalized_jsd(student_logits, teacher_logits, mask,
  projection=projection)``) computes the same in one call, with less memory and time.
* :func:`chunk_likelihood_loss` compares, chunk by chunk, how likely each model finds the same piece of text
  (ALM-style). Needs only the log-probabilities of the tokens actually read, so it works with an inference
  server that returns only the sampled tokens' logprobs.

Which to use: the prefix projection when the teacher's logits are at hand (it credits a student token the
teacher lacks, such as Llama's three-digit numbers, with the teacher's probability of how that text begins);
the exact projection only when both vocabularies largely coincide; chunk likelihoods for served teachers. Where
token lengths differ a lot (numbers, code), :mod:`alignment.nextbyte` compares the two models at every byte instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from alignment._checks import check_dtype, check_floating, check_in_range, upcast
from alignment.errors import AlignmentError
from alignment.losses import (
    Reduction,
    _as_rows,
    _base_gradient,
    _block,
    _chunks,
    _classes,
    _default_chunk,
    _gathered,
    _rows_at,
    _take,
    _teacher_index,
    _window,
)
from alignment.types import VocabProjection

__all__ = ["chunk_likelihood_loss", "project_logprobs", "token_logprobs"]


def _project(
    logits: torch.Tensor,
    index: torch.Tensor,
    num_classes: int,
    temperature: float,
    rows: torch.Tensor | None = None,
    shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Class log-probabilities of every row of ``logits``, or, with ``rows`` (flat indices into the logits' rows,
    for logits that need no gradient), of those rows, shaped ``shape``."""
    chunk = _default_chunk(logits.shape[-1], logits.device)
    window = _window(logits) if rows is None else None  # a slice's gradient goes into its base, as the losses put it
    source = _as_rows(logits) if window is None else window[0]  # read in place, as the losses read them
    out: torch.Tensor = _Projection.apply(  # type: ignore[no-untyped-call]
        source, index.to(logits.device), num_classes, temperature, chunk, None if window is None else window[1], rows
    )
    return out.reshape(*(logits.shape[:-1] if shape is None else shape), num_classes)


class _Projection(torch.autograd.Function):
    r"""``(N, W)`` logits (or ``(N / T, T, W)`` blocks of rows, or the base of a slice whose positions ``window``
    are read) to ``(N, C)`` class log-probabilities, ``chunk`` rows at a time; saves the logits and the (small)
    output, and recomputes the softmax in the backward, so no ``(N, W)`` float32 copy outlives a chunk. With
    ``rows``, the rows ``rows`` of the logits, which then need no gradient (:func:`project_logprobs` gathers a
    teacher that needs one).

    With :math:`P_c = \sum_{v \in c} p_v` and incoming :math:`g_c = \partial L / \partial \log P_c`:
    :math:`\partial L / \partial z_v = p_v\,(g_{c(v)} / P_{c(v)} - \sum_c g_c) / \tau`, over the classes whose mass
    was not floored (the floor passes no gradient).
    """

    @staticmethod
    def forward(
        ctx: Any,
        logits: torch.Tensor,
        index: torch.Tensor,
        num_classes: int,
        temperature: float,
        chunk: int,
        window: tuple[int, int] | None,
        rows: torch.Tensor | None,
    ) -> torch.Tensor:
        read = logits if window is None else _as_rows(logits.narrow(-2, *window))
        dtype = torch.promote_types(logits.dtype, torch.float32)
        count = read.shape[:-1].numel() if rows is None else len(rows)
        out = torch.empty((count, num_classes), dtype=dtype, device=logits.device)
        tiny = torch.finfo(dtype).tiny
        for part in _chunks(count, chunk, _block(read) if rows is None else None):
            probs = _softmax(_take(read, part) if rows is None else _rows_at(read, rows[part]), temperature, dtype)
            mass = probs.new_zeros((probs.shape[0], num_classes)).index_add_(-1, index, probs)
            out[part] = mass.clamp_min_(tiny).log_()
        ctx.save_for_backward(logits, index, out)
        ctx.options = (temperature, chunk, window)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        logits, index, out = ctx.saved_tensors
        temperature, chunk, window = ctx.options
        floored = out <= math.log(torch.finfo(out.dtype).tiny)
        if window is None:
            read, grad = logits, torch.empty_like(logits)
            rows_of_grad = grad
        else:
            read = _as_rows(logits.narrow(-2, *window))
            grad, rows_of_grad = _base_gradient(logits, window)
        for part in _chunks(len(out), chunk, _block(read)):
            probs = _softmax(_take(read, part), temperature, out.dtype)
            per_mass = (grad_out[part] * torch.exp(-out[part])).masked_fill_(floored[part], 0.0)
            total = grad_out[part].masked_fill(floored[part], 0.0).sum(dim=-1, keepdim=True)
            _take(rows_of_grad, part).copy_(probs.mul_(per_mass.index_select(-1, index).sub_(total)).div_(temperature))
        return grad, None, None, None, None, None, None


def _softmax(logits: torch.Tensor, temperature: float, dtype: torch.dtype) -> torch.Tensor:
    logits = logits.to(dtype)
    return torch.softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)


def project_logprobs(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    projection: VocabProjection,
    *,
    temperature: float = 1.0,
    teacher_positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Both next-token distributions as log-probabilities over the projection's classes.

    .. math:: \log P(c) = \log \sum_{v:\ \mathrm{class}(v) = c} \mathrm{softmax}(z/\tau)_v

    Feed the pair to any same-vocabulary loss with ``temperature=1`` (the temperature is applied here); with a
    ``"prefix"`` projection the KL between them is the KL between the two models' probabilities of how the next
    text begins. Logits wider than the tokenizer (a padded embedding) put the extra entries in the "other" class.
    For :func:`~alignment.generalized_jsd` and :func:`~alignment.masked_kl`, pass ``projection=`` to the loss
    instead: the same result without the two ``(..., C)`` tensors.

    Args:
        student_logits: ``(..., V')`` float student logits, ``V' >= V``; a slice along the positions passes its
            gradient straight to the tensor it slices, as for :func:`~alignment.generalized_jsd`.
        teacher_logits: ``(..., W')`` float teacher logits on the same positions (e.g. from
            :func:`~alignment.align_teacher_logits`), ``W' >= W``; with ``teacher_positions``, ``(..., S, W')`` over
            the teacher's own positions.
        projection: from :func:`~alignment.vocab_projection` of the same student and teacher tokenizers.
        temperature: :math:`\tau > 0`, applied to both sides.
        teacher_positions: ``(...)`` integer, the student's positions (``TeacherBatch.positions``): the teacher's
            logits are then ``(..., S, W')`` over its own positions and position ``k`` reads the teacher's row
            ``teacher_positions[..., k]``, chunk by chunk, with no gathered copy of those rows (as for the losses'
            ``teacher_positions=``). Every value must lie in ``[0, S)`` (a batch's positions are 0 where nothing is
            aligned); a teacher that needs a gradient is gathered first.

    Returns:
        ``(..., C)`` student and teacher log-probabilities (float32, float64 for float64 logits); probabilities of
        zero are floored at the dtype's smallest normal number so the losses stay finite.

    Raises:
        AlignmentError: the logits are narrower than the vocabularies, the leading shapes differ, ``temperature``
            is not positive, or a teacher position lies outside the teacher's.
        TypeError: logits are not floating point, ``projection`` is not a :class:`~alignment.VocabProjection`, or
            ``teacher_positions`` is not an integer tensor.

    Examples:
        >>> from alignment.types import VocabProjection
        >>> import numpy as np
        >>> p = VocabProjection(student_classes=np.array([0, 0, 1]), teacher_classes=np.array([0, 1, 1]),
        ...                     num_classes=2, kind="prefix")
        >>> s, t = project_logprobs(torch.zeros(3), torch.tensor([0.0, 0.0, -1e9]), p)
        >>> s.exp(), t.exp()
        (tensor([0.6667, 0.3333]), tensor([0.5000, 0.5000]))
    """
    check_floating("student_logits", student_logits)
    check_floating("teacher_logits", teacher_logits)
    check_in_range("temperature", temperature, low=0.0, high=math.inf, low_open=True)
    # the checks of the losses' projection= and teacher_positions=
    classes = _classes(projection, student_logits, teacher_logits, same_rows=teacher_positions is None)
    if teacher_positions is None:
        student = _project(student_logits, classes.student, classes.count, temperature)
        return student, _project(teacher_logits, classes.teacher, classes.count, temperature)
    every = torch.ones(student_logits.shape[:-1], dtype=torch.bool, device=student_logits.device)
    rows = _teacher_index(teacher_positions, teacher_logits, student_logits, every)
    student = _project(student_logits, classes.student, classes.count, temperature)
    if teacher_logits.requires_grad and torch.is_grad_enabled():  # gathered, so that autograd spreads its gradient
        return student, _project(
            _gathered(teacher_logits, rows, every.shape), classes.teacher, classes.count, temperature
        )
    return student, _project(teacher_logits, classes.teacher, classes.count, temperature, rows, tuple(every.shape))


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    r"""Log-probability of each given token: ``log_softmax(logits / τ)[..., ids]``.

    Args:
        logits: ``(..., V)`` float logits.
        ids: ``(...)`` int64 token ids in ``[0, V)``.
        temperature: :math:`\tau > 0`.

    Returns:
        ``(...)`` float32 (float64 for float64 logits) log-probabilities.

    Examples:
        >>> token_logprobs(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))
        tensor([-0.6931])
    """
    check_floating("logits", logits)
    check_in_range("temperature", temperature, low=0.0, high=math.inf, low_open=True)
    if ids.shape != logits.shape[:-1]:
        raise AlignmentError(f"ids must have shape {tuple(logits.shape[:-1])}, got {tuple(ids.shape)}")
    picked = upcast(logits).gather(-1, ids[..., None]).squeeze(-1) / temperature
    return picked - torch.logsumexp(upcast(logits) / temperature, dim=-1)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate on both sides of ``-log 2``."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _chunk_sums(values: torch.Tensor, chunks: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example sums of ``values`` and member counts over chunk ids (``-1`` is dropped)."""
    slot = torch.where(chunks >= 0, chunks, groups)
    sums = torch.zeros((values.shape[0], groups + 1), dtype=values.dtype, device=values.device)
    counts = torch.zeros((values.shape[0], groups + 1), dtype=torch.int64, device=values.device)
    sums = sums.scatter_add(1, slot, torch.where(chunks >= 0, values, 0.0))
    counts = counts.scatter_add(1, slot, torch.ones_like(slot))
    return sums[:, :groups], counts[:, :groups]


def chunk_likelihood_loss(
    student_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    student_chunks: torch.Tensor,
    teacher_chunks: torch.Tensor,
    *,
    reduction: Reduction = "batchmean",
    num_items: int | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Compare how likely student and teacher find each aligned chunk of text (ALM-style).

    A chunk is the smallest run of student tokens and of teacher tokens covering the same bytes (see
    :class:`~alignment.TokenAlignment`); its log-likelihood on each side is the sum of that side's token
    log-probabilities, :math:`\ell_s` and :math:`\ell_t`. The loss per chunk is the KL divergence between the
    Bernoulli events "this chunk comes next" under the teacher and under the student:

    .. math:: p_t (\ell_t - \ell_s) + (1 - p_t)\,\bigl(\log(1 - p_t) - \log(1 - p_s)\bigr),\quad p = e^{\ell}

    It is ``0`` where the two likelihoods agree and needs only the log-probabilities of the tokens read.

    Args:
        student_logprobs: ``(B, T)`` float log-probabilities of the student's completion tokens.
        teacher_logprobs: ``(B, S)`` float log-probabilities of the teacher's input tokens (token ``j`` scored
            at position ``j - 1``; position 0 is never in a chunk).
        student_chunks: ``(B, T)`` int64 chunk id of each student token, ``-1`` for none
            (:attr:`~alignment.TeacherBatch.student_chunks`).
        teacher_chunks: ``(B, S)`` int64 chunk id of each teacher token, ``-1`` for none.
        reduction: ``"none"`` gives ``(B, G)`` per chunk (``0`` for absent chunks); ``"sum"``; ``"mean"`` and
            ``"batchmean"`` average over the chunks present on both sides.
        num_items: denominator for ``"mean"``/``"batchmean"`` instead of the chunks present (e.g. the count over
            all gradient-accumulation steps); values below ``1`` count as ``1``.

    Returns:
        The loss, float32 (float64 for float64 inputs).

    References:
        Minixhofer, Vulić and Ponti, `Universal Cross-Tokenizer Distillation via Approximate Likelihood
        Matching <https://arxiv.org/abs/2503.20083>`_, 2025.

    Examples:
        >>> s, t = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[1.0, 0.25]]))
        >>> chunk_likelihood_loss(s, t, torch.tensor([[0, 0]]), torch.tensor([[-1, 0]]))  # same chunk prob.
        tensor(0.)
    """
    check_floating("student_logprobs", student_logprobs)
    check_floating("teacher_logprobs", teacher_logprobs)
    check_dtype("student_chunks", student_chunks, torch.int64)
    check_dtype("teacher_chunks", teacher_chunks, torch.int64)
    for name, values, chunks in (
        ("student", student_logprobs, student_chunks),
        ("teacher", teacher_logprobs, teacher_chunks),
    ):
        if chunks.shape != values.shape or values.dim() != 2:
            raise AlignmentError(
                f"{name}_chunks must have the shape of {name}_logprobs, (B, length); "
                f"got {tuple(chunks.shape)} and {tuple(values.shape)}"
            )
    if student_logprobs.shape[0] != teacher_logprobs.shape[0]:
        raise AlignmentError(f"batch sizes differ: {student_logprobs.shape[0]} and {teacher_logprobs.shape[0]}")
    groups = 1 + max((int(c.max()) for c in (student_chunks, teacher_chunks) if c.numel()), default=-1)
    student_sum, student_count = _chunk_sums(upcast(student_logprobs), student_chunks, groups)
    teacher_sum, teacher_count = _chunk_sums(upcast(teacher_logprobs), teacher_chunks, groups)
    ceiling = -torch.finfo(student_sum.dtype).eps  # keeps log(1 - p) finite for chunks of probability 1
    ell_s, ell_t = student_sum.clamp_max(ceiling), teacher_sum.clamp_max(ceiling)
    p_t = ell_t.exp()
    # 0 * log 0 = 0: a chunk the teacher gives probability 0 contributes only its second term
    first = torch.where(p_t > 0, p_t * (torch.where(p_t > 0, ell_t, 0.0) - ell_s), 0.0)
    per_chunk = first + (1 - p_t) * (_log1mexp(ell_t) - _log1mexp(ell_s))
    present = (student_count > 0) & (teacher_count > 0)
    per_chunk = torch.where(present, per_chunk, 0.0)
    if reduction == "none":
        return per_chunk
    if reduction == "sum":
        return per_chunk.sum()
    if reduction in ("mean", "batchmean"):
        count = present.sum() if num_items is None else torch.as_tensor(num_items, device=per_chunk.device)
        return per_chunk.sum() / count.clamp_min(1)
    raise AlignmentError(f"reduction must be one of ('none', 'sum', 'mean', 'batchmean'), got {reduction!r}")
