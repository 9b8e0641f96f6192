"""Accuracy, throughput and energy of a trained network and of its spiking network.

``evaluate(model, batches, mode="both")`` runs the trained network (ANN mode) and/or its
converted spiking network (event mode) on labelled batches and reports top-1 / top-5 accuracy,
images per second, and for the spiking network the operations and energy per image counted by
`ge2mst.analysis.energy.count_operations` from the spikes it emits. With ``mode="both"`` it also reports
how often the two predict the same class and the largest |SNN - ANN| logit difference.

What the spiking network is depends on how the model was trained (`method_of`):

- ``expg``: ExpG quantizers convert to ExpG-IF neurons; the spiking network equals the ANN.
- ``qcfs``: QCFS quantizers convert to vanilla IF neurons; close to the ANN, not exact.
- ``stbp``: a network trained through time (`ge2mst.baselines`) *is* its spiking network: there
  is no ANN form and nothing to convert; its energy comes from
  `ge2mst.analysis.energy_stbp.count_stbp_operations`.

A spiking network loaded with `ge2mst.io.spiking.load_spiking` is evaluated as it is (``snn`` mode).

``tta="flip"`` classifies each image from two views, itself and its mirror image, by the sum of
the two views' logits, in both modes: the spiking network runs once per view, so its energy per
classification is twice the energy per view (both are reported). The headline figures of this
project are one view.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from .._checks import dtype_named
from .._files import progress as progress_bar
from ..conversion.converter import SpikingNetwork, _input_spec, check_input, convert, fuse_batchnorm
from ..conversion.kinds import default_encoding, method_of, one_or_list, time_groups
from ..core.quantizers import quantizers
from ..errors import ConfigError, DataError, InputError
from .energy import OperationCounter, count_operations
from .energy_stbp import count_stbp_operations

MODES = ("ann", "snn", "both")
#: test-time augmentations and the number of views each image is classified from (`views`)
TTAS = {"none": 1, "flip": 2}
#: what a float32 evaluation of an ExpG model compares, by step mode
FLOAT32_NOTE = {
    "collapsed": "float32: the ANN is the BatchNorm-folded ANN, which the collapsed spiking "
                 "network equals bit for bit",
    "event": "float32: the ANN is the BatchNorm-folded ANN; the event-mode spiking network sums "
             "each time step in float32, so a membrane within rounding of a boundary can take the "
             "neighbouring code and the logits can differ: --step-mode collapsed (bit for bit) "
             "or --dtype float64 (the default, exact) for the exact comparison",
}

#: the energy keys of `count_operations` kept in an evaluation report
ENERGY_KEYS = ("preset", "pj_per_accumulate", "pj_per_mac", "sops", "macs", "energy_mj",
               "ann_macs", "ann_energy_mj", "energy_ratio", "spikes_per_image", "firing_rate",
               "max_spikes_per_neuron", "sops_upper_bound")


def views(images: torch.Tensor, tta: str = "none") -> list[torch.Tensor]:
    """The views a batch of images (B x C x H x W) is classified from: the batch itself, and for
    ``tta="flip"`` also its mirror image (the width axis reversed)."""
    return [images] if _checked_tta(tta) == "none" else [images, images.flip(-1)]


def _checked_tta(tta: str) -> str:
    if tta not in TTAS:
        raise ConfigError(f"tta must be one of {tuple(TTAS)}, got {tta!r}")
    return tta


def _run(net: Callable[[torch.Tensor], torch.Tensor],
         batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
         dtype: torch.dtype, desc: str | None = None,
         tta: str = "none") -> tuple[torch.Tensor, float]:
    """Logits of ``net`` (a network, or an `OperationCounter` around one) on every batch
    (concatenated, float64 on the CPU; with ``tta``, the sum over each image's `views`) and the
    seconds taken; with ``desc``, a progress bar of that name with its expected time (on a
    terminal)."""
    outs = []
    start = time.perf_counter()
    for images, _ in progress_bar(batches, desc or "", desc is not None, unit="batch",
                                  disable=None):
        try:
            logits = [net(v.to(dtype)) for v in views(images, tta)]
            outs.append(sum(logits[1:], logits[0]).detach().to("cpu", torch.float64))
        except RuntimeError as exc:  # e.g. an image size the model was not built for
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"the model cannot run on images of shape "
                             f"{tuple(images.shape)}: {first}") from None
    seconds = time.perf_counter() - start
    return torch.cat(outs), seconds


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits (ties: torch.topk's order)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels.view(-1, 1)).any(1).float().mean())


def _scores(logits: torch.Tensor, labels: torch.Tensor | None, seconds: float) -> dict:
    n = logits.shape[0]
    out: dict = {"images_per_s": n / seconds if seconds > 0 else None, "seconds": seconds}
    if labels is not None:
        out["top1"] = topk_accuracy(logits, labels, 1)
        if logits.shape[1] > 5:
            out["top5"] = topk_accuracy(logits, labels, 5)
    return out


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]], *,
             mode: str = "both", form: str = "search", encoding: str | None = None,
             dtype: str = "float64", preset: str = "45nm-fp32", energy: bool = True,
             step_mode: str = "event", progress: bool = False, tta: str = "none") -> dict:
    """Evaluate ``model`` (ANN mode) and/or its spiking network on ``batches``.

    Args:
        model: a trained network with ge2mst quantizers (p = 1), an STBP baseline, or an already
            converted `SpikingNetwork` (then only ``mode="snn"``).
        batches: (normalised images B x C x H x W, labels B or None) pairs.
        mode: ``"ann"``, ``"snn"`` or ``"both"``.
        form: passed to `convert` (ignored for a `SpikingNetwork` or an STBP model).
        encoding: passed to `convert` (ignored likewise); ``None``: ``"repeat"`` for QCFS
            models (the vanilla IF convention), else ``"once"``.
        dtype: arithmetic of both modes, ``"float64"`` (default, the exact comparison) or
            ``"float32"``.
        preset: energy preset of the operation counts.
        energy: count the spiking network's operations and energy (in event mode during the
            timed pass, whose images/s then include the counting; in collapsed mode a second,
            event-mode pass over the images).
        step_mode: ``"event"`` (layer by layer over T steps of spike trains) or ``"collapsed"``
            (synapses summed over time in one pass): the same outputs and energy counts.
        progress: show a progress bar per pass, with its expected time (on a terminal).
        tta: ``"none"`` (one view) or ``"flip"`` (the summed logits of each image and its mirror
            image, in both modes; energy per view, and ``energy_mj_per_classification``).

    Returns:
        a JSON-serialisable dict: ``images``, ``num_classes``, ``method``, ``mode``, ``T``,
        ``groups``, ``ann`` / ``snn`` sections (``top1``, ``top5`` when there are more than five
        classes, ``images_per_s``, ``seconds``; ``snn`` also ``neuron`` and ``energy``), and for
        ``both`` the ``agreement`` of the predictions and ``max_abs_diff`` of the logits (and
        ``tta``, ``views`` with ``tta="flip"``).
    """
    tdtype, tta = dtype_named(dtype), _checked_tta(tta)  # an unknown tta: before any work
    batches, method, labels = _check_request(model, batches, mode)
    report: dict = {"method": method, "mode": mode, "dtype": dtype,
                    **({"tta": tta, "views": TTAS[tta]} if tta != "none" else {})}
    ann_logits = snn_logits = None
    # one copy in the arithmetic asked for: the ANN, and the network that is converted (BatchNorm
    # folded in that arithmetic, as `ge2mst.analysis.verification` does)
    base = _reference_ann(model, method, tdtype, step_mode, report)
    if mode in ("ann", "both") and method != "stbp":
        ann_logits, seconds = _run(base, batches, tdtype, "ANN" if progress else None, tta)
        report["ann"] = _scores(ann_logits, labels, seconds)
    if mode in ("snn", "both"):
        snn, neuron = _spiking_network(model, base, method, report, form=form, encoding=encoding,
                                       step_mode=step_mode)
        snn_logits = _run_snn(snn, batches, labels, method, report, neuron=neuron, dtype=tdtype,
                              energy=energy, preset=preset, step_mode=step_mode,
                              desc=f"SNN ({step_mode}, {dtype})" if progress else None, tta=tta)
        if method == "stbp" and mode == "both":
            report["note"] = ("an STBP network is its own spiking network: there is no ANN mode "
                              "to compare with")
    else:  # ANN mode only: T and G of the quantizers (QCFS: T = L)
        books = [q.book for _, q in quantizers(model)]
        report["T"] = one_or_list(getattr(b, "T", getattr(b, "L", None)) for b in books
                                  if getattr(b, "T", getattr(b, "L", None)) is not None)
        report["groups"] = one_or_list(b.G for b in books if hasattr(b, "G"))
    _compare(report, ann_logits, snn_logits, labels)
    return report


def _reference_ann(model: nn.Module, method: str, dtype: torch.dtype, step_mode: str,
                   report: dict) -> nn.Module:
    """A copy of ``model`` in ``dtype``; in float32 an ExpG model's BatchNorm folded: float32 is
    exact against the deployable ANN (the collapsed spiking network equals it bit for bit), so
    that is the ANN scored and compared with (said in ``report``)."""
    base = copy.deepcopy(model).eval().to(dtype)
    if dtype == torch.float32 and method == "expg":
        base = fuse_batchnorm(base, inplace=True)
        report["ann_reference"] = "BatchNorm folded"
        report["note"] = FLOAT32_NOTE.get(step_mode, FLOAT32_NOTE["event"])
    return base


def _check_request(model: nn.Module, batches, mode: str) -> tuple[list, str, torch.Tensor | None]:
    """The batches as a list (a streamed set, re-iterable with its ``labels``, as it is), the
    model's method and the labels (None unless every batch has them), after refusing what cannot
    be evaluated."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    streamed = getattr(batches, "labels", None) is not None and not isinstance(batches, list)
    if not streamed:
        batches = list(batches)
    first = next(iter(batches), None)
    if first is None:
        raise ConfigError("evaluate needs at least one batch of images")
    method = method_of(model)
    name = getattr(model, "model_name", type(model).__name__)
    is_snn = isinstance(model, SpikingNetwork)
    spec = model.input_spec if is_snn else _input_spec(model)
    # a streamed set is decoded anew at each pass: its first batch stands for the others (one
    # transform makes them all), and its labels are known without decoding
    for images, _ in [first] if streamed else batches:
        check_input(images, spec)
    if streamed:
        labels = batches.labels.to("cpu")
    else:
        labelled = all(y is not None for _, y in batches)
        labels = torch.cat([y.to("cpu") for _, y in batches]) if labelled else None
    if is_snn and mode != "snn":
        raise ConfigError("a converted spiking network has no ANN mode: evaluate it with "
                          "--mode snn (or give the trained checkpoint for --mode ann/both)")
    if method == "stbp" and mode == "ann":
        raise ConfigError(f"model {name!r} is trained as a spiking network (STBP): it has no ANN "
                          "mode; use --mode snn")
    return batches, method, labels


