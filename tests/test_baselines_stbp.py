"""STBP baselines: LIF dynamics, ternary spikes, surrogate gradients, Spikformer, counting."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ge2mst import ConfigError, InputError, create_model, list_models
from ge2mst.analysis.energy import to_markdown
from ge2mst.analysis.energy_stbp import allowed_pairs, count_stbp_operations
from ge2mst.baselines import LIF, TernaryLIF
from ge2mst.baselines.attention import A2OS2A, GroupedProjection
from ge2mst.baselines.lif import ArcTanSpike, arctan_surrogate
from ge2mst.models.spikformer import Spikformer, parameter_count


def lif_reference(x, tau, thr, ternary=False):
    """Plain-float LIF, one neuron, written from the equations."""
    v, out = 0.0, []
    for xt in x:
        h = v + (xt - v) / tau
        s = 1.0 if h >= thr else (-1.0 if ternary and h <= -thr else 0.0)
        out.append(s)
        v = 0.0 if s else h
    return out


def test_lif_hand_computed_trace():
    # H: 0.25, 0.375, 1.1875 (fires, reset to 0), -1.5 (ternary: -1 and reset), then
    # LIF: -1.5 + (0.5 + 1.5) / 2 = -0.5; ternary: 0 + 0.5 / 2 = 0.25
    x = torch.tensor([0.5, 0.5, 2.0, -3.0, 0.5]).view(5, 1)
    assert LIF()(x).flatten().tolist() == [0, 0, 1, 0, 0]
    assert TernaryLIF()(x).flatten().tolist() == [0, 0, 1, -1, 0]
    # a constant 1.9: H = 0.95, then 0.95 + 0.475 = 1.425 (fires), then 0.95 again
    assert LIF()(torch.full((3, 1), 1.9)).flatten().tolist() == [0, 1, 0]


@pytest.mark.parametrize("tau,thr", [(2.0, 1.0), (1.0, 0.5), (4.0, 0.3)])
def test_lif_matches_reference_on_random_inputs(tau, thr):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 40, generator=gen, dtype=torch.float64) * 1.5
    for cls, ternary in ((LIF, False), (TernaryLIF, True)):
        out = cls(tau=tau, v_threshold=thr)(x)
        ref = torch.tensor([lif_reference(x[:, i].tolist(), tau, thr, ternary) for i in range(40)],
                           dtype=torch.float64).T
        assert torch.equal(out, ref)


def test_ternary_spikes_take_only_minus_one_zero_one():
    out = TernaryLIF()(torch.randn(8, 500) * 3)
    assert set(out.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert set(LIF()(torch.randn(8, 500) * 3).unique().tolist()) == {0.0, 1.0}


def test_arctan_surrogate_gradient():
    x = torch.tensor([-0.5, 0.0, 0.3], requires_grad=True)
    y = ArcTanSpike.apply(x, 2.0)
    assert y.tolist() == [0.0, 1.0, 1.0]
    y.sum().backward()
    expected = [1 / (1 + (math.pi * v) ** 2) for v in (-0.5, 0.0, 0.3)]  # alpha = 2
    assert torch.allclose(x.grad, torch.tensor(expected))
    assert float(arctan_surrogate(torch.tensor(0.0))) == 1.0


def test_lif_gradient_flows_through_time():
    x = torch.full((4, 3), 0.8, requires_grad=True)
    LIF(detach_reset=False)(x).sum().backward()
    assert torch.all(x.grad[0] > 0)  # step 0 input reaches later spikes through the membrane


def test_lif_bad_arguments_and_inputs():
    with pytest.raises(ConfigError, match="tau"):
        LIF(tau=0.5)
    with pytest.raises(ConfigError, match="v_threshold"):
        LIF(v_threshold=float("nan"))
    with pytest.raises(ConfigError, match="backend"):
        LIF(backend="cupy")
    with pytest.raises(InputError, match="time first"):
        LIF()(torch.ones(3))
    with pytest.raises(InputError, match="floating"):
        LIF()(torch.ones(3, 2, dtype=torch.int64))


def test_lif_equals_spikingjelly_forward_and_backward():
    pytest.importorskip("spikingjelly", reason="SpikingJelly is an optional extra")
    x = torch.randn(6, 4, 7) * 2
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = LIF()(a), LIF(backend="spikingjelly")(b)
    assert torch.equal(ya, yb)
    (ya * torch.arange(7)).sum().backward()
    (yb * torch.arange(7)).sum().backward()
    assert torch.allclose(a.grad, b.grad)


def test_spikformer_4_384_has_the_papers_parameter_count():
    model = create_model("spikformer_4_384", num_classes=10)
    assert round(parameter_count(model) / 1e6, 2) == 9.32
    assert model.training_method == "stbp"
    assert {"spikformer_4_384", "spikformer_tiny"} <= set(list_models("spikformer*"))
    wide = create_model("spikformer_tiny", embed_dim=96, depth=1)  # every default can be overridden
    assert wide.head.in_features == 96 and len(wide.blocks) == 1


def test_spikformer_repeat_encoding_and_temporal_groups():
    model = create_model("spikformer_tiny", T=4, temporal_group=2)
    x = torch.randn(2, 3, 32, 32)
    frames = model.encode(x)
    assert frames.shape == (2, 2, 6, 32, 32)  # 2 steps, channels = 2 frames x 3
    assert torch.equal(frames[1, :, 3:], x)
    assert model.sps.convs[0].conv.in_channels == 6
    assert model(x).shape == (2, 10)
    with pytest.raises(ConfigError, match="divide"):
        create_model("spikformer_tiny", T=4, temporal_group=3)


def test_spikformer_frames_encoding_orders_channels_frame_major():
    model = create_model("spikformer_tiny", T=3, in_chans=6, encoding="frames")
    x = torch.arange(6.0).view(1, 6, 1, 1).expand(1, 6, 32, 32)
    frames = model.encode(x)
    assert frames.shape == (3, 1, 2, 32, 32)
    assert frames[:, 0, :, 0, 0].tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ConfigError, match="multiple of T"):
        create_model("spikformer_tiny", T=4, in_chans=6, encoding="frames")


def test_spikformer_larger_images_pool_to_an_8x8_grid():
    model = create_model("spikformer_tiny", img_size=128, in_chans=2)
    assert model.sps.grid == 8
    assert model(torch.rand(1, 2, 128, 128)).shape == (1, 10)


def test_spikformer_input_checks():
    model = create_model("spikformer_tiny")
    with pytest.raises(InputError, match="B x 3 x 32 x 32"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(InputError, match="floating"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ConfigError):
        create_model("spikformer_tiny", attention="nope")


@pytest.mark.parametrize("attention", ["ssa", "a2os2a", "window", "channel_group"])
def test_spikformer_trains_with_bptt(attention):
    torch.manual_seed(0)
    options = {"window": 2} if attention == "window" else {}
    model = create_model("spikformer_tiny", T=2, attention=attention, attention_options=options)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] * 0.8  # memorises 8 images


def test_stbp_cli_run_on_digits(tmp_path, capsys):
    from ge2mst.cli import main

    rc = main(["train", "--model", "spikformer_tiny", "--data", "digits", "--epochs", "1",
               "--train-limit", "200", "--limit", "100", "--out", str(tmp_path / "run"), "--json",
               "--no-tensorboard"])
    import json

    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["method"] == "stbp" and report["exact"] is None
    assert 0.0 <= report["snn_accuracy"] <= 1.0
    assert (tmp_path / "run" / "last.safetensors").is_file()
    rc = main(["train", "--model", "spikformer_tiny", "--data", "digits", "--groups", "2",
               "--out", str(tmp_path / "run2")])
    assert rc == 2 and "--groups" in capsys.readouterr().err


def test_energy_cli_counts_an_stbp_baseline_from_its_spikes(tmp_path, capsys):
    """`ge2mst energy` on an STBP model counts its emitted spikes (no conversion, no calibration)."""
    import json

    from ge2mst.analysis.energy_stbp import count_stbp_operations
    from ge2mst.cli import main
    from ge2mst.data import load_dataset, normalize

    rc = main(["energy", "--model", "spikformer_tiny", "--data", "digits", "--limit", "16",
               "--seed", "3", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["T"] == 4 and report["calibrated"] is False
    torch.manual_seed(3)
    data = load_dataset("digits", split="test", limit=16, seed=3)
    model = create_model("spikformer_tiny", num_classes=10, in_chans=1, T=4, img_size=8).eval()
    mean, std = data.channel_stats()
    direct = count_stbp_operations(model, [normalize(x, mean, std) for x, _ in data.batches(64)])
    assert report["sops"] == direct["sops"] and report["macs"] == direct["macs"]
    assert report["ann_macs"] == direct["ann_macs"] > 0
    rc = main(["energy", "--model", "spikformer_tiny", "--data", "digits", "--limit", "16", "-G", "2"])
    assert rc == 2 and "--groups" in capsys.readouterr().err


# ---- counting ------------------------------------------------------------------------------


def _silent_model(**kwargs) -> Spikformer:
    model = create_model("spikformer_tiny", **kwargs)
    model.eval()
    return model


def test_counting_first_conv_once_and_head_once():
    model = _silent_model(T=4)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # every neuron silent: only the pixel conv and the head cost anything
    report = count_stbp_operations(model, [torch.randn(3, 3, 32, 32)])
    rows = {r["name"]: r for r in report["per_layer"]}
    conv0 = model.sps.convs[0].conv
    assert rows["sps.convs.0.conv"]["macs"] == 32 * 32 * conv0.out_channels * 27  # once, not T times
    assert rows["head"]["macs"] == 64 * 10
    assert report["sops"] == 0 and report["spikes_per_image"] == 0
    assert report["macs"] == rows["sps.convs.0.conv"]["macs"] + rows["head"]["macs"]
    assert math.isclose(report["energy_mj"], report["macs"] * 4.6e-9)


def test_counting_spike_fanout_matches_hand_count():
    model = _silent_model(T=2)
    conv = model.sps.convs[1].conv  # 8 -> 16 channels, 3x3, padding 1
    spikes = torch.zeros(2 * 1, conv.in_channels, 32, 32)
    spikes[0, 0, 0, 0] = 1  # corner: reaches 4 positions x 16 output channels
    spikes[1, 2, 10, 10] = 1  # interior: 9 x 16
    # the first block's output replaced by these spikes (a forward hook's return value)
    handle = model.sps.convs[0].register_forward_hook(lambda m, a, o: spikes.unflatten(0, (2, 1)))
    try:
        report = count_stbp_operations(model, [torch.randn(1, 3, 32, 32)])
    finally:
        handle.remove()
    row = next(r for r in report["per_layer"] if r["name"] == "sps.convs.1.conv")
    assert row["input"] == "binary spikes"
    assert row["sops"] == (4 + 9) * 16 and row["macs"] == 0


def test_counting_integer_residual_input_is_charged_as_macs():
    model = _silent_model(T=1)
    proj = model.blocks[0].attn.q_proj
    tokens = torch.zeros(1, 1, 64, 64)
    tokens[0, 0, 0, :3] = torch.tensor([1.0, 2.0, 1.0])  # a residual sum: integers, not spikes
    handle = model.sps.register_forward_hook(lambda m, a, o: tokens)
    try:
        report = count_stbp_operations(model, [torch.randn(1, 3, 32, 32)])
    finally:
        handle.remove()
    row = next(r for r in report["per_layer"] if r["name"] == "blocks.0.attn.q_proj")
    assert isinstance(proj, GroupedProjection)
    assert row["input"] == "integers" and row["macs"] == 64 * 64 * 64 and row["sops"] == 0


def test_counting_attention_pairs_by_hand():
    model = _silent_model(T=1, attention="a2os2a")
    attn = model.blocks[0].attn
    assert isinstance(attn, A2OS2A)
    q = torch.zeros(1, 1, 64, 64)
    k = torch.zeros(1, 1, 64, 64)
    v = torch.zeros(1, 1, 64, 64)
    q[0, 0, 0, 0] = 1  # one Q spike in head 0: adds a row of d = 16 values
    k[0, 0, 5, :3] = 0.7  # token 5: 3 nonzero K entries in head 0 ...
    v[0, 0, 5, [1, 2]] = torch.tensor([1.0, -1.0])  # ... and 2 V spikes in head 0: 6 pairs
    handles = [attn.q_lif.register_forward_hook(lambda m, a, o: q),
               attn.k_proj.register_forward_hook(lambda m, a, o: k),
               attn.v_lif.register_forward_hook(lambda m, a, o: v)]
    try:
        report = count_stbp_operations(model, [torch.randn(1, 3, 32, 32)])
    finally:
        for h in handles:
            h.remove()
    row = next(r for r in report["per_layer"] if r["name"] == "blocks.0.attn.qkv")
    assert row["sops"] == 16 + 6
    assert row["ann_macs"] == 2 * 4 * 64 * 16 * 16  # linear form, 4 heads of d = 16


def test_allowed_pairs_of_windows():
    model = _silent_model(attention="window", attention_options={"window": 4})
    mask = allowed_pairs(model.blocks[0].attn, 64)  # 8x8 grid, 4x4 windows
    assert mask.sum() == 64 * 16
    assert mask[0, 3] == 1 and mask[0, 4] == 0 and mask[0, 8 * 3 + 3] == 1 and mask[0, 8 * 4] == 0


def test_counting_report_prints_and_scales_with_images():
    torch.manual_seed(0)
    model = create_model("spikformer_tiny", T=2)
    model.train()
    with torch.no_grad():  # BN statistics of real-ish inputs so that neurons fire
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32))
    x = torch.randn(4, 3, 32, 32)
    one = count_stbp_operations(model, [x])
    two = count_stbp_operations(model, [x, x])
    assert one["sops"] > 0 and math.isclose(one["sops"], two["sops"])
    assert two["images"] == 8 and model.training  # mode restored
    assert one["sops"] <= one["sops_upper_bound"]
    assert "total per image" in to_markdown(one)
    with pytest.raises(ConfigError, match="Spikformer"):
        count_stbp_operations(nn.Linear(2, 2), [x])
