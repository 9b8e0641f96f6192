"""Calibration of the clips lambda on data (QCFS-style percentile initialisation).

An untrained or freshly built network has lambda = 1 everywhere, which can clip away most of a
layer's range or waste most of its levels. `calibrate` looks at the pre-activations that reach each
quantizer on a few batches and sets lambda to a high percentile of them. With ``update_bn`` it also
re-estimates the BatchNorm running statistics first, so that an untrained network's layers are
well scaled. Both make an exactness check on an untrained network meaningful (no layer dead, no
layer saturated) and give training a sensible start.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..core.quantizers import quantizers
from ..errors import ConfigError, DataError

_MAX_SAMPLES = 1 << 20  # values kept per quantizer and batch (torch.quantile has a size limit)


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], percentile: float = 99.9,
              update_bn: bool = True, seed: int = 0) -> dict[str, float]:
    """Set every quantizer's lambda to the ``percentile`` of its (positive / absolute) inputs.

    Args:
        model: a network with ge2mst quantizers.
        batches: input tensors (B x ...); iterated twice when ``update_bn`` (BN pass, then lambda).
        percentile: in (0, 100].
        update_bn: first re-estimate BatchNorm running statistics on ``batches``.
        seed: seed of the subsampling of large activations.

    Returns:
        ``{quantizer name: new lambda}``.
    """
    if not 0 < percentile <= 100:
        raise ConfigError(f"percentile must lie in (0, 100], got {percentile}")
    batches = list(batches)
    if not batches:
        raise DataError("calibration needs at least one batch of inputs")
    quants = dict(quantizers(model))
    if not quants:
        raise ConfigError("the model has no quantizer to calibrate")
    was_training = model.training
    for q in quants.values():
        q.bypass = True
    gen = torch.Generator().manual_seed(seed)
    try:
        if update_bn:
            _update_batchnorm(model, batches)
        model.eval()
        samples = _collect_inputs(model, quants, batches, gen)
    finally:
        for q in quants.values():
            q.bypass = False
        model.train(was_training)
    return _set_lambdas(quants, samples, percentile, gen)


def _collect_inputs(model: nn.Module, quants: dict, batches: list[torch.Tensor],
                    gen: torch.Generator) -> dict[str, list[torch.Tensor]]:
    """The positive (signed quantizers: absolute) inputs of each quantizer over ``batches``, at
    most ``_MAX_SAMPLES`` per call (a seeded subsample), on the CPU."""
    samples: dict[str, list[torch.Tensor]] = {name: [] for name in quants}

    def hook(name):
        def fn(module, args):
            x = args[0].detach().to(torch.float32).flatten()
            x = x.abs() if module.signed else x[x > 0]
            if x.numel() > _MAX_SAMPLES:
                pick = torch.randint(0, x.numel(), (_MAX_SAMPLES,), generator=gen)
                x = x[pick.to(x.device)]
            samples[name].append(x.cpu())
        return fn

    handles = [q.register_forward_pre_hook(hook(name)) for name, q in quants.items()]
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return samples


def _set_lambdas(quants: dict, samples: dict[str, list[torch.Tensor]], percentile: float,
                 gen: torch.Generator) -> dict[str, float]:
    """Each quantizer's lambda set to the ``percentile`` of its samples (1.0 without any)."""
    result = {}
    for name, q in quants.items():
        values = torch.cat(samples[name]) if samples[name] else torch.empty(0)
        if values.numel() > _MAX_SAMPLES:
            values = values[torch.randperm(values.numel(), generator=gen)[:_MAX_SAMPLES]]
        lam = float(torch.quantile(values, percentile / 100)) if values.numel() else 0.0
        if not lam > 0:
            lam = 1.0  # a layer with no positive input: keep a harmless default
        q.lam.data.fill_(lam)
        result[name] = lam
    return result


def _update_batchnorm(model: nn.Module, batches: list[torch.Tensor]) -> None:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(bn.momentum, bn.training) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.eval()
    for bn in bns:
        bn.train()
    try:
        for x in batches:
            model(x)
    finally:
        for bn, (momentum, training) in zip(bns, saved, strict=True):
            bn.momentum = momentum
            bn.train(training)
