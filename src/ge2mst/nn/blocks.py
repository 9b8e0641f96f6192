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

from torch import nn

from .._checks import whole_number
from ..core.quantizers import ExpGQuant
from .attention import GWSSA, SSA
from .layers import ConvBN


def _ratio(r: int) -> int:
    return whole_number("an expansion ratio", r)


class Residual(nn.Module):
    """x + fn(x) on the real-valued stream."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return x + self.fn(x)


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