def _spiking_network(model: nn.Module, base: nn.Module, method: str, report: dict, *, form: str,
                     encoding: str | None, step_mode: str) -> tuple[nn.Module, str]:
    """The spiking network to run (``base`` converted, or ``base`` itself for STBP models and
    converted networks) and its neurons' names; its T, G and conversion go into ``report``."""
    if method == "stbp":
        report["T"], report["groups"] = getattr(model, "T", None), None
        return base, "LIF (trained through time)"
    if isinstance(model, SpikingNetwork):
        snn = base.set_step_mode(step_mode)
        form = getattr(model, "description", {}).get("conversion", {}).get("form", form)
    else:
        snn = convert(base, form=form, encoding=encoding or default_encoding(method),
                      step_mode=step_mode)
    report["T"], report["groups"] = snn.T, time_groups(snn)
    report["form"], report["encoding"] = form, snn.encoding
    report["step_mode"] = step_mode
    return snn, ", ".join(sorted({type(n).__name__ for _, n in snn.neurons()}))


def _run_snn(snn: nn.Module, batches: list, labels, method: str, report: dict, *, neuron: str,
             dtype: torch.dtype, energy: bool, preset: str, step_mode: str,
             desc: str | None = None, tta: str = "none") -> torch.Tensor:
    """Run the spiking network (timed; counting its operations in the same pass in event mode)
    and write its scores and energy into ``report``; its logits. The counts are per view (the
    counter sees each view as an image); with ``tta`` the energy per classification is added."""
    counts = None
    if energy and method != "stbp" and step_mode == "event":
        # one timed pass that also counts: images/s then include the counting
        with OperationCounter(snn, preset) as counter:
            logits, seconds = _run(counter, batches, dtype, desc, tta)
            counts = counter.report()
    else:
        logits, seconds = _run(snn, batches, dtype, desc, tta)
    report["snn"] = {**_scores(logits, labels, seconds), "neuron": neuron}
    if counts is not None:
        report["snn"]["images_per_s_includes"] = "operation and energy counting"
    if energy:
        # one pass, one view of one batch at a time
        images = (v.to(dtype) for x, _ in batches for v in views(x, tta))
        if method == "stbp":
            counts = count_stbp_operations(snn, images, preset=preset)
        elif counts is None:
            # counted on the event-level network: the same spikes, every synaptic event seen
            counts = count_operations(snn.set_step_mode("event"), images, preset=preset)
        e = {k: counts[k] for k in ENERGY_KEYS if k in counts}
        # firing_rate of the counters is spikes per neuron per inference
        e["spikes_per_neuron"] = e.pop("firing_rate", None)
        if tta != "none":
            e["energy_mj_per_classification"] = TTAS[tta] * e["energy_mj"]
            e["ann_energy_mj_per_classification"] = TTAS[tta] * e["ann_energy_mj"]
        report["snn"]["energy"] = e
    return logits


