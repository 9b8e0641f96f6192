"""Synaptic operations and energy, counted from the spikes a converted network really emits.

For every `Synapse` (converted Conv2d / Linear) the input of each time step is classified:

- ``binary spikes``: every nonzero entry of every step is the same positive value (vanilla IF);
- ``ternary spikes``: the same magnitude with either sign;
- ``weighted spikes``: binary or ternary within each step, with a step-dependent amplitude
  (ExpG-IF: theta_t = delta * 2**(T-1-t), an accumulate of a weight shifted by a power of two);
- ``integers``: integer multiples of one quantum (averages of spikes, attention outputs);
- ``real``: anything else (pixels).

Events (the three spike classes) cost one accumulate per synapse they reach: SOPs = sum over
events of the real fan-out of that input position, padding edges included (a convolution of the
event-count map with an all-ones kernel). Integer and real inputs are charged the layer's full
multiply-accumulates once per inference (the layer is linear, so it sums its input window and
multiplies once, as the ANN does): a real value is never counted as a cheap accumulate.
Attention products between two spike-coded matrices (GW-SSA, SSA) are counted as spike-pair
coincidences, sum_{i,j,d} n_q(i,d) n_k(j,d), n the spikes per element.

Neuron updates are reported apart from synaptic operations: additions to integrate the window,
comparisons to fire (binary search: ceil(log2 M); sequential form: one per step of a group not yet
fired; vanilla IF: one per step) and spikes.

Energy presets give picojoules per accumulate and per multiply-accumulate.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from functools import partial

import torch
from torch import nn

from ..conversion.converter import SpikingNetwork
from ..core.neurons import IFNeuron, SpikeTally
from ..errors import ConfigError
from ..nn.layers import Synapse
from ..nn.spiking_attention import spike_pair_coincidences
from .plots import plot_report, stage_of, to_markdown

#: energy per operation in picojoules. 45 nm figures (Horowitz, ISSCC 2014) as used across the
#: field: FP32 add 0.9, FP32 multiply 3.7 (MAC 4.6); INT8 add 0.03, INT8 multiply 0.2 (MAC 0.23).
PRESETS = {
    "45nm-fp32": {"ac_pj": 0.9, "mac_pj": 4.6},
    "45nm-int8": {"ac_pj": 0.03, "mac_pj": 0.23},
}
EVENT_CLASSES = ("binary spikes", "ternary spikes", "weighted spikes")
#: from the most to the least specific; a layer keeps the most general class it has been fed
CLASS_ORDER = ("silent", *EVENT_CLASSES, "integers", "real")


def dense_macs(layer: nn.Module, out_shape: torch.Size) -> int:
    """Multiply-accumulates of one application of ``layer`` producing one sample of ``out_shape``."""
    if isinstance(layer, nn.Conv2d):
        k = layer.kernel_size[0] * layer.kernel_size[1] * layer.in_channels // layer.groups
        return int(torch.Size(out_shape).numel()) * k
    return layer.in_features * layer.out_features


_REACH: dict[tuple, torch.Tensor] = {}


def _reach(layer: nn.Conv2d, height: int, width: int, device: torch.device) -> torch.Tensor:
    """How many output positions each input position of an ``height`` x ``width`` map feeds
    through ``layer``'s window (zero padding, stride and dilation included): the gradient of the
    summed output of an all-ones kernel, made once per geometry and kept."""
    key = (layer.kernel_size, layer.stride, layer.padding, layer.dilation, height, width, device)
    hit = _REACH.get(key)
    if hit is None:
        with torch.enable_grad():
            probe = torch.ones((1, 1, height, width), dtype=torch.float64, device=device,
                               requires_grad=True)
            ones = torch.ones((1, 1, *layer.kernel_size), dtype=torch.float64, device=device)
            nn.functional.conv2d(probe, ones, None, layer.stride, layer.padding,
                                 layer.dilation).sum().backward()
        hit = _REACH[key] = probe.grad[0, 0].detach()
    return hit


def event_sops(layer: nn.Module, counts: torch.Tensor) -> torch.Tensor:
    """Accumulates caused by ``counts`` input events per position (B x ...), per sample.

    A convolution event at input position (c, h, w) reaches out_channels / groups output channels
    at every output position whose window holds (h, w): the count map summed over channels,
    weighted by the reach of each position (exact integer sums in float64), times that."""
    if isinstance(layer, nn.Conv2d):
        height, width = counts.shape[-2:]
        per_position = counts.sum(1, dtype=torch.float64)  # B x H x W
        reach = _reach(layer, height, width, counts.device)
        return (per_position * reach).flatten(1).sum(1) * (layer.out_channels // layer.groups)
    return counts.to(torch.float64).flatten(1).sum(1) * layer.out_features


def classify_input(x: torch.Tensor) -> str:
    """Class of a T x B x ... input of a weight layer (see the module docstring); ``"silent"``
    when it carries nothing at all. Every step is looked at at once: a step is a spike step when
    its smallest nonzero magnitude equals its largest."""
    mag = x.detach().abs().reshape(x.shape[0], -1)
    largest = mag.amax(1)
    active = largest > 0
    if not bool(active.any()):
        return "silent"
    smallest = mag.masked_fill(mag == 0, float("inf")).amin(1)
    if bool((smallest[active] != largest[active]).any()):
        return _integers_or_real(x)
    if len(set(largest[active].tolist())) > 1:
        return "weighted spikes"
    return "ternary spikes" if bool((x < 0).any()) else "binary spikes"


def _integers_or_real(x: torch.Tensor) -> str:
    nz = x[x != 0].abs().to(torch.float64)
    ratio = nz / nz.min()
    # float32 sums of spike amplitudes round at ~1e-7 relative: allow 1e-5 of the multiple
    if float(ratio.max()) < 2 ** 16 and bool(((ratio - ratio.round()).abs() <= 1e-5 * ratio).all()):
        return "integers"
    return "real"


def neuron_updates(neuron: nn.Module, spikes: torch.Tensor, count: torch.Tensor | None = None) -> dict:
    """Additions, comparisons and spikes of one layer of neurons for one batch (totals); ``count``:
    the spikes per neuron when the caller has them already."""
    T = spikes.shape[0]
    if count is None:
        count = spikes.abs().sum(0, dtype=torch.int64)
    n = count.numel()
    if isinstance(neuron, IFNeuron):
        return {"adds": T * n, "comparisons": T * n, "resets": int(count.sum())}
    if neuron.form == "search":
        return {"adds": (T - 1) * n, "comparisons": neuron.book.comparisons * n, "resets": 0}
    # sequential: a group is compared step by step until it fires, then refractory
    m = neuron.book.m
    per_group = spikes.abs().to(torch.int64).unflatten(0, (neuron.book.G, m))
    fired = per_group.sum(1) > 0
    first = per_group.argmax(1)
    comparisons = torch.where(fired, first + 1, torch.full_like(first, m)).sum()
    return {"adds": (T - 1) * n, "comparisons": int(comparisons), "resets": int(count.sum())}


def _updates(neuron: nn.Module, tally: SpikeTally, total: int) -> dict:
    """`neuron_updates` from a tally (the spike trains only for the sequential form)."""
    T, n = tally.per_step.numel(), tally.numel
    if isinstance(neuron, IFNeuron):
        return {"adds": T * n, "comparisons": T * n, "resets": total}
    if neuron.form == "search":
        return {"adds": (T - 1) * n, "comparisons": neuron.book.comparisons * n, "resets": 0}
    return neuron_updates(neuron, neuron.last_spikes)


def spike_class(neuron: nn.Module, tally: SpikeTally, dtype: torch.dtype) -> str:
    """`classify_input` of a neuron's output from its tally, without reading the output: a step is
    active when it holds a spike, each spike of step t has the magnitude of the neuron's
    output at t, and the sign tells ternary from binary."""
    magnitudes = neuron.output_magnitudes(dtype)
    active = (tally.per_step > 0) & (magnitudes.to(tally.per_step.device) != 0)
    if not bool(active.any()):
        return "silent"
    if len(set(magnitudes[active.to(magnitudes.device)].tolist())) > 1:
        return "weighted spikes"
    return "ternary spikes" if bool(tally.negative) else "binary spikes"


def widen(row: dict, kind: str) -> None:
    """Keep as ``row``'s input class the more general of it and ``kind`` (`CLASS_ORDER`)."""
    if CLASS_ORDER.index(kind) > CLASS_ORDER.index(row["input"]):
        row["input"] = kind


