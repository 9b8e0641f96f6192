"""Exactness check: run a model in ANN mode and its converted spiking network on the same images.

Four independent kinds of evidence, all counted element by element:

- **codes**: the integer code each ANN quantizer chose against the code of the spike train its
  neuron emitted;
- **oracle** (`ge2mst.core.oracle`): every ExpG-IF neuron's code recomputed from its own whole-window
  membrane by a nearest-level rule over an independently enumerated level set, and the emitted
  spikes compared with the legal pattern of that code. It shares no code with the quantizer or
  the neuron, so a fault in the shared code book cannot hide from it. Big layers are sampled
  (``oracle_sample`` neurons per layer and batch, drawn from a seeded generator); ``None`` checks
  every neuron;
- **forms**: the same membranes fired again with the other firing form (binary search against
  sequential IF dynamics), which must emit the very same spikes;
- **logits**: max |SNN - ANN| relative to max |ANN| per image, against `EXACT_MAX_REL_DIFF` in
  float64 (bit identity in float32, where only the collapsed path against the BatchNorm-folded
  ANN is claimed exact).

`is_exact(report)` is the one verdict that the CLI, the quickstart and the training run share;
`exactness_failures(report)` says which checks failed. The report also counts spikes per neuron,
illegal ExpG patterns, spikes over the cap G, and how many whole-window membranes fell within
rounding distance of a decision boundary (where float arithmetic, not the method, could flip a code).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from .._checks import dtype_named, one_of, whole_number
from .._files import progress as progress_bar
from ..conversion.converter import ATTENTION_PRODUCTS, check_input, convert, fuse_batchnorm
from ..conversion.kinds import one_or_list
from ..core.neurons import ExpGIF, IFNeuron
from ..core.oracle import ExpGOracle
from ..core.quantizers import quantizers

#: relative distance to a boundary under which a membrane counts as "near" (per dtype)
NEAR_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-6}
REFERENCES = ("trained", "folded")
#: largest max |SNN - ANN| / max |ANN| (per image) a float64 run may show and still be exact;
#: an exact float64 run of the shipped models gives about 5e-16 (float rounding of the sums)
EXACT_MAX_REL_DIFF = 1e-12
#: neurons per layer and batch the oracle and the form cross-check look at by default
DEFAULT_ORACLE_SAMPLE = 65_536


@torch.no_grad()
def verify(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]], *,
           step_mode: str = "event", form: str = "search", dtype: str = "float64",
           encoding: str = "once", reference: str = "trained", attention_products: str = "codes",
           oracle_sample: int | None = DEFAULT_ORACLE_SAMPLE, seed: int = 0,
           progress: bool = False) -> dict:
    """Compare ``model`` (ANN mode) with ``convert(model)`` on ``batches`` of (images, labels).

    Args:
        model: a trained or calibrated network with quantizers (p = 1).
        batches: iterable of (images B x C x H x W, labels B or None), already normalised.
        step_mode: passed to `convert`, as ``form`` and ``encoding`` are.
        dtype: ``"float64"`` (default: both modes in double precision, the tight check) or
            ``"float32"``.
        reference: the ANN compared with: ``"trained"`` (as trained, BatchNorm separate) or
            ``"folded"`` (BatchNorm folded, the deployable ANN; with the collapsed step mode in
            float32 the two agree bit for bit).
        attention_products: passed to `convert`: ``"codes"`` or ``"spikes"`` (the event-level
            attention, both products formed from the spike trains).
        oracle_sample: neurons per layer and batch that the oracle and the form cross-check
            examine (a seeded random sample); ``None`` examines every neuron.
        seed: seed of that sample.

    Returns:
        a JSON-serialisable dict: images, T, groups, max_abs_diff, max_rel_diff (max over images of
        max|snn - ann| / max|ann|), prediction_agreement, code_mismatches, oracle_checked,
        oracle_mismatches, form_checked, form_mismatches, lambda_mismatches, max_spikes_per_neuron,
        mean_spikes_per_neuron, spikes_over_cap, illegal_patterns, near_boundary,
        min_boundary_margin, mismatched_layers, accuracies where labels are given, the settings,
        the tolerance of the verdict (``exact_tolerance``), ``exact`` (`is_exact`) and
        ``exactness_failures``.
    """
    _check_options(reference, attention_products, oracle_sample)
    tdtype = dtype_named(dtype)
    ann = copy.deepcopy(model).eval().to(tdtype)
    if reference == "folded":
        ann = fuse_batchnorm(ann, inplace=True)
    snn = convert(ann, form=form, step_mode=step_mode, encoding=encoding,
                  attention_products=attention_products).to(tdtype)
    stats = _Stats(tol=NEAR_TOLERANCE[tdtype], sample=oracle_sample, seed=seed)
    _compare_batches(ann, snn, progress_bar(batches, "verify", progress, unit="batch",
                                            disable=None), stats, tdtype)
    expg = [n for _, n in snn.neurons() if isinstance(n, ExpGIF)]
    report = {
        "T": snn.T,
        "groups": one_or_list(n.G for n in expg) if expg else [],
        **stats.result(),
        "neurons_per_image": stats.neurons_per_image,
        "neuron_types": sorted({type(n).__name__ for _, n in snn.neurons()}),
        "step_mode": step_mode,
        "form": form,
        "encoding": encoding,
        "attention_products": attention_products,
        "dtype": dtype,
        "reference": reference,
        "oracle_sample_per_layer": "all" if oracle_sample is None else oracle_sample,
        "exact_tolerance": _tolerance(tdtype),
    }
    report["exactness_failures"] = exactness_failures(report)
    report["exact"] = not report["exactness_failures"]
    return report


def _tolerance(dtype: torch.dtype) -> dict:
    """What the verdict tolerates: float64 rounding of the sums, nothing in float32."""
    return {"max_rel_diff": EXACT_MAX_REL_DIFF} if dtype == torch.float64 else {"max_abs_diff": 0.0}


def _check_options(reference: str, attention_products: str, oracle_sample: int | None) -> None:
    one_of("reference", reference, REFERENCES)
    one_of("attention_products", attention_products, ATTENTION_PRODUCTS)
    if oracle_sample is not None:
        whole_number("oracle_sample (or None)", oracle_sample)


def _compare_batches(ann: nn.Module, snn: nn.Module, batches: Iterable, stats: _Stats,
                     dtype: torch.dtype) -> None:
    """Run both networks on every batch, recording the quantizer codes and the spikes, and let
    ``stats`` compare them; recording is switched off again whatever happens."""
    quants = dict(quantizers(ann))
    for q in quants.values():
        q.record = True
    try:
        for images, labels in batches:
            x = images.to(dtype)
            check_input(x, snn.input_spec)
            for q in quants.values():
                q.last_codes = None
            stats.update_logits(ann(x), snn(x, record=True), labels)
            for name, neuron in snn.neurons():
                stats.update_neuron(name, neuron, quants.get(name))
            stats.end_batch(x.shape[0])
    finally:
        for q in quants.values():
            q.record, q.last_codes = False, None
        snn.set_recording(False)


def exactness_failures(report: dict) -> list[str]:
    """Why a `verify` report is not exact, one line per failed check (empty: exact)."""
    def num(key):
        value = report.get(key)
        if value is None:
            failures.append(f"the report has no {key!r}")
        return value

    failures: list[str] = []
    if not report.get("images"):
        failures.append("no image was checked")
    if "IFNeuron" in report.get("neuron_types", ()):
        failures.append("vanilla IF neurons (QCFS) are not exact by design")
    for key, what in (("code_mismatches", "neuron codes differ between the ANN and the SNN"),
                      ("oracle_mismatches", "emitted spike patterns differ from the oracle's"),
                      ("form_mismatches", "neurons fire differently in the two firing forms"),
                      ("lambda_mismatches", "converted neurons carry another lambda than their "
                                            "quantizer"),
                      ("illegal_patterns", "spike patterns have two spikes in one group"),
                      ("spikes_over_cap", "neurons fired more than G spikes")):
        value = num(key)
        if value:
            failures.append(f"{value} {what} ({key})")
    if num("oracle_checked") == 0:
        failures.append("the oracle checked no ExpG-IF neuron")
    agreement = num("prediction_agreement")
    if agreement is not None and agreement != 1.0:
        failures.append(f"prediction agreement {agreement} < 1")
    tolerance = report.get("exact_tolerance") or {}
    if not tolerance:
        failures.append("the report has no 'exact_tolerance'")
    for key, limit in tolerance.items():
        value = num(key)
        if value is not None and not value <= limit:  # NaN fails too
            failures.append(f"{key} {value:.3g} > {limit:g}")
    return failures


def is_exact(report: dict) -> bool:
    """The one exactness verdict of a `verify` report: every check of `exactness_failures` passes."""
    return not exactness_failures(report)


class _Stats:
    """Running totals of a verification."""

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
            lam = float(quantizer.lam) if quantizer is not None else float(neuron.lam)
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
        out = {
            "images": self.images,
            "max_abs_diff": self.max_abs,
            "max_rel_diff": self.max_rel,
            "prediction_agreement": self.agree / self.images if self.images else None,
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
        if self.labelled:
            out["ann_accuracy"] = self.ann_correct / self.labelled
            out["snn_accuracy"] = self.snn_correct / self.labelled
        return out
