"""Converted spiking networks on disk: ``save_spiking`` / ``load_spiking``.

``ge2mst convert CHECKPOINT --out model_snn.safetensors`` converts a trained checkpoint and writes

- ``model_snn.safetensors``: the spiking network's state (BatchNorm folded weights, neuron
  thresholds lambda), with its description embedded in the safetensors metadata;
- ``model_snn.json``: the same description for people and tools: format ``ge2mst-snn/1``, model
  name and builder keyword arguments, the `convert` options, T and G, the normalisation of the
  source checkpoint, the sha256 of the source checkpoint and the ge2mst version.

`load_spiking` rebuilds the model from the description, converts it with the stored options and
loads the stored state strictly, so the result computes exactly what the in-memory conversion
computed. Both files are written atomically (temporary file, fsync, rename) after the conversion
has succeeded, so a failure never replaces a good output; a torn pair (one file new, one old) is
detected on loading because the JSON must equal the embedded description.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from .._files import sha256_of
from .._version import __version__
from ..conversion.converter import ConversionOptions, SpikingNetwork, convert
from ..conversion.kinds import default_encoding, is_stbp, method_of, time_groups
from ..errors import CheckpointError, ConversionError
from .checkpoint import FORMAT as ANN_FORMAT
from .checkpoint import atomic_write_bytes, load_checkpoint, load_state_strictly, read_safetensors

FORMAT = "ge2mst-snn/1"
#: the keyword arguments of `convert` recorded in the description
CONVERT_KEYS = ("form", "step_mode", "encoding", "online", "T", "attention_products")
_METADATA_KEY = "ge2mst_snn"


def convert_checkpoint(checkpoint: str | os.PathLike, *, T: int | None = None,
                       G: int | None = None, form: str = "search", step_mode: str = "event",
                       encoding: str | None = None, attention_products: str = "codes",
                       if_steps: int | None = None) -> tuple[SpikingNetwork, dict]:
    """Load a trained checkpoint (``T``/``G`` overriding its own), convert it, and describe it.

    ``if_steps`` is `convert`'s ``T`` for vanilla IF neurons of QCFS models (default: the
    quantizer's L); ``encoding=None``: ``"repeat"`` for QCFS models, else ``"once"``.
    Returns the spiking network and its JSON-serialisable description.
    """
    override = {}
    if T is not None:
        override["T"] = T
    if G is not None:
        override["G"] = G
    model, config = load_checkpoint(checkpoint, **override)
    if is_stbp(model):
        raise ConversionError(f"model {config['model']!r} in {str(checkpoint)!r} is trained as a "
                              "spiking network (STBP): its checkpoint already is the spiking "
                              "network, there is nothing to convert")
    if encoding is None:
        encoding = default_encoding(method_of(model))
    options = {"form": form, "step_mode": step_mode, "encoding": encoding, "online": False,
               "T": if_steps, "attention_products": attention_products}
    snn = convert(model.eval(), **options)
    kwargs = {**config.get("model_kwargs", {}), **override}
    description = {
        "format": FORMAT,
        "model": config["model"],
        "model_kwargs": kwargs,
        "conversion": options,
        "T": snn.T,
        "G": time_groups(snn),
        "neurons": sorted({type(n).__name__ for _, n in snn.neurons()}),
        "source": {"checkpoint": str(checkpoint), "sha256": sha256_of(checkpoint)},
        "ge2mst_version": __version__,
    }
    for key in ("mean", "std"):
        if key in config:
            description[key] = config[key]
    return snn, description


def save_spiking(path: str | os.PathLike, snn: SpikingNetwork, description: dict) -> Path:
    """Write ``snn``'s state and ``description`` to ``path`` (.safetensors) and its .json."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"spiking network paths end in .safetensors, got {str(path)!r}")
    text = json.dumps(description, indent=2, sort_keys=True)
    # clones: safetensors refuses tensors that share memory
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in snn.state_dict().items()}
    data = save(tensors, metadata={_METADATA_KEY: text})  # everything serialised before writing
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode())
    return path


def _read_description(path: Path) -> dict:
    json_path = path.with_suffix(".json")
    if not json_path.is_file():
        raise CheckpointError(f"{str(json_path)!r}, the description of the spiking network "
                              f"{str(path)!r}, does not exist (write both with 'ge2mst convert')")
    try:
        description = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(json_path)!r} is not readable JSON ({type(exc).__name__})") \
            from None
    if not isinstance(description, dict):
        raise CheckpointError(f"{str(json_path)!r} does not describe a spiking network")
    fmt = description.get("format")
    if fmt == ANN_FORMAT:
        raise CheckpointError(f"{str(path)!r} is a trained (ANN) checkpoint, not a converted "
                              f"spiking network: convert it first with 'ge2mst convert "
                              f"{path} --out SNN.safetensors'")
    if fmt != FORMAT:
        raise CheckpointError(f"{str(json_path)!r} has format {fmt!r}, expected {FORMAT!r}")
    for key, kind in (("model", str), ("model_kwargs", dict), ("conversion", dict)):
        if not isinstance(description.get(key), kind):
            raise CheckpointError(f"{str(json_path)!r} lacks a valid {key!r} entry")
    return description


def is_spiking_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a converted network: a JSON beside it in the ``ge2mst-snn``
    format, or a safetensors header carrying the converted network's description."""
    path = Path(path)
    try:
        if json.loads(path.with_suffix(".json").read_text()).get("format") == FORMAT:
            return True
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        pass
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= 100_000_000:
                return False
            header = json.loads(f.read(size))
        return _METADATA_KEY in (header.get("__metadata__") or {})
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def load_spiking(path: str | os.PathLike) -> SpikingNetwork:
    """Rebuild and load the spiking network written by `save_spiking` (``ge2mst convert``).

    The network gets a ``description`` attribute (the JSON). Raises `CheckpointError` with a
    one-line message for a missing, truncated, foreign or mismatched file.
    """
    from ..conversion.user_models import create_any_model

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"spiking network {str(path)!r} is a folder, not a .safetensors file")
    if not path.is_file():
        raise CheckpointError(f"spiking network {str(path)!r} does not exist")
    description = _read_description(path)
    tensors, meta = read_safetensors(path, f"spiking network {str(path)!r}")
    embedded = meta.get(_METADATA_KEY)
    if embedded is None:
        raise CheckpointError(f"{str(path)!r} is not a spiking network written by ge2mst "
                              "(no ge2mst_snn metadata)")
    try:
        same = json.loads(embedded) == description
    except json.JSONDecodeError:
        same = False
    if not same:
        raise CheckpointError(f"{str(path)!r} and {str(path.with_suffix('.json'))!r} do not "
                              "describe the same spiking network (mixed or torn files): "
                              "convert again")
    options = {k: description["conversion"][k] for k in CONVERT_KEYS
               if k in description["conversion"]}
    try:
        ConversionOptions(**options)
    except TypeError as exc:
        raise CheckpointError(f"{str(path)!r}: bad conversion options ({exc})") from None
    model = create_any_model(description["model"], **description["model_kwargs"])
    snn = convert(model.eval(), **options)
    _load_state(snn, tensors, path)
    snn.description = description
    return snn


def _load_state(snn: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    load_state_strictly(snn, tensors, f"spiking network {str(path)!r}", "its description",
                        check_dtype=True)

