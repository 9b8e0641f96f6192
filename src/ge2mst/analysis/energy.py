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

import torch
from torch import nn

from ..conversion.converter import SpikingNetwork
from ..core.neurons import IFNeuron, SpikeTally
from ..errors import ConfigError
from ..nn.layers import Synapse
from ..nn.spiking_attention import spike_pair_coincidences

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


class OperationCounter:
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
        if preset not in PRESETS:
            raise ConfigError(f"energy preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if snn.step_mode != "event":
            raise ConfigError("operations are counted on the event-mode network (step_mode='event')")
        self.snn, self.preset = snn, preset
        self.from_spike_trains = from_spike_trains
        self.rows: dict[str, dict] = {}
        self.neuron_rows: dict[str, dict] = {}
        self.images = 0
        synapses = {n: m for n, m in snn.body.named_modules() if isinstance(m, Synapse)}
        self.attention = {n: m for n, m in snn.body.named_modules() if hasattr(m, "last_ops")}
        self.neuron_list = list(snn.neurons())
        caps = {getattr(n, "G", n.T) for _, n in self.neuron_list}
        self.cap = max(caps) if caps else snn.T
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in synapses.items()]
        #: id of each neuron output of the running call -> (weak reference to it, its neuron)
        self._produced: dict[int, tuple[weakref.ref, nn.Module]] = {}
        if not from_spike_trains:
            for _, neuron in self.neuron_list:
                neuron.counting = True
                self.handles.append(neuron.register_forward_hook(self._produced_by))

    @staticmethod
    def _new_row(name: str, kind: str | None) -> dict:
        return {"name": name, "input": kind, "sops": 0.0, "macs": 0.0, "sops_upper_bound": 0.0,
                "ann_macs": 0}

    def _produced_by(self, neuron, args, output) -> None:
        self._produced[id(output)] = (weakref.ref(output), neuron)

    def _source(self, x: torch.Tensor):
        """The neuron whose output ``x`` is, in this call, or None."""
        hit = self._produced.get(id(x))
        if hit is None or hit[0]() is not x or hit[1].last_tally is None:
            return None
        return hit[1]

    def _hook(self, name: str):
        def fn(module, args, output):
            x = args[0]
            row = self.rows.setdefault(name, self._new_row(name, "silent"))
            source = self._source(x)
            tally = source.last_tally if source is not None else None
            kind = module.input_kind
            if kind is None:
                kind = (spike_class(source, tally, x.dtype) if tally is not None
                        else row["input"] if row["input"] == "real" else classify_input(x))
            if CLASS_ORDER.index(kind) > CLASS_ORDER.index(row["input"]):
                row["input"] = kind
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
        return fn

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
            row = self.rows.setdefault(name, self._new_row(name, "spike pairs"))
            row["sops"] += (ops["qk_coincidences"] + ops["av_coincidences"]) * ops["images"]
            row["sops_upper_bound"] = ops["coincidences_upper_bound"]
            row["ann_macs"] = ops["ann_macs"]
        for name, neuron in self.neuron_list:
            tally = (SpikeTally.from_spikes(neuron.last_spikes) if self.from_spike_trains
                     else neuron.last_tally)
            ncap = getattr(neuron, "G", neuron.T)
            row = self.neuron_rows.setdefault(name, {
                "name": name, "spikes": neuron.spike_class, "neurons": tally.neurons,
                "cap": ncap, "spike_total": 0, "at_cap": 0, "histogram": [0] * (ncap + 1),
                "adds": 0, "comparisons": 0, "resets": 0, "count": 0})
            total = tally.total()
            row["spike_total"] += total
            row["count"] += tally.numel
            hist = tally.histogram.tolist()
            hist = hist[:ncap] + [sum(hist[ncap:])]  # counts above the cap go to its bin
            row["at_cap"] += hist[ncap]
            row["histogram"] = [a + b for a, b in zip(row["histogram"], hist, strict=True)]
            for key, value in _updates(neuron, tally, total).items():
                row[key] += value
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        for _, neuron in self.neuron_list:
            neuron.counting, neuron.last_tally = False, None
        self.snn.set_recording(False)

    def __enter__(self) -> OperationCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def report(self) -> dict:
        """Totals per image, ``per_layer`` and ``neurons`` rows: see `count_operations`."""
        if self.images == 0:
            raise ConfigError("count_operations needs at least one image")
        snn, images = self.snn, self.images
        order = {name: i for i, (name, _) in enumerate(snn.body.named_modules())}

        def position(row: dict) -> float:  # network order; attention products just before proj
            if row["input"] == "spike pairs":
                return order.get(f"{row['name']}.proj", order[row["name"]]) - 0.5
            return order[row["name"]]

        per_layer = [{"name": r["name"], "input": r["input"], "sops": r["sops"] / images,
                      "macs": r["macs"] / images, "ann_macs": r["ann_macs"],
                      "sops_upper_bound": r["sops_upper_bound"]}
                     for r in sorted(self.rows.values(), key=position)]
        neurons_out = []
        for r in self.neuron_rows.values():
            neurons_out.append({
                "name": r["name"], "spikes": r["spikes"], "neurons": r["neurons"], "cap": r["cap"],
                "mean_spikes": r["spike_total"] / r["count"],
                "firing_rate": r["spike_total"] / (r["count"] * r["cap"]),
                "fraction_at_cap": r["at_cap"] / r["count"],
                "histogram": [h / r["count"] for h in r["histogram"]],
                "adds": r["adds"] / images, "comparisons": r["comparisons"] / images,
                "resets": r["resets"] / images, "spikes_per_image": r["spike_total"] / images})
        max_spikes = max((max(i for i, h in enumerate(r["histogram"]) if h > 0)
                          for r in neurons_out), default=0)
        return summarize(per_layer, neurons_out, images, self.preset, max_spikes)


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


