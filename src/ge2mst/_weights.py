"""Reading weights: safetensors files and ge2mst checkpoints, loaded strictly (a leaf below the
models: building a model from a checkpoint, `ge2mst.io.checkpoint.load_checkpoint`, sits above them)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError

FORMAT = "ge2mst-checkpoint/1"


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
    if path.is_dir():
        run = (path / "last.safetensors").is_file()
        hint = " (a run folder: its weights are last.safetensors)" if run else ""
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder, not a .safetensors file{hint}")
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
    _compare_sidecar(path, config)
    return tensors, config


def read_config(path: str | os.PathLike) -> dict | None:
    """The config embedded in a ge2mst training checkpoint, read from the file's header alone
    (no tensor is loaded); None for anything else (another file, a damaged one: whoever loads it
    reports that)."""
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 0 < size < 1 << 26:
                return None
            meta = json.loads(fh.read(size)).get("__metadata__") or {}
        config = json.loads(meta["ge2mst"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return config if isinstance(config, dict) else None


def _compare_sidecar(path: Path, config: dict) -> None:
    """Warn when the ``.json`` beside a checkpoint (written for people and tools) was edited to
    another model: the config embedded in the ``.safetensors`` is the one used."""
    sidecar = path.with_suffix(".json")
    try:
        written = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(written, dict):
        return
    for key in ("model", "model_kwargs"):
        if key in written and written[key] != config.get(key):
            warnings.warn(f"{str(sidecar)!r} says {key} = {written[key]!r}, but the config embedded "
                          f"in {str(path)!r} says {config.get(key)!r}: the embedded one is used "
                          "(the .json is only a copy for people and tools)", stacklevel=3)
            return


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
