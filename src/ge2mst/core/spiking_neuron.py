"""What every spiking neuron shares (T, step mode, input checks, spike recording, lambda), the
conversion-time checks of a quantizer's lambda, and `neurons`, which lists a network's neurons."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ConversionError, InputError
from .quantizers import Quantizer
from .tally import SpikeTally


class SpikingNeuron(nn.Module):
    """Common state of the spiking neurons: T, the step mode and spike recording."""

    #: class of the spikes this neuron emits ("binary" or "ternary"), for energy accounting.
    spike_class = "binary"

    def __init__(self, T: int) -> None:
        super().__init__()
        self.T = T
        self.step_mode = "event"
        self.record = False
        self.last_spikes: torch.Tensor | None = None
        self.last_membrane: torch.Tensor | None = None
        #: set by `ge2mst.analysis.energy.OperationCounter`: keep a `SpikeTally` of each call in
        #: ``last_tally`` (spike trains only where the counts need them, `counts_need_spikes`)
        self.counting = False
        self.last_tally: SpikeTally | None = None

    @property
    def counts_need_spikes(self) -> bool:
        """Whether operation counting needs this neuron's whole spike trains."""
        return False

    def output_magnitudes(self, dtype: torch.dtype) -> torch.Tensor:
        """|output| of a spike at each step, in ``dtype`` (T)."""
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor, nan: bool = True) -> None:
        """Dtype and shape of the input; NaN too unless ``nan`` is False (the caller then checks
        the membrane it sums, which any NaN current reaches)."""
        if not torch.is_floating_point(x):
            raise InputError(f"{type(self).__name__} expects floating-point currents, got {x.dtype}")
        if self.step_mode == "event":
            if x.dim() < 2 or x.shape[0] != self.T:
                raise InputError(
                    f"{type(self).__name__} in event mode expects currents of shape T x B x ... "
                    f"with T = {self.T} first, got shape {tuple(x.shape)}"
                )
        if nan and torch.isnan(x).any():
            raise InputError(f"{type(self).__name__} received NaN input currents")

    def _remember(self, spikes: torch.Tensor, membrane: torch.Tensor | None) -> None:
        if self.record or (self.counting and self.counts_need_spikes):
            self.last_spikes = spikes.to(torch.int8)
        if self.record:
            self.last_membrane = membrane
        if self.counting:
            self.last_tally = SpikeTally.from_spikes(spikes)

    def _register_lambda(self, lam: float | torch.Tensor) -> None:
        """Keep ``lam`` (a positive finite scalar) as the float64 buffer ``lam``."""
        lam_t = torch.as_tensor(lam, dtype=torch.float64).detach().clone()
        if lam_t.numel() != 1 or not torch.isfinite(lam_t) or lam_t <= 0:
            raise ConfigError(f"lambda must be a positive finite scalar, got {lam!r}")
        self.register_buffer("lam", lam_t.reshape(()))

    def extra_repr(self) -> str:
        return f"T={self.T}, step_mode={self.step_mode}"


def quantizer_lambda(q: Quantizer, name: str = "") -> torch.Tensor:
    """The clip lambda (detached) of quantizer ``q`` (named ``name`` in errors), refusing what no
    spiking neuron reproduces exactly: a quantizer still mixing ClipReLU and ExpG (p < 1), and a
    lambda that is not a positive finite number."""
    if q.p < 1.0:
        raise ConversionError(
            f"quantizer {name!r} still mixes ClipReLU and ExpG (p = {q.p:g}); only a fully "
            "quantized network (p = 1, the end of progressive training) converts exactly"
        )
    lam = q.lam.detach()
    if not torch.isfinite(lam) or lam <= 0:
        raise ConversionError(f"quantizer {name!r} has lambda = {float(lam)}: it must be positive")
    return lam


def _refuse_quantizer(neuron: type, q: Quantizer, name: str) -> None:
    raise ConversionError(f"{neuron.__name__} cannot reproduce quantizer {type(q).__name__} "
                          f"({name!r})")


def neurons(model: nn.Module):
    """Yield ``(name, neuron)`` for every spiking neuron in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, SpikingNeuron):
            yield name, module
