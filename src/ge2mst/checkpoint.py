"""Checkpoints: weights in safetensors, the config as JSON, written atomically.

``save_checkpoint("run/model.safetensors", model, mean=..., std=...)`` writes the tensors with the
config embedded in the safetensors metadata, and the same config beside it as
``run/model.json`` for people and tools. Both are written to a temporary file in the same folder,
flushed to disk and renamed over the target, so a kill at any moment leaves either the old or the
new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError
from .faults import fault_point
from .models import create_model

FORMAT = "ge2mst-checkpoint/1"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fault_point("save")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_config(model: nn.Module, **extra) -> dict:
    """The JSON-serialisable config that rebuilds ``model`` with `create_model`."""
    name = getattr(model, "model_name", None)
    if name is None:
        raise CheckpointError("only models built with ge2mst.create_model can be checkpointed "
                              "(the model has no model_name)")
    return {"format": FORMAT, "model": name, "model_kwargs": getattr(model, "model_kwargs", {}),
            **extra}


def portable_path(path: str | os.PathLike) -> str:
    """``path`` as it may be recorded in a file that travels: an absolute path is written relative
    to the working directory (no machine's folders in a shipped checkpoint); names such as
    ``digits`` stay as they are."""
    text = os.fspath(path)
    return os.path.relpath(text) if os.path.isabs(text) else text


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra) -> Path:
    """Save ``model``'s weights and config to ``path`` (``.safetensors``) and its ``.json``."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint paths end in .safetensors, got {str(path)!r}")
    if isinstance(extra.get("data"), str | os.PathLike):
        extra["data"] = portable_path(extra["data"])
    config = model_config(model, **extra)
    text = json.dumps(config, indent=2, sort_keys=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata={"ge2mst": text}))
    atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode())
    return path


def _corrupt(what: str, exc: Exception) -> CheckpointError:
    first = str(exc).splitlines()[0] if str(exc) else "unreadable"
    return CheckpointError(f"{what} is truncated or corrupt ({type(exc).__name__}: {first})")


def read_safetensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the ``__metadata__`` of the safetensors file ``path``; a one-line
    CheckpointError naming ``what`` (e.g. "checkpoint 'x.safetensors'") for a damaged file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = path.read_bytes()
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        return tensors, header.get("__metadata__") or {}
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _corrupt(what, exc) from None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint's tensors and config, with a clear error for any damaged file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    tensors, meta = read_safetensors(path, f"checkpoint {str(path)!r}")
    if "ge2mst" not in meta:
        what = ("a converted spiking network of 'ge2mst convert' (use it with 'ge2mst eval')"
                if "ge2mst_snn" in meta else "a safetensors file of another tool")
        raise CheckpointError(f"{str(path)!r} is not a ge2mst training checkpoint: it is {what}")
    try:
        config = json.loads(meta["ge2mst"])
    except (ValueError, TypeError) as exc:
        raise _corrupt(f"checkpoint {str(path)!r}", exc) from None
    if config.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} has format {config.get('format')!r}, "
                              f"expected {FORMAT!r}")
    return tensors, config


def load_checkpoint(path: str | os.PathLike, model_name: str | None = None,
                    **override) -> tuple[nn.Module, dict]:
    """Rebuild the model recorded in a checkpoint and load its weights.

    Args:
        path: the ``.safetensors`` file.
        model_name: if given, the checkpoint must be of this model.
        override: model keyword arguments that replace the recorded ones (e.g. ``T``, ``G``).
    """
    tensors, config = read_checkpoint(path)
    name = config.get("model")
    if model_name is not None and name != model_name:
        raise CheckpointError(f"checkpoint {str(path)!r} holds model {name!r}, not {model_name!r}")
    kwargs = {**config.get("model_kwargs", {}), **override}
    model = create_model(name, **kwargs)
    load_state_strictly(model, tensors, f"checkpoint {str(path)!r}", f"model {name!r}")
    return model, config


def load_state_strictly(module: nn.Module, tensors: dict[str, torch.Tensor], what: str,
                        target: str, check_dtype: bool = False) -> None:
    """Load ``tensors`` into ``module`` after checking names, shapes (and dtypes): a
    CheckpointError naming ``what`` (the file) and ``target`` (what it should fit) otherwise."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{what} does not match {target}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    for key, value in tensors.items():
        want = expected[key]
        if value.shape != want.shape or (check_dtype and value.dtype != want.dtype):
            raise CheckpointError(f"{what}: {key} has shape {tuple(value.shape)} ({value.dtype}), "
                                  f"{target} expects shape {tuple(want.shape)} ({want.dtype})")
    module.load_state_dict(tensors, strict=True)
