"""A model registry in the spirit of timm's: ``create_model(name, **kwargs)``, ``list_models()``.

Every registered builder returns an ANN-mode network (quantizers in place of activations) that
`ge2mst.convert` turns into its spiking network: one definition serves both modes and every data
set (``num_classes``, ``in_chans`` and the image size are arguments).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable

from torch import nn

from ..errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its function name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ConfigError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn


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
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (known: {', '.join(list_models())})")
    if pretrained is not False and pretrained is not None:
        return _create_pretrained(name, adapter_chans, pretrained, kwargs)
    if adapter_chans is not None and (isinstance(adapter_chans, bool) or not isinstance(adapter_chans, int)
                                      or adapter_chans < 1):
        raise ConfigError(f"adapter_chans must be a whole number >= 1, got {adapter_chans!r}")
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
    return model


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
    return model
