"""Data augmentation written in torch, on the batch's own device (no torchvision)."""

from __future__ import annotations

import torch


def augment(x: torch.Tensor, gen: torch.Generator, padding: int = 0, hflip: bool = False) -> torch.Tensor:
    """Random crop after zero padding by ``padding`` pixels, and random horizontal flips."""
    if padding > 0:
        b, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
        rows = (dy.view(b, 1) + torch.arange(h).view(1, h)).to(x.device)
        cols = (dx.view(b, 1) + torch.arange(w).view(1, w)).to(x.device)
        bidx = torch.arange(b, device=x.device).view(b, 1, 1)
        x = padded.permute(0, 2, 3, 1)[bidx, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2)
    if hflip:
        flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return x.contiguous()
