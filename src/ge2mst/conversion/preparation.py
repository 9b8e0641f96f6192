"""``prepare``: the networks people already have, made ready for exact conversion.

``prepare(model, T=4, G=2)`` works like torch.ao.quantization's prepare: it traces an ordinary
``nn.Module`` with torch.fx and returns a `torch.fx.GraphModule` (a copy; the float weights are
kept) in which every ReLU-type activation is an ExpG quantizer:

- ``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh(0, a)`` modules, ``F.relu``, ``torch.relu``,
  ``F.relu6``, ``F.hardtanh(x, 0, a)`` and ``Tensor.relu``, in place or not. Each *call site*
  gets a quantizer of its own (one ``self.relu`` called at five places gives five, each with its
  own lambda), named after the module or node it replaces; the clip of ReLU6 / Hardtanh starts
  lambda at a. An in-place activation's later readers read the quantizer's output, as they read
  the modified tensor before.
- ``F.max_pool2d`` becomes an ``nn.MaxPool2d`` module, so that `ge2mst.convert` can make it
  spiking (max pooling of codes is exact: the quantizer is monotone).

Everything else in the graph must be something a spiking network reproduces exactly: weight
layers (``Conv2d``, ``Linear``) and the BatchNorm that follows one, pooling (average, adaptive
average, max on spike-coded inputs), reshapes (``flatten``, ``view``, ``reshape``, indexing),
``torch.cat``, residual additions of two tensors, scaling by a constant, dropout. What is not is
refused with a `ConversionError` naming the graph node and what to do: LayerNorm, GroupNorm and
softmax (data-dependent normalisation), GELU / SiLU / sigmoid / tanh and other smooth activations
(unless ``replace_smooth=True``, which swaps them for ExpG quantizers with a warning that the
function changes), products of two tensors, adding a constant to a tensor (its T steps would
each add it), weights used in function calls, and any function or method not known to be exact.
A network torch.fx cannot trace (data-dependent control flow) gets one error naming the
construct.

The result trains like any ge2mst network: `ge2mst.calibrate`, then the progressive
ClipReLU -> ExpG fine-tune (`ge2mst train --model-file ... --init-weights ...`), then
`ge2mst.analysis.verify` and `ge2mst.convert`.
"""

from __future__ import annotations

import copy
import math
import operator
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn

from .._checks import whole_number
from ..core.coding import check_time_groups
from ..core.quantizers import ExpGQuant, Quantizer
from ..errors import ConversionError

#: activation modules that become an ExpG quantizer (Hardtanh only with min_val = 0)
RELU_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
#: activation functions that do, with the argument position of their upper clip where they have one
RELU_FUNCTIONS = {F.relu: None, torch.relu: None, torch.relu_: None, F.relu6: None,
                  F.hardtanh: 2}
RELU_METHODS = ("relu", "relu_")
#: smooth activations: refused, or swapped for an ExpG quantizer with ``replace_smooth=True``
SMOOTH_MODULES = (nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Hardswish,
                  nn.Mish, nn.Softplus, nn.PReLU)
SMOOTH_FUNCTIONS = (F.gelu, F.silu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.leaky_relu,
                    F.elu, F.hardswish, F.mish, F.softplus)
#: modules refused whatever is asked, and why
REFUSED_MODULES = {
    nn.LayerNorm: "LayerNorm normalises each sample by its own statistics",
    nn.GroupNorm: "GroupNorm normalises each sample by its own statistics",
    nn.Softmax: "softmax divides by a data-dependent sum",
    nn.MultiheadAttention: "softmax attention multiplies two activations and divides by a "
                           "data-dependent sum (ge2mst's GW-SSA replaces softmax by an ExpG neuron)",
    nn.RNNBase: "recurrent layers carry state across the sequence",
}
#: modules a graph may hold as they are (weight layers, BatchNorm, linear stateless modules)
KEPT_MODULES = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.AvgPool2d,
                nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.Flatten, nn.Unflatten, nn.Identity,
                nn.Dropout, nn.Dropout2d, Quantizer)
#: functions and methods that commute with the time sum (reshapes, linear stateless operations)
LINEAR_FUNCTIONS = (torch.flatten, torch.cat, torch.reshape, operator.getitem, F.avg_pool2d,
                    F.adaptive_avg_pool2d, F.dropout, torch.squeeze, torch.unsqueeze)
LINEAR_METHODS = ("view", "reshape", "flatten", "size", "contiguous", "squeeze", "unsqueeze",
                  "dim")
ADDITIONS = (operator.add, operator.iadd, torch.add)
#: products of two tensors: refused where both are activations
PRODUCTS = (operator.matmul, torch.matmul, torch.bmm, torch.mm, torch.einsum)
SCALINGS = (operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv)


