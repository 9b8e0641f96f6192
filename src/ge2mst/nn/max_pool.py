"""Max pooling of spike trains, exactly.

An ExpG quantizer is monotone and one layer's neurons share one lambda, so max-pooling their
codes is the code of the max: maxpool(Q(x)) = Q(maxpool(x)). In the spiking network each input
of a pooling window is the weighted spike train of such a neuron, theta_t * s_t, and the step
weights fall from the first step to the last (2**(T-1), ..., 1): the largest code is the
lexicographically largest spike pattern, read from step 1 on. `SpikingMaxPool` therefore decides
step by step, without waiting for the window: among the inputs still tied for the largest
pattern, the output fires at step t when one of them fires, and from then on only those that
fired stay tied. The output is exactly the spike train of the window's largest code (at most G
spikes, a legal pattern), and no membrane, threshold or multiplication is involved: a
comparison per input and step.

In collapsed mode (values delta * code, no time axis) it is the ordinary max pooling of them.
Inputs must be spike trains of unsigned neurons (non-negative, one amplitude per step); anything
else is refused with an `InputError` naming the module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConversionError, InputError


class SpikingMaxPool(nn.Module):
    """The converted ``nn.MaxPool2d``: the largest spike pattern of each window, step by step."""

    def __init__(self, pool: nn.MaxPool2d, name: str = "") -> None:
        super().__init__()
        if pool.ceil_mode or pool.return_indices:
            raise ConversionError(f"max pooling {name!r}: ceil_mode and return_indices have no "
                                  "spiking form here; use the default floor mode without indices")
        self.pool = pool
        self.name = name
        self.step_mode = "event"

    @classmethod
    def from_ann(cls, pool: nn.MaxPool2d, options, name: str = "") -> SpikingMaxPool:
        return cls(pool, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "collapsed":
            return self.pool(x)
        if x.dim() != 5:
            raise InputError(f"spiking max pooling {self.name!r} expects T x B x C x H x W spike "
                             f"trains, got shape {tuple(x.shape)}")
        self._check_spikes(x)
        return self._select(x)

    def _check_spikes(self, x: torch.Tensor) -> None:
        """One non-negative amplitude per step: the weighted spikes of unsigned neurons."""
        flat = x.detach().flatten(1)
        top = flat.amax(1, keepdim=True)
        low = torch.where(flat > 0, flat, top).amin(1, keepdim=True)
        if bool((flat < 0).any()) or not bool(torch.equal(low, top)):
            raise InputError(f"spiking max pooling {self.name!r} needs the spike trains of an ExpG "
                             "quantizer's neurons as input (non-negative, one amplitude per step): "
                             "put the activation before the pooling (ReLU and max commute)")

    def _select(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        p = self.pool
        k, stride = _pair(p.kernel_size), _pair(p.stride if p.stride is not None else p.kernel_size)
        pad, dil = _pair(p.padding), _pair(p.dilation)
        out_h = (H + 2 * pad[0] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
        out_w = (W + 2 * pad[1] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
        # T x B x C x (k*k) x L windows; a padded place never fires (codes are >= 0)
        cols = F.unfold(x.reshape(T * B, C, H, W), k, dilation=dil, padding=pad, stride=stride)
        cols = cols.view(T, B, C, k[0] * k[1], out_h * out_w)
        tied = torch.ones(cols.shape[1:], dtype=torch.bool, device=x.device)
        out = torch.empty((T, B, C, out_h * out_w), dtype=x.dtype, device=x.device)
        for t in range(T):
            fired = (cols[t] > 0) & tied
            out[t] = (cols[t] * fired).amax(2)  # the step's amplitude where a tied input fired
            tied = torch.where(fired.any(2, keepdim=True), fired, tied)
        return out.view(T, B, C, out_h, out_w)

    def extra_repr(self) -> str:
        return f"{self.pool.extra_repr()}, step_mode={self.step_mode}"


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, tuple | list) else (value, value)


__all__ = ["SpikingMaxPool"]
