"""Exactness check: run a model in ANN mode and its converted spiking network on the same images.

The evidence, all counted element by element (`ge2mst.analysis.evidence` for the neurons,
`ge2mst.analysis.references` for the references beyond the recorded run):

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
  ANN is claimed exact);
- **the trained function** (float64 runs): the network through the float computation its weights
  were trained through (float attention products, BatchNorm on running statistics, p = 1), whose
  codes and logits the eval-mode ANN must reproduce. Code that the eval-mode ANN and the spiking
  network share (the integer-code attention) cannot hide a fault from it;
- **the unrecorded run**: the spiking network once more as users run it, recording nothing (some
  neurons then take other code paths), its logits against the ANN's;
- **the float32 path** (``float32_path=True``, what ``verify --strict`` adds): the BatchNorm-folded
  float32 ANN against the collapsed float32 spiking network bit for bit, and every output of the
  float32 quantizer kernel in both against the oracle;
- **settings**: the firing form, step mode, encoding and attention products are read from the
  converted network (the attention's from what its last call ran) and must be those asked.

`is_exact(report)` is the one verdict that the CLI, the quickstart and the training run share;
`exactness_failures(report)` says which checks failed; ``report["checks"]`` says in words what was
compared with what. The report also counts spikes per neuron, illegal ExpG patterns, spikes over
the cap G, and how many whole-window membranes fell within rounding distance of a decision
boundary (where float arithmetic, not the method, could flip a code).
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
from ..core.neurons import ExpGIF
from ..core.quantizers import quantizers
from .evidence import NeuronEvidence
from .references import Agreement, Float32Path, TrainedFunction, settings_mismatches, settings_of

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
           progress: bool = False, trained_function: bool = True, unrecorded: bool = True,
           float32_path: bool = False) -> dict:
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
        trained_function: also run the trained function (`TrainedFunction`: the float
            computation of training at p = 1, float64) and hold the eval-mode ANN's codes and
            logits against it (float64 runs only: in float32 the two differ by rounding).
        unrecorded: also run the spiking network as users run it, recording nothing, and hold its
            logits against the ANN's.
        float32_path: also run the float32 path (`Float32Path`: folded ANN against the collapsed
            spiking network bit for bit, every float32 kernel output against the oracle); what
            ``ge2mst verify --strict`` adds.

    Returns:
        a JSON-serialisable dict: images, T, groups, max_abs_diff, max_rel_diff (max over images of
        max|snn - ann| / max|ann|), prediction_agreement, code_mismatches, oracle_checked,
        oracle_mismatches, form_checked, form_mismatches, lambda_mismatches, max_spikes_per_neuron,
        mean_spikes_per_neuron, spikes_over_cap, illegal_patterns, near_boundary,
        min_boundary_margin, mismatched_layers, accuracies where labels are given; the trained_*,
        unrecorded_* and float32_* comparisons that ran; the settings read from the converted
        network and ``settings_mismatches`` against those asked; ``checks`` (what was compared
        with what); the tolerance of the verdict (``exact_tolerance``), ``exact`` (`is_exact`) and
        ``exactness_failures``.
    """
    _check_options(reference, attention_products, oracle_sample)
    tdtype = dtype_named(dtype)
    ann = copy.deepcopy(model).eval().to(tdtype)
    if reference == "folded":
        ann = fuse_batchnorm(ann, inplace=True)
    asked = {"form": form, "step_mode": step_mode, "encoding": encoding,
             "attention_products": attention_products}
    snn = convert(ann, **asked).to(tdtype)
    evidence = NeuronEvidence(tol=NEAR_TOLERANCE[tdtype], sample=oracle_sample, seed=seed)
    run = _Run(ann, snn, evidence, trained=TrainedFunction(model) if trained_function
               and tdtype == torch.float64 else None, unrecorded=Agreement() if unrecorded else None,
               float32=Float32Path(model) if float32_path else None)
    run.trained_asked = trained_function
    run.compare_all(progress_bar(batches, "verify", progress, unit="batch", disable=None), tdtype)
    report = run.report(asked, dtype, reference, oracle_sample)
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


