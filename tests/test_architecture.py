"""Ge2mS-T: token grouping, grouped attention, blocks, models, exact conversion end to end."""

import json

import pytest
import torch
from torch import nn

from ge2mst import ConfigError, InputError, calibrate, convert, create_model
from ge2mst.analysis.energy import count_operations
from ge2mst.analysis.verification import verify
from ge2mst.cli import main
from ge2mst.conversion.converter import fuse_batchnorm
from ge2mst.core.quantizers import ExpGQuant
from ge2mst.nn.attention import GWSSA, SSA, group_index, group_tokens, ungroup_tokens
from ge2mst.nn.blocks import SFFN, ConvSFFN, Residual, SConv, TokenMixer
from ge2mst.nn.layers import ConvBN


# ---- grouping ----------------------------------------------------------------------------------
@pytest.mark.parametrize("H,W,k", [(8, 8, 2), (12, 12, 3), (28, 28, 7), (6, 9, 3), (4, 4, 1)])
@pytest.mark.parametrize("mode", ["global", "local"])
def test_groups_partition_the_tokens(H, W, k, mode):
    idx = group_index(H, W, k, mode)
    assert idx.flatten().bincount().tolist() == [H * W // (k * k)] * (k * k)  # equal groups
    tokens = torch.arange(H * W, dtype=torch.float64).view(1, H, W, 1)
    grouped = group_tokens(tokens, k, mode)  # 1 x k*k x n x 1
    assert grouped.shape == (1, k * k, H * W // (k * k), 1)
    assert sorted(grouped.flatten().long().tolist()) == list(range(H * W))  # each token once
    for g in range(k * k):
        expected = torch.nonzero(idx.flatten() == g).flatten().tolist()
        assert sorted(grouped[0, g, :, 0].long().tolist()) == expected
    assert torch.equal(ungroup_tokens(grouped, k, H, W, mode), tokens)


def test_global_groups_are_strided_views_and_local_groups_are_windows():
    glob = group_index(8, 8, 2, "global")
    assert glob[0, :4].tolist() == [0, 1, 0, 1] and glob[1, :4].tolist() == [2, 3, 2, 3]
    local = group_index(8, 8, 2, "local")
    assert local[:4, :4].unique().tolist() == [0] and local[4:, 4:].unique().tolist() == [3]


@pytest.mark.parametrize("kwargs", [dict(k=2), dict(window=2, global_ratio=0.25),
                                    dict(k=4, global_ratio=1.0), dict(k=2, global_ratio=0.0)])
def test_grouped_attention_equals_full_attention_with_a_block_mask(kwargs):
    torch.manual_seed(0)
    dim, heads, H = 16, 4, 8
    att = GWSSA(dim, heads, **kwargs).double()
    q, k_, v = (torch.randn(2, dim, H, H, dtype=torch.float64) for _ in range(3))
    att.attn_act.lam.data.fill_(3.0)

    def op(a, b, c):
        return att.attn_act((a @ b.transpose(-1, -2)) * att.scale) @ c

    grouped = att.attend(q, k_, v, op)
    kk = att.groups_per_side(H, H)
    d = dim // heads
    ref = torch.empty_like(q)
    for h in range(heads):
        mode = "global" if h < att.global_heads else "local"
        mask = group_index(H, H, kk, mode).flatten()
        block = (mask.view(-1, 1) == mask.view(1, -1)).to(torch.float64)
        sl = slice(h * d, (h + 1) * d)
        Q, K, V = (t[:, sl].flatten(2).transpose(1, 2) for t in (q, k_, v))  # B x N x d
        A = att.attn_act((Q @ K.transpose(1, 2)) * att.scale) * block
        ref[:, sl] = (A @ V).transpose(1, 2).reshape(2, d, H, H)
    torch.testing.assert_close(grouped, ref, rtol=1e-12, atol=1e-12)


def test_attention_uses_a_power_of_two_scale():
    for dim, heads in [(96, 4), (128, 4), (640, 16)]:
        scale = GWSSA(dim, heads, k=1).scale
        assert scale == 2.0 ** round(torch.log2(torch.tensor(scale)).item())


# ---- modules convert exactly, one by one ---------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: GWSSA(16, 4, k=2), lambda: GWSSA(16, 4, window=4, global_ratio=0.75),
    lambda: SSA(16, 2), lambda: SConv(16), lambda: SFFN(16), lambda: ConvSFFN(16),
    lambda: TokenMixer(16, 4, window=2),
])
@pytest.mark.parametrize("step_mode", ["event", "collapsed"])
def test_each_module_converts_exactly(make, step_mode):
    torch.manual_seed(1)
    model = nn.Sequential(ConvBN(3, 16, 3), ExpGQuant(), Residual(make()), ExpGQuant(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 5))
    x = torch.randn(16, 3, 8, 8)
    calibrate(model, [x])
    r = verify(model, [(x, None)], step_mode=step_mode)
    assert r["code_mismatches"] == 0 and r["codes_compared"] > 0
    assert r["prediction_agreement"] == 1.0 and r["max_rel_diff"] < 1e-12
    assert r["max_spikes_per_neuron"] <= 2 and r["illegal_patterns"] == 0


