"""ge2mst: Ge2mS-T spiking transformers with exactly lossless ANN -> SNN conversion.

Train with ExpG quantizers (one ordinary forward pass per image, whatever T is), convert with
`convert`, run the spiking network event by event, and count what it costs.
"""

from ._version import __version__
from .conversion.calibration import calibrate
from .conversion.converter import SpikingNetwork, convert
from .conversion.preparation import prepare
from .core import (
    ExpGCodeBook,
    ExpGIF,
    ExpGQuant,
    ExpIFQuant,
    IFNeuron,
    QCFSQuant,
    Quantizer,
    SignedExpGQuant,
    SpikingNeuron,
    UniformCodeBook,
    expg_codebook,
    fuse_quantizers,
    quantize,
    set_mixing,
    set_time_steps,
    uniform_codebook,
)
from .errors import (
    CheckpointError,
    ConfigError,
    ConversionError,
    DataError,
    Ge2msError,
    InputError,
)
from .models import create_model, list_models, register_model

__all__ = [
    "CheckpointError", "ConfigError", "ConversionError", "DataError", "ExpGCodeBook", "ExpGIF",
    "ExpGQuant", "ExpIFQuant", "Ge2msError", "IFNeuron", "InputError", "QCFSQuant", "Quantizer",
    "SignedExpGQuant", "SpikingNetwork", "SpikingNeuron", "UniformCodeBook", "calibrate",
    "convert", "create_model", "expg_codebook", "fuse_quantizers", "list_models", "prepare", "quantize",
    "register_model",
    "set_mixing", "set_time_steps", "uniform_codebook", "__version__",
]
