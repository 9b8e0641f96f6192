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
from functools import partial

import torch
from torch import nn

from ..baselines.attention import A2OS2A, GroupedProjection, SpikingSelfAttention, window_attention
from ..baselines.lif import LIF
from ..errors import ConfigError
from ..models.spikformer import Spikformer
from .energy import EVENT_CLASSES, CountRows, classify_input, dense_macs, event_sops, widen

__all__ = ["StbpCounter", "allowed_pairs", "count_stbp_operations"]


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


def _reached(layer: nn.Module | None, fanout: int | None, counts: torch.Tensor) -> float:
    """Accumulates of ``counts`` events per input position (B x ...), all samples: `event_sops`
    of ``layer``, or ``fanout`` synapses per event for a `GroupedProjection` (``layer`` None)."""
    return float(counts.sum() * fanout) if layer is None else float(event_sops(layer, counts).sum())


class StbpCounter(CountRows):
    """Counts operations while a Spikformer baseline runs: call it like the model.

    Puts ``model`` in eval mode and hooks its weight layers (`_weight`), LIF neurons (`_neuron`)
    and the Q, K, V of its attention modules (`_capture`); ``counter(images)`` runs the model once,
    counts the attention products of that call and returns the output. The counts of every call
    add up; `report` gives them per image. `close` (or the end of a ``with`` block) removes the
    hooks and restores the model's training mode. `count_stbp_operations` is the one-shot form.
    """

    counted_by = "count_stbp_operations"

    def __init__(self, model: Spikformer, preset: str = "45nm-fp32") -> None:
        super().__init__(preset)
        if not isinstance(model, Spikformer):
            raise ConfigError("count_stbp_operations counts Spikformer baselines, got "
                              f"{type(model).__name__}")
        self.model = self.network = model
        self.was_training = model.training
        model.eval()
        self.steps = model.steps
        self.captured: dict[tuple[str, int], torch.Tensor] = {}
        self.attention: dict[str, nn.Module] = {}
        self.handles = []
        for name, m in model.named_modules():
            self._hook(name, m)

    def _hook(self, name: str, m: nn.Module) -> None:
        """Hook module ``name`` where it is a weight layer, a LIF neuron or an attention module."""
        if isinstance(m, (nn.Conv2d, nn.Linear, GroupedProjection)):
            self.handles.append(m.register_forward_hook(partial(self._weight, name)))
        elif isinstance(m, LIF):
            self.handles.append(m.register_forward_hook(partial(self._neuron, name)))
        if isinstance(m, (SpikingSelfAttention, A2OS2A)):
            self.attention[name] = m
            k = (m.k_proj, True) if isinstance(m, A2OS2A) else (m.k_lif, False)  # A2OS2A: ReLU keys
            for i, (source, relu) in enumerate([(m.q_lif, False), k, (m.v_lif, False)]):
                self.handles.append(source.register_forward_hook(partial(self._capture, (name, i), relu)))

    def _capture(self, key: tuple[str, int], relu: bool, module, args, output) -> None:
        self.captured[key] = torch.relu(output) if relu else output

    def _weight(self, name: str, module: nn.Module, args, output) -> None:
        """Forward hook of weight layer ``name``: its operations in this call, step by step."""
        x = args[0]
        if name == "head":  # B x D, once
            r = self.row(name, "real")
            r["macs"] += dense_macs(module, output.shape[1:]) * x.shape[0]
            r["ann_macs"] = dense_macs(module, output.shape[1:])
            return
        layer, fanout = _layer_of(module)
        if isinstance(module, nn.Conv2d):  # (steps B) x C x H x W
            x = x.unflatten(0, (self.steps, -1))
            per_sample = dense_macs(module, output.shape[1:])
        else:  # per token, times the tokens
            tokens = x[0, 0].numel() // x.shape[-1]
            per_sample = tokens * (dense_macs(module, output.shape[2:]) if layer is not None
                                   else module.dim * module.dim // module.groups)
        r = self.row(name, "silent")
        r["ann_macs"] = per_sample
        for t in range(x.shape[0]):
            if t == 0 or not torch.equal(x[t], x[0]):  # a repeat of step 0 is computed once
                _charge(r, x[t], layer, fanout, per_sample)
        full = torch.ones_like(x[0][:1], dtype=torch.float64) * self.steps
        r["sops_upper_bound"] = _reached(layer, fanout, full)
        if r["input"] not in ("silent", *EVENT_CLASSES):
            r["sops_upper_bound"] = 0.0  # charged as MACs

    def _neuron(self, name: str, module: LIF, args, output) -> None:
        """Forward hook of LIF neuron ``name``: its spikes and updates in this call."""
        count = output.abs().to(torch.int64).sum(0)
        n = count.numel() // count.shape[0] if count.dim() else 1
        total, steps = int(count.sum()), output.numel()  # steps: neuron updates
        updates = {"adds": steps, "comparisons": steps * (2 if module.ternary else 1), "resets": total}
        kind = ("ternary" if module.ternary else "binary", n, output.shape[0])
        r = self.add_spikes(name, kind, total, count.numel(), updates, max=0)
        r["max"] = max(r["max"], int(count.max()) if count.numel() else 0)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor):
        out = self.model(x)
        self.images += x.shape[0]
        for name, m in self.attention.items():
            q, k, v = (self.captured.pop((name, i)) for i in range(3))
            ops, bound = (_a2os2a_ops if isinstance(m, A2OS2A) else _ssa_ops)(m, q, k, v)
            r = self.row(f"{name}.qkv", "spike pairs")
            r["sops"] += ops
            r["sops_upper_bound"] = bound * self.steps
            r["ann_macs"] = int(bound)
        return out

    def product_before(self, name: str, order: dict[str, int]) -> str:
        """Attention product ``<attention>.qkv`` is listed just before ``<attention>.attn_lif``."""
        return name.removesuffix(".qkv") + ".attn_lif"

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.model.train(self.was_training)

    def report(self) -> dict:
        """Totals per image and rows: see `count_stbp_operations`."""
        return super().report(T=self.model.T, steps=self.steps)


def _charge(r: dict, xt: torch.Tensor, layer: nn.Module | None, fanout: int | None,
            per_sample: int) -> None:
    """Charge one step's input ``xt`` (B x ...) to row ``r``: spikes one accumulate per synapse
    they reach, any other nonzero input the dense ``per_sample`` MACs per sample."""
    kind = classify_input(xt.unsqueeze(0))
    widen(r, kind)
    if kind in EVENT_CLASSES:
        r["sops"] += _reached(layer, fanout, (xt != 0).to(torch.float64))
    elif kind != "silent":
        r["macs"] += per_sample * xt.shape[0]


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
    with StbpCounter(model, preset) as counter:
        for x in batches:
            counter(x)
    return counter.report()
