"""A model registry in the spirit of timm's: ``create_model(name, **kwargs)``, ``list_models()``.

Every registered builder returns an ANN-mode network (quantizers in place of activations) that
`ge2mst.convert` turns into its spiking network: one definition serves both modes and every data
set (``num_classes``, ``in_chans`` and the image size are arguments).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import one_of, whole_number
from ..core.spiking_neuron import SpikingNeuron
from ..errors import ConfigError, InputError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_SPECS: dict[str, ModelSpec] = {}
#: the time steps and ExpG temporal groups a model is built with when nothing else is asked for
DEFAULT_T, DEFAULT_G = 4, 2


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows of a model without building it.

    ``method``: ``"progressive"`` (ANN with quantizers, converted after training) or ``"stbp"``
    (a spiking network trained through time: no temporal groups ``G``, nothing to convert).
    ``img_size``: the image side the model is built for by default (it takes an ``img_size``
    keyword for others), or None for a model that runs on any side.
    """

    name: str
    method: str = "progressive"
    img_size: int | None = None


def register_model(fn: Callable[..., nn.Module] | None = None, *, method: str = "progressive",
                   img_size: int | None = None) -> Callable:
    """Decorator: register ``fn`` under its function name, with its `ModelSpec` metadata.

    ``@register_model`` or ``@register_model(method="stbp", img_size=32)``.
    """
    one_of("method", method, ("progressive", "stbp"))
    if img_size is not None:
        whole_number("img_size", img_size)

    def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ConfigError(f"model {name!r} is registered twice")
        _REGISTRY[name] = fn
        _SPECS[name] = ModelSpec(name, method, img_size)
        return fn

    return register if fn is None else register(fn)


def model_spec(name: str) -> ModelSpec:
    """The `ModelSpec` of the registered model ``name``."""
    _check_known(name)
    return _SPECS[name]


