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

from torch import nn

from .._faults import fault_point
from .._weights import FORMAT, load_state_strictly, read_checkpoint, read_safetensors
from ..conversion.user_models import create_any_model
from ..errors import CheckpointError


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


def load_checkpoint(path: str | os.PathLike, model_name: str | None = None,
                    **override: object) -> tuple[nn.Module, dict]:
    """Rebuild the model recorded in a checkpoint and load its weights.

    Args:
        path: the ``.safetensors`` file.
        model_name: if given, the checkpoint must be of this model.
        **override: model keyword arguments that replace the recorded ones (e.g. ``T``, ``G``).
    """
    tensors, config = read_checkpoint(path)
    name = config.get("model")
    if model_name is not None and name != model_name:
        raise CheckpointError(f"checkpoint {str(path)!r} holds model {name!r}, not {model_name!r}")
    kwargs = {**config.get("model_kwargs", {}), **override}
    model = create_any_model(name, **kwargs)
    load_state_strictly(model, tensors, f"checkpoint {str(path)!r}", f"model {name!r}")
    return model, config


__all__ = ["FORMAT", "atomic_write_bytes", "load_checkpoint", "load_state_strictly", "model_config",
           "portable_path", "read_checkpoint", "read_safetensors", "save_checkpoint"]
