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
from . import verification as _verify

FAULTS = ("floor", "ties-down", "reversed-weights", "lambda-drift", "no-refractoriness")
#: faults that act on one firing form only
FAULT_FORMS = {"no-refractoriness": "sequential"}


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


@contextmanager
def inject(name: str, model: nn.Module) -> Iterator[None]:
    """Run the block with conversion fault ``name`` (one of `FAULTS`) acting on ``model``."""
    if name not in FAULTS:
        raise ConfigError(f"unknown conversion fault {name!r}; known: {', '.join(FAULTS)}")
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
        else:
            stack.enter_context(_patched(ExpGIF, "_fire_sequential", _fire_without_refractoriness))
        yield
