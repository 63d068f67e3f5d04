"""Private: temporaries that a chunked loss reuses from chunk to chunk instead of allocating anew.

A chunk's temporaries are a few MiB on CPU. Allocated fresh for every chunk, they cost more than the arithmetic
on them: freed, they go back to the operating system (glibc trims the top of its heap, or unmaps a large block),
and the next chunk faults every page in again. On this project's development machine that made a chunk of the
dense divergence about six times slower than its arithmetic. A :class:`Workspace` allocates each temporary once,
at its largest size, and hands out views of it.
"""

from __future__ import annotations

import torch


class Workspace:
    """Numbered temporaries of one dtype and device, each a flat buffer grown to the largest size asked of it."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self._buffers: dict[int, torch.Tensor] = {}

    def __call__(self, slot: int, rows: int, width: int) -> torch.Tensor:
        """Temporary ``slot`` as a ``(rows, width)`` tensor; its contents are whatever an earlier use left there."""
        size = rows * width
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[slot] = torch.empty(size, dtype=self.dtype, device=self.device)
        return buffer[:size].view(rows, width)
