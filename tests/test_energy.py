"""Operation counts against hand-computed cases."""

from pathlib import Path

import pytest
import torch
from conftest import CIFAR, CIFAR_MISSING
from torch import nn

from ge2mst import ExpGQuant, QCFSQuant, calibrate, convert
from ge2mst.analysis.energy import OperationCounter, count_operations, dense_macs, event_sops

ROOT = Path(__file__).resolve().parents[1]
needs_cifar = pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)


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


def _conv_linear_snn(seed: int):
    """A 3x3 conv (padding 1) -> ExpG -> linear network on 6x6 inputs, calibrated, converted."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), ExpGQuant(4, 2), nn.Flatten(1),
                          nn.Linear(4 * 36, 3))
    x = torch.randn(8, 1, 6, 6)
    calibrate(model, [x])
    return convert(model.eval()), x


def test_network_totals_and_real_inputs_counted_as_macs():
    snn, x = _conv_linear_snn(0)
    report = count_operations(snn, [x[:5], x[5:]])
    first, last = report["per_layer"]
    assert first["input"] == "real"  # pixels are never counted as cheap accumulates
    assert first["macs"] == 4 * 36 * 9 and first["sops"] == 0
    assert last["input"] == "weighted spikes"  # ExpG: binary events, amplitude 2**(T-1-t) delta
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
    # average pooling of spikes gives integer multiples of a quantum: charged MACs, not SOPs
    assert by_input == ["real", "integers"]
    assert report["per_layer"][1]["macs"] > 0 and report["per_layer"][1]["sops"] == 0


# ---- input classes, attention products, neuron updates -----------------------------------------
def test_input_classes():
    from ge2mst.analysis.energy import classify_input

    binary = torch.zeros(4, 2, 5)
    binary[0, 0, 1] = binary[2, 1, 3] = 0.5
    assert classify_input(binary) == "binary spikes"
    ternary = binary.clone()
    ternary[1, 0, 0] = -0.5
    assert classify_input(ternary) == "ternary spikes"
    weighted = binary.clone()
    weighted[3, 0, 0] = 0.0625  # another step, another power-of-two amplitude
    assert classify_input(weighted) == "weighted spikes"
    integers = torch.zeros(4, 2, 5)
    integers[0, 0, :3] = torch.tensor([0.25, 0.75, 1.5])
    assert classify_input(integers) == "integers"
    assert classify_input(torch.randn(4, 2, 5)) == "real"


def test_attention_product_between_two_known_spike_matrices():
    from ge2mst.analysis.energy import spike_pair_coincidences

    # spike counts per element (tokens x dims) of Q and K inside one group
    cq = torch.tensor([[1, 0, 2], [0, 1, 1]])
    ck = torch.tensor([[1, 1, 0], [2, 0, 1], [0, 1, 1]])
    # by hand: sum_{i,j,d} cq[i,d] ck[j,d] = d0: (1+0)(1+2+0) + d1: (0+1)(1+0+1) + d2: (2+1)(0+1+1)
    assert float(spike_pair_coincidences(cq, ck)) == 3 + 2 + 6
    brute = sum(int(cq[i, d]) * int(ck[j, d]) for i in range(2) for j in range(3) for d in range(3))
    assert brute == 11


def test_neuron_updates_by_form():
    from ge2mst import ExpGIF, IFNeuron
    from ge2mst.analysis.energy import neuron_updates

    # T = 4, G = 2, groups {1,2} {3,4}; three neurons: 0110, 1000, 0000
    spikes = torch.tensor([[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.int8)
    search = neuron_updates(ExpGIF(4, 2, 1.0, form="search"), spikes)
    assert search == {"adds": 9, "comparisons": 3 * 4, "resets": 0}  # ceil(log2 9) = 4
    seq = neuron_updates(ExpGIF(4, 2, 1.0, form="sequential"), spikes)
    # comparisons until each group fires: 0110 -> 2 + 1, 1000 -> 1 + 2, 0000 -> 2 + 2
    assert seq == {"adds": 9, "comparisons": 10, "resets": 3}
    vanilla = neuron_updates(IFNeuron(4, 1.0), spikes)
    assert vanilla == {"adds": 12, "comparisons": 12, "resets": 3}


def test_spike_statistics_per_layer():
    snn, x = _conv_linear_snn(3)
    report = count_operations(snn, [x])
    (row,) = report["neurons"]
    snn(x, record=True)
    counts = next(iter(snn.spike_trains().values())).abs().sum(0)
    assert row["neurons"] == 4 * 36 and row["cap"] == 2
    assert row["mean_spikes"] == pytest.approx(float(counts.float().mean()))
    assert row["fraction_at_cap"] == pytest.approx(float((counts == 2).float().mean()))
    assert sum(row["histogram"]) == pytest.approx(1.0)
    assert row["histogram"][2] == pytest.approx(row["fraction_at_cap"])
    assert report["max_spikes_per_neuron"] == int(counts.max())
    assert report["spikes_per_image"] == pytest.approx(float(counts.sum()) / 8)


def test_synaptic_operations_equal_spikingjelly_on_binary_spikes():
    """Cross-check with SpikingJelly 2.x's SynOpCounter (optional extra; skipped without it)."""
    sj = pytest.importorskip("spikingjelly.activation_based.op_counter",
                             reason="SpikingJelly 2.x not installed (pip install --no-deps "
                                    "spikingjelly loguru)")
    from ge2mst import create_model

    torch.manual_seed(0)
    T = 4
    model = create_model("ge2mst_cnn_tiny", in_chans=3, T=T, G=1, quantizer="qcfs", width=8)
    x = torch.randn(8, 3, 16, 16)
    calibrate(model, [x])
    for _, q in model.named_modules():
        if isinstance(q, QCFSQuant):
            q.lam.data.fill_(float(T))  # spike amplitude lam / T = 1: truly binary 0/1 spikes
    snn = convert(model.eval(), encoding="repeat")
    report = count_operations(snn, [x])
    ours = sum(r["sops"] for r in report["per_layer"] if r["input"] == "binary spikes") * 8
    counter = sj.SynOpCounter()
    with torch.no_grad(), sj.DispatchCounterMode([counter]):
        snn(x)
    assert ours == counter.get_total() > 0