class _Run:
    """One verification: the ANN, the spiking network and the references that run beside them."""

    def __init__(self, ann: nn.Module, snn: nn.Module, stats: NeuronEvidence, trained, unrecorded,
                 float32) -> None:
        self.ann, self.snn, self.stats = ann, snn, stats
        self.trained, self.unrecorded, self.float32 = trained, unrecorded, float32
        self.dtype_seen: str | None = None
        self.trained_asked = trained is not None

    def compare_all(self, batches: Iterable, dtype: torch.dtype) -> None:
        """Run every network on every batch, recording the quantizer codes and the spikes, and
        compare; recording (and the float32 path's hooks) end whatever happens."""
        quants = dict(quantizers(self.ann))
        for q in quants.values():
            q.record = True
        try:
            for images, labels in batches:
                x = images.to(dtype)
                check_input(x, self.snn.input_spec)
                for q in quants.values():
                    q.last_codes = None
                a, s = self.ann(x), self.snn(x, record=True)
                self.dtype_seen = str(s.dtype).removeprefix("torch.")
                self.stats.update_logits(a, s, labels)
                for name, neuron in self.snn.neurons():
                    self.stats.update_neuron(name, neuron, quants.get(name))
                self.stats.end_batch(x.shape[0])
                self.snn.set_recording(False)
                if self.trained is not None:
                    self.trained.compare(images, a, quants, labels)
                if self.unrecorded is not None:  # the path users run: snn(x), nothing recorded
                    self.unrecorded.update(a, self.snn(x), labels)
                if self.float32 is not None:
                    self.float32.compare(images, labels)
        finally:
            for q in quants.values():
                q.record, q.last_codes = False, None
            self.snn.set_recording(False)
            if self.float32 is not None:
                self.float32.close()

    def result(self) -> dict:
        out = self.stats.result()
        if self.trained is not None:
            out.update(self.trained.result())
        if self.unrecorded is not None:
            out.update(self.unrecorded.result("unrecorded_"))
        if self.float32 is not None:
            out.update(self.float32.result())
        return out

    def report(self, asked: dict, dtype: str, reference: str, sample: int | None) -> dict:
        """The report of this run, before the verdict: results, settings read back, checks."""
        ran = settings_of(self.snn)
        expg = [n for _, n in self.snn.neurons() if isinstance(n, ExpGIF)]
        return {
            "T": self.snn.T,
            "groups": one_or_list(n.G for n in expg) if expg else [],
            **self.result(),
            "neurons_per_image": self.stats.neurons_per_image,
            "neuron_types": sorted({type(n).__name__ for _, n in self.snn.neurons()}),
            **ran,
            "dtype": self.dtype_seen or dtype,
            "reference": reference,
            "settings_mismatches": settings_mismatches({**asked, "dtype": dtype},
                                                       {**ran, "dtype": self.dtype_seen}),
            "oracle_sample_per_layer": "all" if sample is None else sample,
            "checks": self.checks(reference, dtype, sample),
            "exact_tolerance": self.tolerance(dtype_named(dtype)),
        }

    def tolerance(self, dtype: torch.dtype) -> dict:
        """The limits of the verdict: each comparison that ran, at its dtype's tolerance."""
        main = _tolerance(dtype)
        out = dict(main)
        if self.trained is not None:
            out["trained_max_rel_diff"] = EXACT_MAX_REL_DIFF
        if self.unrecorded is not None:
            out.update({f"unrecorded_{k}": v for k, v in main.items()})
        if self.float32 is not None:
            out["float32_max_abs_diff"] = 0.0
        return out

    def checks(self, reference: str, dtype: str, sample: int | None) -> dict:
        """What this run compared with what: the references and the paths, in words."""
        bn = "BatchNorm folded" if reference == "folded" else "BatchNorm on running statistics"
        neurons = "every neuron" if sample is None else f"a sample of {sample} neurons per layer"
        out = {
            "ann": f"eval-mode ANN ({bn}, attention on integer codes), {dtype}",
            "snn": f"spiking network ({self.snn.step_mode} steps), recording its spike trains: "
                   "codes and logits against the ANN",
            "oracle": f"independent nearest-level rule and spike pattern, {neurons} per batch",
            "forms": f"the other firing form on the same membranes, {neurons} per batch",
            "trained_function": TrainedFunction.description if self.trained is not None else
            ("not run: float64 runs only (a float32 ANN differs from it by rounding)"
             if self.trained_asked else "not run"),
            "unrecorded": ("the spiking network as users run it, recording nothing: logits "
                           "against the ANN") if self.unrecorded is not None else "not run",
            "float32": Float32Path.description if self.float32 is not None else
            "not run (ge2mst verify --strict runs it)",
        }
        return out


