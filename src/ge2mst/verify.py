"""Exactness check: run a model in ANN mode and its converted spiking network on the same images.

Beyond the logits, every neuron's integer code is compared element by element: the code the ANN's
quantizer chose against the code of the spike train the SNN emitted. The report also counts spikes
per neuron, illegal ExpG patterns, and how many whole-window membranes fell within rounding
distance of a decision boundary (where float arithmetic, not the method, could flip a code).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from .convert import check_input, convert, fuse_batchnorm
from .errors import ConfigError
from .neurons import ExpGIF, IFNeuron
from .quant import quantizers

#: relative distance to a boundary under which a membrane counts as "near" (per dtype)
NEAR_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-6}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
REFERENCES = ("trained", "folded")


@torch.no_grad()
def verify(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]], *,
           step_mode: str = "event", form: str = "search", dtype: str = "float64",
           encoding: str = "once", reference: str = "trained", progress: bool = False) -> dict:
    """Compare ``model`` (ANN mode) with ``convert(model)`` on ``batches`` of (images, labels).

    Args:
        model: a trained or calibrated network with quantizers (p = 1).
        batches: iterable of (images B x C x H x W, labels B or None), already normalised.
        step_mode, form, encoding: passed to `convert`.
        dtype: ``"float64"`` (default: both modes in double precision, the tight check) or
            ``"float32"``.
        reference: the ANN compared with: ``"trained"`` (as trained, BatchNorm separate) or
            ``"folded"`` (BatchNorm folded, the deployable ANN; with the collapsed step mode in
            float32 the two agree bit for bit).

    Returns:
        a JSON-serialisable dict: images, T, groups, max_abs_diff, max_rel_diff (max over images of
        max|snn - ann| / max|ann|), prediction_agreement, code_mismatches, max_spikes_per_neuron,
        mean_spikes_per_neuron, illegal_patterns, near_boundary, min_boundary_margin, neurons,
        accuracies where labels are given, and the settings.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if reference not in REFERENCES:
        raise ConfigError(f"reference must be one of {REFERENCES}, got {reference!r}")
    tdtype = DTYPES[dtype]
    ann = copy.deepcopy(model).eval().to(tdtype)
    if reference == "folded":
        ann = fuse_batchnorm(ann, inplace=True)
    snn = convert(ann, form=form, step_mode=step_mode, encoding=encoding).to(tdtype)
    quants = dict(quantizers(ann))
    for q in quants.values():
        q.record = True
    stats = _Stats(tol=NEAR_TOLERANCE[tdtype])
    input_spec = snn.input_spec
    it = batches
    if progress:
        it = _progress(batches, "verify")
    try:
        for images, labels in it:
            x = images.to(tdtype)
            check_input(x, input_spec)
            for q in quants.values():
                q.last_codes = None
            a = ann(x)
            s = snn(x, record=True)
            stats.update_logits(a, s, labels)
            for name, neuron in snn.neurons():
                q = quants.get(name)
                stats.update_neuron(name, neuron, q.last_codes if q is not None else None)
            stats.end_batch(x.shape[0])
    finally:
        for q in quants.values():
            q.record, q.last_codes = False, None
        snn.set_recording(False)
    expg = [n for _, n in snn.neurons() if isinstance(n, ExpGIF)]
    groups = sorted({n.G for n in expg})
    report = {
        "T": snn.T,
        "groups": groups[0] if len(groups) == 1 else groups,
        **stats.result(),
        "neurons_per_image": stats.neurons_per_image,
        "neuron_types": sorted({type(n).__name__ for _, n in snn.neurons()}),
        "step_mode": step_mode,
        "form": form,
        "encoding": encoding,
        "dtype": dtype,
        "reference": reference,
    }
    return report


def _progress(iterable, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable
    return tqdm(iterable, desc=desc, unit="batch", leave=False, disable=None)


class _Stats:
    """Running totals of a verification."""

    def __init__(self, tol: float) -> None:
        self.tol = tol
        self.images = 0
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.agree = 0
        self.ann_correct = 0
        self.snn_correct = 0
        self.labelled = 0
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
        diff = (s.to(torch.float64) - a.to(torch.float64)).abs().flatten(1)
        scale = a.to(torch.float64).abs().flatten(1).amax(1).clamp_min(1e-30)
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.max_rel = max(self.max_rel, float((diff.amax(1) / scale).max()))
        pa, ps = a.argmax(1), s.argmax(1)
        self.agree += int((pa == ps).sum())
        self.images += a.shape[0]
        if labels is not None:
            labels = labels.to(pa.device)
            self.labelled += labels.numel()
            self.ann_correct += int((pa == labels).sum())
            self.snn_correct += int((ps == labels).sum())

    def end_batch(self, batch_size: int) -> None:
        self.neurons_per_image = self._batch_neurons // batch_size
        self._batch_neurons = 0

    def update_neuron(self, name: str, neuron: nn.Module, ann_codes: torch.Tensor | None) -> None:
        spikes = neuron.last_spikes
        if spikes is None:
            return
        count = spikes.abs().to(torch.int32).sum(0)
        self.max_spikes = max(self.max_spikes, int(count.max()))
        self.spike_total += int(count.sum())
        self.neuron_total += count.numel()
        self._batch_neurons += count.numel()
        if isinstance(neuron, ExpGIF):
            self.illegal += int(neuron.book.illegal_mask(spikes).sum())
            codes = neuron.book.code_of(spikes)
            if ann_codes is not None:
                self.code_mismatches += int((codes != ann_codes.to(codes.device)).sum())
                self.codes_compared += codes.numel()
            self._boundary_margin(neuron)
        elif isinstance(neuron, IFNeuron) and ann_codes is not None:
            self.code_mismatches += int((count.to(torch.int64) != ann_codes.abs()).sum())
            self.codes_compared += count.numel()

    def _boundary_margin(self, neuron: ExpGIF) -> None:
        v = neuron.last_membrane
        if v is None:
            return
        mag = v.abs() if neuron.signed else v
        bounds = (neuron.delta64 * neuron.book.mids).to(v.device)
        idx = torch.searchsorted(bounds, mag.contiguous())
        lo = bounds[(idx - 1).clamp_min(0)]
        hi = bounds[idx.clamp_max(bounds.numel() - 1)]
        dist = torch.minimum((mag - lo).abs(), (hi - mag).abs())
        rel = dist / torch.maximum(mag.abs(), neuron.delta64.to(v.device))
        self.near += int((rel <= self.tol).sum())
        self.min_margin = min(self.min_margin, float(rel.min()))

    def result(self) -> dict:
        out = {
            "images": self.images,
            "max_abs_diff": self.max_abs,
            "max_rel_diff": self.max_rel,
            "prediction_agreement": self.agree / self.images if self.images else None,
            "code_mismatches": self.code_mismatches,
            "codes_compared": self.codes_compared,
            "max_spikes_per_neuron": self.max_spikes,
            "mean_spikes_per_neuron": self.spike_total / self.neuron_total if self.neuron_total else 0.0,
            "illegal_patterns": self.illegal,
            "near_boundary": self.near,
            "near_boundary_tolerance": self.tol,
            "min_boundary_margin": self.min_margin if self.min_margin != float("inf") else None,
        }
        if self.labelled:
            out["ann_accuracy"] = self.ann_correct / self.labelled
            out["snn_accuracy"] = self.snn_correct / self.labelled
        return out
