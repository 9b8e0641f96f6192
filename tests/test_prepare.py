"""``ge2mst.prepare``: ordinary PyTorch networks, written as people write them, made into ExpG
networks whose spiking networks are exact; what cannot be exact is refused by name."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import CIFAR, CIFAR_MISSING
from torch import nn
from user_nets.torchvision_style import VGG, CifarVGG, ReLU6Net, ResNet

from ge2mst import ConversionError, ExpGIF, ExpGQuant, calibrate, convert, prepare
from ge2mst.analysis.energy import count_operations
from ge2mst.analysis.verification import verify
from ge2mst.core.coding import expg_codebook
from ge2mst.core.quantizers import quantizers
from ge2mst.errors import InputError
from ge2mst.nn.max_pool import SpikingMaxPool

needs_cifar = pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)


def _bypassed(model: nn.Module) -> nn.Module:
    for _, q in quantizers(model):
        q.bypass = True  # ReLU again: the prepared graph must compute the original function
    return model


@pytest.mark.parametrize("net", [ResNet, VGG, CifarVGG, ReLU6Net])
def test_prepare_keeps_the_function_and_the_weights(net):
    torch.manual_seed(0)
    model = net().eval()
    x = torch.randn(4, 3, 32, 32)
    prepared = prepare(model).eval()
    if net is ReLU6Net:  # the clips of ReLU6 / hardtanh start lambda at the clip
        lams = sorted(float(q.lam.detach()) for _, q in quantizers(prepared))
        assert lams == [1.0, 3.0, 6.0]
        return
    assert torch.equal(_bypassed(prepared)(x), model(x))
    assert set(model.state_dict()) <= set(prepared.state_dict())  # the float weights, kept
    assert next(iter(model.parameters())).data_ptr() != next(iter(prepared.parameters())).data_ptr()


def test_every_call_site_gets_its_own_quantizer():
    prepared = prepare(ResNet())
    names = [n for n, _ in quantizers(prepared)]
    # ResNet-20: the stem, then two ReLUs in each of 9 blocks through one shared self.relu
    assert len(names) == 19 == len(set(names))
    assert sum("layer1_0_relu" in n for n in names) == 2
    assert all(q.T == 4 and q.G == 2 for _, q in quantizers(prepared))


def test_an_in_place_relu_feeds_its_later_readers():
    torch.manual_seed(0)
    model = ReLU6Net().eval()
    x = torch.randn(2, 3, 8, 8)
    prepared = prepare(model).eval()
    for _, q in quantizers(prepared):  # clips as wide as the original's: the same function
        q.bypass = False
    prepared_out = prepared(x)
    with torch.no_grad():  # the same network with every clip forced to the quantizer's levels
        for _, q in quantizers(prepared):
            q.p = 0.0  # p = 0: clip(x, 0, lambda), the ClipReLU of progressive training
        clipped = prepared(x)
    y = torch.relu(model.c2(torch.clamp(model.c1(x), 0, 6)))
    z = torch.clamp(y, 0, 3) + torch.clamp(y, 0, 1.0)  # y.relu_() became clip(0, lambda = 1)
    expected = model.fc(F.adaptive_avg_pool2d(z, 1).flatten(1))
    assert torch.allclose(clipped, expected, atol=1e-6)
    assert prepared_out.shape == expected.shape


def _calibrated(net, images):
    torch.manual_seed(0)
    prepared = prepare(net())
    calibrate(prepared, [images])
    return prepared.eval()


@pytest.mark.parametrize("net", [ResNet, VGG, CifarVGG, ReLU6Net])
def test_prepared_networks_convert_exactly_on_every_neuron(net):
    x = torch.randn(16, 3, 32, 32)
    report = verify(_calibrated(net, x), [(x, None)], oracle_sample=None, float32_path=True)
    assert report["exact"] is True, report["exactness_failures"]
    assert report["oracle_checked"] == report["codes_compared"] > 0
    assert report["trained_code_mismatches"] == 0 and report["float32_kernel_mismatches"] == 0
    collapsed = verify(_calibrated(net, x), [(x, None)], step_mode="collapsed",
                       form="sequential", oracle_sample=None)
    assert collapsed["exact"] is True


@needs_cifar
@pytest.mark.cifar
def test_user_networks_are_exact_on_real_cifar_images(cache_dir):
    from ge2mst.data import load_dataset, normalize

    data = load_dataset(str(CIFAR), split="test", limit=64, cache_dir=cache_dir)
    mean, std = data.channel_stats()
    x = normalize(data.images, mean, std)
    for net in (ResNet, VGG, CifarVGG):
        model = _calibrated(net, x[:32])
        report = verify(model, [(x[i:i + 32], data.labels[i:i + 32]) for i in (0, 32)],
                        oracle_sample=None, float32_path=True)
        assert report["exact"] is True and report["images"] == 64, net.__name__
        assert report["max_spikes_per_neuron"] <= 2 and report["mean_spikes_per_neuron"] > 0.05


@needs_cifar
@pytest.mark.cifar
@pytest.mark.parametrize("name,net", [("resnet20", ResNet), ("vgg", CifarVGG)])
def test_the_benchmarks_fine_tuned_user_networks_load_and_convert_exactly(cache_dir, name, net):
    """The weights behind benchmarks/RESULTS.md's bring-your-own table: a fresh ``prepare`` of the
    user's class takes them strictly, and the spiking network is exact on real test images."""
    from ge2mst.data import load_dataset, normalize

    root = Path(__file__).resolve().parents[1] / "benchmarks" / "bring_your_own"
    train = load_dataset(str(CIFAR), split="train", limit=1000, cache_dir=cache_dir, seed=0)
    test = load_dataset(str(CIFAR), split="test", limit=64, cache_dir=cache_dir, seed=0)
    mean, std = train.channel_stats()
    x = normalize(test.images, mean, std)
    model = prepare(net(), T=4, G=2)
    model.load_state_dict(torch.load(root / f"ge2mst_{name}_finetuned_3.pth", weights_only=True))
    report = verify(model.eval(), [(x, test.labels)], oracle_sample=None, float32_path=True)
    assert report["exact"] is True and report["oracle_mismatches"] == 0
    assert report["snn_accuracy"] >= 0.7  # 83.9 % / 84.1 % on the benchmark's 1,000 images


