"""The Triton kernel behind :mod:`alignment._triton`: the generalized JSD of one row of logits per program.

Importing this module never imports triton (an optional dependency, and one that must not be imported before its
interpreter is chosen, which ``pytest --doctest-modules alignment`` would do). The kernel is plain Python until
:func:`alignment._triton._kernel` sets this module's ``tl`` to ``triton.language`` and wraps the kernel with
``triton.jit``, compiled or interpreted (``TRITON_INTERPRET=1``) as the environment says at that moment.

Each program reads its row of logits two or three times, in blocks of ``BLOCK`` columns, and keeps float32 scalars
between passes: pass 1 finds both log-sum-exps (online max and sum of exponentials), pass 2 sums the row's KL terms
and writes the gradients that do not need them, pass 3 writes the gradients that do. Pass 2 runs from the last block
back to the first, so it begins with the blocks pass 1 read last and pass 3 with those pass 2 read last, which may
still be in the cache. The arithmetic is in base 2 (``exp2`` and ``log2``; the KL sums in bits, times ln 2 at the
end) and takes the mixture's log as ``log2(beta p + (1 - beta) q)``: one logarithm and no exponential beyond ``p``
and ``q``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import triton.language as tl  # type: ignore[import-untyped, import-not-found, unused-ignore]
else:
    tl = None  # triton.language, set by alignment._triton._kernel before the kernel is wrapped


def jsd_rows_kernel(
    student_ptr: tl.tensor,
    teacher_ptr: tl.tensor,
    teacher_index_ptr: tl.tensor,
    mask_ptr: tl.tensor,
    grad_scale_ptr: tl.tensor,
    rows_ptr: tl.tensor,
    grad_student_ptr: tl.tensor,
    grad_teacher_ptr: tl.tensor,
    student_stride: int,
    teacher_stride: int,
    grad_student_stride: int,
    grad_teacher_stride: int,
    vocab: int,
    inv_temperature: float,
    teacher_weight: float,
    student_weight: float,
    log_beta: float,
    log_1m_beta: float,
    MODE: tl.constexpr,
    STUDENT_GRAD_PASS: tl.constexpr,
    TEACHER_GRAD_PASS: tl.constexpr,
    TEACHER_INDEXED: tl.constexpr,
    BLOCK: tl.constexpr,
) -> None:
    """Row ``i``: ``rows[i] = teacher_weight * KL(p || r) + student_weight * KL(q || r)``, and its gradients.

    ``q``/``p`` are the student/teacher softmaxes at ``inv_temperature``; ``r`` is ``q`` for ``MODE`` 0 (forward KL,
    ``beta == 0``), ``p`` for ``MODE`` 1 (reverse KL, ``beta == 1``) and the mixture ``m`` for ``MODE`` 2. A gradient
    is written in pass ``*_GRAD_PASS`` (2 or 3), or not at all (0), times the float32 scalar at ``grad_scale_ptr``.
    Rows whose mask is False get 0 and zero gradients without reading their logits. With ``TEACHER_INDEXED``, row
    ``i`` reads the teacher's row ``teacher_index[i]`` (int64; never a teacher gradient then). Triton inlines no plain
    Python helpers, so the passes repeat a few lines.
    """
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    blocks = tl.cdiv(vocab, BLOCK)
    student_row = student_ptr + row.to(tl.int64) * student_stride
    if TEACHER_INDEXED:  # row i reads the teacher's row teacher_index[i]
        teacher_row = teacher_ptr + tl.load(teacher_index_ptr + row).to(tl.int64) * teacher_stride
    else:
        teacher_row = teacher_ptr + row.to(tl.int64) * teacher_stride
    grad_student_row = grad_student_ptr + row.to(tl.int64) * grad_student_stride
    grad_teacher_row = grad_teacher_ptr + row.to(tl.int64) * grad_teacher_stride
    if tl.load(mask_ptr + row):
        # Base 2 throughout (exp2 and log2 are single instructions on a GPU): log2(e) = 1.4426950408889634, and the
        # KL sums in bits are times ln(2) = 0.6931471805599453 at the end.
        scale = inv_temperature * 1.4426950408889634  # logits to base-2 log-probabilities, up to their lse
        log2_beta = log_beta * 1.4426950408889634
        log2_1m_beta = log_1m_beta * 1.4426950408889634
        grad_scale = tl.load(grad_scale_ptr) * inv_temperature  # every gradient is times both
        # Pass 1: log-sum-exp of both rows (base 2), online. The shift stays 0 while the running max is -inf, so
        # that exp2(-inf - shift) = 0 where exp2(-inf - (-inf)) would be NaN.
        max_s = float("-inf")
        sum_s = 0.0
        max_t = float("-inf")
        sum_t = 0.0
        for start in range(0, vocab, BLOCK):
            offs = start + cols
            s = tl.load(student_row + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32) * scale
            t = tl.load(teacher_row + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32) * scale
            new_max_s = tl.maximum(max_s, tl.max(s, axis=0))
            shift_s = tl.where(new_max_s == float("-inf"), 0.0, new_max_s)
            sum_s = sum_s * tl.exp2(max_s - shift_s) + tl.sum(tl.exp2(s - shift_s), axis=0)
            max_s = new_max_s
            new_max_t = tl.maximum(max_t, tl.max(t, axis=0))
            shift_t = tl.where(new_max_t == float("-inf"), 0.0, new_max_t)
            sum_t = sum_t * tl.exp2(max_t - shift_t) + tl.sum(tl.exp2(t - shift_t), axis=0)
            max_t = new_max_t
        lse_s = max_s + tl.log2(sum_s)
        lse_t = max_t + tl.log2(sum_t)

        # Pass 2, from the last block back to the first, so that it starts on the blocks pass 1 read last, which may
        # still be in the cache (and pass 3 on those pass 2 read last): the KL sums in bits, each term 0 where its
        # probability is 0 (0 log 0 = 0). Forward KL's student gradient (q - p) / tau and reverse KL's teacher
        # gradient (p - q) / tau need no sum: written here.
        kl_t = 0.0  # KL(p || r), in bits
        kl_s = 0.0  # KL(q || r), in bits
        for back in range(0, blocks):
            offs = (blocks - 1 - back) * BLOCK + cols
            s = tl.load(student_row + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32)
            t = tl.load(teacher_row + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32)
            log_q = s * scale - lse_s
            log_p = t * scale - lse_t
            q = tl.exp2(log_q)
            p = tl.exp2(log_p)
            if MODE == 0:
                log_r = log_q
            elif MODE == 1:
                log_r = log_p
            else:  # log2 m from the mixture itself; where that underflows to 0, the larger of its two terms (the
                # KL terms there weigh less than the smallest normal number, but log2 0 = -inf would make them inf)
                m = teacher_weight * p + student_weight * q
                log_r = tl.where(m > 0.0, tl.log2(m), tl.maximum(log_p + log2_beta, log_q + log2_1m_beta))
            if MODE != 1:
                kl_t += tl.sum(tl.where(p > 0.0, p * (log_p - log_r), 0.0), axis=0)
            if MODE != 0:
                kl_s += tl.sum(tl.where(q > 0.0, q * (log_q - log_r), 0.0), axis=0)
            if STUDENT_GRAD_PASS == 2:
                grad_s = (q - p) * grad_scale
                tl.store(grad_student_row + offs, grad_s.to(grad_student_ptr.dtype.element_ty), mask=offs < vocab)
            if TEACHER_GRAD_PASS == 2:
                grad_t = (p - q) * grad_scale
                tl.store(grad_teacher_row + offs, grad_t.to(grad_teacher_ptr.dtype.element_ty), mask=offs < vocab)
        tl.store(rows_ptr + row, (teacher_weight * kl_t + student_weight * kl_s) * 0.6931471805599453)

        # Pass 3: the gradients that need the row's KL, q (log q - log r - KL(q || r)) / tau for the student and
        # the same with p for the teacher, times their weights (see alignment._triton.jsd_rows); in bits, times ln 2.
        if STUDENT_GRAD_PASS == 3 or TEACHER_GRAD_PASS == 3:
            for start in range(0, vocab, BLOCK):
                offs = start + cols
                s = tl.load(student_row + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32)
                t = tl.load(teacher_row + offs, mask=offs < vocab, other=float("-inf")).to(tl.float32)
                log_q = s * scale - lse_s
                log_p = t * scale - lse_t
                q = tl.exp2(log_q)
                p = tl.exp2(log_p)
                if MODE == 0:
                    log_r = log_q
                elif MODE == 1:
                    log_r = log_p
                else:
                    m = teacher_weight * p + student_weight * q
                    log_r = tl.where(m > 0.0, tl.log2(m), tl.maximum(log_p + log2_beta, log_q + log2_1m_beta))
                if STUDENT_GRAD_PASS == 3:
                    grad_s = tl.where(q > 0.0, q * (log_q - log_r - kl_s), 0.0) * (
                        student_weight * grad_scale * 0.6931471805599453
                    )
                    grad_s = grad_s.to(grad_student_ptr.dtype.element_ty)
                    tl.store(grad_student_row + offs, grad_s, mask=offs < vocab)
                if TEACHER_GRAD_PASS == 3:
                    grad_t = tl.where(p > 0.0, p * (log_p - log_r - kl_t), 0.0) * (
                        teacher_weight * grad_scale * 0.6931471805599453
                    )
                    grad_t = grad_t.to(grad_teacher_ptr.dtype.element_ty)
                    tl.store(grad_teacher_row + offs, grad_t, mask=offs < vocab)
    else:
        tl.store(rows_ptr + row, 0.0)
        if STUDENT_GRAD_PASS != 0 or TEACHER_GRAD_PASS != 0:
            for start in range(0, vocab, BLOCK):
                offs = start + cols
                zero = tl.zeros((BLOCK,), tl.float32)
                if STUDENT_GRAD_PASS != 0:
                    tl.store(grad_student_row + offs, zero.to(grad_student_ptr.dtype.element_ty), mask=offs < vocab)
                if TEACHER_GRAD_PASS != 0:
                    tl.store(grad_teacher_row + offs, zero.to(grad_teacher_ptr.dtype.element_ty), mask=offs < vocab)


def scale_rows_kernel(
    grad_ptr: tl.tensor,
    incoming_ptr: tl.tensor,
    weight_ptr: tl.tensor,
    mask_ptr: tl.tensor,
    incoming_stride: int,
    block_stride: int,
    row_stride: int,
    rows_per_block: int,
    vocab: int,
    BLOCK: tl.constexpr,
) -> None:
    """Row ``i`` of the gradient times ``incoming[i] / weight``, in place, where ``mask[i]`` and ``incoming[i]``
    is not ``weight``; other rows are not touched. Row ``i`` starts ``(i // rows_per_block) * block_stride +
    (i % rows_per_block) * row_stride`` elements into the gradient, its columns contiguous. The program of a row
    that needs no scaling reads two scalars and stops: the backward of a plain mean or sum costs next to nothing,
    and the host never waits to learn which it is."""
    row = tl.program_id(0)
    if tl.load(mask_ptr + row):
        incoming = tl.load(incoming_ptr + row * incoming_stride)  # stride 0 where autograd expanded a scalar
        weight = tl.load(weight_ptr)
        if incoming != weight:
            factor = incoming / weight
            cols = tl.arange(0, BLOCK)
            start_of_row = (row // rows_per_block).to(tl.int64) * block_stride
            start_of_row += (row % rows_per_block).to(tl.int64) * row_stride
            for start in range(0, vocab, BLOCK):
                offs = start + cols
                values = tl.load(grad_ptr + start_of_row + offs, mask=offs < vocab)
                scaled = (values.to(factor.dtype) * factor).to(grad_ptr.dtype.element_ty)
                tl.store(grad_ptr + start_of_row + offs, scaled, mask=offs < vocab)
