"""Deliberate conversion faults, to see `ge2mst verify` catch them (``verify --inject-fault NAME``).

A sceptic should not have to take the exactness checks on trust. Each fault below breaks the
conversion in one subtle way, for the duration of a ``with inject(name, model):`` block, and is
undone when the block ends:

- ``floor``: the shared code book rounds down (floor) instead of to the nearest level. The ANN
  quantizer and the binary-search neuron move together, so their codes still agree.
- ``ties-down``: a value exactly on a boundary takes the lower level instead of the upper one,
  in the quantizer and the binary-search neuron alike (``ge2mst.core.quantizers.TIES`` and
  ``torch.searchsorted`` with ``right=False``). Only membranes lying exactly on a boundary are
  affected: real images almost never give one (``near_boundary`` counts how close they come).
- ``reversed-weights``: the step weights run in reverse order, 2**(t-1) instead of 2**(T-t), in
  the code book's weights and pattern table alike: the pattern table sends code 10 (T = 4,
  G = 2) as 0101, weighted 1, 2, 4, 8 over the steps. Codes and logits stay equal; the spike
  trains are not those of the method.
- ``lambda-drift``: the last ExpG-IF neuron of the converted network (before the classifier,
  where no later quantizer snaps the drift away) is given lambda * (1 + 1e-7).
- ``no-refractoriness``: the sequential neuron (form B, ``--form sequential``) may fire twice
  in one group.

Four faults that only the references beyond the recorded run can see:

- ``attention-scale``: the integer-code attention that the eval-mode ANN and the spiking network
  share drops the score scale s (``attention_spacings`` gives dq dk instead of dq dk s). Both
  sides move together, codes and logits agree; the trained function (float attention, which
  applies s itself) does not. Needs a model with attention.
- ``ignored-attention-products``: the converter ignores ``attention_products="spikes"`` and
  builds attention that forms the products from codes; the event-level attention never runs.
  Only the settings read back from the converted network show it. Needs ``--attention-products
  spikes`` and a model with attention.
- ``unrecorded-magnitude``: a signed neuron asked for codes without spike trains (what the
  attention of a user's unrecorded ``snn(x)`` does) compares the signed membrane instead of |V|
  with the boundaries. A recorded run never takes that path; the unrecorded run does.
- ``float32-kernel``: the float32 quantizer kernel reads its level table one cell off (each cell
  returns the next cell's level). The ANN and the fast collapsed spiking network share the
  kernel and agree bit for bit; a float64 check never runs it; the oracle on every float32
  output sees it. Needs ``--strict`` (the float32 path).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from ..core import quantizers as quant
from ..core.coding import expg_codebook
from ..core.neurons import ExpGIF
from ..core.quantizers import ExpGQuant, quantizers
from ..errors import ConfigError
from ..nn import attention as _attention
from ..nn import spiking_attention as _spiking_attention
from ..nn.attention import GWSSA
from ..nn.spiking_attention import SpikingGWSSA
from . import verification as _verify

FAULTS = ("floor", "ties-down", "reversed-weights", "lambda-drift", "no-refractoriness",
          "attention-scale", "ignored-attention-products", "unrecorded-magnitude",
          "float32-kernel")
#: what a fault needs in order to act: {fault: {verify option: value}} (``strict``: the float32 path)
FAULT_NEEDS = {"no-refractoriness": {"form": "sequential"},
               "ignored-attention-products": {"attention_products": "spikes"},
               "float32-kernel": {"strict": True}}
#: faults that act on attention, refused for a model without it
ATTENTION_FAULTS = ("attention-scale", "ignored-attention-products", "unrecorded-magnitude")


@contextmanager
def _patched(obj: object, attr: str, value: object) -> Iterator[None]:
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def _books(model: nn.Module) -> list:
    """The ExpG code books the model's quantizers use, and the shared ones its neurons will get."""
    found = {}
    for _, q in quantizers(model):
        if isinstance(q, ExpGQuant):
            for book in (q.book, expg_codebook(q.T, q.G)):
                found[id(book)] = book
    return list(found.values())


def _ties_down():
    original = torch.searchsorted

    def searchsorted(sorted_sequence, values, *args, right=False, **kwargs):
        kwargs.pop("side", None)
        return original(sorted_sequence, values, *args, right=False, **kwargs)

    return searchsorted