def summarize(per_layer: list[dict], neurons_out: list[dict], images: int, preset: str,
              max_spikes: int, **extra) -> dict:
    """The report of a count: per-image totals of the ``per_layer`` rows (``sops``, ``macs``,
    ``ann_macs``, ``sops_upper_bound``) and of the ``neurons_out`` rows (``spikes_per_image``,
    ``neurons``, ``adds``, ``comparisons``), energy of ``preset``, and ``extra`` keys after
    ``pj_per_mac``. Shared by `count_operations` and the STBP counter."""
    costs = PRESETS[preset]
    sops = sum(r["sops"] for r in per_layer)
    macs = sum(r["macs"] for r in per_layer)
    ann_macs = sum(r["ann_macs"] for r in per_layer)
    energy = (sops * costs["ac_pj"] + macs * costs["mac_pj"]) * 1e-9
    ann_energy = ann_macs * costs["mac_pj"] * 1e-9
    spikes = sum(r["spikes_per_image"] for r in neurons_out)
    n_neurons = sum(r["neurons"] for r in neurons_out)
    return {
        "images": images,
        "preset": preset,
        "pj_per_accumulate": costs["ac_pj"],
        "pj_per_mac": costs["mac_pj"],
        **extra,
        "sops": sops,
        "macs": macs,
        "energy_mj": energy,
        "ann_macs": ann_macs,
        "ann_energy_mj": ann_energy,
        "energy_ratio": ann_energy / energy if energy else None,
        "spikes_per_image": spikes,
        "firing_rate": spikes / n_neurons if n_neurons else 0.0,  # per neuron per inference
        "max_spikes_per_neuron": max_spikes,
        "sops_upper_bound": sum(r["sops_upper_bound"] for r in per_layer),
        "neuron_adds": sum(r["adds"] for r in neurons_out),
        "neuron_comparisons": sum(r["comparisons"] for r in neurons_out),
        "per_layer": per_layer,
        "neurons": neurons_out,
    }


def stage_of(name: str) -> str:
    """Coarse stage of a layer name: ``stages.N...`` -> ``stage N+1``, else the first component."""
    parts = name.split(".")
    if parts[0] == "stages" and len(parts) > 1:
        return f"stage {int(parts[1]) + 1}"
    return parts[0] if not parts[0].isdigit() else "body"