def test_spiking_attention_emits_ternary_qkv_and_binary_attention():
    torch.manual_seed(2)
    model = nn.Sequential(ConvBN(3, 16, 3), ExpGQuant(), GWSSA(16, 4, k=2), ExpGQuant(),
                          nn.Flatten(1), nn.Linear(16 * 64, 3))
    x = torch.randn(8, 3, 8, 8)
    calibrate(model, [x])
    snn = convert(model.eval())
    snn(x, record=True)
    trains = snn.spike_trains()
    assert set(trains["2.q_act"].unique().tolist()) == {-1, 0, 1}
    assert set(trains["2.attn_act"].unique().tolist()) == {0, 1}
    assert trains["2.attn_act"].shape == (4, 8, 4, 4, 16, 16)  # T, B, heads, groups, n, n
    ops = snn.body[2].last_ops
    # coincidences counted from the spike counts, never above the upper bound
    assert 0 < ops["qk_coincidences"] + ops["av_coincidences"] <= ops["coincidences_upper_bound"]
    cq = trains["2.q_act"].abs().sum(0).double()
    ck = trains["2.k_act"].abs().sum(0).double()
    gq, gk = snn.body[2].grouped(cq), snn.body[2].grouped(ck)
    brute = sum(float((gq[..., i, :] * gk[..., j, :]).sum()) for i in range(16) for j in range(16))
    assert ops["qk_coincidences"] == pytest.approx(brute / 8)


# ---- models ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,paper", [("ge2mst_small", 5.35e6), ("ge2mst_base", 9.36e6),
                                        ("ge2mst_large", 14.48e6)])
def test_parameter_counts_match_the_paper(name, paper):
    params = sum(p.numel() for p in create_model(name).parameters())
    assert abs(params / paper - 1) <= 0.02, params


def test_cifar_tiny_is_under_a_million_parameters():
    assert sum(p.numel() for p in create_model("ge2mst_cifar_tiny").parameters()) < 1_000_000


@pytest.mark.parametrize("size", [224, 288])
def test_imagenet_small_converts_exactly_at_224_and_288(size):
    torch.manual_seed(0)
    model = create_model("ge2mst_small", num_classes=10)
    x = torch.randn(2, 3, size, size)
    calibrate(model, [x])
    r = verify(model, [(x, None)], step_mode="collapsed")
    assert r["code_mismatches"] == 0 and r["prediction_agreement"] == 1.0
    assert r["max_rel_diff"] < 1e-12 and r["max_spikes_per_neuron"] <= 2


def test_cifar_tiny_event_mode_exact_on_images():
    torch.manual_seed(0)
    model = create_model("ge2mst_cifar_tiny")
    x = torch.randn(8, 3, 32, 32)
    calibrate(model, [x])
    for form in ("search", "sequential"):
        r = verify(model, [(x, None)], form=form)
        assert r["code_mismatches"] == 0 and r["max_rel_diff"] < 1e-12


