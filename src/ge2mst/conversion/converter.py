"""ANN -> SNN conversion by module swap, and the network that runs the result.

``convert(model)`` works like torch.ao.quantization's convert: on a copy of the trained model it

1. folds every BatchNorm into the Conv2d / Linear before it (inside Sequential containers, which
   includes `ge2mst.nn.layers.ConvBN` and `LinearBN`);
2. swaps every module for its spiking version by the rules of `ge2mst.conversion.mapping` (a dict from ANN
   class to builder, looked up along the module's MRO): every quantizer for its spiking neuron
   (`ExpGQuant` -> `ExpGIF`, `SignedExpGQuant` -> signed `ExpGIF`, `QCFSQuant` -> vanilla
   `IFNeuron`), GW-SSA / SSA for `SpikingGWSSA`, every weight layer for a `Synapse` and every
   stateless linear module for a `TimeDistributed`, so that the network consumes T x B x ...
   spike trains; ``convert(..., mapping={...})`` extends or overrides those rules;
3. before the rules, lets a module that knows better convert itself: any module with a method
   ``to_spiking(options, name) -> nn.Module`` is replaced by what that method returns.

Anything that a spiking network cannot reproduce exactly (ReLU, LayerNorm, a BatchNorm with
nothing to fold into, a quantizer still mixing with p < 1) stops the conversion with a
`ConversionError` naming the module. Max pooling converts (`ge2mst.nn.max_pool`) where its input
is spike-coded.

A network traced by `ge2mst.prepare` (a ``torch.fx.GraphModule``) converts the same way: its
BatchNorms fold from the graph (a BatchNorm called right after a weight layer called once), its
modules are swapped, and its generated forward code, which may reshape and concatenate as the
user wrote it, runs in event mode on tensors whose time axis is folded into the batch (each
converted module gets it back: `ge2mst.nn.layers.FoldTime`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import fx, nn

from .._checks import whole_number
from ..core.neurons import FORMS, STEP_MODES, ExpGIF, neurons, set_step_mode
from ..errors import ConfigError, ConversionError, InputError
from ..nn.layers import FoldTime, Synapse, TimeDistributed, fold_batchnorm
from ..nn.max_pool import SpikingMaxPool
from .mapping import DEFAULT_SPIKING_MAPPING, Builder, builder_for
from .mapping import TIME_DISTRIBUTABLE as TIME_DISTRIBUTABLE  # re-exported: its old home

ENCODINGS = ("once", "repeat")
ATTENTION_PRODUCTS = ("codes", "spikes")


@dataclass(frozen=True)
class ConversionOptions:
    """What `convert` was asked for; passed on to the conversion rules and to modules that convert
    themselves. Refuses a value `convert` does not know (`ConfigError`)."""

    form: str = "search"
    step_mode: str = "event"
    encoding: str = "once"
    online: bool = False
    T: int | None = None
    attention_products: str = "codes"

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ConfigError(f"form must be one of {FORMS}, got {self.form!r}")
        if self.step_mode not in STEP_MODES:
            raise ConfigError(f"step_mode must be one of {STEP_MODES}, got {self.step_mode!r}")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.attention_products not in ATTENTION_PRODUCTS:
            raise ConfigError(f"attention_products must be one of {ATTENTION_PRODUCTS}, "
                              f"got {self.attention_products!r}")
        if self.T is not None:
            object.__setattr__(self, "T", whole_number("T", self.T))


def convert(model: nn.Module, *, form: str = "search", step_mode: str = "event",
            encoding: str = "once", online: bool = False, T: int | None = None,
            attention_products: str = "codes", inplace: bool = False,
            mapping: Mapping[type, Builder] | None = None) -> SpikingNetwork:
    """Convert a trained quantized network into an exactly equivalent spiking network.

    Args:
        model: a network built with ge2mst quantizers (p = 1), e.g. from `ge2mst.create_model`.
        form: ExpG-IF firing form, ``"search"`` (binary search) or ``"sequential"`` (IF dynamics).
        step_mode: ``"event"`` (layer-by-layer over T steps on spike trains) or ``"collapsed"``
            (synapses summed over time in one pass; spikes still emitted and recordable).
        encoding: how the image enters the first layer in event mode: ``"once"`` (as the input
            current of step 1) or ``"repeat"`` (x / T at every step, the QCFS convention).
        online: ExpG-IF fires step by step (wrong, for demonstration).
        T: time steps of vanilla IF neurons (default: the QCFS quantizer's L). ExpG neurons take
            T from their quantizer.
        attention_products: how spiking attention forms Q K^T and A V: ``"codes"`` (one product
            of the integer codes read from the spike trains) or ``"spikes"`` (from the spike
            trains themselves: for every pair of steps a signed coincidence count, shifted by the
            two steps' exponents, summed). Both give the same integers.
        inplace: convert ``model`` itself instead of a copy.
        mapping: conversion rules ``{ANN class: builder(module, options, name) -> nn.Module}``
            that extend or override `ge2mst.conversion.mapping.DEFAULT_SPIKING_MAPPING` (a module takes the
            rule of the nearest class along its MRO). A module's own ``to_spiking`` comes first.
    """
    options = ConversionOptions(form=form, step_mode=step_mode, encoding=encoding, online=online,
                                T=T, attention_products=attention_products)
    rules = _rules(mapping)
    if not isinstance(model, nn.Module):
        raise ConversionError(f"convert expects a torch.nn.Module, got {type(model).__name__}")
    input_spec = _input_spec(model)
    body = model if inplace else copy.deepcopy(model)
    body.eval()
    _fold_all_batchnorm(body)
    traced = isinstance(body, fx.GraphModule)
    if traced:
        _fold_graph_batchnorm(body)
    _swap(body, options, rules, prefix="")
    steps = {n.T for _, n in neurons(body)}
    if not steps:
        raise ConversionError("the model has no quantizer: there is nothing to convert to spikes")
    if len(steps) > 1:
        raise ConversionError(f"all neurons of a network must share one T, found {sorted(steps)}")
    T = steps.pop()
    _check_max_pools(body)
    _declare_input_kinds(body)
    if traced:
        _fold_time(body, T)
    net = SpikingNetwork(body, T=T, encoding=encoding, input_spec=input_spec,
                         time_folded=traced)
    net.set_step_mode(step_mode)
    return net


def _input_spec(model: nn.Module) -> tuple[int, int] | None:
    """(expected input rank, channels / features) from the model's first weight layer."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return 4, module.in_channels
        if isinstance(module, nn.Linear):
            return 2, module.in_features
    return None


def check_input(x: torch.Tensor, spec: tuple[int, int] | None, what: str = "model") -> None:
    """Raise `InputError` with a clear message for a wrongly shaped, typed or NaN input."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"the {what} expects a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise InputError(f"the {what} expects floating-point images, got dtype {x.dtype}")
    if spec is not None:
        rank, chans = spec
        if x.dim() != rank:
            layout = "B x C x H x W" if rank == 4 else "B x F"
            raise InputError(f"the {what} expects input of rank {rank} ({layout}), "
                             f"got shape {tuple(x.shape)}")
        if x.shape[1] != chans:
            raise InputError(f"the {what} expects {chans} input channels/features, "
                             f"got shape {tuple(x.shape)}")
    if torch.isnan(x).any() or torch.isinf(x).any():
        raise InputError(f"the {what} input contains NaN or infinite values")


def fuse_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The ANN with every BatchNorm folded into the weight layer before it (eval-mode math).

    This is the deployable ANN that `convert` starts from: in float32 the collapsed spiking
    network calls the same kernels on the same values, so its logits equal this model's bit for
    bit (the unfolded model differs from it by float rounding of the folding itself).
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    _fold_all_batchnorm(fused)
    if isinstance(fused, fx.GraphModule):
        _fold_graph_batchnorm(fused)
    return fused


def _fold_all_batchnorm(module: nn.Module) -> None:
    for child in module.children():
        _fold_all_batchnorm(child)
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for a, b in zip(names, names[1:], strict=False):
            layer, bn = module._modules[a], module._modules[b]
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and isinstance(
                    bn, nn.modules.batchnorm._BatchNorm):
                module._modules[a] = fold_batchnorm(layer, bn)
                module._modules[b] = nn.Identity()


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, leaf = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _fold_graph_batchnorm(graph: fx.GraphModule) -> None:
    """Fold every BatchNorm that the graph calls once, right after a Conv2d / Linear that it
    calls once and whose output nothing else reads; the BatchNorm module becomes an Identity
    (any other BatchNorm is left for the conversion rules to refuse)."""
    calls: dict[str, int] = {}
    for node in graph.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(graph.graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1:
            continue
        bn, src = graph.get_submodule(node.target), node.args[0] if node.args else None
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not isinstance(src, fx.Node):
            continue
        if src.op != "call_module" or calls[src.target] != 1 or len(src.users) != 1:
            continue
        layer = graph.get_submodule(src.target)
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            _set_submodule(graph, src.target, fold_batchnorm(layer, bn))
            _set_submodule(graph, node.target, nn.Identity())
            node.replace_all_uses_with(src)
            graph.graph.erase_node(node)
    graph.recompile()


def _spike_source(module: nn.Module | None) -> bool:
    """Whether ``module``'s output is spike trains a max pooling may take: an unsigned ExpG-IF
    neuron's, or another such pooling's."""
    return (isinstance(module, ExpGIF) and not module.signed) or isinstance(module, SpikingMaxPool)


def _check_max_pools(body: nn.Module) -> None:
    """Refuse a max pooling whose input, where the structure shows it (a Sequential, a traced
    graph), is not spike trains of an unsigned ExpG neuron (elsewhere it checks at run time)."""
    inputs: list[tuple[SpikingMaxPool, nn.Module | None]] = []
    for seq in (m for m in body.modules() if isinstance(m, nn.Sequential)):
        children = list(seq.children())
        inputs += [(c, children[i - 1] if i else None) for i, c in enumerate(children)
                   if isinstance(c, SpikingMaxPool)]
    if isinstance(body, fx.GraphModule):
        for node in body.graph.nodes:
            if node.op == "call_module" and isinstance(body.get_submodule(node.target),
                                                       SpikingMaxPool):
                src = node.args[0]
                before = (body.get_submodule(src.target) if isinstance(src, fx.Node)
                          and src.op == "call_module" else None)
                inputs.append((body.get_submodule(node.target), before))
    for pool, before in inputs:
        if before is not None and not _spike_source(before):
            raise ConversionError(
                f"max pooling {pool.name!r} takes the output of {type(before).__name__}, not the "
                "spikes of an ExpG quantizer: only codes of one quantizer max-pool exactly; put "
                "the quantizer before the pooling (ReLU and max commute)")


def _fold_time(graph: fx.GraphModule, T: int) -> None:
    """Wrap every module the graph calls in a `FoldTime` (once per module)."""
    done = set()
    for node in graph.graph.nodes:
        if node.op == "call_module" and node.target not in done:
            done.add(node.target)
            module = graph.get_submodule(node.target)
            if not isinstance(module, nn.Identity):
                _set_submodule(graph, node.target, FoldTime(module, T))


def _rules(mapping: Mapping[type, Builder] | None) -> Mapping[type, Builder]:
    """The default conversion rules, extended / overridden by ``mapping`` (checked)."""
    if mapping is None:
        return DEFAULT_SPIKING_MAPPING
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"mapping must be a dict from module class to builder, "
                          f"got {type(mapping).__name__}")
    for cls, builder in mapping.items():
        if not isinstance(cls, type) or not issubclass(cls, nn.Module) or not callable(builder):
            raise ConfigError("mapping must map torch.nn.Module subclasses to builders "
                              f"(module, options, name) -> nn.Module, got {cls!r}: {builder!r}")
    return {**DEFAULT_SPIKING_MAPPING, **mapping}


def _swap(module: nn.Module, options: ConversionOptions, rules: Mapping[type, Builder],
          prefix: str) -> None:
    for name, child in list(module.named_children()):
        path = f"{prefix}{name}"
        if hasattr(child, "to_spiking"):
            new = child.to_spiking(options, path)
        elif (build := builder_for(child, rules)) is not None:
            new = build(child, options, path)
        elif len(child._modules) > 0:
            _swap(child, options, rules, prefix=f"{path}.")
            continue
        else:
            raise ConversionError(
                f"module {path!r} ({type(child).__name__}) has no exact spiking equivalent; "
                "use ge2mst quantizers for activations (ge2mst.prepare puts them in an ordinary "
                "network)"
            )
        module._modules[name] = new


_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AdaptiveAvgPool1d)
_PASS_THROUGH = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout2d)


def _declare_input_kinds(body: nn.Module) -> None:
    """Input classes that the structure fixes, for energy accounting: the first weight layer sees
    the encoded image (real values); a weight layer right behind average pooling sees averages
    of spikes (integer multiples of a quantum). Others are classified from what they receive."""
    synapses = [m for m in body.modules() if isinstance(m, Synapse)]
    if synapses and synapses[0].input_kind is None:
        synapses[0].input_kind = "real"
    for seq in (m for m in body.modules() if isinstance(m, nn.Sequential)):
        children = list(seq.children())
        for i, child in enumerate(children):
            if not isinstance(child, Synapse) or child.input_kind is not None:
                continue
            for prev in reversed(children[:i]):
                inner = prev.module if isinstance(prev, TimeDistributed) else None
                if isinstance(inner, _PASS_THROUGH):
                    continue
                if isinstance(inner, _POOLS):
                    child.input_kind = "integers"
                break


class SpikingNetwork(nn.Module):
    """A converted network: images in, logits out, spike trains inside.

    In event mode the image is encoded into T x B x ... input currents (``encoding``), every layer
    integrates its whole window and fires, and the logits are the sum over the T steps of the
    last layer's output. ``forward(images, record=True)`` keeps every neuron's spike train
    (``spike_trains()``) and whole-window membrane (``membranes()``) of that call.
    """

    def __init__(self, body: nn.Module, T: int, encoding: str = "once",
                 input_spec: tuple[int, int] | None = None, time_folded: bool = False) -> None:
        super().__init__()
        self.body = body
        self.T = T
        self.encoding = encoding
        self.input_spec = input_spec
        self.step_mode = "event"
        #: the body is a traced network whose modules are `FoldTime`-wrapped: in event mode it
        #: takes (T * B) x ... and gives (T * B) x ...
        self.time_folded = time_folded

    def set_step_mode(self, mode: str) -> SpikingNetwork:
        set_step_mode(self, mode)
        return self

    def neurons(self):
        """``(name, neuron)`` pairs, names relative to the converted body (a time-folded
        network's neurons by the names of the quantizers they replace, without the wrapper)."""
        for name, neuron in neurons(self.body):
            yield (name.removesuffix(".module") if self.time_folded else name), neuron

    def set_recording(self, on: bool) -> None:
        for _, n in self.neurons():
            n.record = on
            if not on:
                n.last_spikes = n.last_membrane = None

    def spike_trains(self) -> dict[str, torch.Tensor]:
        """Spike trains of the last recorded call: name -> int8 tensor T x B x ..."""
        return {k: n.last_spikes for k, n in self.neurons() if n.last_spikes is not None}

    def membranes(self) -> dict[str, torch.Tensor]:
        """Whole-window membranes of the last recorded call: name -> float64 tensor B x ..."""
        return {k: n.last_membrane for k, n in self.neurons() if n.last_membrane is not None}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Input currents T x B x ... of the first layer for ``images`` B x ..."""
        if self.encoding == "repeat":
            return (images / self.T).unsqueeze(0).expand(self.T, *images.shape).contiguous()
        currents = images.new_zeros((self.T, *images.shape))
        currents[0] = images
        return currents

    def forward(self, images: torch.Tensor, record: bool = False) -> torch.Tensor:
        check_input(images, self.input_spec, what="spiking network")
        self.set_recording(record)
        if self.step_mode == "collapsed":
            return self.body(images)
        currents = self.encode(images)
        if self.time_folded:
            return self.body(currents.flatten(0, 1)).unflatten(0, (self.T, -1)).sum(0)
        return self.body(currents).sum(0)

    def extra_repr(self) -> str:
        return f"T={self.T}, encoding={self.encoding}, step_mode={self.step_mode}"
