"""The method itself, torch only and no I/O: the code books (`coding`), the quantizers trained in
ANN mode (`quantizers`), the spiking neurons they convert to (`neurons`) and an independent
reference neuron (`oracle`). Everything a reviewer checks for exactness is here.

(The functions `quantizers.quantizers` and `neurons.neurons`, which list a network's modules, are
not re-exported: the names are those of their modules.)"""

from .coding import (
    CodeBook,
    ExpGCodeBook,
    UniformCodeBook,
    check_time_groups,
    expg_codebook,
    level_spacing,
    uniform_codebook,
)
from .neurons import ExpGIF, IFNeuron, SpikeTally, SpikingNeuron, set_step_mode
from .oracle import ExpGOracle
from .quantizers import (
    ExpGQuant,
    ExpIFQuant,
    QCFSQuant,
    Quantizer,
    SignedExpGQuant,
    fuse_quantizers,
    quantize,
    set_mixing,
    set_time_steps,
)

__all__ = ["CodeBook", "ExpGCodeBook", "ExpGIF", "ExpGOracle", "ExpGQuant", "ExpIFQuant",
           "IFNeuron", "QCFSQuant", "Quantizer", "SignedExpGQuant", "SpikeTally", "SpikingNeuron",
           "UniformCodeBook", "check_time_groups", "expg_codebook", "fuse_quantizers", "level_spacing",
           "quantize", "set_mixing", "set_step_mode", "set_time_steps",
           "uniform_codebook"]