def test_energy_command_json_plot_and_markdown(tmp_path, capsys):
    import json

    from ge2mst.cli import main

    plot, table = tmp_path / "fig.png", tmp_path / "table.md"
    code = main(["energy", "--data", "digits", "--limit", "32", "--json", "--plot", str(plot),
                 "--markdown", str(table)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["images"] == 32
    for key in ("sops", "macs", "energy_mj", "ann_energy_mj", "firing_rate",
                "max_spikes_per_neuron", "sops_upper_bound", "per_layer"):
        assert key in report
    assert report["sops"] == pytest.approx(sum(r["sops"] for r in report["per_layer"]))
    assert report["macs"] == pytest.approx(sum(r["macs"] for r in report["per_layer"]))
    assert report["sops_upper_bound"] == pytest.approx(
        sum(r["sops_upper_bound"] for r in report["per_layer"]))
    assert report["energy_mj"] == pytest.approx(
        (report["sops"] * 0.9 + report["macs"] * 4.6) * 1e-9)
    assert {r["input"] for r in report["per_layer"]} >= {"real", "weighted spikes"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(plot).size[0] > 1000  # two panels side by side
    text = table.read_text()
    assert "**total per image**" in text and f"{report['sops']:,.0f}" in text
    code = main(["energy", "--data", "digits", "--limit", "8", "--json", "--preset", "45nm-int8"])
    int8 = json.loads(capsys.readouterr().out)
    assert int8["pj_per_mac"] == 0.23 and int8["energy_mj"] < report["energy_mj"]


class _AddReal(nn.Module):
    """Adds a real-valued signal to whatever flows through (its own spiking version)."""

    def forward(self, x):
        return x + 0.1 * torch.cos(3.7 * x + 0.3)

    def to_spiking(self, options, name=""):
        return self


def test_a_real_tensor_fed_into_a_middle_layer_is_charged_macs():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), ExpGQuant(4, 2), _AddReal(),
                          nn.Conv2d(4, 4, 3, padding=1), ExpGQuant(4, 2), nn.Flatten(1),
                          nn.Linear(4 * 36, 3))
    x = torch.randn(4, 1, 6, 6)
    calibrate(model, [x])
    report = count_operations(convert(model.eval()), [x])
    middle = report["per_layer"][1]
    assert middle["name"] == "3" and middle["input"] == "real"
    assert middle["sops"] == 0 and middle["macs"] == 4 * 36 * 4 * 9  # dense, once per image
    assert report["per_layer"][2]["input"] == "weighted spikes"


# ---- the tally path of OperationCounter against the spike-train reference -------------------
VALID_TG = [(T, G) for T in range(1, 9) for G in range(1, T + 1) if T % G == 0]


@pytest.mark.parametrize(("T", "G"), VALID_TG)
@pytest.mark.parametrize("signed", [False, True])
def test_tally_from_levels_equals_tally_from_spike_trains(T, G, signed):
    """Per step, per neuron, histogram and sign: from each neuron's level through the code
    book's pattern table, and from its spike pattern counted spike by spike."""
    from ge2mst.core.coding import expg_codebook
    from ge2mst.core.neurons import SpikeTally

    book = expg_codebook(T, G)
    M = book.num_levels
    gen = torch.Generator().manual_seed(T * 10 + G)
    level = torch.randint(0, M, (3, 5, 7), generator=gen)
    negative = torch.randint(0, 2, level.shape, generator=gen).bool() if signed else None
    spikes = book.patterns[level].movedim(-1, 0)
    rows = level
    if signed:
        spikes = torch.where(negative, -spikes, spikes)
        rows = level + M * negative
    a, b = SpikeTally.from_levels(rows, book, signed), SpikeTally.from_spikes(spikes)
    assert torch.equal(a.per_step, b.per_step) and torch.equal(a.histogram, b.histogram)
    assert torch.equal(a.per_neuron(), b.per_neuron())
    assert bool(a.negative) == bool(b.negative) == bool((spikes < 0).any())
    assert a.neurons == b.neurons == 35 and a.total() == int(spikes.abs().sum())


def _expg_cnn(form="search"):
    from ge2mst import calibrate, create_model

    torch.manual_seed(1)
    model = create_model("ge2mst_cnn_tiny", T=4, G=2, width=8)
    x = torch.randn(6, 3, 32, 32)
    calibrate(model, [x])
    return convert(model.eval(), form=form), x


@pytest.mark.parametrize("form", ["search", "sequential"])
def test_counter_keeps_tallies_not_spike_trains(form):
    snn, x = _expg_cnn(form)
    with OperationCounter(snn) as counter:
        counter(x)
        neurons = [n for _, n in snn.neurons()]
        assert all(n.last_tally is not None and n.last_membrane is None for n in neurons)
        # form A needs no spike trains to be counted; form B's comparisons need them
        assert all((n.last_spikes is not None) == (form == "sequential") for n in neurons)
    assert all(not n.counting and n.last_tally is None for n in neurons)


def _assert_same_reports(snn, batches):
    def count(from_spike_trains):
        with OperationCounter(snn, from_spike_trains=from_spike_trains) as counter:
            logits = [counter(x) for x in batches]
            return logits, counter.report()

    fast_logits, fast = count(False)
    ref_logits, ref = count(True)
    assert all(torch.equal(a, b) for a, b in zip(fast_logits, ref_logits, strict=True))
    assert fast == ref  # every total, layer row, input class, histogram: the same numbers
    return fast


@pytest.mark.parametrize("form", ["search", "sequential"])
def test_tally_counts_equal_spike_train_counts_on_random_inputs(form):
    snn, x = _expg_cnn(form)
    report = _assert_same_reports(snn, [x, x[:2] * 3])
    assert report["sops"] > 0 and {r["input"] for r in report["per_layer"]} >= {"weighted spikes"}


@needs_cifar
@pytest.mark.cifar
@pytest.mark.parametrize("checkpoint", ["ge2mst_cnn_tiny_cifar", "ge2mst_cifar_tiny_effdim",
                                        "ge2mst_cnn_tiny_qcfs_cifar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tally_counts_equal_spike_train_counts_on_real_images(cache_dir, checkpoint, dtype):
    """The shipped checkpoints (ExpG CNN, Ge2mS-T with GW-SSA, vanilla IF) on 48 real CIFAR-10
    test images in two batches: counting from tallies gives the report of counting from the
    recorded spike trains, to the last digit, and the same logits."""
    from ge2mst.conversion.kinds import default_encoding
    from ge2mst.data import load_dataset, normalize
    from ge2mst.io.checkpoint import load_checkpoint

    model, config = load_checkpoint(ROOT / "checkpoints" / f"{checkpoint}.safetensors")
    data = load_dataset(str(CIFAR), split="test", limit=48, cache_dir=cache_dir, progress=False)
    x = normalize(data.images, config["mean"], config["std"]).to(dtype)
    method = "qcfs" if "qcfs" in checkpoint else "expg"
    snn = convert(model.eval().to(dtype), encoding=default_encoding(method))
    with torch.no_grad():
        report = _assert_same_reports(snn, [x[:32], x[32:]])
    assert report["images"] == 48 and report["spikes_per_image"] > 0
    if "cifar_tiny" in checkpoint:
        assert any(r["input"] == "spike pairs" for r in report["per_layer"])
