"""Fused quantizer kernels (`fuse_quantizers`, ``ge2mst train --compile quantizers``): the same
forward bits and input gradients as the eager passes at every mixing fraction, p held as a tensor
so that a moving p never recompiles, and a clear fallback where compiling fails."""

import copy
import math
import warnings

import pytest
import torch
from conftest import CIFAR, CIFAR_MISSING
from torch import nn

import ge2mst.core.quantizers as quant
from ge2mst import ExpGQuant, SignedExpGQuant, fuse_quantizers
from ge2mst.errors import ConfigError
from ge2mst.training.trainer import TrainConfig, Trainer


def _probe_values(q) -> torch.Tensor:
    """Random activations, every level boundary and its float32 neighbours, and the specials."""
    torch.manual_seed(0)
    bounds = (quant.level_spacing(q.lam.detach(), q.book.n_max) * q.book.mids).to(torch.float32)
    edges = torch.cat([bounds, torch.nextafter(bounds, torch.full_like(bounds, math.inf)),
                       torch.nextafter(bounds, torch.full_like(bounds, -math.inf))])
    specials = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e30, -1e30])
    body = torch.randn(2 * 4 * 36) * q.lam.detach() * 0.8
    x = torch.cat([body, edges, -edges, specials])
    return x[: (x.numel() // 8) * 8].reshape(2, 4, -1)


def _train_once(q, x: torch.Tensor, grad: torch.Tensor):
    xx = x.clone().requires_grad_()
    q.lam.grad = None
    out = q(xx)
    out.backward(grad)
    return out.detach(), xx.grad, q.lam.grad.clone()


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a.view(torch.int32) == b.view(torch.int32)) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("cls", [ExpGQuant, SignedExpGQuant])
def test_fused_quantizer_trains_with_the_eager_bits(cls):
    q = cls(4, 2, lam=1.7)
    q.train()
    x = _probe_values(q)
    grad = torch.randn_like(x)
    for p in (0.0, 0.35, 1.0, 0.8):  # p moves both ways: the compiled kernel is reused
        q.p = p
        q.fused = False
        eager = _train_once(q, x, grad)
        q.fused = True
        fused = _train_once(q, x, grad)
        assert _same_bits(eager[0], fused[0]), f"forward differs at p = {p}"
        assert _same_bits(eager[1], fused[1]), f"input gradient differs at p = {p}"
        # lambda's gradient is a sum over the activation: the fused loop sums in another order
        assert torch.isfinite(fused[2]).all()  # +-inf activations leave it finite
        torch.testing.assert_close(fused[2], eager[2], rtol=1e-5, atol=1e-5)
    assert "failed" not in quant._FUSED


def test_fused_quantizers_are_for_training_only(monkeypatch):
    q = ExpGQuant(4, 2, lam=1.3)
    fuse_quantizers(nn.Sequential(q))
    assert q.fused
    q.eval()
    x = _probe_values(q).nan_to_num(0.5)  # NaN is refused in evaluation
    calls = []
    original = quant._fused_quantize
    monkeypatch.setattr(quant, "_fused_quantize", lambda *a: calls.append(1) or original(*a))
    out = q(x)
    assert not calls and torch.equal(out, quant.quantized_values(x, q.lam, q.book, False))
    q.train()
    q(x)
    assert calls  # the same module in training goes through the fused kernel
    fuse_quantizers(nn.Sequential(q), on=False)
    assert not q.fused


def test_a_failing_compiler_warns_and_training_goes_on_eagerly(monkeypatch):
    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler found")
        return call

    monkeypatch.setattr(quant, "_FUSED", {})
    monkeypatch.setattr(torch, "compile", broken)
    q = ExpGQuant(4, 2, lam=1.3)
    q.train()
    q.p = 0.5
    x = _probe_values(q)
    grad = torch.randn_like(x)
    eager = _train_once(q, x, grad)
    q.fused = True
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        fused = _train_once(q, x, grad)
    assert all(_same_bits(a, b) for a, b in zip(eager, fused, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: later calls go eager silently
        _train_once(q, x, grad)


def test_trainer_compile_modes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), ExpGQuant(4, 2, lam=1.0),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    images, labels = torch.randn(8, 3, 8, 8), torch.arange(8) % 3
    cfg = TrainConfig(epochs=1, batch_size=4)
    with pytest.raises(ConfigError, match="compile must be one of"):
        Trainer(model, images, labels, cfg, compile="everything")
    eager_model = copy.deepcopy(model)
    fused = Trainer(model, images, labels, cfg, compile="quantizers")
    assert model[1].fused and fused.model is model
    eager = Trainer(eager_model, images, labels, cfg)
    assert not eager_model[1].fused
    fused.fit(progress=False)
    eager.fit(progress=False)
    for a, b in zip(model.parameters(), eager_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)
@pytest.mark.cifar
def test_fused_quantizer_on_real_activations(cache_dir):
    """The stem of the shipped tiny network on 32 real CIFAR-10 test images: the quantizer that
    follows it trains through the fused kernel with the eager bits (outputs, input gradients)."""
    from ge2mst.data import load_dataset, normalize
    from ge2mst.models import create_model

    data = load_dataset(str(CIFAR), split="test", limit=32, seed=0, cache_dir=cache_dir)
    mean, std = data.channel_stats()
    model = create_model("ge2mst_cifar_tiny", pretrained=True).train()
    with torch.no_grad():
        x = model.stem(normalize(data.images, mean, std))
    q = next(m for m in model.stages.modules() if isinstance(m, ExpGQuant))
    grad = torch.randn_like(x)
    for p in (0.5, 1.0):
        q.p = p
        q.fused = False
        eager = _train_once(q, x, grad)
        q.fused = True
        fused = _train_once(q, x, grad)
        assert _same_bits(eager[0], fused[0]) and _same_bits(eager[1], fused[1])
