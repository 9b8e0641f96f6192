"""The building blocks of Ge2mS-T (METHOD.md section 5), each usable on its own.

Every block starts with the ExpG neuron that turns the real-valued residual stream into spikes,
and ends with a weight layer + BatchNorm whose output is added back onto the stream (a membrane
shortcut, which accumulators do). All of them convert by module swap.

- `SConv`: two 3x3 convolutions with channel up-sampling, C -> rC -> C.
- `SFFN`: 1x1 (C -> rC) -> ExpG -> 1x1 (rC -> C).
- `ConvSFFN`: depthwise-separable, 1x1 (C -> rC) -> ExpG -> depthwise 3x3 -> ExpG -> 1x1 (rC -> C).
- `TokenMixer`: ExpG -> GW-SSA or SSA.
- `Residual`: x + f(x).
- `Downsample`: ExpG -> strided 3x3 convolution + BN.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import in_unit_interval, whole_number
from ..core.quantizers import ExpGQuant
from ..errors import ConfigError
from .attention import GWSSA, SSA
from .layers import ConvBN


def _ratio(r: int) -> int:
    return whole_number("an expansion ratio", r)


class Residual(nn.Module):
    """x + fn(x) on the real-valued stream, with stochastic depth while training.

    With ``drop_path`` > 0, in training mode the branch ``fn(x)`` of each image is dropped with
    that probability and kept ones are scaled by ``1 / (1 - drop_path)`` (the mask is drawn from
    the global torch generator, on ``x``'s device). In evaluation mode, and so in the converted
    spiking network, the block is exactly ``x + fn(x)``.
    """

    def __init__(self, fn: nn.Module, drop_path: float = 0.0) -> None:
        super().__init__()
        self.fn = fn
        self.drop_path = in_unit_interval("drop_path", drop_path)
        if self.drop_path >= 1:
            raise ConfigError(f"drop_path must lie in [0, 1), got {drop_path!r}")

    def forward(self, x):
        branch = self.fn(x)
        if not self.training or self.drop_path == 0:
            return x + branch
        keep = 1.0 - self.drop_path
        shape = (branch.shape[0],) + (1,) * (branch.dim() - 1)
        mask = torch.empty(shape, dtype=branch.dtype, device=branch.device).bernoulli_(keep)
        return x + branch * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_path={self.drop_path}" if self.drop_path else ""


class SConv(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 2, T: int = 4, G: int = 2) -> None:
        hidden = dim * _ratio(ratio)
        super().__init__(ExpGQuant(T, G), ConvBN(dim, hidden, 3), ExpGQuant(T, G),
                         ConvBN(hidden, dim, 3))


class SFFN(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 4, T: int = 4, G: int = 2) -> None:
        hidden = dim * _ratio(ratio)
        super().__init__(ExpGQuant(T, G), ConvBN(dim, hidden, 1), ExpGQuant(T, G),
                         ConvBN(hidden, dim, 1))


class ConvSFFN(nn.Sequential):
    def __init__(self, dim: int, ratio: int = 4, T: int = 4, G: int = 2) -> None:
        hidden = dim * _ratio(ratio)
        super().__init__(ExpGQuant(T, G), ConvBN(dim, hidden, 1), ExpGQuant(T, G),
                         ConvBN(hidden, hidden, 3, groups=hidden), ExpGQuant(T, G),
                         ConvBN(hidden, dim, 1))


class TokenMixer(nn.Sequential):
    """ExpG neuron, then GW-SSA (``window`` or ``k`` given) or SSA (neither given)."""

    def __init__(self, dim: int, heads: int, window: int | None = None, k: int | None = None,
                 global_ratio: float = 0.5, T: int = 4, G: int = 2) -> None:
        if window is None and k is None:
            attn = SSA(dim, heads, T=T, G=G)
        else:
            attn = GWSSA(dim, heads, global_ratio=global_ratio, k=k, window=window, T=T, G=G)
        super().__init__(ExpGQuant(T, G), attn)


class Downsample(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int, stride: int = 2, T: int = 4, G: int = 2) -> None:
        super().__init__(ExpGQuant(T, G), ConvBN(in_dim, out_dim, 3, stride=stride))
