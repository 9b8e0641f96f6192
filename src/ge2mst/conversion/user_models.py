"""A user's own network, from a Python file, as a ge2mst model: built, given its float weights,
prepared (`ge2mst.prepare`), and named so that checkpoints rebuild it.

``--model-file path/net.py:factory`` names a file and a callable in it that returns an
``nn.Module`` (called with the ``--model-arg`` keywords, if any); ``--init-weights FILE`` loads
float weights into it (a ``state_dict`` saved with ``torch.save``, a ``{"state_dict": ...}`` or
``{"model": ...}`` wrapper of one, or a ``.safetensors`` file) before it is prepared. The prepared
network is named ``file:<path>:<factory>`` and records how it was built (path, factory, T, G,
keywords), so that `create_any_model` and `ge2mst.io.load_checkpoint` rebuild it from a
checkpoint, the file being found again at the path recorded (relative to the working folder).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..models import create_model
from ..models.registry import check_model_input
from .preparation import prepare

#: the prefix of a user model's name
USER_PREFIX = "file:"


def parse_model_file(spec: str) -> tuple[str, str]:
    """``"path/net.py:factory"`` -> (path, factory); `ConfigError` for anything else."""
    path, sep, factory = str(spec).rpartition(":")
    if not sep or not path or not factory.isidentifier():
        raise ConfigError(f"--model-file takes PATH.py:FACTORY (a Python file and the name of a "
                          f"function or class in it that builds the network), got {spec!r}")
    return path, factory


def _load_factory(path: str, factory: str):
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"model file {path!r} does not exist")
    digest = hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    name = f"ge2mst_user_model_{digest}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ConfigError(f"model file {path!r} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: any error, reported in one line
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ConfigError(f"model file {path!r} failed to import: {type(exc).__name__}: "
                              f"{first}") from None
        sys.modules[name] = module
    builder = getattr(module, factory, None)
    if not callable(builder):
        raise ConfigError(f"model file {path!r} has no function or class {factory!r}")
    return builder


def load_float_weights(net: nn.Module, path: str | os.PathLike) -> None:
    """Load the float ``state_dict`` in ``path`` (.pth / .pt or .safetensors) into ``net``,
    strictly; one-line `CheckpointError` naming what does not match."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"--init-weights {str(path)!r} does not exist")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many kinds for a damaged file
        raise CheckpointError(f"--init-weights {str(path)!r} cannot be read "
                              f"({type(exc).__name__}): give a state_dict saved with torch.save, "
                              "or a .safetensors file") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"--init-weights {str(path)!r} holds no state_dict of tensors")
    mine = net.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    wrong = sorted(k for k in set(mine) & set(state) if mine[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("of another shape", wrong)) if keys]
        raise CheckpointError(f"--init-weights {str(path)!r} does not fit the network ("
                              f"{'; '.join(parts)})")
    net.load_state_dict(state)


def build_user_model(model_file: str, factory: str, T: int = 4, G: int = 2, *,
                     replace_smooth: bool = False, factory_kwargs: dict | None = None,
                     init_weights: str | os.PathLike | None = None) -> nn.Module:
    """The prepared network of ``factory(**factory_kwargs)`` in ``model_file``, with the float
    weights of ``init_weights`` (if given) loaded before it is prepared."""
    kwargs = dict(factory_kwargs or {})
    try:
        net = _load_factory(model_file, factory)(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{factory}(**{kwargs}) in {model_file!r}: {exc}") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"{factory} in {model_file!r} returned {type(net).__name__}, not a "
                          "torch.nn.Module")
    if init_weights is not None:
        load_float_weights(net, init_weights)
    prepared = prepare(net, T, G, replace_smooth=replace_smooth)
    prepared.model_name = f"{USER_PREFIX}{model_file}:{factory}"
    prepared.model_kwargs = {"model_file": model_file, "factory": factory, "T": T, "G": G,
                             "replace_smooth": replace_smooth, "factory_kwargs": kwargs}
    prepared.register_forward_pre_hook(check_model_input)
    return prepared


def create_any_model(name: str, **kwargs) -> nn.Module:
    """`ge2mst.create_model` for registered names, `build_user_model` for ``file:...`` names
    (its recorded keywords; ``T`` and ``G`` may be overridden)."""
    if not name.startswith(USER_PREFIX):
        return create_model(name, **kwargs)
    kwargs.pop("pretrained", None)
    path, factory = parse_model_file(name[len(USER_PREFIX):])
    kwargs.setdefault("model_file", path)
    kwargs.setdefault("factory", factory)
    return build_user_model(**kwargs)


__all__ = ["USER_PREFIX", "build_user_model", "create_any_model", "load_float_weights",
           "parse_model_file"]
