"""The evidence `ge2mst.analysis.verify` gathers neuron by neuron from a recorded spiking run.

For each ExpG-IF neuron of a recorded call: its code (read from the spikes it emitted) against the
code its ANN quantizer chose; its spikes against the independent oracle
(`ge2mst.core.oracle.ExpGOracle`) for its whole-window membrane; the same membrane fired again
with the other firing form; illegal patterns, spikes over the cap G, lambda against the
quantizer's, and how close each membrane came to a decision boundary. The logits of the recorded
call are compared with the ANN's (`ge2mst.analysis.references.Agreement`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.neurons import ExpGIF, IFNeuron
from ..core.oracle import ExpGOracle
from .references import Agreement


class NeuronEvidence:
    """Running totals of a verification: the logits of the recorded run against the ANN's, and
    every recorded neuron's codes, spikes and membrane against the quantizer's codes, the oracle,
    the other firing form and the decision boundaries."""

    def __init__(self, tol: float, sample: int | None = None, seed: int = 0) -> None:
        self.tol = tol
        self.sample = sample
        self.generator = torch.Generator().manual_seed(seed)
        self.oracles: dict[str, ExpGOracle] = {}
        self.oracle_checked = 0
        self.oracle_mismatches = 0
        self.form_checked = 0
        self.form_mismatches = 0
        self.lambda_mismatches = 0
        self.over_cap = 0
        self.layer_mismatches: dict[str, dict[str, int]] = {}
        self.logits = Agreement()
        self.code_mismatches = 0
        self.codes_compared = 0
        self.max_spikes = 0
        self.spike_total = 0
        self.neuron_total = 0
        self.illegal = 0
        self.near = 0
        self.min_margin = float("inf")
        self.neurons_per_image = 0
        self._batch_neurons = 0

    def update_logits(self, a: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.logits.update(a, s, labels)

    def end_batch(self, batch_size: int) -> None:
        self.neurons_per_image = self._batch_neurons // batch_size
        self._batch_neurons = 0

    def _flag(self, name: str, kind: str, count: int) -> None:
        if count:
            layer = self.layer_mismatches.setdefault(name, {})
            layer[kind] = layer.get(kind, 0) + count

    def update_neuron(self, name: str, neuron: nn.Module, quantizer: nn.Module | None) -> None:
        spikes = neuron.last_spikes
        if spikes is None:
            return
        ann_codes = quantizer.last_codes if quantizer is not None else None
        count = spikes.abs().to(torch.int32).sum(0)
        self.max_spikes = max(self.max_spikes, int(count.max()))
        self.spike_total += int(count.sum())
        self.neuron_total += count.numel()
        self._batch_neurons += count.numel()
        if isinstance(neuron, ExpGIF):
            self.illegal += int(neuron.book.illegal_mask(spikes).sum())
            self.over_cap += int((count > neuron.G).sum())
            codes = neuron.book.code_of(spikes)
            if ann_codes is not None:
                wrong = int((codes != ann_codes.to(codes.device)).sum())
                self.code_mismatches += wrong
                self.codes_compared += codes.numel()
                self._flag(name, "code", wrong)
            self._oracle(name, neuron, quantizer)
            self._boundary_margin(neuron)
        elif isinstance(neuron, IFNeuron) and ann_codes is not None:
            self.code_mismatches += int((count.to(torch.int64) != ann_codes.abs()).sum())
            self.codes_compared += count.numel()

    def _oracle(self, name: str, neuron: ExpGIF, quantizer: nn.Module | None) -> None:
        """The independent oracle and the form cross-check on (a sample of) this layer's neurons."""
        membrane, spikes = neuron.last_membrane, neuron.last_spikes
        if membrane is None:
            return
        oracle = self.oracles.get(name)
        if oracle is None:
            # the oracle's lambda is the trained quantizer's: a neuron converted with another one
            # is wrong even where its codes happen to agree
            lam = float(quantizer.lam.detach()) if quantizer is not None else float(neuron.lam)
            if quantizer is not None and float(neuron.lam) != lam:
                self.lambda_mismatches += 1
                self._flag(name, "lambda", 1)
            oracle = self.oracles[name] = ExpGOracle(neuron.T, neuron.G, lam, neuron.signed)
        v = membrane.reshape(-1)
        s = spikes.reshape(spikes.shape[0], -1)
        if self.sample is not None and v.numel() > self.sample:
            pick = torch.randperm(v.numel(), generator=self.generator)[:self.sample].to(v.device)
            v, s = v[pick], s[:, pick]
        checked, wrong = oracle.check(v, s)
        self.oracle_checked += checked
        self.oracle_mismatches += wrong
        self._flag(name, "oracle", wrong)
        other = "sequential" if neuron.form == "search" else "search"
        again = neuron.fire(v, form=other).to(torch.int8)
        wrong = int((again != s.to(torch.int8)).any(0).sum())
        self.form_checked += v.numel()
        self.form_mismatches += wrong
        self._flag(name, "form", wrong)

    def _boundary_margin(self, neuron: ExpGIF) -> None:
        v = neuron.last_membrane
        if v is None:
            return
        mag = v.abs() if neuron.signed else v
        bounds = neuron.delta64.to(v.device) * neuron.book.on("mids", v.device)
        idx = torch.searchsorted(bounds, mag.contiguous())
        lo = bounds[(idx - 1).clamp_min(0)]
        hi = bounds[idx.clamp_max(bounds.numel() - 1)]
        dist = torch.minimum((mag - lo).abs(), (hi - mag).abs())
        rel = dist / torch.maximum(mag.abs(), neuron.delta64.to(v.device))
        self.near += int((rel <= self.tol).sum())
        self.min_margin = min(self.min_margin, float(rel.min()))

    def result(self) -> dict:
        logits = self.logits
        out = {
            "images": logits.images,
            **logits.result(),
            "code_mismatches": self.code_mismatches,
            "codes_compared": self.codes_compared,
            "oracle_checked": self.oracle_checked,
            "oracle_mismatches": self.oracle_mismatches,
            "form_checked": self.form_checked,
            "form_mismatches": self.form_mismatches,
            "lambda_mismatches": self.lambda_mismatches,
            "max_spikes_per_neuron": self.max_spikes,
            "mean_spikes_per_neuron": self.spike_total / self.neuron_total if self.neuron_total else 0.0,
            "spikes_over_cap": self.over_cap,
            "illegal_patterns": self.illegal,
            "near_boundary": self.near,
            "near_boundary_tolerance": self.tol,
            "min_boundary_margin": self.min_margin if self.min_margin != float("inf") else None,
            # at most 20 layers, worst first: where to look when something differs
            "mismatched_layers": dict(sorted(self.layer_mismatches.items(),
                                             key=lambda kv: -sum(kv[1].values()))[:20]),
        }
        if logits.labelled:
            out["ann_accuracy"] = logits.reference_correct / logits.labelled
            out["snn_accuracy"] = logits.candidate_correct / logits.labelled
        return out