@needs_cifar
@pytest.mark.cifar
def test_the_benchmarks_float_vgg_goes_exact_from_the_command_line(cache_dir, capsys):
    """The benchmark's float VGG (max pooling), from its file and its float weights: calibrated
    and verified exact on real CIFAR-10 test images by the CLI alone."""
    import json

    from ge2mst.cli import main

    root = Path(__file__).resolve().parents[1]
    user = ["--model-file", f"{root / 'tests/user_nets/torchvision_style.py'}:CifarVGG",
            "--init-weights", str(root / "benchmarks/bring_your_own/float_vgg_weights.pth")]
    assert main(["verify", *user, "--data", str(CIFAR), "--data-dir", str(cache_dir), "--limit", "64",
                 "--strict", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exact"] is True and report["images"] == 64
    assert report["oracle_checked"] == report["codes_compared"] > 0
    assert report["snn_accuracy"] >= 0.4  # calibration alone: 70.8 % on the benchmark's 1,000


def test_the_spiking_network_of_a_traced_model_counts_its_operations():
    x = torch.randn(8, 3, 32, 32)
    snn = convert(_calibrated(VGG, x))
    assert snn.time_folded and all(isinstance(n, ExpGIF) for _, n in snn.neurons())
    counts = count_operations(snn, [x])
    assert counts["sops"] > 0 and counts["macs"] > 0  # spikes into layers, pixels into the first
    assert counts["sops"] <= counts["sops_upper_bound"]


# ---- max pooling of spike trains ---------------------------------------------------------------
def test_spiking_max_pool_emits_the_pattern_of_the_largest_code():
    torch.manual_seed(0)
    book = expg_codebook(4, 2)
    codes = book.codes[torch.randint(len(book.codes), (2, 3, 6, 6))]
    theta = torch.tensor([8.0, 4.0, 2.0, 1.0]).view(4, 1, 1, 1, 1) * 0.125
    spikes = book.patterns[torch.searchsorted(book.codes, codes)].movedim(-1, 0).double()
    pool = SpikingMaxPool(nn.MaxPool2d(2, padding=1), "pool")
    out = pool(spikes * theta)
    expected = F.max_pool2d(codes.double(), 2, padding=1)
    decoded = (out / theta).round()  # one spike per step at most, of that step's amplitude
    assert torch.equal((decoded * theta / 0.125).sum(0), expected)
    assert decoded.sum(0).max() <= 2 and set(decoded.unique().tolist()) <= {0.0, 1.0}
    pool.step_mode = "collapsed"
    assert torch.equal(pool(codes.double()), expected)


def test_spiking_max_pool_refuses_what_is_not_a_spike_train():
    pool = SpikingMaxPool(nn.MaxPool2d(2), "features.3")
    with pytest.raises(InputError, match="features.3"):
        pool(torch.randn(4, 1, 2, 4, 4))  # currents, not spikes
    with pytest.raises(ConversionError, match="ceil_mode"):
        SpikingMaxPool(nn.MaxPool2d(2, ceil_mode=True), "p")


# ---- what is refused, by name --------------------------------------------------------------------
class _Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def head(self, x):
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class WithLayerNorm(_Base):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm([8, 4, 4])

    def forward(self, x):
        return self.head(self.norm(torch.relu(self.conv(x))))


class WithSoftmaxAttention(_Base):
    def forward(self, x):
        t = torch.relu(self.conv(x)).flatten(2)
        attn = (t.transpose(1, 2) @ t).softmax(-1)
        return self.fc((t @ attn).mean(2))


class WithGelu(_Base):
    def __init__(self):
        super().__init__()
        self.act = nn.GELU()

    def forward(self, x):
        return self.head(torch.relu(self.act(self.conv(x))))


class WithConstant(_Base):
    def forward(self, x):
        return self.head(torch.relu(self.conv(x)) + 1.0)


class WithProduct(_Base):
    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.head(y * y)


class WithControlFlow(_Base):
    def forward(self, x):
        y = torch.relu(self.conv(x))
        if y.sum() > 0:
            y = y * 2
        return self.head(y)


@pytest.mark.parametrize("net,match", [
    (WithLayerNorm, r"module 'norm'.*LayerNorm"),
    (WithSoftmaxAttention, r"graph node 'matmul'.*multiplies two activations"),
    (WithGelu, r"module 'act'.*smooth activation.*replace_smooth"),
    (WithConstant, r"adds a constant"),
    (WithProduct, r"multiplies two activations"),
    (WithControlFlow, r"cannot trace.*control flow"),
])
def test_what_cannot_be_exact_is_refused_by_name(net, match):
    with pytest.raises(ConversionError, match=match):
        prepare(net())


def test_smooth_activations_are_swapped_only_when_asked_with_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = prepare(WithGelu(), replace_smooth=True)
    assert any("function changes" in str(w.message) for w in caught)
    assert sum(isinstance(m, ExpGQuant) for m in prepared.modules()) == 2


def test_a_network_without_relu_and_a_non_module_are_refused():
    with pytest.raises(ConversionError, match="no ReLU-type activation"):
        prepare(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
    with pytest.raises(ConversionError, match="torch.nn.Module"):
        prepare(lambda x: x)


# ---- the whole path from the command line ---------------------------------------------------------
USER_NET = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 2 * 2, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(self.bn2(self.conv2(x)).relu(), 2)
        return self.fc(x.view(x.size(0), -1))
'''


def test_a_float_network_from_a_file_trains_converts_and_verifies_from_the_cli(tmp_path, capsys):
    import importlib.util
    import json

    from ge2mst.cli import main

    source = tmp_path / "net.py"
    source.write_text(USER_NET)
    spec = importlib.util.spec_from_file_location("user_net_for_test", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    torch.save(module.Net().state_dict(), tmp_path / "float.pth")
    user = ["--model-file", f"{source}:Net", "--init-weights", str(tmp_path / "float.pth")]
    run = tmp_path / "run"
    assert main(["train", *user, "--data", "digits", "--epochs", "2", "--batch-size", "64",
                 "--no-tensorboard", "--out", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exact"] is True and report["model"] == f"file:{source}:Net"
    checkpoint = str(run / "last.safetensors")
    assert main(["verify", "--checkpoint", checkpoint, "--data", "digits", "--strict",
                 "--json"]) == 0  # the checkpoint names the file: no --model-file needed
    check = json.loads(capsys.readouterr().out)
    assert check["exact"] is True and check["oracle_checked"] == check["codes_compared"] > 0
    assert main(["energy", "--checkpoint", checkpoint, "--data", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sops"] > 0
    snn = tmp_path / "snn.safetensors"
    assert main(["convert", checkpoint, "--out", str(snn)]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(snn), "--data", "digits", "--json",
                 "--no-energy"]) == 0
    assert json.loads(capsys.readouterr().out)["snn"]["top1"] == pytest.approx(check["snn_accuracy"])
    # calibration alone, from the float weights: no training
    assert main(["verify", *user, "--data", "digits", "--json", "--strict"]) == 0
    assert json.loads(capsys.readouterr().out)["init_weights"] == str(tmp_path / "float.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    assert main(["verify", "--model-file", f"{source}:Net", "--init-weights",
                 str(tmp_path / "bad.pth"), "--data", "digits"]) == 2
    assert "does not fit the network" in capsys.readouterr().err
