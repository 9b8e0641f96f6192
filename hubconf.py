"""torch.hub entry points: ``torch.hub.load(repo_dir, "ge2mst_cifar_tiny", source="local",
pretrained=True)`` works offline from a checkout (or with ge2mst installed). Every registered
model is an entry point; ``pretrained=True`` loads the weights shipped with ge2mst (see
``ge2mst.models.pretrained``), a path loads a checkpoint or a run folder."""

import os
import sys

dependencies = ["torch", "safetensors"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
if os.path.isdir(os.path.join(_SRC, "ge2mst")) and _SRC not in sys.path:
    sys.path.insert(0, _SRC)  # a checkout without ge2mst installed

from ge2mst.models import create_model as _create_model  # noqa: E402
from ge2mst.models import list_models as _list_models  # noqa: E402


def _entry(name):
    def entry(pretrained=False, **kwargs):
        return _create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"ge2mst model {name!r} (ANN mode; ge2mst.conversion.converter makes it spiking). "
                     "pretrained: True for the shipped weights, or a checkpoint path / run folder; "
                     "other keywords go to the model's builder.")
    return entry


for _name in _list_models():
    globals()[_name] = _entry(_name)