def test_gwssa_cost_grows_linearly_with_tokens_and_ssa_quadratically():
    model = create_model("ge2mst_small")
    rows = {}
    for size in (224, 288):
        snn = convert(model.eval())
        report = count_operations(snn, [torch.randn(1, 3, size, size)])
        rows[size] = {r["name"]: r["sops_upper_bound"] for r in report["per_layer"]
                      if r["input"] == "spike pairs"}
    ratio_tokens = (36 * 36) / (28 * 28)
    for name, bound in rows[224].items():
        ratio = rows[288][name] / bound
        if name.startswith("stages.3"):  # SSA over all 7x7 -> 9x9 tokens: quadratic
            assert ratio == pytest.approx(ratio_tokens ** 2)
        else:  # GW-SSA with fixed group size: linear
            assert ratio == pytest.approx(ratio_tokens)


def test_info_reports_tokens_groups_and_bounds(capsys):
    assert main(["info", "--model", "ge2mst_cifar_tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == sum(p.numel() for p in create_model("ge2mst_cifar_tiny").parameters())
    assert info["T"] == 4 and info["G"] == 2
    maps = [(a["type"], a["map"], a["groups"]) for a in info["attention"]]
    assert maps == [("GWSSA", [16, 16], 16), ("GWSSA", [8, 8], 4), ("SSA", [4, 4], 1)]
    assert info["sops_upper_bound"] == pytest.approx(sum(r["sops_upper_bound"]
                                                         for r in info["per_layer"]))
    assert info["macs"] > 0


# ---- impossible configurations -----------------------------------------------------------------
def test_impossible_configurations_are_clear_errors():
    with pytest.raises(InputError, match="not divisible by k = 3"):
        GWSSA(16, 4, k=3).eval()(torch.zeros(1, 16, 8, 8))
    with pytest.raises(InputError, match="window = 3"):
        GWSSA(16, 4, window=3).eval()(torch.zeros(1, 16, 8, 8))
    with pytest.raises(ConfigError, match="cannot be split"):
        GWSSA(16, 4, global_ratio=0.3, k=2)
    with pytest.raises(ConfigError, match="not divisible by heads"):
        GWSSA(18, 4, k=2)
    with pytest.raises(ConfigError, match="exactly one of k"):
        GWSSA(16, 4)
    with pytest.raises(ConfigError, match="not divisible by its GW-SSA window"):
        create_model("ge2mst_small", img_size=200)
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("ge2mst_medium")


@pytest.mark.parametrize("T,G", [(4, 2), (4, 4), (6, 3)])
def test_attention_from_spike_coincidences_equals_the_code_products(T, G):
    """The event-level kernel (signed coincidences per step pair, shifted, summed) gives the
    same integers as the product of codes, so the same logits, bit for bit."""
    torch.manual_seed(4)
    model = nn.Sequential(ConvBN(3, 16, 3), ExpGQuant(T, G), Residual(GWSSA(16, 4, k=2, T=T, G=G)),
                          ExpGQuant(T, G), nn.Flatten(1), nn.Linear(16 * 64, 3))
    x = torch.randn(8, 3, 8, 8)
    calibrate(model, [x])
    model.eval()
    by_codes = convert(model, attention_products="codes")
    by_spikes = convert(model, attention_products="spikes")
    assert torch.equal(by_codes(x), by_spikes(x))
    with torch.no_grad():  # float32, collapsed: bit-identical to the BatchNorm-folded ANN
        assert torch.equal(fuse_batchnorm(model)(x), by_spikes.set_step_mode("collapsed")(x))
    with pytest.raises(ConfigError, match="attention_products"):
        convert(model, attention_products="floats")


def test_sops_upper_bound_depends_on_the_architecture_only():
    torch.manual_seed(5)
    model = create_model("ge2mst_cifar_tiny")
    silent = count_operations(convert(model.eval()), [torch.zeros(2, 3, 32, 32)])
    calibrate(model, [torch.randn(8, 3, 32, 32)])
    busy = count_operations(convert(model.eval()), [torch.randn(2, 3, 32, 32)])
    assert silent["sops"] == 0 < busy["sops"]
    assert silent["sops_upper_bound"] == busy["sops_upper_bound"] > 0
    assert {r["input"] for r in busy["per_layer"] if r["name"].endswith("proj")} == {"integers"}
