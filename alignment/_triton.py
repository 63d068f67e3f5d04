"""Private: a fused Triton kernel for the generalized JSD of dense logits, row by row, with its gradients.

The torch path of :mod:`alignment.losses` asks :func:`available` and then calls :func:`jsd_rows`. Importing this module
never imports triton (an optional dependency): triton is imported on the first launch, and the kernel of
:mod:`alignment._triton_kernel` is wrapped with ``triton.jit`` then, once to compile and once for Triton's CPU
interpreter (``TRITON_INTERPRET=1``). The interpreter also needs that variable set before triton is first imported in
the process, because triton wraps its own library functions (``tl.max``, ``tl.sum``) when it is imported.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
from typing import Any

import torch

_FORWARD, _REVERSE, _MIXTURE = 0, 1, 2  # the kernel's MODE: beta == 0, beta == 1, 0 < beta < 1
# Columns per block and warps per program for long rows, by MODE (a row of any length is read in ceil(V / block)
# blocks), from `python -m benchmarks.sweep_triton` on an H200 at V = 151,936, bfloat16 (docs/results/performance.md):
# the mixture's is the fastest setting (6 % ahead of 4,096 and 8); the KLs' were within 2 % and 5 % of the fastest
# in two sweeps.
_LONG_ROWS = {_FORWARD: (4096, 8), _REVERSE: (4096, 8), _MIXTURE: (2048, 4)}
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def available(student: torch.Tensor) -> bool:
    """Whether :func:`jsd_rows` can run on ``student``'s device and dtype.

    True when triton is importable, ``student`` is float32, bfloat16 or float16 (float64 stays on the torch path,
    so ``gradcheck`` keeps working), and ``student`` is on CUDA or ``TRITON_INTERPRET=1`` is set (Triton's CPU
    interpreter, used by the tests).
    """
    return student.dtype in _KERNEL_DTYPES and (student.is_cuda or _interpreting()) and _triton_installed()


def jsd_rows(
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
    temperature: float,
    grad_student: torch.Tensor | None,
    grad_teacher: torch.Tensor | None,
    grad_scale: torch.Tensor | None = None,
    block: int | None = None,
    num_warps: int | None = None,
    teacher_index: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Generalized JSD of each row of logits, and optionally its gradients, in one fused kernel.

    .. math:: \mathrm{rows}_i = \beta\,\mathrm{KL}(p_i \,\|\, m_i) + (1-\beta)\,\mathrm{KL}(q_i \,\|\, m_i), \quad
        \frac{\partial\,\mathrm{rows}_i}{\partial s_i} = \frac{1-\beta}{\tau}\, q_i \odot
        \bigl(\log q_i - \log m_i - \mathrm{KL}(q_i \,\|\, m_i)\bigr)

    with :math:`q = \mathrm{softmax}(s/\tau)`, :math:`p = \mathrm{softmax}(t/\tau)`, :math:`m = \beta p + (1-\beta) q`,
    and the teacher's gradient the same with :math:`\beta` and :math:`p`. At :math:`\beta = 0` the rows are
    :math:`\mathrm{KL}(p \,\|\, q)`, with gradients :math:`(q - p)/\tau` and
    :math:`p \odot (\log p - \log q - \mathrm{KL}(p \,\|\, q))/\tau`; at :math:`\beta = 1` they are
    :math:`\mathrm{KL}(q \,\|\, p)`, with the roles swapped. Everything is computed in float32 from the logits.
    A ``-inf`` logit is probability 0 and adds nothing (:math:`0 \log 0 = 0`); a KL is ``+inf`` where its second
    distribution is 0 and its first is not, and the gradients that involve it are then not finite.

    Args:
        student: ``(N, V)`` float32, bfloat16 or float16 student logits, rows contiguous (any row stride).
        teacher: ``(N, V)`` teacher logits, same dtype and device, rows contiguous; with ``teacher_index``, any
            number of rows.
        mask: ``(N,)`` bool, ``True`` where a row counts (any stride); the logits of other rows are never read (may
            be NaN).
        beta: weight of the teacher in ``[0, 1]``.
        temperature: :math:`\tau > 0`, applied to both sides; no :math:`\tau^2` rescaling.
        grad_student: ``(N, V)`` buffer (any float dtype, rows contiguous) that receives
            :math:`\partial\,\mathrm{rows}_i / \partial s_i` in row ``i``, or None to skip it.
        grad_teacher: ``(N, V)`` buffer for :math:`\partial\,\mathrm{rows}_i / \partial t_i`, or None.
        grad_scale: a float32 0-d tensor on the logits' device that multiplies both gradients (read by the kernel,
            so the host never waits for it), or None for 1.
        block: columns a program reads at a time, a power of two (default: the one at or above ``V``, at most
            2,048 for ``0 < beta < 1`` and 4,096 otherwise).
        num_warps: warps per program (default: 4 for the mixture's 2,048 columns, else 8 for blocks of 2,048
            columns or more and 4 below).
        teacher_index: ``(N,)`` int64 on the logits' device: row ``i`` is compared with the teacher's row
            ``teacher_index[i]`` (read where ``mask[i]``, so it must be a row there); ``grad_teacher`` must then be
            None.

    Returns:
        ``(N,)`` float32, exactly ``0.0`` where ``mask`` is False; the gradient buffers hold zero rows there.

    Private: the caller checks shapes, dtypes and ranges (see :func:`available`); nothing is checked here.
    """
    num_rows, vocab = student.shape
    rows = torch.empty(num_rows, dtype=torch.float32, device=student.device)
    if num_rows == 0:
        return rows
    mode = _FORWARD if beta == 0.0 else _REVERSE if beta == 1.0 else _MIXTURE
    teacher_weight, student_weight = {_FORWARD: (1.0, 0.0), _REVERSE: (0.0, 1.0)}.get(mode, (beta, 1.0 - beta))
    block, warps = _launch_settings(vocab, block, *_LONG_ROWS[mode])
    device = torch.cuda.device(student.device) if student.is_cuda else contextlib.nullcontext()
    if grad_scale is None:
        grad_scale = torch.ones((), dtype=torch.float32, device=student.device)
    with device:
        _kernel("jsd_rows_kernel", _interpreting())[(num_rows,)](
            student,
            teacher,
            rows if teacher_index is None else teacher_index.contiguous(),  # a stand-in pointer where not indexed
            mask.contiguous(),  # read at mask_ptr + row
            grad_scale,
            rows,
            rows if grad_student is None else grad_student,  # a stand-in pointer, never written
            rows if grad_teacher is None else grad_teacher,
            student.stride(0),
            teacher.stride(0),
            0 if grad_student is None else grad_student.stride(0),
            0 if grad_teacher is None else grad_teacher.stride(0),
            vocab,
            1.0 / temperature,
            teacher_weight,
            student_weight,
            math.log(beta) if mode == _MIXTURE else 0.0,
            math.log1p(-beta) if mode == _MIXTURE else 0.0,
            MODE=mode,
            STUDENT_GRAD_PASS=0 if grad_student is None else 2 if mode == _FORWARD else 3,
            TEACHER_GRAD_PASS=0 if grad_teacher is None else 2 if mode == _REVERSE else 3,
            TEACHER_INDEXED=teacher_index is not None,
            BLOCK=block,
            num_warps=num_warps or warps,
        )
    return rows


