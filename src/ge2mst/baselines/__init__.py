"""Baselines measured by the same harness as Ge2mS-T: STBP-trained Spikformer with LIF neurons
(`spikformer`), its attention variants (`attention`: SSA, A2OS2A, window and channel-group SSA)
and an operation counter for them (`counting`). Vanilla IF conversion needs no module here: it is
any model built with ``quantizer="qcfs"`` (`QCFSQuant`), converted by `ge2mst.convert`.

Importing this package registers ``spikformer_4_384`` and ``spikformer_tiny`` in the model
registry. SpikingJelly is optional (``LIF(backend="spikingjelly")``).
"""

from .attention import ATTENTION, build_attention, register_attention
from .lif import LIF, TernaryLIF
from .spikformer import Spikformer, parameter_count, spikformer_4_384, spikformer_tiny

__all__ = ["ATTENTION", "LIF", "Spikformer", "TernaryLIF", "build_attention", "parameter_count",
           "register_attention", "spikformer_4_384", "spikformer_tiny"]
