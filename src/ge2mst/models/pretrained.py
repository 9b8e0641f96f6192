"""Weights that ship with ge2mst, and weights from a file or a run folder: ``pretrained=``.

Shipped weights are package data: ``ge2mst/weights/`` holds one ``.safetensors`` checkpoint per
shipped model, its model card (``.md``) and ``index.json``, which names each model's file and
the file's sha256. ``create_model(name, pretrained=True)`` reads the file from the installed
package (no download: nothing can expire), checks its sha256 and loads it strictly (every tensor
name and shape must match). ``pretrained="path"`` takes a ``.safetensors`` checkpoint or a
``ge2mst train`` run folder (its ``last.safetensors``).

The loaded model carries ``pretrained_cfg``: the checkpoint's config (``mean`` and ``std`` to
normalise inputs with, ``data``, ``seed``, ``epoch``, ...) plus ``source`` and ``sha256``.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from .._files import sha256_of
from ..errors import CheckpointError

#: the package data folder of the shipped weights, inside ``ge2mst``
WEIGHTS_PACKAGE = "ge2mst.weights"


def _weights_dir():
    return resources.files(WEIGHTS_PACKAGE)


def shipped_weights() -> dict[str, dict]:
    """``index.json`` of the shipped weights: model name -> {file, sha256, card, ...}."""
    index = _weights_dir() / "index.json"
    if not index.is_file():
        return {}
    try:
        return json.loads(index.read_text())
    except ValueError as exc:
        raise CheckpointError(f"the index of ge2mst's shipped weights is corrupt ({exc}); "
                              "reinstall ge2mst") from None


def shipped_path(name: str) -> Path:
    """The checked file of ``name``'s shipped weights (sha256 as recorded in the index)."""
    index = shipped_weights()
    if name not in index:
        known = ", ".join(sorted(index)) or "none"
        raise CheckpointError(f"no shipped weights for model {name!r} (shipped: {known}); pass "
                              "pretrained='path/to/checkpoint.safetensors' or a run folder")
    entry = index[name]
    path = Path(str(_weights_dir() / entry["file"]))
    if not path.is_file():
        raise CheckpointError(f"the shipped weights of {name!r} ({entry['file']}) are missing "
                              "from the installed package; reinstall ge2mst")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise CheckpointError(f"the shipped weights of {name!r} are damaged: sha256 {digest[:16]}... "
                              f"instead of {entry['sha256'][:16]}...; reinstall ge2mst")
    return path


def resolve(name: str, pretrained: bool | str | os.PathLike) -> Path:
    """The checkpoint file that ``pretrained`` names for model ``name``."""
    if pretrained is True:
        return shipped_path(name)
    if not isinstance(pretrained, str | os.PathLike):
        raise CheckpointError(f"pretrained must be True, False or a path, got {pretrained!r}")
    path = Path(pretrained)
    if path.is_dir():
        if not (path / "last.safetensors").is_file():
            raise CheckpointError(f"{str(path)!r} is a folder without last.safetensors: not a "
                                  "ge2mst train run folder")
        return path / "last.safetensors"
    if not path.is_file():
        raise CheckpointError(f"pretrained weights {str(path)!r} do not exist")
    return path


def load_pretrained(model, name: str, pretrained: bool | str | os.PathLike, config: dict,
                    tensors: dict, path: Path) -> None:
    """Load ``tensors`` (read from ``path``) strictly into ``model`` and attach ``pretrained_cfg``."""
    from .._weights import load_state_strictly

    load_state_strictly(model, tensors, f"pretrained weights {str(path)!r}", f"model {name!r}")
    model.pretrained_cfg = {**config, "source": "shipped" if pretrained is True else str(path),
                            "sha256": sha256_of(path)}


__all__ = ["WEIGHTS_PACKAGE", "load_pretrained", "resolve", "sha256_of", "shipped_path",
           "shipped_weights"]