class CountRows:
    """The totals of a count and the report they give, kept alike for `OperationCounter` and
    `ge2mst.analysis.energy_stbp.StbpCounter`: ``rows`` per weight layer or attention product,
    ``neuron_rows`` per layer of neurons, ``images`` counted. A subclass sets ``network`` (its
    modules give the order of the report) and defines ``product_before(name, order)`` (the module
    an attention product is listed just before) and ``close`` (called at a ``with`` block's end)."""

    counted_by = "count_operations"  # named when a report is asked of no images
    network: nn.Module

    def __init__(self, preset: str) -> None:
        if preset not in PRESETS:
            raise ConfigError(f"energy preset must be one of {sorted(PRESETS)}, got {preset!r}")
        self.preset, self.images = preset, 0
        self.rows: dict[str, dict] = {}
        self.neuron_rows: dict[str, dict] = {}

    def row(self, name: str, kind: str) -> dict:
        """The totals of weight layer or attention product ``name``, first of input class ``kind``."""
        return self.rows.setdefault(name, {"name": name, "input": kind, "sops": 0.0, "macs": 0.0,
                                           "sops_upper_bound": 0.0, "ann_macs": 0})

    def add_spikes(self, name: str, kind: tuple[str, int, int], total: int, count: int,
                   updates: dict, **more) -> dict:
        """Add ``total`` spikes of ``count`` outputs and neuron ``updates`` to the totals of neuron
        layer ``name`` (made of its spike class, neurons and cap ``kind``, and ``more``); those."""
        spikes, neurons, cap = kind
        row = self.neuron_rows.setdefault(name, {
            "name": name, "spikes": spikes, "neurons": neurons, "cap": cap, "spike_total": 0,
            "count": 0, "adds": 0, "comparisons": 0, "resets": 0, **more})
        row["spike_total"] += total
        row["count"] += count
        for key, value in updates.items():
            row[key] += value
        return row

    def position(self, row: dict, order: dict[str, int]) -> float:
        """Where ``row`` stands in network order (``order``: module name -> rank)."""
        if row["input"] == "spike pairs":
            return order[self.product_before(row["name"], order)] - 0.5
        return order[row["name"]]

    def report(self, **extra) -> dict:
        """Totals per image, ``per_layer`` and ``neurons`` rows (see `count_operations`), with
        ``extra`` keys after ``pj_per_mac``; the totals are the sums of the rows."""
        if self.images == 0:
            raise ConfigError(f"{self.counted_by} needs at least one image")
        images, costs = self.images, PRESETS[self.preset]
        order = {name: i for i, (name, _) in enumerate(self.network.named_modules())}
        layers = [{"name": r["name"], "input": r["input"], "sops": r["sops"] / images,
                   "macs": r["macs"] / images, "ann_macs": r["ann_macs"],
                   "sops_upper_bound": r["sops_upper_bound"]}
                  for r in sorted(self.rows.values(), key=lambda r: self.position(r, order))]
        neurons = [_per_image(r, images) for r in self.neuron_rows.values()]
        sops, macs = sum(r["sops"] for r in layers), sum(r["macs"] for r in layers)
        ann_macs = sum(r["ann_macs"] for r in layers)
        energy = (sops * costs["ac_pj"] + macs * costs["mac_pj"]) * 1e-9
        ann_energy = ann_macs * costs["mac_pj"] * 1e-9
        spikes, n_neurons = sum(r["spikes_per_image"] for r in neurons), sum(r["neurons"] for r in neurons)
        most = max((r["max"] if "max" in r else max(i for i, h in enumerate(r["histogram"]) if h > 0)
                    for r in self.neuron_rows.values()), default=0)
        return {"images": images, "preset": self.preset, "pj_per_accumulate": costs["ac_pj"],
                "pj_per_mac": costs["mac_pj"], **extra, "sops": sops, "macs": macs,
                "energy_mj": energy, "ann_macs": ann_macs, "ann_energy_mj": ann_energy,
                "energy_ratio": ann_energy / energy if energy else None, "spikes_per_image": spikes,
                "firing_rate": spikes / n_neurons if n_neurons else 0.0,  # per neuron per inference
                "max_spikes_per_neuron": most,
                "sops_upper_bound": sum(r["sops_upper_bound"] for r in layers),
                "neuron_adds": sum(r["adds"] for r in neurons),
                "neuron_comparisons": sum(r["comparisons"] for r in neurons),
                "per_layer": layers, "neurons": neurons}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _per_image(r: dict, images: int) -> dict:
    """The report row of neuron totals ``r`` (histogram and fraction at the cap where kept)."""
    out = {"name": r["name"], "spikes": r["spikes"], "neurons": r["neurons"], "cap": r["cap"],
           "mean_spikes": r["spike_total"] / r["count"],
           "firing_rate": r["spike_total"] / (r["count"] * r["cap"])}
    if "histogram" in r:
        out["fraction_at_cap"] = r["at_cap"] / r["count"]
        out["histogram"] = [h / r["count"] for h in r["histogram"]]
    return {**out, "adds": r["adds"] / images, "comparisons": r["comparisons"] / images,
            "resets": r["resets"] / images, "spikes_per_image": r["spike_total"] / images}