def scale_rows(grad: torch.Tensor, incoming: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Multiply row ``i`` of ``grad`` by ``incoming[i] / weight`` in place, where ``mask[i]`` and ``incoming[i] !=
    weight``, deciding row by row on the device: no value is read back to the host.

    Args:
        grad: ``(N, V)`` rows or ``(N / T, T, V)`` blocks of them, any float dtype, each row contiguous (any
            strides before the last axis, e.g. a view of a larger tensor).
        incoming: ``(N,)`` the gradient that reaches the per-row values (any stride: autograd hands the backward
            of a sum a scalar expanded to ``(N,)``, stride 0).
        weight: a 0-d tensor, what the kept gradient was already multiplied by.
        mask: ``(N,)`` bool; the rows where it is False are not touched.

    Private: the caller checks :func:`available` and the shapes.
    """
    num_rows, vocab = len(mask), grad.shape[-1]
    if num_rows == 0 or vocab == 0:
        return
    rows_per_block, block_stride = (grad.shape[1], grad.stride(0)) if grad.ndim == 3 else (num_rows, 0)
    block, warps = _launch_settings(vocab, None, 4096, 8)
    device = torch.cuda.device(grad.device) if grad.is_cuda else contextlib.nullcontext()
    with device:
        _kernel("scale_rows_kernel", _interpreting())[(num_rows,)](
            grad,
            incoming,
            weight,
            mask.contiguous(),
            incoming.stride(0),
            block_stride,
            grad.stride(-2),
            rows_per_block,
            vocab,
            BLOCK=block,
            num_warps=warps,
        )


def _launch_settings(vocab: int, block: int | None, longest: int, warps: int) -> tuple[int, int]:
    """Columns per block (``block``, else the power of two at or above ``vocab``, at most ``longest``) and warps
    per program (``warps`` for blocks of ``longest`` columns, else 8 from 2,048 columns and 4 below)."""
    block = block or min(longest, 1 << max(vocab - 1, 1).bit_length())
    return block, warps if block == longest else 8 if block >= 2048 else 4


def _interpreting() -> bool:
    """Whether ``TRITON_INTERPRET=1`` asks for Triton's CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _kernel(name: str, interpret: bool) -> Any:
    """The kernel ``name`` of :mod:`alignment._triton_kernel` wrapped by ``triton.jit``: compiled, or interpreted
    when ``interpret`` (part of the cache key)."""
    import triton  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import triton.language  # type: ignore[import-untyped, import-not-found, unused-ignore]

    from alignment import _triton_kernel

    _triton_kernel.tl = triton.language  # type: ignore[attr-defined]  # the kernel's `tl`, imported only for mypy
    return triton.jit(getattr(_triton_kernel, name))


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None
