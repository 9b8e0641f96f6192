"""Effective-dimension estimators on data of known dimension; error curves; the fit of C."""

import json

import pytest
import torch

from ge2mst import InputError, calibrate, create_model
from ge2mst.analysis.effdim import (
    advise,
    entropy_rank,
    epsilon_curve,
    estimate_dimensions,
    features,
    fit_constant,
    participation_ratio,
    pca_dimension,
    spectrum,
)


def _subspace(n=2000, D=64, k=7, noise=1e-3, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(D, k, generator=g, dtype=torch.float64))[0]
    return torch.randn(n, k, generator=g, dtype=torch.float64) @ basis.T + noise * torch.randn(
        n, D, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("k", [3, 7, 20])
def test_data_on_a_k_dimensional_subspace(k):
    est = estimate_dimensions(_subspace(k=k), bootstrap=20)
    assert est["pca_99"]["value"] == k  # 99 % needs every direction of the subspace
    assert k - max(1, k // 10) <= est["pca_95"]["value"] <= k  # 19 equal parts of 20 hold 95 %
    assert est["participation_ratio"]["value"] == pytest.approx(k, rel=0.15)
    assert est["entropy_rank"]["value"] == pytest.approx(k, rel=0.15)
    for name in ("participation_ratio", "entropy_rank"):  # the intervals cover the truth
        lo, hi = est[name]["ci"]
        assert lo <= k <= hi, (name, est[name])
        assert est[name]["bootstrap_mean"] < est[name]["value"]  # resampling biases downward


def test_isotropic_data_has_full_dimension():
    x = torch.randn(20000, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    est = estimate_dimensions(x, bootstrap=0, max_samples=None)
    assert est["pca_99"]["value"] == 16 and est["pca_90"]["value"] >= 14
    assert est["participation_ratio"]["value"] == pytest.approx(16, rel=0.05)
    assert est["entropy_rank"]["value"] == pytest.approx(16, rel=0.02)


def test_estimators_on_a_known_spectrum():
    eigs = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    assert participation_ratio(eigs) == pytest.approx(64 / 22)
    p = eigs / 8
    assert entropy_rank(eigs) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert pca_dimension(eigs, 0.5) == 1 and pca_dimension(eigs, 0.75) == 2
    assert pca_dimension(eigs, 0.9) == 4
    with pytest.raises(InputError):
        spectrum(torch.randn(1, 5))
    with pytest.raises(InputError):
        spectrum(torch.full((4, 3), float("nan")))


def test_fit_recovers_a_known_constant():
    g = torch.Generator().manual_seed(2)
    points = []
    for eps in (0.5, 0.3, 0.2, 0.1, 0.05):
        x = 1.5 ** 2 * 100 * 8 / eps ** 2
        noise = 1 + 0.02 * float(torch.randn(1, generator=g))
        points.append({"spikes_per_image": 2.3 * x * noise, "epsilon": eps, "L_f": 1.5,
                       "n": 100, "d": 8})
    fit = fit_constant(points, seed=0)
    assert fit["C"] == pytest.approx(2.3, rel=0.03)
    assert fit["ci"][0] <= 2.3 <= fit["ci"][1] and fit["r2"] > 0.99
    assert advise([{"epsilon": 0.2, "spikes_per_image": 10, "T": 4},
                   {"epsilon": 0.05, "spikes_per_image": 50, "T": 8}], 0.1)["T"] == 8


def test_expg_error_shrinks_with_T_and_spikes_are_counted():
    torch.manual_seed(0)
    model = create_model("ge2mst_cifar_tiny")
    x = torch.randn(16, 3, 32, 32)
    calibrate(model, [x])
    curve = epsilon_curve(model, x, [(2, 2), (4, 4), (8, 8)])
    eps = [p["epsilon"] for p in curve]
    assert eps[0] > eps[1] > eps[2] > 0  # uniform codes with 2**T - 1 steps: finer with T
    assert curve[0]["spikes_per_image"] < curve[2]["spikes_per_image"]
    assert all(p["neurons_per_image"] == curve[0]["neurons_per_image"] for p in curve)


def test_features_include_pixels_and_attention_inputs():
    torch.manual_seed(0)
    model = create_model("ge2mst_cifar_tiny")
    x = torch.randn(4, 3, 32, 32)
    feats = features(model, x, layers=["stem"])
    assert feats["pixels"].shape == (4, 3 * 32 * 32)
    assert feats["stages.1.1.fn.1:input"].shape == (4 * 16 * 16, 32)  # tokens x channels
    assert feats["stem"].shape == (4 * 32 * 32, 8)
    with pytest.raises(Exception, match="no layer named"):
        features(model, x, layers=["nonexistent"])


def test_effdim_command(capsys, tmp_path):
    from ge2mst.cli import main

    plot = tmp_path / "effdim.png"
    code = main(["effdim", "--data", "digits", "--limit", "200", "--bootstrap", "10",
                 "--settings", "2:1", "4:2", "8:4", "--json", "--plot", str(plot)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    pixels = report["dimensions"]["pixels"]
    assert pixels["features"] == 64 and 1 <= pixels["pca_95"]["value"] <= 64
    assert [(p["T"], p["G"]) for p in report["curve"]] == [(2, 1), (4, 2), (8, 4)]
    assert report["fit"]["points"] == 3 and "reconstruction" in report
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = main(["effdim", "--data", "digits", "--limit", "50", "--settings", "4-2"])
    assert code == 2 and "T:G pairs" in capsys.readouterr().err


def test_vanilla_if_error_curve_shrinks_with_T():
    torch.manual_seed(0)
    model = create_model("ge2mst_cnn_tiny", in_chans=1, T=4, G=1, quantizer="qcfs")
    x = torch.randn(64, 1, 8, 8)
    calibrate(model, [x])
    curve = epsilon_curve(model, x, [(4, 1), (16, 1), (64, 1)])  # IF neurons, L = T
    eps = [p["epsilon"] for p in curve]
    assert eps[0] > eps[1] > eps[2]
    spikes = [p["spikes_per_image"] for p in curve]
    assert spikes[0] < spikes[1] < spikes[2]  # more steps, more spikes: the cost of accuracy
