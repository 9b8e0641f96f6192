"""What kind of network a model is, in one vocabulary, below everything that asks.

`method_of` tells how a network was trained and therefore what its spiking network is:

- ``"expg"``: ExpG quantizers, converted to ExpG-IF neurons; the spiking network equals the ANN;
- ``"qcfs"``: QCFS quantizers, converted to vanilla IF neurons; close to the ANN, not exact;
- ``"stbp"``: trained through time (`ge2mst.baselines`, no quantizers); it *is* its spiking
  network, with no ANN form and nothing to convert.

The first two are trained the same way (``"progressive"``: one ANN forward pass per image, the
quantizers ramped from ClipReLU to their code book), the last with backpropagation through time;
`training_method` maps the one vocabulary onto the other.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ..core.neurons import ExpGIF
from ..core.quantizers import QCFSQuant, quantizers
from .converter import SpikingNetwork

METHODS = ("expg", "qcfs", "stbp")
TRAINING_METHODS = ("progressive", "stbp")


def method_of(model: nn.Module) -> str:
    """``"stbp"`` (trained through time, no quantizers), ``"qcfs"`` or ``"expg"``."""
    if isinstance(model, SpikingNetwork):
        return "qcfs" if not any(isinstance(n, ExpGIF) for _, n in model.neurons()) else "expg"
    if getattr(model, "training_method", None) == "stbp":
        return "stbp"
    quants = [q for _, q in quantizers(model)]
    if not quants:
        return "stbp"
    return "qcfs" if any(isinstance(q, QCFSQuant) for q in quants) else "expg"


def is_stbp(model: nn.Module) -> bool:
    """True for a network trained through time: its own spiking network, without an ANN mode."""
    return method_of(model) == "stbp"


def training_method(model: nn.Module) -> str:
    """``"progressive"`` (ExpG and QCFS models) or ``"stbp"``."""
    return "stbp" if is_stbp(model) else "progressive"


def default_encoding(method: str) -> str:
    """``"repeat"`` (x / T at every step) for vanilla IF neurons of QCFS models, else ``"once"``."""
    return "repeat" if method == "qcfs" else "once"


def one_or_list(values: Iterable[int]) -> int | list[int] | None:
    """One number when all ``values`` agree, their sorted distinct values when they differ, None
    when there are none (how T and G are reported for a whole network)."""
    distinct = sorted(set(values))
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else distinct


def time_groups(snn: SpikingNetwork) -> int | list[int] | None:
    """G of the network's ExpG-IF neurons (`one_or_list`; None for vanilla IF)."""
    return one_or_list(n.G for _, n in snn.neurons() if isinstance(n, ExpGIF))


__all__ = ["METHODS", "TRAINING_METHODS", "default_encoding", "is_stbp", "method_of",
           "one_or_list", "time_groups", "training_method"]
