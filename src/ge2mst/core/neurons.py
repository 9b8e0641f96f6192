"""SNN-mode neurons: ExpG-IF (two firing forms, unsigned and signed) and vanilla IF (baseline).

A neuron runs in one of two step modes:

- ``"event"`` (the default after conversion): the input is a T x B x ... tensor of per-step
  input currents; the output is a T x B x ... tensor of weighted spikes theta_t * s_t, what the
  next synaptic layer accumulates (theta_t = delta * 2**(T-1-t): each event is a weight shifted by
  a power of two).
- ``"collapsed"``: the input is the whole-window membrane V (B x ...), the output the decoded
  value delta * n(s) (B x ...). The spike trains are still emitted and can be recorded; only the
  time loop of the synapses is collapsed, which is exact because they are linear.

ExpG-IF integrates its whole T-step input window before it fires (``online=False``). Firing online
gives wrong codes; ``online=True`` exists to show that (tests, docs), never for conversion.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, InputError
from .coding import ExpGCodeBook, check_time_groups, expg_codebook, level_spacing
from .quantizers import ExpGQuant, QCFSQuant, level_index, quantized_values
from .spiking_neuron import SpikingNeuron, _refuse_quantizer, neurons, quantizer_lambda
from .step import STEP_MODES, set_step_mode
from .tally import SpikeTally

FORMS = ("search", "sequential")


class ExpGIF(SpikingNeuron):
    """Grouped-exponential-coding IF neuron.

    Args:
        T: time steps.
        G: temporal groups (G divides T).
        lam: the clip lambda of the quantizer this neuron replaces (delta = lam / n_max).
        signed: ternary spikes carrying the sign of the membrane (for Q, K, V).
        form: ``"search"`` (form A: binary search over the boundaries, then the stored pattern) or
            ``"sequential"`` (form B: IF dynamics with per-step pre-firing thresholds, post-firing
            soft reset theta_t and refractoriness inside a group). Both give identical spikes.
        online: fire each step from the membrane integrated so far (wrong; for demonstration).
    """

    def __init__(self, T: int, G: int, lam: float | torch.Tensor, signed: bool = False,
                 form: str = "search", online: bool = False) -> None:
        T, G = check_time_groups(T, G)
        super().__init__(T)
        if form not in FORMS:
            raise ConfigError(f"form must be one of {FORMS}, got {form!r}")
        self._register_lambda(lam)
        self.G = G
        self.book: ExpGCodeBook = expg_codebook(T, G)
        self.signed = signed
        self.form = form
        self.online = online
        self.spike_class = "ternary" if signed else "binary"

    @classmethod
    def from_quantizer(cls, q: ExpGQuant, form: str = "search", online: bool = False,
                       name: str = "") -> ExpGIF:
        """The ExpG-IF neuron that reproduces the ExpG quantizer ``q`` (signed where it is), named
        ``name`` in errors; refuses p < 1, a bad lambda and any other quantizer (`ConversionError`)."""
        lam = quantizer_lambda(q, name)
        if not isinstance(q, ExpGQuant):
            _refuse_quantizer(cls, q, name)
        return cls(q.T, q.G, lam, signed=q.signed, form=form, online=online)

    @property
    def delta64(self) -> torch.Tensor:
        return level_spacing(self.lam, self.book.n_max)

    @property
    def counts_need_spikes(self) -> bool:
        return self.form == "sequential"  # comparisons depend on where in a group it fired

    def output_magnitudes(self, dtype: torch.dtype) -> torch.Tensor:
        return self.thresholds().to(dtype)

    def thresholds(self) -> torch.Tensor:
        """Post-firing thresholds theta_t = delta * 2**(T-1-t), float64, largest first."""
        return self.delta64 * self.book.on("beta", self.lam.device).to(torch.float64)

    def pre_thresholds(self) -> torch.Tensor:
        """Pre-firing thresholds of form B, float64."""
        return self.delta64 * self.book.on("pre", self.lam.device)

    # ---- firing -------------------------------------------------------------------------
    def fire(self, membrane: torch.Tensor, form: str | None = None) -> torch.Tensor:
        """Spike trains (T x ..., values in {0, 1}, or {-1, 0, 1} when signed) for a membrane.

        ``form`` overrides the neuron's own firing form (`ge2mst.analysis.verification` fires every
        membrane with both forms and compares them).
        """
        form = self.form if form is None else form
        if form not in FORMS:
            raise ConfigError(f"form must be one of {FORMS}, got {form!r}")
        v = membrane.to(torch.float64)
        mag = v.abs() if self.signed else v
        if form == "search":
            spikes = self._fire_search(mag)
        else:
            spikes = self._fire_sequential(mag)
        if self.signed:
            spikes = spikes * torch.sign(v).to(spikes.dtype)
        return spikes

    def _fire_search(self, v: torch.Tensor) -> torch.Tensor:
        book = self.book
        bounds = (self.delta64.to(v.device) * book.on("mids", v.device)).contiguous()
        idx = level_index(v, bounds)
        pattern = book.on("patterns", v.device)[idx]  # ... x T
        return pattern.movedim(-1, 0)

    def _fire_sequential(self, v: torch.Tensor) -> torch.Tensor:
        theta = self.thresholds().tolist()
        pre = self.pre_thresholds().tolist()
        m = self.book.m
        u = v.clone()
        spikes = torch.zeros((self.T, *v.shape), dtype=torch.int8, device=v.device)
        fired = torch.zeros_like(v, dtype=torch.bool)
        for t in range(self.T):
            if t % m == 0:
                fired = torch.zeros_like(v, dtype=torch.bool)  # a new group opens
            s = (~fired) & (u >= pre[t])
            u = u - theta[t] * s
            fired = fired | s
            spikes[t] = s
        return spikes

    def _fire_online(self, currents: torch.Tensor) -> torch.Tensor:
        """Form B driven by the partial sums of the input (fires before the window is complete)."""
        theta = self.thresholds().tolist()
        pre = self.pre_thresholds().tolist()
        m = self.book.m
        cur = currents.to(torch.float64)
        u = torch.zeros_like(cur[0])
        spikes = torch.zeros(cur.shape, dtype=torch.int8, device=cur.device)
        fired = torch.zeros_like(u, dtype=torch.bool)
        for t in range(self.T):
            if t % m == 0:
                fired = torch.zeros_like(u, dtype=torch.bool)
            u = u + cur[t]
            mag = u.abs() if self.signed else u
            s = (~fired) & (mag >= pre[t])
            sign = torch.sign(u) if self.signed else torch.ones_like(u)
            u = u - theta[t] * s * sign
            fired = fired | s
            spikes[t] = (s * sign).to(torch.int8)
        return spikes

    def decode(self, spikes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """delta * n(s): the value a spike train stands for, rounded once to ``dtype``."""
        return (self.delta64 * self.book.code_of(spikes).to(torch.float64)).to(dtype)

    def spike(self, x: torch.Tensor) -> torch.Tensor:
        """Integrate the input (T x B x ... currents in event mode, the membrane in collapsed mode),
        fire, record if asked, and return the spike trains (int8, T x B x ...)."""
        self._check_input(x)
        membrane = x.detach().to(torch.float64)
        if self.step_mode == "collapsed":
            if self.online:
                raise ConfigError("online firing needs the event step mode")
            spikes = self.fire(membrane)
        else:
            spikes = self._fire_online(x) if self.online else None
            membrane = membrane.sum(0)
            if spikes is None:
                spikes = self.fire(membrane)
        self._remember(spikes, membrane)
        return spikes

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes (signed where the neuron is) of the spike trains this neuron would
        emit for its input ``x`` (T x B x ... currents in event mode, the membrane in collapsed
        mode), found from the whole-window membrane by comparing with the boundaries, without the
        spike trains; counting keeps a tally. Equal to ``book.code_of(spike(x))`` (tested)."""
        self._check_input(x, nan=self.step_mode != "event")
        membrane = x.detach().to(torch.float64) if self.step_mode == "collapsed" else self._window(x)
        return self.membrane_codes(membrane)

    def membrane_codes(self, membrane: torch.Tensor) -> torch.Tensor:
        """`codes` for a whole-window membrane given directly (float64)."""
        book, device = self.book, membrane.device
        mag = membrane.abs() if self.signed else membrane
        bounds = (self.delta64.to(device) * book.on("mids", device)).contiguous()
        level = level_index(mag, bounds)
        codes = book.on("codes", device)[level]
        if self.signed:
            negative = membrane < 0
            codes = torch.where(negative, -codes, codes)
            if self.counting:
                self.last_tally = SpikeTally.from_levels(level + book.num_levels * negative, book,
                                                         True)
        elif self.counting:
            self.last_tally = SpikeTally.from_levels(level, book, False)
        return codes

    def _window(self, currents: torch.Tensor) -> torch.Tensor:
        """The whole-window membrane: the currents added step by step, in time order, in float64,
        into a tensor of its own (the residual stream the currents may be is read again later);
        NaN refused."""
        currents = currents.detach()
        membrane = currents[0].to(torch.float64, copy=True)
        for t in range(1, currents.shape[0]):
            membrane.add_(currents[t])
        if torch.isnan(membrane).any():
            raise InputError(f"{type(self).__name__} received NaN input currents "
                             "(or +inf and -inf in one window)")
        return membrane

    def spike_membrane(self, membrane: torch.Tensor) -> torch.Tensor:
        """Fire from a whole-window membrane given directly (any step mode); record if asked."""
        spikes = self.fire(membrane)
        self._remember(spikes, membrane.detach().to(torch.float64))
        return spikes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.step_mode == "collapsed" and not self.record and self.form == "search"
                and not self.online):
            # nobody looks at the spike trains: the value they decode to, Q(V), straight from the
            # membrane with the quantizer's kernel (the form-A query without materialising the
            # pattern table; bit-identical to decode(fire(V)), tested)
            self._check_input(x)
            return quantized_values(x.detach(), self.lam, self.book, self.signed)
        if self.step_mode == "event" and self.form == "search" and not self.online:
            self._check_input(x, nan=False)  # the membrane is checked, a quarter of the reading
            return self._weighted_spikes(x)
        spikes = self.spike(x)
        if self.step_mode == "collapsed":
            return self.decode(spikes, x.dtype)
        theta = self.thresholds().to(x.device).view(-1, *([1] * (x.dim() - 1)))
        return (spikes.to(torch.float64) * theta).to(x.dtype)

    def _weighted_spikes(self, currents: torch.Tensor) -> torch.Tensor:
        """Event mode, form A: the whole-window membrane (the currents summed step by step in
        float64), its level by binary search over the boundaries, and the output theta_t * s_t of
        every step read from a small T x M table of that level's pattern (2M rows when signed:
        the negative patterns after the positive ones), in the currents' dtype: one table read
        per step, without float64 spike tensors. Recording keeps the int8 spikes and the float64
        membrane; counting keeps a `SpikeTally` of the levels. Bit-identical to firing through the
        pattern table and weighting the spikes (tested)."""
        currents = currents.detach()
        membrane = self._window(currents)
        book, device, dtype = self.book, currents.device, currents.dtype
        mag = membrane.abs() if self.signed else membrane
        bounds = (self.delta64.to(device) * book.on("mids", device)).contiguous()
        level = level_index(mag, bounds)  # index into the code book
        theta = self.thresholds().to(device=device, dtype=dtype)  # delta * 2**k: exact in float32
        table = book.on("patterns", device).T.to(dtype) * theta[:, None]  # T x M
        rows = level
        if self.signed:
            negative = membrane < 0
            table = torch.cat([table, -table + 0.0], 1)  # +0.0 where a negative pattern is silent
            rows = level + book.num_levels * negative
        out = torch.empty(currents.shape, dtype=dtype, device=device)
        rows = rows.reshape(-1)
        for t in range(self.T):
            torch.index_select(table[t], 0, rows, out=out[t].view(-1))
        if self.record:
            spikes = book.on("patterns", device)[level].movedim(-1, 0).contiguous()
            if self.signed:  # ternary: the sign of the membrane, 0 where silent
                spikes = spikes * (1 - 2 * negative.to(torch.int8))
            self._remember(spikes, membrane)
        elif self.counting:
            self.last_tally = SpikeTally.from_levels(rows.view(level.shape), book, self.signed)
        return out

    def extra_repr(self) -> str:
        return (f"T={self.T}, G={self.G}, lam={float(self.lam):.4g}, signed={self.signed}, "
                f"form={self.form}, online={self.online}, step_mode={self.step_mode}")