def _drifting_convert(original):
    def convert(*args, **kwargs):
        snn = original(*args, **kwargs)
        expg = [n for _, n in snn.neurons() if isinstance(n, ExpGIF)]
        if expg:
            expg[-1].lam.mul_(1 + 1e-7)
        return snn

    return convert


def _fire_without_refractoriness(self: ExpGIF, v: torch.Tensor) -> torch.Tensor:
    theta, pre = self.thresholds().tolist(), self.pre_thresholds().tolist()
    u = v.clone()
    spikes = torch.zeros((self.T, *v.shape), dtype=torch.int8, device=v.device)
    for t in range(self.T):
        s = u >= pre[t]  # no check whether the group already fired
        u = u - theta[t] * s
        spikes[t] = s
    return spikes


def _unscaled_spacings(q_act, k_act, v_act, attn_act, scale: float) -> tuple[float, float]:
    return _ORIGINAL_SPACINGS(q_act, k_act, v_act, attn_act, 1.0)


_ORIGINAL_SPACINGS = _attention.attention_spacings


def _codes_convert(original):
    def convert(*args, **kwargs):
        snn = original(*args, **kwargs)
        for module in snn.modules():
            if isinstance(module, SpikingGWSSA):
                module.products = "codes"
        return snn

    return convert


def _membrane_codes_without_magnitude(self: ExpGIF, membrane: torch.Tensor) -> torch.Tensor:
    signed = self.signed
    self.signed = False  # the signed membrane itself is compared with the boundaries
    try:
        codes = _ORIGINAL_MEMBRANE_CODES(self, membrane)
    finally:
        self.signed = signed
    return codes * torch.sign(membrane).to(codes.dtype) if signed else codes


_ORIGINAL_MEMBRANE_CODES = ExpGIF.membrane_codes


def _shifted_grid(original):
    def grid_values(delta, book, device):
        values = original(delta, book, device)
        # cell k reads cell k + 1's level; the last level and the NaN entry after it stay
        return torch.cat([values[1:-1], values[-2:]])

    return grid_values


def _attention_fault(name: str, stack: ExitStack) -> None:
    if name == "attention-scale":
        for module in (_attention, _spiking_attention):
            stack.enter_context(_patched(module, "attention_spacings", _unscaled_spacings))
    elif name == "ignored-attention-products":
        stack.enter_context(_patched(_verify, "convert", _codes_convert(_verify.convert)))
    else:
        stack.enter_context(_patched(ExpGIF, "membrane_codes", _membrane_codes_without_magnitude))


@contextmanager
def inject(name: str, model: nn.Module) -> Iterator[None]:
    """Run the block with conversion fault ``name`` (one of `FAULTS`) acting on ``model``."""
    if name not in FAULTS:
        raise ConfigError(f"unknown conversion fault {name!r}; known: {', '.join(FAULTS)}")
    if name in ATTENTION_FAULTS and not any(isinstance(m, GWSSA) for m in model.modules()):
        raise ConfigError(f"conversion fault {name!r} acts on attention, and this model has none "
                          "(try --model ge2mst_cifar_tiny --pretrained)")
    with ExitStack() as stack:
        if name in ("floor", "reversed-weights"):
            for book in _books(model):
                if name == "floor":  # boundary j is the upper code itself: floor
                    stack.enter_context(_patched(book, "mids", book.codes[1:].to(torch.float64)))
                else:
                    stack.enter_context(_patched(book, "beta", book.beta.flip(0)))
                    stack.enter_context(_patched(book, "patterns", book.patterns.flip(-1)))
        elif name == "ties-down":
            stack.enter_context(_patched(torch, "searchsorted", _ties_down()))
            stack.enter_context(_patched(quant, "TIES", "down"))
        elif name == "lambda-drift":
            stack.enter_context(_patched(_verify, "convert", _drifting_convert(_verify.convert)))
        elif name == "no-refractoriness":
            stack.enter_context(_patched(ExpGIF, "_fire_sequential", _fire_without_refractoriness))
        elif name == "float32-kernel":
            stack.enter_context(_patched(quant, "_grid_values", _shifted_grid(quant._grid_values)))
        else:
            _attention_fault(name, stack)
        yield
