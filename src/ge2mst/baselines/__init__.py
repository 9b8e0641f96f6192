"""Components of the baselines measured by the same harness as Ge2mS-T: LIF neurons trained
through time (`lif`) and the spiking attention variants of STBP Spikformer (`attention`: SSA,
A2OS2A, window and channel-group SSA). The Spikformer model itself is a registered model
(`ge2mst.models.spikformer`), its operation counter is `ge2mst.analysis.energy_stbp`. Vanilla IF
conversion needs no module here: it is any model built with ``quantizer="qcfs"`` (`QCFSQuant`),
converted by `ge2mst.convert`. SpikingJelly is optional (``LIF(backend="spikingjelly")``).
"""

from .attention import ATTENTION, build_attention, register_attention
from .lif import LIF, TernaryLIF

__all__ = ["ATTENTION", "LIF", "TernaryLIF", "build_attention", "register_attention"]