class IFNeuron(SpikingNeuron):
    """Vanilla IF neuron of QCFS conversion: soft reset, theta/2 initial membrane, online firing.

    Each spike is worth ``theta = lam / T``; over T steps of a constant current the neuron emits
    exactly the QCFS quantization with L = T. With uneven currents (any layer after the first) it
    does not: the conversion error that ExpG-IF removes.
    """

    def __init__(self, T: int, lam: float | torch.Tensor) -> None:
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ConfigError(f"T (time steps) must be a whole number >= 1, got {T!r}")
        super().__init__(T)
        self._register_lambda(lam)

    @classmethod
    def from_quantizer(cls, q: QCFSQuant, T: int | None = None, name: str = "") -> IFNeuron:
        """The vanilla IF neuron of QCFS conversion for quantizer ``q``: ``T`` steps (default: its
        L), threshold lambda; named ``name`` in errors; refuses p < 1, a bad lambda and any other
        quantizer (`ConversionError`)."""
        lam = quantizer_lambda(q, name)
        if not isinstance(q, QCFSQuant):
            _refuse_quantizer(cls, q, name)
        return cls(T or q.L, lam)

    @property
    def theta(self) -> float:
        return float(self.lam) / self.T

    def output_magnitudes(self, dtype: torch.dtype) -> torch.Tensor:
        return torch.full((self.T,), self.theta, dtype=torch.float64, device=self.lam.device).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode != "event":
            raise ConfigError("the vanilla IF neuron fires online and needs the event step mode")
        self._check_input(x)
        theta = self.theta
        cur = x.to(torch.float64)
        v = torch.full_like(cur[0], theta / 2)
        spikes = torch.zeros(cur.shape, dtype=torch.int8, device=cur.device)
        for t in range(self.T):
            v = v + cur[t]
            s = v >= theta
            v = v - theta * s
            spikes[t] = s
        self._remember(spikes, cur.sum(0))
        return (spikes.to(torch.float64) * theta).to(x.dtype)

    def extra_repr(self) -> str:
        return f"T={self.T}, lam={float(self.lam):.4g}, theta={self.theta:.4g}"


__all__ = ["FORMS", "STEP_MODES", "ExpGIF", "IFNeuron", "SpikeTally", "SpikingNeuron", "neurons",
           "quantizer_lambda", "set_step_mode"]
