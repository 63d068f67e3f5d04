"""Private validation helpers shared by the public functions.

Each helper checks one thing and raises :class:`TypeError` for a dtype or :class:`~alignment.errors.AlignmentError`
(a :class:`ValueError`) for a shape or range, naming the argument and giving expected and actual values.
Helpers whose name says ``values`` look at tensor contents and therefore synchronise with the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from alignment.errors import AlignmentError

__all__ = [
    "check_choice",
    "check_dtype",
    "check_finite_rows",
    "check_floating",
    "check_in_range",
    "check_index_values",
    "check_mask",
    "check_same_shape",
    "upcast",
]


def check_in_range(
    name: str, value: float, *, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> None:
    """Raise unless ``value`` lies in the interval from ``low`` to ``high`` (closed unless ``*_open``); NaN fails."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise AlignmentError(f"{name} must lie in {interval}, got {value!r}")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise AlignmentError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_floating(name: str, tensor: torch.Tensor) -> None:
    """Raise :class:`TypeError` unless ``tensor`` has a floating-point dtype."""
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {tensor.dtype}")


def check_dtype(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
    """Raise :class:`TypeError` unless ``tensor.dtype`` is exactly ``dtype``."""
    if tensor.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {tensor.dtype}")


def check_same_shape(name: str, tensor: torch.Tensor, shape: Sequence[int], *, like: str) -> None:
    """Raise unless ``tensor.shape == shape``; ``like`` says where the expected shape comes from."""
    if tuple(tensor.shape) != tuple(shape):
        raise AlignmentError(f"{name} must have shape {tuple(shape)} ({like}), got {tuple(tensor.shape)}")


def check_mask(mask: torch.Tensor, batch_shape: Sequence[int]) -> None:
    """Raise unless ``mask`` is a ``torch.bool`` tensor of shape ``batch_shape``."""
    check_dtype("mask", mask, torch.bool)
    check_same_shape("mask", mask, batch_shape, like="the logits without their last axis")


def check_finite_rows(
    name: str, values: torch.Tensor, mask: torch.Tensor, *, index: torch.Tensor | None = None
) -> None:
    """Raise unless every row ``values[i]`` with ``mask[i]`` has no NaN, no ``+inf`` and one entry above ``-inf``;
    with ``index`` (flat), position ``i`` of the mask reads row ``index[i]`` of ``values``'s flattened rows.

    One reduction over the last axis (``amax`` propagates NaN), so no full-size temporary. Synchronises.
    """
    row_max = values.amax(dim=-1)
    if index is not None:
        row_max = row_max.reshape(-1)[index].view(mask.shape)
    bad = ~torch.isfinite(row_max) & mask
    if bool(bad.any()):
        position = tuple(bad.nonzero()[0].tolist())
        worst = float(row_max[position])
        problem = "a NaN" if math.isnan(worst) else "+inf" if worst > 0 else "only -inf entries"
        raise AlignmentError(
            f"{name} must be finite or -inf with at least one entry above -inf at every counted position; "
            f"position {position} has {problem}"
        )


def check_index_values(name: str, index: torch.Tensor, size: int, mask: torch.Tensor) -> None:
    """Raise unless every row ``index[i]`` with ``mask[i]`` holds distinct ids in ``[0, size)``. Synchronises."""
    outside = ((index < 0) | (index >= size)) & mask[..., None]
    ordered = index.sort(dim=-1).values
    repeated = (ordered[..., 1:] == ordered[..., :-1]) & mask[..., None]
    any_outside, any_repeated = torch.stack([outside.any(), repeated.any()]).tolist()
    if any_outside:
        position = tuple(outside.nonzero()[0].tolist())
        raise AlignmentError(f"{name} must lie in [0, {size}), got id {int(index[position])} at {position}")
    if any_repeated:
        position = tuple(repeated.nonzero()[0].tolist())
        raise AlignmentError(
            f"{name} must be distinct at each position, got id {int(ordered[position])} twice at {position[:-1]}"
        )


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Promote bfloat16/float16 to float32; float32 and float64 pass through unchanged."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
