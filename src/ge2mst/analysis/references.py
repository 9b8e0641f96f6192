"""The references and paths of `ge2mst.analysis.verify` beyond the recorded spiking run.

`verify` compares the eval-mode ANN with the spiking network it converts to, recording every spike
train. Three blind spots remain in that comparison alone, and each class here closes one:

- `TrainedFunction`: code that the eval-mode ANN and the spiking network share (the integer-code
  attention) moves both sides together. This reference runs the network through the float
  computation its weights were trained through, at p = 1: the attention's float products of the
  quantized values with the attention quantizer on their float scores, BatchNorm on its running
  statistics, in float64. It shares no attention code with the spiking network, so a fault there
  shows as a disagreement with the trained function (codes of every quantizer, and logits).
- `Agreement` on the unrecorded run: a user's ``snn(x)`` records nothing, and several neurons then
  take other code paths (membrane codes instead of spike trains). `verify` runs the spiking
  network once more that way and holds its logits to the same tolerance.
- `Float32Path`: training and the fast collapsed spiking network use the float32 quantizer
  kernel, which a float64 check never runs. This path runs the BatchNorm-folded float32 ANN and
  the float32 collapsed spiking network (bit for bit against each other), and holds every output
  of the float32 kernel, in both, against the independent oracle (`ge2mst.core.oracle`).

`settings_of` reads the settings a converted network really ran with (firing form, step mode,
encoding, how its attention formed the products), so that the report does not echo the arguments.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..conversion.converter import convert, fuse_batchnorm
from ..conversion.kinds import one_or_list
from ..core.neurons import ExpGIF
from ..core.oracle import ExpGOracle
from ..core.quantizers import ExpGQuant, quantizers
from ..nn.attention import float_attention
from ..nn.spiking_attention import SpikingGWSSA


def _max(a: float, b: float) -> float:
    """max(a, b), NaN if either is NaN (Python's max drops a NaN second argument)."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


class Agreement:
    """Running comparison of a candidate's logits with a reference's, image by image."""

    def __init__(self) -> None:
        self.images = 0
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.agree = 0
        self.labelled = 0
        self.reference_correct = 0
        self.candidate_correct = 0

    def update(self, reference: torch.Tensor, candidate: torch.Tensor,
               labels: torch.Tensor | None) -> None:
        reference, candidate = reference.detach(), candidate.detach()
        ref = reference.to(torch.float64)
        diff = (candidate.to(torch.float64) - ref).abs().flatten(1)
        scale = ref.abs().flatten(1).amax(1).clamp_min(1e-30)
        if diff.numel():  # NaN anywhere stays NaN (and fails every tolerance)
            self.max_abs = _max(self.max_abs, float(diff.max()))
            self.max_rel = _max(self.max_rel, float((diff.amax(1) / scale).max()))
        pr, pc = reference.argmax(1), candidate.argmax(1)
        self.agree += int((pr == pc).sum())
        self.images += reference.shape[0]
        if labels is not None:
            labels = labels.to(pr.device)
            self.labelled += labels.numel()
            self.reference_correct += int((pr == labels).sum())
            self.candidate_correct += int((pc == labels).sum())

    def result(self, prefix: str = "") -> dict:
        """``{prefix}max_abs_diff``, ``{prefix}max_rel_diff`` (max over images of max|diff| /
        max|reference|) and ``{prefix}prediction_agreement``."""
        return {f"{prefix}max_abs_diff": self.max_abs, f"{prefix}max_rel_diff": self.max_rel,
                f"{prefix}prediction_agreement": self.agree / self.images if self.images else None}


class TrainedFunction:
    """The network as its weights were trained: float attention products, BatchNorm on its running
    statistics, p = 1, float64. `compare` holds the eval-mode ANN's codes and logits against it."""

    description = ("the ANN through the float computation of training at p = 1 (float attention "
                   "products, the attention quantizer on float scores, BatchNorm on running "
                   "statistics), float64")

    def __init__(self, model: nn.Module) -> None:
        self.net = float_attention(copy.deepcopy(model).eval().to(torch.float64))
        self.quants = dict(quantizers(self.net))
        self.logits = Agreement()
        self.code_mismatches = 0
        self.codes_compared = 0
        self.layers: dict[str, int] = {}

    def compare(self, images: torch.Tensor, ann_logits: torch.Tensor, ann_quants: dict,
                labels: torch.Tensor | None) -> None:
        """Run the trained function on ``images`` and compare: its logits with ``ann_logits``,
        each of its quantizers' codes with those ``ann_quants`` (name -> quantizer) recorded."""
        for q in self.quants.values():
            q.record, q.last_codes = True, None
        try:
            out = self.net(images.to(torch.float64))
            for name, q in self.quants.items():
                other = ann_quants.get(name)
                mine = q.last_codes
                theirs = other.last_codes if other is not None else None
                if mine is None and theirs is None:
                    continue
                if mine is None or theirs is None or mine.shape != theirs.shape:
                    wrong = max(x.numel() for x in (mine, theirs) if x is not None)
                    compared = wrong
                else:
                    wrong = int((mine != theirs.to(mine.device)).sum())
                    compared = mine.numel()
                self.code_mismatches += wrong
                self.codes_compared += compared
                if wrong:
                    self.layers[name] = self.layers.get(name, 0) + wrong
        finally:
            for q in self.quants.values():
                q.record, q.last_codes = False, None
        self.logits.update(out, ann_logits, labels)

    def result(self) -> dict:
        out = {**self.logits.result("trained_"),
               "trained_code_mismatches": self.code_mismatches,
               "trained_codes_compared": self.codes_compared,
               "trained_mismatched_layers": dict(sorted(self.layers.items(),
                                                        key=lambda kv: -kv[1])[:20])}
        if self.logits.labelled:
            out["trained_accuracy"] = self.logits.reference_correct / self.logits.labelled
        return out


class Float32Path:
    """The float32 path that training and deployment run: the BatchNorm-folded float32 ANN and its
    collapsed float32 spiking network (no recording, binary search), compared bit for bit, with
    every output of the float32 quantizer kernel in either (ANN quantizers, ExpG-IF neurons)
    checked against the independent oracle."""

    description = ("float32: the BatchNorm-folded ANN against the collapsed spiking network (not "
                   "recording), bit for bit; every float32 quantizer and neuron output against "
                   "the oracle")

    def __init__(self, model: nn.Module) -> None:
        self.ann = fuse_batchnorm(copy.deepcopy(model).eval().to(torch.float32), inplace=True)
        self.snn = convert(self.ann, step_mode="collapsed").to(torch.float32)
        self.logits = Agreement()
        self.checked = 0
        self.mismatches = 0
        self.layers: dict[str, int] = {}
        self._hooks = []
        watched = [(f"ann.{n}", m) for n, m in quantizers(self.ann) if isinstance(m, ExpGQuant)]
        watched += [(f"snn.{n}", m) for n, m in self.snn.neurons() if isinstance(m, ExpGIF)]
        for name, module in watched:
            oracle = ExpGOracle(module.T, module.G, float(module.lam.detach()), module.signed)
            self._hooks.append(module.register_forward_hook(self._checker(name, oracle)))

    def _checker(self, name: str, oracle: ExpGOracle):
        def hook(module, args, out):
            x = args[0]
            if x.dtype != torch.float32 or out.shape != x.shape:
                return
            codes = oracle.codes(x.detach().to(torch.float64))
            expected = (codes.to(torch.float64) * oracle.delta).to(torch.float32)
            wrong = int((out.detach() != expected.to(out.device)).sum())
            self.checked += out.numel()
            self.mismatches += wrong
            if wrong:
                self.layers[name] = self.layers.get(name, 0) + wrong

        return hook

    def compare(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        x = images.to(torch.float32)
        self.logits.update(self.ann(x), self.snn(x), labels)

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def result(self) -> dict:
        return {**self.logits.result("float32_"), "float32_kernel_checked": self.checked,
                "float32_kernel_mismatches": self.mismatches,
                "float32_mismatched_layers": dict(sorted(self.layers.items(),
                                                         key=lambda kv: -kv[1])[:20])}


def settings_of(snn: nn.Module) -> dict:
    """What a converted network ran with, read from its modules: ``form`` (of its ExpG-IF
    neurons), ``step_mode`` (of every module that has one), ``encoding``, and
    ``attention_products`` (how its spiking attention formed the products in its last call; None
    without attention or before any call). One value each, a sorted list where modules differ."""
    forms = [n.form for _, n in snn.neurons() if isinstance(n, ExpGIF)]
    modes = [m.step_mode for m in snn.modules() if isinstance(getattr(m, "step_mode", None), str)]
    ran = [m.ran_products for m in snn.modules() if isinstance(m, SpikingGWSSA)]
    return {"form": one_or_list(forms), "step_mode": one_or_list(modes),
            "encoding": getattr(snn, "encoding", None),
            "attention_products": one_or_list(ran) if ran and None not in ran else None}


def settings_mismatches(asked: dict, ran: dict) -> list[str]:
    """One line for each setting the network ran with another value than was asked (a setting
    the network has no part for, such as attention products without attention, is not checked)."""
    return [f"{key}: {asked[key]!r} was asked, the converted network ran {ran[key]!r}"
            for key in asked if ran.get(key) is not None and ran[key] != asked[key]]
