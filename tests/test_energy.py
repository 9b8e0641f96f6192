"""Operation counts against hand-computed cases."""

import pytest
import torch
from torch import nn

from ge2mst import ExpGQuant, calibrate, convert
from ge2mst.energy import count_operations, dense_macs, event_sops


def test_conv3x3_with_padding_on_a_known_spike_map():
    conv = nn.Conv2d(1, 2, 3, padding=1)
    counts = torch.zeros(1, 1, 4, 4)
    counts[0, 0, 0, 0] = 1  # a corner reaches 2 x 2 output positions per output channel
    counts[0, 0, 1, 1] = 2  # an interior position reaches 3 x 3, and it fired twice
    counts[0, 0, 0, 2] = 1  # an edge reaches 2 x 3
    expected = 2 * (1 * 4 + 2 * 9 + 1 * 6)
    assert float(event_sops(conv, counts)[0]) == expected


def test_strided_conv_and_linear_fan_out():
    conv = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    counts = torch.ones(1, 1, 4, 4)
    # output 2 x 2; each output's window covers the in-bounds pixels: 4, 6, 6, 9
    assert float(event_sops(conv, counts)[0]) == 4 + 6 + 6 + 9
    fc = nn.Linear(5, 3)
    assert float(event_sops(fc, torch.tensor([[1.0, 0, 2, 0, 1]]))[0]) == 4 * 3
    assert dense_macs(fc, torch.Size([3])) == 15
    assert dense_macs(nn.Conv2d(4, 8, 3, groups=2), torch.Size([8, 5, 5])) == 8 * 25 * 2 * 9


def test_network_totals_and_real_inputs_counted_as_macs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), ExpGQuant(4, 2), nn.Flatten(1),
                          nn.Linear(4 * 36, 3))
    x = torch.randn(8, 1, 6, 6)
    calibrate(model, [x])
    snn = convert(model.eval())
    report = count_operations(snn, [x[:5], x[5:]])
    first, last = report["per_layer"]
    assert first["input"] == "real"  # pixels are never counted as cheap accumulates
    assert first["macs"] == 4 * 36 * 9 and first["sops"] == 0
    assert last["input"] == "spikes"
    # hand count from the recorded spikes: each event reaches all 3 outputs of the linear layer
    snn(x, record=True)
    spikes = next(iter(snn.spike_trains().values()))
    assert last["sops"] == pytest.approx(float(spikes.abs().sum()) * 3 / 8)
    assert last["sops_upper_bound"] == 2 * 4 * 36 * 3  # every neuron at G = 2 spikes
    assert report["sops"] == sum(r["sops"] for r in report["per_layer"])
    assert report["macs"] == sum(r["macs"] for r in report["per_layer"])
    assert report["energy_mj"] == pytest.approx((report["sops"] * 0.9 + report["macs"] * 4.6) * 1e-9)
    assert report["ann_macs"] == 4 * 36 * 9 + 4 * 36 * 3


def test_a_real_valued_tensor_in_a_middle_layer_is_reported_as_macs():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), ExpGQuant(4, 2),
                          nn.AvgPool2d(2), nn.Flatten(1), nn.Linear(2 * 9, 3))
    x = torch.randn(4, 1, 6, 6)
    calibrate(model, [x])
    report = count_operations(convert(model.eval()), [x])
    by_input = [r["input"] for r in report["per_layer"]]
    # average pooling of spikes gives real values: the linear layer is charged MACs, not SOPs
    assert by_input == ["real", "real"]
    assert report["per_layer"][1]["macs"] > 0 and report["per_layer"][1]["sops"] == 0