def _compare(report: dict, ann_logits, snn_logits, labels) -> None:
    """Images and classes, a check of the labels against the classes, and for both modes the
    agreement of the predictions and the largest logit difference."""
    logits = snn_logits if snn_logits is not None else ann_logits
    report["images"] = int(logits.shape[0])
    report["num_classes"] = int(logits.shape[1])
    if labels is not None and labels.numel() and int(labels.max()) >= logits.shape[1]:
        raise DataError(f"the data have labels up to {int(labels.max())} but the model predicts "
                        f"{logits.shape[1]} classes: evaluate it on the data it was trained for")
    if ann_logits is not None and snn_logits is not None:
        report["agreement"] = float((ann_logits.argmax(1) == snn_logits.argmax(1)).float().mean())
        report["max_abs_diff"] = float((snn_logits - ann_logits).abs().max())


def format_report(report: dict) -> str:
    """The evaluation report as a short human-readable table."""
    lines = []
    head = report.get("model", "?")
    if report.get("checkpoint"):
        head += f" ({report['checkpoint']})"
    setting = [f"T={report.get('T')}"]
    if report.get("groups") is not None:
        setting.append(f"G={report['groups']}")
    setting.append(report["method"])
    lines.append(f"model       {head}, {' '.join(setting)}")
    if "data" in report:
        lines.append(f"data        {report['data']} ({report.get('split', '?')}): "
                     f"{report['images']} images, {report['num_classes']} classes")
    has_top5 = any("top5" in report.get(m, {}) for m in ("ann", "snn"))
    cols = f"{'top-1':>7}" + (f"   {'top-5':>7}" if has_top5 else "") + f"    {'images/s':>9}"
    lines.append(f"{'':<12}{cols}")
    for m in ("ann", "snn"):
        if m not in report:
            continue
        r = report[m]
        row = f"{_pct(r.get('top1')):>7}"
        if has_top5:
            row += f"   {_pct(r.get('top5')):>7}"
        ips = r.get("images_per_s")
        row += f"    {ips:>9,.1f}" if ips is not None else "    " + "-".rjust(9)
        lines.append(f"{m.upper():<12}{row}")
    if "agreement" in report:
        lines.append(f"agreement   {report['agreement']:.4f} of predictions, max |SNN - ANN| logit "
                     f"{report['max_abs_diff']:.3g}")
    e = report.get("snn", {}).get("energy")
    if e:
        ratio = e.get("energy_ratio")
        ratio_text = f", {ratio:.2f}x less" if ratio else ""
        lines.append(f"energy      {e['energy_mj'] * 1e3:.4g} uJ per image ({e['sops']:,.0f} SOPs + "
                     f"{e['macs']:,.0f} MACs, {e['preset']}); ANN {e['ann_energy_mj'] * 1e3:.4g} uJ"
                     f"{ratio_text}")
        lines.append(f"spikes      {e['spikes_per_neuron']:.4f} per neuron per image (max "
                     f"{e.get('max_spikes_per_neuron')}), {e['spikes_per_image']:,.0f} per image")
        if "energy_mj_per_classification" in e:
            lines.append(f"tta         {report['tta']}: {report['views']} views per image; energy "
                         f"above is per view, {e['energy_mj_per_classification'] * 1e3:.4g} uJ "
                         "per classification")
    if report.get("note"):
        lines.append(f"note        {report['note']}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"
