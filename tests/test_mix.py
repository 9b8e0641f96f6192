"""Batch-level mixup / cutmix: determinism, exact mixing, true cut areas, smoothing, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from ge2mst.data.augment import _beta_sample, _gamma_sample, mix_batch
from ge2mst.errors import ConfigError

K = 10


def _batch(b=6, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g)
    y = torch.arange(b) % K  # distinct labels, and y[i] != y[B-1-i] for even B <= K
    return x, y


def _lam(target, y):
    """The weight of each image's own label (smoothing 0, distinct labels of the pair)."""
    return target[torch.arange(len(y)), y]


@pytest.mark.parametrize("kw", [dict(mixup_alpha=0.4), dict(cutmix_alpha=1.0),
                                dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)])
def test_same_seed_same_result(kw):
    x, y = _batch()
    a = mix_batch(x, y, K, torch.Generator().manual_seed(7), **kw)
    b = mix_batch(x, y, K, torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outs = {mix_batch(x, y, K, torch.Generator().manual_seed(s), **kw)[1][0, y[0]].item()
            for s in range(8)}
    assert len(outs) > 1  # different seeds give different draws
    assert torch.allclose(a[1].sum(1), torch.ones(len(y)), atol=1e-6)


def test_mixup_is_exact_convex_combination():
    x, y = _batch()
    for seed in range(5):
        mixed, target = mix_batch(x, y, K, torch.Generator().manual_seed(seed), mixup_alpha=0.5)
        lam = _lam(target, y)
        assert torch.allclose(lam, lam[0].expand_as(lam))  # one lambda per batch
        lam0 = float(lam[0])
        assert 0.0 <= lam0 <= 1.0
        assert torch.allclose(mixed, lam0 * x + (1 - lam0) * x.flip(0), atol=1e-6)
        partner = target[torch.arange(len(y)), y.flip(0)]
        assert torch.allclose(partner, 1 - lam, atol=1e-6)
        assert torch.allclose(target.sum(1), torch.ones(len(y)), atol=1e-6)


def test_cutmix_pixels_and_area():
    x, y = _batch(b=4, h=12, w=10)
    seen_partial = False
    for seed in range(20):
        mixed, target = mix_batch(x, y, K, torch.Generator().manual_seed(seed), cutmix_alpha=1.0)
        own = (mixed == x).all(1)  # B x H x W: pixel (all channels) kept
        other = (mixed == x.flip(0)).all(1)
        assert bool((own | other).all())
        pasted = (~own[0]).float().mean()  # the same box for every image of the batch
        assert all(torch.equal(~own[i], ~own[0]) for i in range(len(y)))
        lam = _lam(target, y)
        assert torch.allclose(lam, 1 - pasted.expand_as(lam), atol=1e-6)
        assert torch.allclose(target.sum(1), torch.ones(len(y)), atol=1e-6)
        seen_partial |= 0 < float(pasted) < 1
    assert seen_partial


def test_switch_prob_chooses_method():
    x, y = _batch()
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        mixed, _ = mix_batch(x, y, K, g, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0)
        assert bool(((mixed == x).all(1) | (mixed == x.flip(0)).all(1)).all())  # always cutmix
        g = torch.Generator().manual_seed(seed)
        mixed, target = mix_batch(x, y, K, g, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.0)
        lam = float(_lam(target, y)[0])
        assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)  # always mixup


def test_smoothing_values_and_off():
    x, y = _batch()
    out, target = mix_batch(x, y, K, torch.Generator().manual_seed(0), label_smoothing=0.2)
    assert out is x
    expected = torch.full((len(y), K), 0.02)
    expected[torch.arange(len(y)), y] = 1 - 0.2 + 0.02
    assert torch.allclose(target, expected)
    _, plain = mix_batch(x, y, K, torch.Generator().manual_seed(0))
    assert torch.equal(plain, torch.nn.functional.one_hot(y, K).float())
    # smoothing inside the mixed targets: lam * t + (1 - lam) * t_partner
    _, mixed = mix_batch(x, y, K, torch.Generator().manual_seed(3), mixup_alpha=1.0,
                         label_smoothing=0.2)
    lam = (float(mixed[0, y[0]]) - 0.02) / 0.8
    assert torch.allclose(mixed, lam * expected + (1 - lam) * expected.flip(0), atol=1e-6)


def test_beta_draws_are_plausible():
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([_beta_sample(0.4, g) for _ in range(2000)])
    assert float(draws.min()) >= 0 and float(draws.max()) <= 1
    assert abs(float(draws.mean()) - 0.5) < 0.03
    # Beta(a, a) variance 1 / (4 (2a + 1)) = 0.1389 for a = 0.4
    assert abs(float(draws.var()) - 1 / (4 * 1.8)) < 0.015
    gam = torch.tensor([_gamma_sample(0.5, g) for _ in range(3000)])  # the scipy-free fallback
    assert abs(float(gam.mean()) - 0.5) < 0.05 and float(gam.min()) >= 0
    assert math.isfinite(_gamma_sample(3.0, g))


@pytest.mark.parametrize("kw, match", [
    (dict(mixup_alpha=-1.0), "mixup_alpha"),
    (dict(cutmix_alpha=float("nan")), "cutmix_alpha"),
    (dict(mixup_alpha=float("inf")), "mixup_alpha"),
    (dict(switch_prob=1.5), "switch_prob"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(label_smoothing=-0.1), "label_smoothing"),
])
def test_bad_arguments(kw, match):
    x, y = _batch()
    with pytest.raises(ConfigError, match=match):
        mix_batch(x, y, K, torch.Generator(), **kw)


def test_bad_labels_and_shapes():
    x, y = _batch()
    with pytest.raises(ValueError, match="labels must lie"):
        mix_batch(x, torch.full_like(y, K), K, torch.Generator(), mixup_alpha=1.0)
    with pytest.raises(ConfigError, match="labels must lie"):
        mix_batch(x, y - 1, K, torch.Generator())
    with pytest.raises(ConfigError, match="B x C x H x W"):
        mix_batch(x[0], y, K, torch.Generator())
    with pytest.raises(ConfigError, match="integer labels"):
        mix_batch(x, y[:-1], K, torch.Generator())