def _check_known(name: str) -> None:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (known: {', '.join(list_models())})")


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching the shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def create_model(name: str, adapter_chans: int | None = None,
                 pretrained: bool | str | os.PathLike = False, **kwargs) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` go to its builder.

    ``pretrained``: ``True`` loads the weights shipped with ge2mst for ``name`` (package data,
    sha256-checked), a path loads a ``.safetensors`` checkpoint or a ``ge2mst train`` run folder;
    the model is then built with the checkpoint's recorded keyword arguments (``kwargs`` override
    them; every tensor must still fit) and carries ``pretrained_cfg`` (``mean``/``std`` to
    normalise inputs with, data, seed, ...). See `ge2mst.models.pretrained`.

    ``adapter_chans``: put an `InputAdapter` (a 1x1 convolution from ``adapter_chans`` channels
    onto the model's ``in_chans``) in front, e.g. to fine-tune an RGB network on event frames.

    The model gets ``model_name`` and ``model_kwargs`` attributes, which checkpoints record so that
    the same network can be rebuilt.
    """
    _check_known(name)
    if pretrained is not False and pretrained is not None:
        return _create_pretrained(name, adapter_chans, pretrained, kwargs)
    if adapter_chans is not None:
        whole_number("adapter_chans", adapter_chans)
    try:
        model = _REGISTRY[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    if adapter_chans is not None:
        from .adapter import InputAdapter

        model = InputAdapter(model, adapter_chans, kwargs.get("in_chans", 3))
        kwargs["adapter_chans"] = adapter_chans
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    model.register_forward_pre_hook(check_model_input)
    return model


def check_model_input(model: nn.Module, args: tuple) -> None:
    """Refuse, with one `InputError`, what the network cannot take: anything but floating-point
    B x C x H x W images with the channels it reads (in training too: a shape costs no host
    synchronisation; a model that checks its own input names its own shape), and in inference NaN
    or +-inf values, as the converted network refuses them (a training step never waits for the
    host; its loss turns non-finite). A converted copy (spiking neurons inside, T x B x ...
    inputs) is left to `SpikingNetwork`."""
    if not args or not isinstance(args[0], torch.Tensor) or _is_converted(model):
        return
    x = args[0]
    name = getattr(model, "model_name", type(model).__name__)
    if not getattr(model, "checks_own_input", False):
        _check_images(name, model, x)
    if model.training or not x.is_floating_point() or x.device.type == "meta":
        return
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"model {name!r} received NaN or infinite input values")


def _check_images(name: str, model: nn.Module, x: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise InputError(f"model {name!r} expects floating-point images, got dtype {x.dtype}")
    chans = _input_channels(model)
    if x.dim() != 4 or (chans is not None and x.shape[1] != chans):
        want = "C" if chans is None else chans
        raise InputError(f"model {name!r} expects images of shape B x {want} x H x W (rank 4), "
                         f"got shape {tuple(x.shape)}")


def _input_channels(model: nn.Module) -> int | None:
    """The image channels ``model`` takes: its input adapter's, else its own ``in_chans`` (a
    spiking baseline may stack frames into its first convolution), else its first convolution's;
    None when it says nothing."""
    from .adapter import InputAdapter

    if isinstance(model, InputAdapter):
        return model.adapter.in_channels
    chans = model.__dict__.get("in_chans")
    if isinstance(chans, int):
        return chans
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first is None else first.in_channels


def _is_converted(model: nn.Module) -> bool:
    """Whether ``model`` is the body of a converted network (it holds spiking neurons)."""
    return any(isinstance(m, SpikingNeuron) for m in model.modules())


def model_kwargs_for(name: str, *, num_classes: int, in_chans: int, img_size: int,
                     T: int | None = None, G: int | None = None, **kwargs) -> dict:
    """The keyword arguments that build model ``name`` for images of ``in_chans`` x ``img_size``
    x ``img_size`` in ``num_classes`` classes: T (default 4) and, for ExpG models, G (default 2;
    an STBP model has no temporal groups and refuses one); ``img_size`` is passed only to models
    built for one side. ``kwargs`` (e.g. ``width``) go through unchanged."""
    spec = model_spec(name)
    out = {"num_classes": num_classes, "in_chans": in_chans, "T": DEFAULT_T if T is None else T}
    if spec.method == "stbp":
        if G is not None:
            raise ConfigError(f"temporal groups (G, --groups) apply to ExpG models; {name!r} is an STBP "
                              "baseline without temporal groups of the ExpG kind")
    else:
        out["G"] = DEFAULT_G if G is None else G
    if spec.img_size is not None and img_size != spec.img_size:
        out["img_size"] = img_size
    return {**out, **kwargs}


def _create_pretrained(name: str, adapter_chans: int | None, pretrained, kwargs: dict) -> nn.Module:
    from .._weights import read_checkpoint
    from .pretrained import load_pretrained, resolve

    path = resolve(name, pretrained)
    tensors, config = read_checkpoint(path)
    if config.get("model") != name:
        raise ConfigError(f"pretrained weights {str(path)!r} are of model {config.get('model')!r}, "
                          f"not {name!r}")
    recorded = dict(config.get("model_kwargs", {}))
    if adapter_chans is None:
        adapter_chans = recorded.pop("adapter_chans", None)
    model = create_model(name, adapter_chans=adapter_chans, **{**recorded, **kwargs})
    load_pretrained(model, name, pretrained, config, tensors, path)
    trained = {k: recorded[k] for k in ("T", "G") if k in recorded}
    asked = {k: kwargs.get(k, v) for k, v in trained.items()}
    model.pretrained_cfg["trained_at"] = trained
    if asked != trained:
        note = (f"the weights of {name!r} were trained at "
                f"{', '.join(f'{k} = {v}' for k, v in trained.items())}; this model runs at "
                f"{', '.join(f'{k} = {v}' for k, v in asked.items())} (the same weights and "
                "lambdas on another code book: its accuracy is not the shipped one)")
        model.pretrained_cfg["note"] = note
        warnings.warn(note, UserWarning, stacklevel=3)
    return model
