"""Small named layers that serve both modes, and the wrappers conversion puts around them.

- `ConvBN` / `LinearBN`: a weight layer and the BatchNorm that conversion folds into it.
- `Synapse`: a converted Conv2d / Linear. In event mode it takes weighted spikes T x B x ... and
  returns the per-step input currents of the next neurons (the bias spread evenly over the T
  steps, b / T each, so that the whole window carries exactly one b). In collapsed mode it is the
  plain layer. Counting hooks attach here.
- `TimeDistributed`: a stateless linear module (pooling, flatten, dropout in eval) applied to every
  time step of a T x B x ... tensor.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConversionError


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d; folded into one Conv2d by conversion."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1) -> None:
        if padding is None:
            padding = kernel_size // 2
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_chans)


class LinearBN(nn.Sequential):
    """Linear without bias followed by BatchNorm1d; folded into one Linear by conversion."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)


def fold_batchnorm(layer: nn.Conv2d | nn.Linear, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """Return a copy of ``layer`` with the eval-mode affine map of ``bn`` folded in (exact math)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConversionError(f"{bn} tracks no running statistics: it cannot be folded")
    out_features = layer.weight.shape[0]
    if bn.num_features != out_features:
        raise ConversionError(
            f"BatchNorm over {bn.num_features} features follows a layer with {out_features} outputs"
        )
    with torch.no_grad():
        w64 = layer.weight.detach().to(torch.float64)
        like = dict(dtype=torch.float64, device=w64.device)
        gamma = bn.weight.detach().to(torch.float64) if bn.affine else torch.ones(out_features, **like)
        beta = bn.bias.detach().to(torch.float64) if bn.affine else torch.zeros(out_features, **like)
        scale = gamma / torch.sqrt(bn.running_var.detach().to(torch.float64) + bn.eps)
        bias = layer.bias.detach().to(torch.float64) if layer.bias is not None else torch.zeros_like(scale)
        new_bias = (bias - bn.running_mean.detach().to(torch.float64)) * scale + beta
        shape = (-1,) + (1,) * (w64.dim() - 1)
        if isinstance(layer, nn.Conv2d):
            folded = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                               layer.stride, layer.padding, layer.dilation, layer.groups, bias=True,
                               padding_mode=layer.padding_mode)
        else:
            folded = nn.Linear(layer.in_features, layer.out_features, bias=True)
        dtype = layer.weight.dtype
        folded = folded.to(device=layer.weight.device, dtype=dtype)
        folded.weight.copy_((w64 * scale.view(shape)).to(dtype))
        folded.bias.copy_(new_bias.to(dtype))
    return folded


class Synapse(nn.Module):
    """A converted weight layer (Conv2d or Linear) that consumes spike trains in event mode.

    Attributes:
        layer: the (BatchNorm-folded) weight layer.
        step_mode: ``"event"`` (T x B x ... in and out) or ``"collapsed"`` (B x ...).
        input_kind: the class of input this layer receives when the structure fixes it (e.g.
            ``"integers"`` for an attention output projection), else None: energy accounting
            then classifies the input it sees.
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise ConversionError(f"Synapse wraps Conv2d or Linear, got {type(layer).__name__}")
        self.layer = layer
        self.step_mode = "event"
        self.input_kind: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "collapsed":
            return self.layer(x)
        T = x.shape[0]
        flat = x.flatten(0, 1)
        # the bias spread over the window, b / T at every step, added by the kernel itself
        bias = self.layer.bias / T if self.layer.bias is not None else None
        if isinstance(self.layer, nn.Conv2d):
            out = self.layer._conv_forward(flat, self.layer.weight, bias)
        else:
            out = nn.functional.linear(flat, self.layer.weight, bias)
        return out.unflatten(0, (T, x.shape[1]))

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}"


class TimeDistributed(nn.Module):
    """Apply a stateless module to each time step of a T x B x ... tensor (event mode)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.step_mode = "event"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "collapsed":
            return self.module(x)
        T, B = x.shape[:2]
        return self.module(x.flatten(0, 1)).unflatten(0, (T, B))


class FoldTime(nn.Module):
    """A converted module inside a traced network (`ge2mst.prepare`), whose generated forward
    code carries the time axis folded into the batch: event-mode tensors travel as (T * B) x ...
    between modules, so that the reshapes, concatenations and additions that the user's forward
    code makes act on every step alike. Each module itself sees T x B x ... (``module`` gets the
    time axis back, and gives it up again); in collapsed mode it is the module as it is."""

    def __init__(self, module: nn.Module, T: int) -> None:
        super().__init__()
        self.module = module
        self.T = T
        self.step_mode = "event"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "collapsed":
            return self.module(x)
        return self.module(x.unflatten(0, (self.T, -1))).flatten(0, 1)
