"""A small convolutional ExpG network, to show the whole path before the transformer.

Layout (``width`` w): ConvBN(C -> w) -> ExpG -> ConvBN(w -> 2w, stride 2) -> ExpG ->
ConvBN(2w -> 2w) -> ExpG -> ConvBN(2w -> 4w, stride 2) -> ExpG -> global average pool -> Linear.
The first layer sees real pixels (counted as MACs); every later weight layer sees spikes.
"""

from __future__ import annotations

from torch import nn

from .._checks import whole_number
from ..core.coding import check_time_groups
from ..core.quantizers import ExpGQuant, QCFSQuant
from ..errors import ConfigError
from ..nn.layers import ConvBN
from .registry import register_model


def _activation(quantizer: str, T: int, G: int) -> nn.Module:
    if quantizer == "expg":
        return ExpGQuant(T=T, G=G)
    if quantizer == "qcfs":
        return QCFSQuant(L=T)
    raise ConfigError(f"quantizer must be 'expg' or 'qcfs', got {quantizer!r}")


@register_model
def ge2mst_cnn_tiny(num_classes: int = 10, in_chans: int = 3, T: int = 4, G: int = 2,
                    width: int = 16, quantizer: str = "expg") -> nn.Sequential:
    """Four-layer convolutional network with ExpG (or QCFS, for the baseline) activations."""
    if quantizer == "expg":
        T, G = check_time_groups(T, G)
    for name, value in (("num_classes", num_classes), ("in_chans", in_chans), ("width", width),
                        ("T", T)):
        whole_number(name, value)
    w = width
    return nn.Sequential(
        ConvBN(in_chans, w, 3), _activation(quantizer, T, G),
        ConvBN(w, 2 * w, 3, stride=2), _activation(quantizer, T, G),
        ConvBN(2 * w, 2 * w, 3), _activation(quantizer, T, G),
        ConvBN(2 * w, 4 * w, 3, stride=2), _activation(quantizer, T, G),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
        nn.Linear(4 * w, num_classes),
    )
