"""Synaptic operations and energy, counted from the spikes a converted network really emits.

For every `Synapse` (converted Conv2d / Linear) the input of each time step is classified:

- spike events: every nonzero entry of the step has the same magnitude (theta_t, the amplitude of
  that step's binary or ternary spikes). Each event costs one accumulate per synapse it reaches:
  SOPs = sum over events of the real fan-out of that input position (padding edges included:
  computed as a convolution of the event-count map with an all-ones kernel);
- real values (pixels, averages of spikes): the step costs the layer's full multiply-accumulates.

Attention products between two spike-coded matrices (GW-SSA, SSA) are counted as spike-pair
coincidences, sum_{i,j,d} n_q(i,d) n_k(j,d) with n the spikes per element, one accumulate each.

Energy uses the 45 nm figures of the field: 0.9 pJ per accumulate, 4.6 pJ per MAC (``PRESETS``).
The ANN reference counts every weight layer's MACs once per image.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .convert import SpikingNetwork
from .errors import ConfigError
from .layers import Synapse

#: energy per operation in picojoules: (accumulate, multiply-accumulate)
PRESETS = {
    "45nm-fp32": {"ac_pj": 0.9, "mac_pj": 4.6},
    "45nm-int8": {"ac_pj": 0.03, "mac_pj": 0.2},
}


def dense_macs(layer: nn.Module, out_shape: torch.Size) -> int:
    """Multiply-accumulates of one application of ``layer`` producing one sample of ``out_shape``."""
    if isinstance(layer, nn.Conv2d):
        k = layer.kernel_size[0] * layer.kernel_size[1] * layer.in_channels // layer.groups
        return int(torch.Size(out_shape).numel()) * k
    return layer.in_features * layer.out_features


def event_sops(layer: nn.Module, counts: torch.Tensor) -> torch.Tensor:
    """Accumulates caused by ``counts`` input events per position (B x ...), per sample."""
    if isinstance(layer, nn.Conv2d):
        ones = torch.ones((layer.out_channels, layer.in_channels // layer.groups,
                           *layer.kernel_size), dtype=torch.float64, device=counts.device)
        reached = nn.functional.conv2d(counts.to(torch.float64), ones, None, layer.stride,
                                       layer.padding, layer.dilation, layer.groups)
        return reached.flatten(1).sum(1)
    return counts.to(torch.float64).flatten(1).sum(1) * layer.out_features


def _is_spike_step(step: torch.Tensor) -> bool:
    nz = step[step != 0].abs()
    return nz.numel() == 0 or bool((nz == nz[0]).all())


@torch.no_grad()
def count_operations(snn: SpikingNetwork, batches: Iterable[torch.Tensor],
                     preset: str = "45nm-fp32") -> dict:
    """Run ``snn`` (event mode) on ``batches`` of images and count operations per image.

    Returns a dict with totals per image (``sops``, ``macs``, ``energy_mj``, ``ann_macs``,
    ``ann_energy_mj``, ``energy_ratio``, ``firing_rate``, ``sops_upper_bound``) and ``per_layer``
    rows (name, input class, sops, macs per image); the totals are the sums of the rows.
    """
    if preset not in PRESETS:
        raise ConfigError(f"energy preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if snn.step_mode != "event":
        raise ConfigError("operations are counted on the event-mode network (step_mode='event')")
    rows: dict[str, dict] = {}
    synapses = {n: m for n, m in snn.body.named_modules() if isinstance(m, Synapse)}
    images = 0
    caps = {getattr(n, "G", n.T) for _, n in snn.neurons()}
    cap = max(caps) if caps else snn.T  # most spikes one neuron can emit in one inference

    def hook(name):
        def fn(module, args, output):
            x = args[0]
            row = rows.setdefault(name, {"name": name, "input": None, "sops": 0.0, "macs": 0,
                                         "sops_upper_bound": 0.0})
            per_sample_out = output.shape[2:]
            spiking = all(_is_spike_step(x[t]) for t in range(x.shape[0]))
            if spiking:
                counts = (x != 0).sum(0)
                row["sops"] += float(event_sops(module.layer, counts).sum())
                full = torch.full_like(counts[:1], cap)
                row["sops_upper_bound"] = float(event_sops(module.layer, full)[0])
                row["input"] = "spikes"
            else:
                steps = sum(bool((x[t] != 0).any()) for t in range(x.shape[0]))
                row["macs"] += dense_macs(module.layer, per_sample_out) * steps * x.shape[1]
                row["input"] = "real"
            row["ann_macs"] = dense_macs(module.layer, per_sample_out)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in synapses.items()]
    attention = {n: m for n, m in snn.body.named_modules() if hasattr(m, "last_ops")}
    spikes = neurons = 0
    try:
        for x in batches:
            snn(x, record=True)
            images += x.shape[0]
            for name, module in attention.items():
                ops = module.last_ops
                row = rows.setdefault(name, {"name": name, "input": "spike pairs", "sops": 0.0,
                                             "macs": 0, "sops_upper_bound": 0.0})
                row["sops"] += (ops["qk_coincidences"] + ops["av_coincidences"]) * ops["images"]
                row["sops_upper_bound"] = ops["coincidences_upper_bound"]
                row["ann_macs"] = ops["ann_macs"]
            for _, neuron in snn.neurons():
                s = neuron.last_spikes
                spikes += int(s.abs().sum())
                neurons += s[0].numel()
    finally:
        for h in handles:
            h.remove()
        snn.set_recording(False)
    if images == 0:
        raise ConfigError("count_operations needs at least one image")
    costs = PRESETS[preset]
    per_layer = []
    for row in rows.values():
        per_layer.append({"name": row["name"], "input": row["input"],
                          "sops": row["sops"] / images, "macs": row["macs"] / images,
                          "ann_macs": row["ann_macs"], "sops_upper_bound": row["sops_upper_bound"]})
    sops = sum(r["sops"] for r in per_layer)
    macs = sum(r["macs"] for r in per_layer)
    ann_macs = sum(r["ann_macs"] for r in per_layer)
    energy = (sops * costs["ac_pj"] + macs * costs["mac_pj"]) * 1e-9
    ann_energy = ann_macs * costs["mac_pj"] * 1e-9
    return {
        "images": images,
        "preset": preset,
        "sops": sops,
        "macs": macs,
        "energy_mj": energy,
        "ann_macs": ann_macs,
        "ann_energy_mj": ann_energy,
        "energy_ratio": ann_energy / energy if energy else None,
        "spikes_per_image": spikes / images,
        "firing_rate": spikes / neurons if neurons else 0.0,
        "sops_upper_bound": sum(r["sops_upper_bound"] for r in per_layer),
        "per_layer": per_layer,
    }
