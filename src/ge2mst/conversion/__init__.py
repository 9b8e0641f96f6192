"""ANN -> SNN: `prepare` (an ordinary network traced, its ReLUs made ExpG quantizers:
`preparation`), `convert` (copy, fold BatchNorm, swap modules by the rules of `mapping`), the
`SpikingNetwork` it returns, `calibrate` (lambda from data) and `kinds` (what a network is)."""

from .calibration import calibrate
from .converter import ConversionOptions, SpikingNetwork, check_input, convert, fuse_batchnorm
from .kinds import default_encoding, is_stbp, method_of, one_or_list, time_groups, training_method
from .mapping import DEFAULT_SPIKING_MAPPING, builder_for
from .preparation import prepare

__all__ = ["DEFAULT_SPIKING_MAPPING", "ConversionOptions", "SpikingNetwork", "builder_for",
           "calibrate", "check_input", "convert", "default_encoding", "fuse_batchnorm", "is_stbp",
           "method_of", "one_or_list", "prepare", "time_groups", "training_method"]