def prepare(model: nn.Module, T: int = 4, G: int = 2, *, replace_smooth: bool = False,
            concrete_args: dict | None = None) -> fx.GraphModule:
    """A copy of ``model`` traced by torch.fx, every ReLU-type activation an `ExpGQuant` (T, G).

    Args:
        model: an ordinary network (float weights are kept; ``model`` is not changed).
        T: time steps of the ExpG coding.
        G: temporal groups (G divides T).
        replace_smooth: swap GELU, SiLU, sigmoid, tanh and other smooth activations for ExpG
            quantizers too (a `UserWarning` says that the function changes); refused otherwise.
        concrete_args: passed to ``torch.fx.symbolic_trace`` (arguments to fix while tracing).

    Returns:
        a `torch.fx.GraphModule` with the model's modules and parameters, in training mode as
        ``model`` was; its quantizers hold lambda = 1 (or the clip of ReLU6 / Hardtanh) until
        `ge2mst.calibrate` sets them.

    Raises:
        ConversionError: a network fx cannot trace, or a node no spiking network reproduces
            exactly (named, with what to do).
    """
    T, G = check_time_groups(whole_number("T", T), whole_number("G", G))
    if not isinstance(model, nn.Module):
        raise ConversionError(f"prepare expects a torch.nn.Module, got {type(model).__name__}")
    graph = _trace(copy.deepcopy(model), concrete_args)
    counter = {"quantizers": 0}
    for node in list(graph.graph.nodes):
        _rewrite(graph, node, T, G, replace_smooth, counter)
    graph.graph.lint()
    graph.delete_all_unused_submodules()  # the activations replaced
    graph.recompile()
    graph.train(model.training)
    if counter["quantizers"] == 0:
        raise ConversionError("the model has no ReLU-type activation: there is nothing to turn "
                              "into spiking neurons")
    return graph


def _trace(model: nn.Module, concrete_args: dict | None) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model, concrete_args=concrete_args)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(
            f"torch.fx cannot trace {type(model).__name__}: {first}. Control flow that depends on "
            "the data (an if or a loop on a tensor's values) cannot become a fixed spiking "
            "network: compute it outside forward, or pass the value as concrete_args") from None


def _rewrite(graph: fx.GraphModule, node: fx.Node, T: int, G: int, replace_smooth: bool,
             counter: dict) -> None:
    """Replace ``node`` by what the spiking network needs, or refuse it."""
    if node.op in ("placeholder", "output"):
        return
    if node.op == "get_attr":
        _refuse(node, "uses a parameter or buffer directly (e.g. F.conv2d(x, self.weight)); "
                      "ge2mst converts weight layers held as modules (nn.Conv2d, nn.Linear)")
    clip = _relu_clip(graph, node)
    if clip is not False:
        _quantize(graph, node, T, G, clip, counter)
    elif _is_smooth(graph, node):
        if not replace_smooth:
            _refuse(node, "is a smooth activation, which no ExpG neuron reproduces; replace it "
                          "by a ReLU, or pass prepare(..., replace_smooth=True) to swap it for an "
                          "ExpG quantizer (the function changes: fine-tune afterwards)")
        warnings.warn(f"prepare: {_describe(node)} is replaced by an ExpG quantizer: the "
                      "network's function changes; fine-tune it before comparing", UserWarning,
                      stacklevel=4)
        _quantize(graph, node, T, G, None, counter)
    elif node.op == "call_function" and node.target is F.max_pool2d:
        _max_pool_module(graph, node)
    else:
        _check_exact(graph, node)


def _relu_clip(graph: fx.GraphModule, node: fx.Node):
    """False unless ``node`` is a ReLU-type activation; then its upper clip (None: none)."""
    if node.op == "call_module":
        module = graph.get_submodule(node.target)
        if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
            if module.min_val != 0:
                _refuse(node, f"is a Hardtanh with min_val = {module.min_val}: only a clip at 0 "
                              "is a ReLU")
            return float(module.max_val)
        return None if isinstance(module, nn.ReLU) else False
    if node.op == "call_method":
        return None if node.target in RELU_METHODS else False
    if node.op == "call_function" and node.target in RELU_FUNCTIONS:
        if node.target is F.relu6:
            return 6.0
        if node.target is F.hardtanh:
            low = node.kwargs.get("min_val", node.args[1] if len(node.args) > 1 else -1.0)
            high = node.kwargs.get("max_val", node.args[2] if len(node.args) > 2 else 1.0)
            if low != 0:
                _refuse(node, f"is a hardtanh with min_val = {low}: only a clip at 0 is a ReLU")
            return float(high)
        return None
    return False


