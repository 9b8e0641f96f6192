"""Which spiking module replaces which ANN module: the conversion rules of `ge2mst.convert`, as data.

As in torch.ao.quantization, the rules are a dict from an ANN module class to a builder
``(module, options, name) -> nn.Module`` that makes the spiking replacement from the trained module,
the `ge2mst.conversion.converter.ConversionOptions` and the module's dotted name (for error messages). The
target classes build themselves (`ExpGIF.from_quantizer`, `IFNeuron.from_quantizer`,
`SpikingGWSSA.from_ann`); the builders here only adapt them to that one signature.

`convert` looks a module's class up along its MRO (``type(module).__mro__``), so a subclass of a
mapped class (`SSA` of `GWSSA`, `SignedExpGQuant` and `ExpIFQuant` of `ExpGQuant`, any BatchNorm
of ``_BatchNorm``) takes its nearest mapped ancestor's rule unless it is mapped itself. Pass
``convert(model, mapping={MyModule: build_mine})`` to extend or override `DEFAULT_SPIKING_MAPPING`
instead of changing it. Some rules refuse: a `Quantizer` without a spiking neuron, a BatchNorm that
was not folded into the weight layer before it.

This module sits above the modules whose classes it maps and below `ge2mst.convert`; nothing it
imports imports it or `convert`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..core.neurons import ExpGIF, IFNeuron, quantizer_lambda
from ..core.quantizers import ExpGQuant, QCFSQuant, Quantizer
from ..errors import ConversionError
from ..nn.attention import GWSSA
from ..nn.layers import Synapse, TimeDistributed
from ..nn.max_pool import SpikingMaxPool
from ..nn.spiking_attention import SpikingGWSSA

#: a conversion rule: (trained module, `ConversionOptions`, dotted name) -> spiking module
Builder = Callable[[nn.Module, Any, str], nn.Module]

#: stateless modules that are linear (or the identity) and so commute with the time sum.
TIME_DISTRIBUTABLE = (
    nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.Flatten,
    nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout2d,
)


def expg_neuron(q: ExpGQuant, options, name: str) -> ExpGIF:
    """ExpG quantizer (signed or not, any G) -> ExpG-IF neuron in the options' firing form."""
    return ExpGIF.from_quantizer(q, form=options.form, online=options.online, name=name)


def if_neuron(q: QCFSQuant, options, name: str) -> IFNeuron:
    """QCFS quantizer -> vanilla IF neuron over ``options.T`` steps (default: the quantizer's L)."""
    return IFNeuron.from_quantizer(q, T=options.T, name=name)


def refuse_quantizer(q: Quantizer, options, name: str) -> nn.Module:
    """A quantizer of no known kind: refused (after the p < 1 and lambda refusals)."""
    quantizer_lambda(q, name)
    raise ConversionError(f"no spiking neuron is known for quantizer {type(q).__name__} ({name!r})")


def synapse(layer: nn.Module, options, name: str) -> Synapse:
    """Conv2d / Linear -> `Synapse` (the same weights, applied to every time step)."""
    return Synapse(layer)


def time_distributed(module: nn.Module, options, name: str) -> TimeDistributed:
    """A stateless linear module -> the same module applied to every time step."""
    return TimeDistributed(module)


def refuse_batchnorm(bn: nn.Module, options, name: str) -> nn.Module:
    """A BatchNorm left over by the folding (nothing to fold it into): refused."""
    raise ConversionError(
        f"BatchNorm {name!r} does not follow a Conv2d/Linear in a Sequential, so it cannot "
        "be folded; put it right after its weight layer (e.g. use ge2mst.nn.layers.ConvBN)"
    )


DEFAULT_SPIKING_MAPPING: dict[type[nn.Module], Builder] = {
    ExpGQuant: expg_neuron,
    QCFSQuant: if_neuron,
    Quantizer: refuse_quantizer,
    GWSSA: SpikingGWSSA.from_ann,
    nn.Conv2d: synapse,
    nn.Linear: synapse,
    nn.MaxPool2d: SpikingMaxPool.from_ann,
    nn.modules.batchnorm._BatchNorm: refuse_batchnorm,
    **dict.fromkeys(TIME_DISTRIBUTABLE, time_distributed),
}


def builder_for(module: nn.Module, mapping: Mapping[type, Builder]) -> Builder | None:
    """The rule of ``module``'s nearest class along its MRO that ``mapping`` holds, else None."""
    for cls in type(module).__mro__:
        builder = mapping.get(cls)
        if builder is not None:
            return builder
    return None


__all__ = ["DEFAULT_SPIKING_MAPPING", "TIME_DISTRIBUTABLE", "Builder", "builder_for",
           "expg_neuron", "if_neuron", "refuse_batchnorm", "refuse_quantizer", "synapse",
           "time_distributed"]
