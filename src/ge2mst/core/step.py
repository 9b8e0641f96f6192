"""The two ways a spiking network runs, and the network-wide switch between them.

``"event"``: layer by layer over T steps of spike trains (what neuromorphic hardware does);
``"collapsed"``: synapses summed over time in one pass (the same outputs, faster on CPUs/GPUs).
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError

STEP_MODES = ("event", "collapsed")


def set_step_mode(model: nn.Module, mode: str) -> None:
    """Set the step mode (``"event"`` or ``"collapsed"``) of every module that has one."""
    if mode not in STEP_MODES:
        raise ConfigError(f"step mode must be one of {STEP_MODES}, got {mode!r}")
    for module in model.modules():
        if hasattr(module, "step_mode"):
            module.step_mode = mode
