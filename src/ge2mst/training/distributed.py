"""The process group as the trainer sees it: this process's rank and the world size, and sums
over the ranks (plain values outside ``torch.distributed``)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over the ranks (float64, on ``device`` for the reduction)."""
    if world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


__all__ = ["all_sum", "world"]
