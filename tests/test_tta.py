"""Flip test-time augmentation of `ge2mst.analysis.evaluation.evaluate` and ``ge2mst eval --tta``:
each image classified by the summed logits of itself and its mirror image, in both modes, the
spiking network still equal to the ANN, and the energy counted per view and doubled per
classification."""

import json
from pathlib import Path

import pytest
import torch
from conftest import CIFAR, CIFAR_MISSING

from ge2mst.analysis.evaluation import evaluate, views
from ge2mst.cli import main
from ge2mst.errors import ConfigError
from ge2mst.io.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXPG = ROOT / "checkpoints" / "ge2mst_cnn_tiny_cifar.safetensors"


@pytest.fixture(scope="module")
def digits():
    """A small calibrated ExpG network and 48 normalised 8x8 digits with their labels."""
    from ge2mst import calibrate, create_model
    from ge2mst.data import load_dataset, normalize

    data = load_dataset("digits", split="test")
    mean, std = data.channel_stats()
    x = normalize(data.images[:48], mean, std)
    torch.manual_seed(0)
    model = create_model("ge2mst_cnn_tiny", in_chans=1, T=4, G=2, width=8)
    calibrate(model, [normalize(load_dataset("digits", split="train").images[:256], mean, std)])
    return model.eval(), x, data.labels[:48]


def test_views_are_the_image_and_its_mirror():
    x = torch.arange(24.0).view(1, 2, 3, 4)
    one, = views(x)
    assert one is x
    same, mirror = views(x, "flip")
    assert torch.equal(same, x)
    assert torch.equal(mirror[..., 0], x[..., 3]) and torch.equal(mirror[..., 3], x[..., 0])
    with pytest.raises(ConfigError, match="tta must be one of"):
        views(x, "crop")


def test_flip_tta_sums_the_two_views_in_both_modes(digits):
    model, x, _ = digits
    # the reference: the float64 network called directly on each view, logits summed; its
    # predictions serve as the labels, so that top-1 is 1.0 exactly when evaluate predicts them
    with torch.no_grad():
        ref = model.double()
        one = ref(x.double())
        both = one + ref(x.double().flip(-1))
        model.float()
    y = both.argmax(1)
    assert (one.argmax(1) != y).any()  # the mirror view changes some predictions
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    report = evaluate(model, batches, tta="flip")
    assert report["ann"]["top1"] == report["snn"]["top1"] == 1.0
    assert report["agreement"] == 1.0 and report["max_abs_diff"] <= 1e-9
    assert (report["tta"], report["views"], report["images"]) == ("flip", 2, 48)
    single = evaluate(model, batches, mode="ann")
    assert "tta" not in single and single["ann"]["top1"] < 1.0


def test_flip_tta_energy_is_per_view_and_doubled_per_classification(digits):
    model, x, y = digits
    e = evaluate(model, [(x, y)], mode="snn", tta="flip")["snn"]["energy"]
    plain = evaluate(model, [(x, y)], mode="snn")["snn"]["energy"]
    mirrored = evaluate(model, [(x.flip(-1), y)], mode="snn")["snn"]["energy"]
    # per view: the mean of the one-view evaluations of the images and of their mirror images
    for key in ("sops", "energy_mj", "spikes_per_image"):
        assert e[key] == pytest.approx((plain[key] + mirrored[key]) / 2, rel=1e-12)
    assert plain["sops"] != mirrored["sops"]  # the mirror images are other inputs
    assert e["energy_mj_per_classification"] == 2 * e["energy_mj"]
    assert e["ann_energy_mj_per_classification"] == 2 * e["ann_energy_mj"]
    collapsed = evaluate(model, [(x, y)], mode="snn", tta="flip", step_mode="collapsed")
    assert collapsed["snn"]["energy"]["sops"] == pytest.approx(e["sops"], rel=1e-12)


def test_unknown_tta_is_refused_before_any_work(digits):
    model, x, y = digits
    with pytest.raises(ConfigError, match="tta must be one of"):
        evaluate(model, iter(()), tta="crops")


@pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)
@pytest.mark.cifar
def test_eval_tta_flip_on_real_cifar_images(capsys, cache_dir):
    from ge2mst.data import load_dataset, normalize

    argv = ["eval", "--checkpoint", str(EXPG), "--data", str(CIFAR), "--data-dir", cache_dir,
            "--limit", "24", "--tta", "flip", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["agreement"] == 1.0 and report["max_abs_diff"] <= 1e-9
    e = report["snn"]["energy"]
    assert e["energy_mj_per_classification"] == 2 * e["energy_mj"] > 0
    # the ANN's top-1 from the checkpoint's network called on each view in float64
    model, config = load_checkpoint(EXPG)
    data = load_dataset(str(CIFAR), split="test", limit=24, cache_dir=cache_dir, progress=False)
    x = normalize(data.images, config["mean"], config["std"]).double()
    with torch.no_grad():
        net = model.eval().double()
        logits = net(x) + net(x.flip(-1))
    assert report["ann"]["top1"] == float((logits.argmax(1) == data.labels).float().mean())
    with pytest.raises(SystemExit) as exit_info:
        main(argv[:-3] + ["--tta", "crops"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