#: counters that must be 0, with what a non-zero value means; the first six are always reported,
#: the others where their comparison ran
COUNTERS = (("code_mismatches", "neuron codes differ between the ANN and the SNN"),
            ("oracle_mismatches", "emitted spike patterns differ from the oracle's"),
            ("form_mismatches", "neurons fire differently in the two firing forms"),
            ("lambda_mismatches", "converted neurons carry another lambda than their quantizer"),
            ("illegal_patterns", "spike patterns have two spikes in one group"),
            ("spikes_over_cap", "neurons fired more than G spikes"),
            ("trained_code_mismatches", "quantizer codes of the eval-mode ANN differ from those of "
                                        "the trained function"),
            ("float32_kernel_mismatches", "float32 quantizer or neuron outputs differ from the "
                                          "oracle's"))
ALWAYS = 6
#: prediction agreements that must be 1 where their comparison ran
AGREEMENTS = (("prediction_agreement", "SNN against ANN"),
              ("trained_prediction_agreement", "ANN against the trained function"),
              ("unrecorded_prediction_agreement", "unrecorded SNN against ANN"),
              ("float32_prediction_agreement", "float32 collapsed SNN against the folded ANN"))


def exactness_failures(report: dict) -> list[str]:
    """Why a `verify` report is not exact, one line per failed check (empty: exact)."""
    failures: list[str] = []

    def num(key, required=True):
        value = report.get(key)
        if value is None and required:
            failures.append(f"the report has no {key!r}")
        return value

    if not report.get("images"):
        failures.append("no image was checked")
    if "IFNeuron" in report.get("neuron_types", ()):
        failures.append("vanilla IF neurons (QCFS) are not exact by design")
    for i, (key, what) in enumerate(COUNTERS):
        if value := num(key, required=i < ALWAYS):
            failures.append(f"{value} {what} ({key})")
    if num("oracle_checked") == 0:
        failures.append("the oracle checked no ExpG-IF neuron")
    if report.get("float32_kernel_checked", 1) == 0:
        failures.append("the float32 path checked no quantizer output")
    for i, (key, what) in enumerate(AGREEMENTS):
        agreement = num(key, required=i == 0)
        if agreement is not None and agreement != 1.0:
            failures.append(f"prediction agreement {agreement} < 1 ({what}: {key})")
    failures += [f"settings: {line}" for line in report.get("settings_mismatches") or ()]
    return failures + _tolerance_failures(report, num)


def _tolerance_failures(report: dict, num) -> list[str]:
    tolerance = report.get("exact_tolerance") or {}
    out = [] if tolerance else ["the report has no 'exact_tolerance'"]
    for key, limit in tolerance.items():
        value = num(key)
        if value is not None and not value <= limit:  # NaN fails too
            out.append(f"{key} {value:.3g} > {limit:g}")
    return out


def is_exact(report: dict) -> bool:
    """The one exactness verdict of a `verify` report: every check of `exactness_failures` passes."""
    return not exactness_failures(report)
