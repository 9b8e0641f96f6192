"""An exponential moving average of a model's weights, the network a run evaluates and exports."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """Exponential moving average of a model's state (parameters, lambdas and BN statistics).

    The decay warms up as min(decay, (1 + step) / (10 + step)), so that early averages are not
    dominated by the random initialisation."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        shadows, values, others = self._tensors(model)
        # one fused multiply and one fused add over all tensors: the same arithmetic per element
        # as shadow.mul_(d).add_(value, alpha=1 - d), without a Python step per tensor
        torch._foreach_mul_(shadows, d)
        torch._foreach_add_(shadows, values, alpha=1 - d)
        for shadow, value in others:
            shadow.copy_(value)

    def _tensors(self, model: nn.Module) -> tuple[list, list, list]:
        """The shadow and live tensors, paired once per model: training, BatchNorm and
        ``load_state_dict`` all update them in place (a model moved to another device after the
        first update is paired again only if it is another object: move it before training)."""
        cached = getattr(self, "_pairs", None)
        if cached is None or cached[0] is not model:
            shadows, values, others = [], [], []
            for shadow, value in zip(self.module.state_dict().values(), model.state_dict().values(),
                                     strict=True):
                if shadow.is_floating_point():
                    shadows.append(shadow)
                    values.append(value.detach())
                else:
                    others.append((shadow, value))
            cached = self._pairs = (model, (shadows, values, others))
        return cached[1]