def to_markdown(report: dict) -> str:
    """The energy report as a markdown table (totals last), for papers and READMEs."""
    lines = ["| layer | input | SOPs | MACs | SOPs upper bound | ANN MACs |",
             "|---|---|---:|---:|---:|---:|"]
    for r in report["per_layer"]:
        lines.append(f"| {r['name']} | {r['input']} | {r['sops']:,.0f} | {r['macs']:,.0f} | "
                     f"{r['sops_upper_bound']:,.0f} | {r['ann_macs']:,.0f} |")
    lines.append(f"| **total per image** | | **{report['sops']:,.0f}** | **{report['macs']:,.0f}** | "
                 f"**{report['sops_upper_bound']:,.0f}** | **{report['ann_macs']:,.0f}** |")
    lines.append("")
    lines.append(f"Energy per image ({report['preset']}: {report['pj_per_accumulate']} pJ per "
                 f"accumulate, {report['pj_per_mac']} pJ per MAC): SNN "
                 f"{report['energy_mj'] * 1e3:.4g} uJ, ANN {report['ann_energy_mj'] * 1e3:.4g} uJ "
                 f"({report['energy_ratio']:.2f}x). Firing rate {report['firing_rate']:.4f} spikes "
                 f"per neuron per inference, at most {report['max_spikes_per_neuron']}.")
    return "\n".join(lines)


def plot_report(report: dict, path, title: str = "") -> None:
    """Cumulative SOPs and upper bound along the network, and firing per neuron layer (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["per_layer"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    cum, cum_ub, total, total_ub = [], [], 0.0, 0.0
    for r in rows:
        total += r["sops"] + r["macs"]
        total_ub += r["sops_upper_bound"] + r["macs"]
        cum.append(total)
        cum_ub.append(total_ub)
    xs = range(len(rows))
    ax.plot(xs, cum_ub, "k--", label="upper bound (every neuron at its cap)")
    ax.plot(xs, cum, "C0-", label="emitted: SOPs + MACs")
    attn = [i for i, r in enumerate(rows) if r["input"] == "spike pairs"]
    if attn:
        ax.scatter(attn, [cum[i] for i in attn], color="C3", zorder=3, s=18,
                   label="attention products")
    stages = [stage_of(r["name"]) for r in rows]
    for i in range(1, len(rows)):
        if stages[i] != stages[i - 1]:
            ax.axvline(i - 0.5, color="0.85", lw=0.8)
            ax.text(i - 0.4, max(cum_ub) * 0.02, stages[i], fontsize=7, rotation=90, va="bottom")
    ax.set_xlabel("weight layer / attention product, in network order")
    ax.set_ylabel("cumulative operations per image")
    ax.set_title("cumulative synaptic operations")
    ax.legend(fontsize=8)
    ax = axes[1]
    nrows = report["neurons"]
    rates = [r["firing_rate"] for r in nrows]
    at_cap = [r["fraction_at_cap"] for r in nrows]
    ax.bar(range(len(nrows)), rates, color="C2", label="firing rate (spikes / cap)")
    ax.plot(range(len(nrows)), at_cap, "k.", label="fraction of neurons at the cap")
    ax.set_xlabel("neuron layer, in network order")
    ax.set_ylim(0, 1)
    ax.set_title(f"firing per layer (mean {report['firing_rate']:.3f} spikes per neuron)")
    ax.legend(fontsize=8)
    fig.suptitle(title or f"{report['sops']:,.0f} SOPs + {report['macs']:,.0f} MACs per image: "
                 f"{report['energy_mj'] * 1e3:.3g} uJ ({report['preset']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["OperationCounter", "EVENT_CLASSES", "PRESETS", "classify_input", "count_operations",
           "dense_macs", "event_sops", "neuron_updates", "plot_report", "spike_class",
           "spike_pair_coincidences", "stage_of", "to_markdown"]