def _is_smooth(graph: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(graph.get_submodule(node.target), SMOOTH_MODULES)
    if node.op == "call_method":
        return node.target in ("sigmoid", "tanh", "sigmoid_", "tanh_")
    return node.op == "call_function" and node.target in SMOOTH_FUNCTIONS


def _quantize(graph: fx.GraphModule, node: fx.Node, T: int, G: int, clip: float | None,
              counter: dict) -> None:
    """Put a new ExpG quantizer in ``node``'s place (its own, even where a module is shared)."""
    lam = clip if clip is not None and math.isfinite(clip) and clip > 0 else 1.0
    base = (node.target if node.op == "call_module" else node.name).replace(".", "_")
    name = f"{base}_expg{counter['quantizers']}"
    graph.add_submodule(name, ExpGQuant(T, G, lam=lam))
    counter["quantizers"] += 1
    source = node.args[0] if node.args else node.kwargs.get("input")
    in_place = _in_place(graph, node)
    with graph.graph.inserting_after(node):
        new = graph.graph.call_module(name, (source,))
    node.replace_all_uses_with(new)
    if in_place and isinstance(source, fx.Node):  # later readers of the modified tensor
        later = _after(new)
        source.replace_all_uses_with(new, delete_user_cb=lambda user: user in later)
    graph.graph.erase_node(node)


def _in_place(graph: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target.endswith("_")
    if node.op == "call_module":
        return bool(getattr(graph.get_submodule(node.target), "inplace", False))
    return node.target is torch.relu_ or bool(node.kwargs.get("inplace", False))


def _after(node: fx.Node) -> set:
    out, current = set(), node.next
    while current.op != "root":
        out.add(current)
        current = current.next
    return out


def _max_pool_module(graph: fx.GraphModule, node: fx.Node) -> None:
    """``F.max_pool2d(x, ...)`` -> an ``nn.MaxPool2d`` module node (what `convert` swaps)."""
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    options = dict(zip(names, node.args[1:], strict=False)) | dict(node.kwargs)
    name = f"{node.name}_module"
    graph.add_submodule(name, nn.MaxPool2d(**options))
    with graph.graph.inserting_after(node):
        new = graph.graph.call_module(name, (node.args[0],))
    node.replace_all_uses_with(new)
    graph.graph.erase_node(node)
    _check_exact(graph, new)


def _check_exact(graph: fx.GraphModule, node: fx.Node) -> None:
    """Refuse ``node`` unless a spiking network reproduces it exactly."""
    if node.op == "call_module":
        _check_module(node, graph.get_submodule(node.target))
    elif node.op == "call_method":
        if node.target not in LINEAR_METHODS and not _keeps_batch_axis(node):
            _refuse(node, f"calls the tensor method .{node.target}(), which ge2mst does not know "
                          "to be exact on spike trains")
    elif node.target not in LINEAR_FUNCTIONS:
        _check_function(node)


def _check_module(node: fx.Node, module: nn.Module) -> None:
    for cls, why in REFUSED_MODULES.items():
        if isinstance(module, cls):
            _refuse(node, f"cannot be exact: {why}")
    if isinstance(module, nn.MaxPool2d) and (module.ceil_mode or module.return_indices):
        _refuse(node, "is a max pooling with ceil_mode or return_indices; use the default floor "
                      "mode without indices")
    if not isinstance(module, KEPT_MODULES) and not _has_own_conversion(module):
        _refuse(node, f"({type(module).__name__}) has no exact spiking equivalent known to "
                      "ge2mst; write it with weight layers, ReLUs, pooling and reshapes")


def _check_function(node: fx.Node) -> None:
    tensors = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
    if node.target in ADDITIONS:
        if len(tensors) < 2:
            _refuse(node, "adds a constant to an activation: each of the T steps would add it; "
                          "put it in a layer's bias")
        return
    if node.target in PRODUCTS:
        if len(tensors) > 1:
            _refuse(node, "multiplies two activations (a matrix product), which no spiking "
                          "network computes exactly; ge2mst's GW-SSA is attention that converts")
        return
    if node.target in SCALINGS:
        dividing = node.target in (operator.truediv, operator.itruediv)
        if dividing and isinstance(node.args[1], fx.Node):
            _refuse(node, "divides by an activation, which no spiking network computes exactly")
        if not dividing and len(tensors) > 1:
            _refuse(node, "multiplies two activations, which no spiking network computes exactly")
        return
    what = getattr(node.target, "__name__", str(node.target))
    _refuse(node, f"calls {what}, which ge2mst does not know to be exact on spike trains")


def _keeps_batch_axis(node: fx.Node) -> bool:
    """Whether a ``.mean(dims)``, ``.transpose(a, b)`` or ``.permute(...)`` leaves the batch axis
    (which carries the time axis in the spiking network) where it is: then it is linear."""
    args = list(node.args[1:])
    if node.target == "mean":
        dims = args[0] if args else node.kwargs.get("dim")
        dims = dims if isinstance(dims, list | tuple) else [dims]
        return bool(dims) and all(isinstance(d, int) and d > 0 for d in dims)
    if node.target == "transpose":
        return len(args) == 2 and all(isinstance(d, int) and d > 0 for d in args)
    if node.target == "permute":
        order = args[0] if len(args) == 1 and isinstance(args[0], list | tuple) else args
        return bool(order) and order[0] == 0
    return False


def _has_own_conversion(module: nn.Module) -> bool:
    return hasattr(module, "to_spiking")


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"graph node {node.name!r} (module {node.target!r})"
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__",
                                                                      node.target)
    return f"graph node {node.name!r} ({node.op} {target})"


def _refuse(node: fx.Node, why: str) -> None:
    raise ConversionError(f"{_describe(node)} {why}")


__all__ = ["prepare"]
