"""Synaptic operations and energy of the STBP baselines, counted from the spikes they emit.

The same rules as `ge2mst.analysis.energy.count_operations` for converted networks, applied step by step:

- a weight layer (Conv2d, Linear, `GroupedProjection`) whose input at a step holds only spikes of
  one magnitude (binary or ternary) is charged one accumulate per synapse each spike reaches
  (`ge2mst.analysis.energy.event_sops`, padding edges included);
- any other input at a step (pixels, the {0, 1, 2} sums of Spikformer's residual stream, token
  means) is charged the layer's dense multiply-accumulates for that step. An integer is never
  counted as a cheap accumulate. A step whose input equals step 0's (the repeated image of direct
  encoding) is computed once and charged once;
- attention products are counted from the emitted Q, K, V: SSA's Q K^T is one accumulate per
  coincident spike pair inside the allowed (window) pairs, its score x V one accumulate per
  nonzero score and V spike; A2OS2A's K^T V one accumulate per (nonzero K, V spike) pair and
  Q (K^T V) d accumulates per Q spike (the quadratic form: Q K^T per Q spike and nonzero K, then
  one per nonzero score and V spike);
- the head sees the mean over steps and tokens (real) once.

Neuron updates are reported apart: per neuron and step one addition (leak and input; tau = 2 is a
shift) and one comparison (two for ternary neurons), and the resets.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..baselines.attention import A2OS2A, GroupedProjection, SpikingSelfAttention, window_attention
from ..baselines.lif import LIF
from ..errors import ConfigError
from ..models.spikformer import Spikformer
from .energy import CLASS_ORDER, EVENT_CLASSES, PRESETS, classify_input, dense_macs, event_sops, summarize

__all__ = ["allowed_pairs", "count_stbp_operations"]


def allowed_pairs(module: SpikingSelfAttention, n_tokens: int) -> torch.Tensor:
    """N x N float64 0/1 matrix: token i may attend to token j under the module's windows."""
    grid = module.token_grid(n_tokens)
    ones = torch.ones(1, 1, 1, n_tokens, 1, dtype=torch.float64)
    eye = torch.eye(n_tokens, dtype=torch.float64).view(1, 1, 1, n_tokens, n_tokens)
    return window_attention(ones, ones, eye, 1.0, grid, module.window, module.shift)[0, 0, 0]


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    T, B, N, C = x.shape
    return x.to(torch.float64).reshape(T, B, N, heads, C // heads).permute(0, 1, 3, 2, 4)


def _ssa_ops(module: SpikingSelfAttention, q, k, v) -> tuple[float, float]:
    """Accumulates of Q K^T and scores x V summed over steps and samples, and the dense count of
    one step of one sample (every allowed pair coinciding in every channel)."""
    q, k, v = (_split(t, module.num_heads) for t in (q, k, v))
    mask = allowed_pairs(module, q.shape[-2])
    scores = (q @ k.transpose(-2, -1)) * mask  # coincidences per pair
    v_spikes = (v != 0).sum(-1).to(torch.float64)  # per key token
    ops = scores.sum() + ((scores != 0).to(torch.float64) @ v_spikes.unsqueeze(-1)).sum()
    d = q.shape[-1]
    return float(ops), module.num_heads * float(mask.sum()) * d * 2


def _a2os2a_ops(module: A2OS2A, q, k, v) -> tuple[float, float]:
    q, k, v = (_split(t, module.num_heads) for t in (q, k, v))
    nq, nk, nv = ((t != 0).to(torch.float64) for t in (q, k, v))
    d, n = q.shape[-1], q.shape[-2]
    if module.quadratic:
        scores = nq @ nk.transpose(-2, -1)
        ops = scores.sum() + ((scores != 0).to(torch.float64) @ nv.sum(-1, keepdim=True)).sum()
        bound = 2 * n * n * d
    else:
        ops = (nk.sum(-1) * nv.sum(-1)).sum() + nq.sum() * d
        bound = 2 * n * d * d
    return float(ops), float(bound * module.num_heads)


def _layer_of(module: nn.Module):
    """The object `dense_macs` / `event_sops` understand, and the synapses one event reaches."""
    if isinstance(module, GroupedProjection):
        return None, module.dim // module.groups
    return module, None


@torch.no_grad()
def count_stbp_operations(model: Spikformer, batches: Iterable[torch.Tensor],
                          preset: str = "45nm-fp32") -> dict:
    """Run ``model`` (eval mode) on ``batches`` of B x C x H x W images and count per image.

    Returns the keys of `ge2mst.analysis.energy.count_operations` that apply (``sops``, ``macs``,
    ``energy_mj``, ``ann_macs``, ``ann_energy_mj``, ``energy_ratio``, ``spikes_per_image``,
    ``firing_rate``, ``sops_upper_bound``, ``neuron_adds``, ``neuron_comparisons``,
    ``per_layer``, ``neurons``), so `ge2mst.analysis.energy.to_markdown` prints it. ``ann_macs`` is the
    same architecture run once as an ANN (one step).
    """
    if preset not in PRESETS:
        raise ConfigError(f"energy preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if not isinstance(model, Spikformer):
        raise ConfigError(f"count_stbp_operations counts Spikformer baselines, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    steps = model.steps
    rows: dict[str, dict] = {}
    neurons: dict[str, dict] = {}
    captured: dict[int, torch.Tensor] = {}
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}

    def row(name: str, kind: str) -> dict:
        return rows.setdefault(name, {"name": name, "input": kind, "sops": 0.0, "macs": 0.0,
                                      "sops_upper_bound": 0.0, "ann_macs": 0})

    def weight_hook(name: str):
        def fn(module, args, output):
            x = args[0]
            layer, fanout = _layer_of(module)
            if name == "head":  # B x D, once
                r = row(name, "real")
                r["macs"] += dense_macs(module, output.shape[1:]) * x.shape[0]
                r["ann_macs"] = dense_macs(module, output.shape[1:])
                return
            if isinstance(module, nn.Conv2d):  # (steps B) x C x H x W
                x = x.unflatten(0, (steps, -1))
                out_shape = output.shape[1:]
            else:
                out_shape = output.shape[2:]
            if isinstance(module, nn.Conv2d):
                per_sample = dense_macs(module, out_shape)
            else:  # per token, times the tokens
                tokens = x[0, 0].numel() // x.shape[-1]
                per_sample = tokens * (dense_macs(module, out_shape) if layer is not None
                                       else module.dim * module.dim // module.groups)
            r = row(name, "silent")
            r["ann_macs"] = per_sample
            kinds = []
            for t in range(x.shape[0]):
                xt = x[t]
                if t > 0 and torch.equal(xt, x[0]):
                    kinds.append("repeat")
                    continue
                kind = classify_input(xt.unsqueeze(0))
                kinds.append(kind)
                counts = (xt != 0).to(torch.float64)
                if kind == "silent":
                    continue
                if kind in EVENT_CLASSES:
                    r["sops"] += float(counts.sum() * fanout) if layer is None \
                        else float(event_sops(layer, counts).sum())
                else:
                    r["macs"] += per_sample * xt.shape[0]
            full = torch.ones_like(x[0][:1], dtype=torch.float64) * steps
            r["sops_upper_bound"] = float(full.sum() * fanout) if layer is None \
                else float(event_sops(layer, full)[0])
            for k in kinds:
                if k != "repeat" and CLASS_ORDER.index(k) > CLASS_ORDER.index(r["input"]):
                    r["input"] = k
            if r["input"] not in ("silent", *EVENT_CLASSES):
                r["sops_upper_bound"] = 0.0  # charged as MACs
        return fn

    def capture_hook(key: int, relu: bool = False):
        def fn(module, args, output):
            captured[key] = torch.relu(output) if relu else output
        return fn

    def neuron_hook(name: str):
        def fn(module, args, output):
            count = output.abs().to(torch.int64).sum(0)
            n = count.numel() // count.shape[0] if count.dim() else 1
            r = neurons.setdefault(name, {"name": name, "spikes": "ternary" if module.ternary else "binary",
                                          "neurons": n, "cap": output.shape[0], "spike_total": 0,
                                          "count": 0, "adds": 0, "comparisons": 0, "resets": 0,
                                          "max": 0})
            total = int(count.sum())
            r["spike_total"] += total
            r["count"] += count.numel()
            r["adds"] += output.numel()
            r["comparisons"] += output.numel() * (2 if module.ternary else 1)
            r["resets"] += total
            r["max"] = max(r["max"], int(count.max()) if count.numel() else 0)
        return fn

    handles = []
    attention_modules = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, GroupedProjection)):
            handles.append(m.register_forward_hook(weight_hook(name)))
        elif isinstance(m, LIF):
            handles.append(m.register_forward_hook(neuron_hook(name)))
        if isinstance(m, (SpikingSelfAttention, A2OS2A)):
            attention_modules[name] = m
            base = id(m)
            handles.append(m.q_lif.register_forward_hook(capture_hook(base)))
            if isinstance(m, A2OS2A):
                handles.append(m.k_proj.register_forward_hook(capture_hook(base + 1, relu=True)))
            else:
                handles.append(m.k_lif.register_forward_hook(capture_hook(base + 1)))
            handles.append(m.v_lif.register_forward_hook(capture_hook(base + 2)))
    images = 0
    try:
        for x in batches:
            model(x)
            images += x.shape[0]
            for name, m in attention_modules.items():
                q, k, v = (captured.pop(id(m) + i) for i in range(3))
                ops, bound = (_a2os2a_ops if isinstance(m, A2OS2A) else _ssa_ops)(m, q, k, v)
                r = row(f"{name}.qkv", "spike pairs")
                r["sops"] += ops
                r["sops_upper_bound"] = bound * steps
                r["ann_macs"] = int(bound)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if images == 0:
        raise ConfigError("count_stbp_operations needs at least one image")

    def position(r: dict) -> float:
        name = r["name"]
        if name.endswith(".qkv"):  # the products come just before the attention neuron
            return order[name[:-4] + ".attn_lif"] - 0.5
        return order[name]

    per_layer = [{"name": r["name"], "input": r["input"], "sops": r["sops"] / images,
                  "macs": r["macs"] / images, "ann_macs": r["ann_macs"],
                  "sops_upper_bound": r["sops_upper_bound"]}
                 for r in sorted(rows.values(), key=position)]
    neurons_out = [{"name": r["name"], "spikes": r["spikes"], "neurons": r["neurons"], "cap": r["cap"],
                    "mean_spikes": r["spike_total"] / r["count"],
                    "firing_rate": r["spike_total"] / (r["count"] * r["cap"]),
                    "adds": r["adds"] / images, "comparisons": r["comparisons"] / images,
                    "resets": r["resets"] / images, "spikes_per_image": r["spike_total"] / images}
                   for r in neurons.values()]
    return summarize(per_layer, neurons_out, images, preset,
                     max((r["max"] for r in neurons.values()), default=0), T=model.T, steps=steps)
