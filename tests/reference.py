"""Slow, obviously correct float64 reference implementations, written plainly, for parity tests and benchmarks.

Everything here works in probability space on float64 copies of the inputs, one formula per line, with no chunking,
no log-space tricks and no custom autograd, so that autograd of these functions is the reference gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(logits / temperature)`` over the last axis, in float64."""
    return torch.softmax(logits.double() / temperature, dim=-1)


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last axis, with 0 log 0 = 0."""
    return torch.where(p > 0, p * (torch.log(p) - torch.log(q)), 0.0).sum(dim=-1)


def divergence(q: torch.Tensor, p: torch.Tensor, beta: float) -> torch.Tensor:
    """Generalized JSD of student probabilities ``q`` and teacher probabilities ``p``; KL(p||q) at 0, KL(q||p) at 1."""
    if beta == 0:
        return kl(p, q)
    if beta == 1:
        return kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def generalized_jsd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, beta: float, temperature: float = 1.0
) -> torch.Tensor:
    """Per-position generalized JSD of dense logits, ``(..., V) -> (...)`` float64, unmasked."""
    return divergence(probs(student_logits, temperature), probs(teacher_logits, temperature), beta)


def buckets(listed: torch.Tensor) -> torch.Tensor:
    """The ``k`` listed probabilities, then one tail bucket with the rest of the mass (at least 0)."""
    tail = (1 - listed.sum(dim=-1, keepdim=True)).clamp_min(0)
    return torch.cat([listed, tail], dim=-1)


def generalized_jsd_topk(
    student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor, *, beta: float
) -> torch.Tensor:
    """Per-position generalized JSD against a top-k teacher, both sides reduced to ``k + 1`` buckets."""
    q = buckets(probs(student_logits).gather(-1, teacher_ids))
    p = buckets(teacher_logprobs.double().exp())
    return divergence(q, p, beta)


def reduce(
    values: torch.Tensor, mask: torch.Tensor, reduction: str, num_items: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Apply a loss reduction: ``none`` zeroes masked positions; ``mean``/``batchmean`` divide by the count."""
    values = torch.where(mask, values, 0.0)
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    count = mask.sum() if num_items is None else torch.as_tensor(num_items)
    return values.sum() / count.clamp_min(1)


def trl_generalized_jsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """TRL's ``GKDTrainer.generalized_jsd_loss`` (huggingface/trl, Apache-2.0), transcribed for parity tests.

    Note its ``"none"`` returns per-vocabulary-entry values of the counted positions, ``(n, V)``.
    """
    student_logits = student_logits / temperature
    teacher_logits = teacher_logits / temperature
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits, dim=-1)
    if beta == 0:
        jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    else:
        beta_t = torch.tensor(beta, dtype=student_log_probs.dtype)
        mixture_log_probs = torch.logsumexp(
            torch.stack([student_log_probs + torch.log(1 - beta_t), teacher_log_probs + torch.log(beta_t)]),
            dim=0,
        )
        kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)
        jsd = beta_t * kl_teacher + (1 - beta_t) * kl_student
    if labels is not None:
        mask = labels != -100
        jsd = jsd[mask]
    if reduction == "batchmean":
        return jsd.sum() / mask.sum() if labels is not None else jsd.sum() / jsd.size(0)
    if reduction == "sum":
        return jsd.sum()
    if reduction == "mean":
        return jsd.mean()
    return jsd


def project(logits: torch.Tensor, classes: list[int], num_classes: int, temperature: float = 1.0) -> torch.Tensor:
    """``(..., V) -> (..., C)`` float64: log of the summed probabilities of each class's members, class by class.

    ``classes[v]`` is the class of logit column ``v`` (one entry per column, padding included). An empty class
    has probability 0 and log-probability ``-inf``.
    """
    p = probs(logits, temperature)
    columns = []
    for c in range(num_classes):
        members = [v for v, cls in enumerate(classes) if cls == c]
        columns.append(p[..., members].sum(dim=-1) if members else torch.zeros(p.shape[:-1], dtype=p.dtype))
    return torch.log(torch.stack(columns, dim=-1))


def chunk_likelihood(
    student_logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    student_chunks: torch.Tensor,
    teacher_chunks: torch.Tensor,
    num_chunks: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chunk binary KL(Bernoulli(p_t) || Bernoulli(p_s)), ``(B, G)`` float64, and ``(B, G)`` bool "present".

    ``p = exp(sum of the chunk's token log-probabilities)`` on each side; chunk id ``-1`` belongs to no chunk; a
    chunk counts only where it has tokens on both sides, and is 0 elsewhere. Needs ``0 < p < 1``.
    """
    batch = student_logprobs.shape[0]
    rows, present_rows = [], []
    for b in range(batch):
        row, present_row = [], []
        for g in range(num_chunks):
            s_members = student_chunks[b] == g
            t_members = teacher_chunks[b] == g
            present = bool(s_members.any()) and bool(t_members.any())
            if present:
                p_s = torch.exp(student_logprobs[b][s_members].double().sum())
                p_t = torch.exp(teacher_logprobs[b][t_members].double().sum())
                value = p_t * torch.log(p_t / p_s) + (1 - p_t) * torch.log((1 - p_t) / (1 - p_s))
            else:
                value = torch.zeros((), dtype=torch.float64)
            row.append(value)
            present_row.append(present)
        rows.append(torch.stack(row) if row else torch.zeros(0, dtype=torch.float64))
        present_rows.append(present_row)
    return torch.stack(rows), torch.tensor(present_rows, dtype=torch.bool).reshape(batch, num_chunks)
