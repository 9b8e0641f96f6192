"""Leaky integrate-and-fire neurons for the STBP baselines, trained with surrogate gradients.

Multi-step: the input is a T x ... tensor (time first); the neuron runs over the T steps and
returns the T x ... spikes. Per step, with membrane V (V = v_reset = 0 before step 0):

    H[t] = V[t-1] + (X[t] - (V[t-1] - v_reset)) / tau      (decay_input: the input is divided too)
    S[t] = Heaviside(H[t] - v_threshold)
    V[t] = H[t] (1 - S[t]) + v_reset S[t]                   (hard reset)

This is the neuron of Spikformer (SpikingJelly's ``LIFNode`` with tau = 2, v_threshold = 1,
v_reset = 0, decay_input = True, detach_reset = True). The backward pass replaces the Heaviside
step's derivative with that of (1/pi) arctan(pi alpha x / 2) + 1/2, alpha = 2 (`ArcTanSpike`).

`TernaryLIF` fires -1 as well: a spike of the sign of H when |H| >= v_threshold, then a hard reset.

``backend="spikingjelly"`` runs SpikingJelly 2.x's multi-step ``LIFNode`` with the same settings,
as a cross-check; SpikingJelly is an optional extra and is only imported then.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import positive_number
from ..errors import ConfigError, InputError

__all__ = ["LIF", "ArcTanSpike", "TernaryLIF", "arctan_surrogate"]


def arctan_surrogate(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """d/dx of (1/pi) arctan(pi alpha x / 2) + 1/2: the surrogate derivative of the step."""
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


class ArcTanSpike(torch.autograd.Function):
    """Heaviside step (x >= 0 -> 1) forward, `arctan_surrogate` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * arctan_surrogate(x, ctx.alpha), None


class LIF(nn.Module):
    """Multi-step LIF neuron (see the module docstring), T x ... -> T x ... spikes in {0, 1}.

    Args:
        tau: membrane time constant (> 1 for a leak; Spikformer: 2).
        v_threshold: firing threshold (Spikformer: 1; its attention neuron: 0.5).
        alpha: sharpness of the arctan surrogate.
        detach_reset: no gradient through the reset (as Spikformer).
        backend: ``"torch"`` or ``"spikingjelly"`` (optional extra, binary LIF only).
    """

    ternary = False

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0, alpha: float = 2.0,
                 detach_reset: bool = True, backend: str = "torch") -> None:
        super().__init__()
        self.tau = positive_number("tau", tau)
        if self.tau < 1:
            raise ConfigError(f"tau must be >= 1 (1 means no leak), got {tau!r}")
        self.v_threshold = positive_number("v_threshold", v_threshold)
        self.alpha = positive_number("alpha", alpha)
        self.detach_reset = bool(detach_reset)
        if backend not in ("torch", "spikingjelly"):
            raise ConfigError(f"backend must be 'torch' or 'spikingjelly', got {backend!r}")
        if backend == "spikingjelly" and self.ternary:
            raise ConfigError("SpikingJelly has no ternary LIF: use backend='torch'")
        self.backend = backend
        self._sj = _spikingjelly_node(self) if backend == "spikingjelly" else None

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise InputError(f"{type(self).__name__} expects a T x ... tensor (time first), got "
                             f"shape {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise InputError(f"{type(self).__name__} expects a floating-point tensor, got {x.dtype}")

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        """Spikes of membrane potentials ``h`` (surrogate gradient)."""
        return ArcTanSpike.apply(h - self.v_threshold, self.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if self._sj is not None:
            self._sj.reset()
            return self._sj(x)
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            h = v + (x[t] - v) / self.tau
            s = self.fire(h)
            out.append(s)
            fired = s.detach() if self.detach_reset else s
            v = h * (1 - fired.abs())
        return torch.stack(out)

    def extra_repr(self) -> str:
        return (f"tau={self.tau:g}, v_threshold={self.v_threshold:g}, alpha={self.alpha:g}, "
                f"backend={self.backend}")


class TernaryLIF(LIF):
    """LIF firing +1 when H >= v_threshold and -1 when H <= -v_threshold, hard reset to 0 after
    either; spikes in {-1, 0, 1}, surrogate gradient on both sides."""

    ternary = True

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        up = ArcTanSpike.apply(h - self.v_threshold, self.alpha)
        down = ArcTanSpike.apply(-h - self.v_threshold, self.alpha)
        return up - down


def _spikingjelly_node(lif: LIF) -> nn.Module:
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError:
        raise ConfigError("backend='spikingjelly' needs SpikingJelly 2.x: pip install --no-deps "
                          "spikingjelly (see the README)") from None
    return neuron.LIFNode(tau=lif.tau, v_threshold=lif.v_threshold, v_reset=0.0, decay_input=True,
                          detach_reset=lif.detach_reset, step_mode="m",
                          surrogate_function=surrogate.ATan(alpha=lif.alpha))