class OperationCounter(CountRows):
    """Counts operations while ``snn`` (event mode) runs: call it like the network.

    ``counter(images)`` runs the network once and returns its logits; the counts of every call
    add up, and `report` gives them per image. `count_operations` is the one-shot form;
    ``ge2mst eval`` counts during its own timed pass of the spiking network, so that counting
    costs only what it adds to that pass. Call `close` (or use it as a context manager) to remove
    the hooks.

    By default each neuron keeps a `SpikeTally` of its spikes (made from its levels where it has
    them) instead of its spike trains, and a weight layer fed straight by a neuron takes
    its input class and events from that tally. ``from_spike_trains=True`` records every spike
    train and classifies and counts every layer input as it is, the slower reference path; both
    give the same report (tested).
    """

    def __init__(self, snn: SpikingNetwork, preset: str = "45nm-fp32",
                 from_spike_trains: bool = False) -> None:
        super().__init__(preset)
        if snn.step_mode != "event":
            raise ConfigError("operations are counted on the event-mode network (step_mode='event')")
        self.snn, self.network, self.from_spike_trains = snn, snn.body, from_spike_trains
        self.attention = {n: m for n, m in snn.body.named_modules() if hasattr(m, "last_ops")}
        self.neuron_list = list(snn.neurons())
        caps = {getattr(n, "G", n.T) for _, n in self.neuron_list}
        self.cap = max(caps) if caps else snn.T
        self.handles = [m.register_forward_hook(partial(self._synapse, n))
                        for n, m in snn.body.named_modules() if isinstance(m, Synapse)]
        #: id of each neuron output of the running call -> (weak reference to it, its neuron)
        self._produced: dict[int, tuple[weakref.ref, nn.Module]] = {}
        if not from_spike_trains:
            for _, neuron in self.neuron_list:
                neuron.counting = True
                self.handles.append(neuron.register_forward_hook(self._produced_by))

    def _produced_by(self, neuron, args, output) -> None:
        self._produced[id(output)] = (weakref.ref(output), neuron)

    def _source(self, x: torch.Tensor):
        """The neuron whose output ``x`` is, in this call, or None."""
        hit = self._produced.get(id(x))
        if hit is None or hit[0]() is not x or hit[1].last_tally is None:
            return None
        return hit[1]

    def _synapse(self, name: str, module, args, output) -> None:
        """Forward hook of synapse ``name``: its input class and operations in this call."""
        x = args[0]
        row = self.row(name, "silent")
        source = self._source(x)
        tally = source.last_tally if source is not None else None
        kind = module.input_kind
        if kind is None:
            kind = (spike_class(source, tally, x.dtype) if tally is not None
                    else row["input"] if row["input"] == "real" else classify_input(x))
        widen(row, kind)
        per_sample_out = output.shape[2:]
        row["ann_macs"] = dense_macs(module.layer, per_sample_out)
        if row["input"] in ("silent", *EVENT_CLASSES):
            if tally is None:
                counts = (x != 0).sum(0)
            elif isinstance(module.layer, nn.Conv2d):
                counts = tally.per_neuron()
            else:  # a linear layer: every event reaches out_features outputs
                counts = None
                row["sops"] += float(tally.total() * module.layer.out_features)
            if counts is not None:
                row["sops"] += float(event_sops(module.layer, counts).sum())
            if not row["sops_upper_bound"]:  # the same for every batch: the architecture's
                full = torch.full((1, *x.shape[2:]), self.cap, dtype=torch.int64, device=x.device)
                row["sops_upper_bound"] = float(event_sops(module.layer, full)[0])
        elif (tally.total() > 0) if tally is not None else bool((x != 0).any()):
            row["macs"] += dense_macs(module.layer, per_sample_out) * x.shape[1]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self._produced.clear()
        try:
            out = self.snn(images, record=self.from_spike_trains)
        finally:
            self._produced.clear()
        self.images += images.shape[0]
        for name, module in self.attention.items():
            ops = module.last_ops
            row = self.row(name, "spike pairs")
            row["sops"] += (ops["qk_coincidences"] + ops["av_coincidences"]) * ops["images"]
            row["sops_upper_bound"] = ops["coincidences_upper_bound"]
            row["ann_macs"] = ops["ann_macs"]
        for name, neuron in self.neuron_list:
            self._count_neurons(name, neuron)
        return out

    def _count_neurons(self, name: str, neuron: nn.Module) -> None:
        """Add the spikes, histogram and updates of ``neuron`` in this call."""
        tally = (SpikeTally.from_spikes(neuron.last_spikes) if self.from_spike_trains
                 else neuron.last_tally)
        ncap, total = getattr(neuron, "G", neuron.T), tally.total()
        row = self.add_spikes(name, (neuron.spike_class, tally.neurons, ncap), total, tally.numel,
                              _updates(neuron, tally, total), at_cap=0, histogram=[0] * (ncap + 1))
        hist = tally.histogram.tolist()
        hist = hist[:ncap] + [sum(hist[ncap:])]  # counts above the cap go to its bin
        row["at_cap"] += hist[ncap]
        row["histogram"] = [a + b for a, b in zip(row["histogram"], hist, strict=True)]

    def product_before(self, name: str, order: dict[str, int]) -> str:
        """An attention product is listed just before its module's projection (``proj``)."""
        return f"{name}.proj" if f"{name}.proj" in order else name

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        for _, neuron in self.neuron_list:
            neuron.counting, neuron.last_tally = False, None
        self.snn.set_recording(False)


@torch.no_grad()
def count_operations(snn: SpikingNetwork, batches: Iterable[torch.Tensor],
                     preset: str = "45nm-fp32") -> dict:
    """Run ``snn`` (event mode) on ``batches`` of images and count operations per image.

    Returns totals per image (``sops``, ``macs``, ``energy_mj``, ``ann_macs``, ``ann_energy_mj``,
    ``energy_ratio``, ``firing_rate``, ``spikes_per_image``, ``sops_upper_bound``,
    ``max_spikes_per_neuron``, ``neuron_adds``, ``neuron_comparisons``), ``per_layer`` rows for
    weight layers and attention products (name, input class, sops, macs, sops_upper_bound,
    ann_macs) and ``neurons`` rows (name, spike class, neurons, mean spikes, firing rate, fraction
    at the cap, histogram, adds, comparisons). The totals are the sums of the rows.
    """
    with OperationCounter(snn, preset) as counter:
        for x in batches:
            counter(x)
        return counter.report()


__all__ = ["CountRows", "OperationCounter", "EVENT_CLASSES", "PRESETS", "classify_input", "count_operations",
           "dense_macs", "event_sops", "neuron_updates", "plot_report", "spike_class",
           "spike_pair_coincidences", "stage_of", "to_markdown"]
