"""The model registry: metadata known without building a model, the keyword arguments that fit a
model to data, and a sweep over every registered model (a new one is tested on registration)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CIFAR, CIFAR_MISSING

from ge2mst import ConfigError, calibrate, convert, create_model, list_models
from ge2mst.cli import main
from ge2mst.conversion.kinds import method_of
from ge2mst.models import model_kwargs_for, model_spec, register_model


def test_metadata_matches_what_the_built_model_says():
    for name in list_models():
        spec = model_spec(name)
        model = create_model(name, **({"T": 2} if spec.method == "stbp" else {"T": 2, "G": 1}))
        assert (method_of(model) == "stbp") == (spec.method == "stbp"), name
        assert getattr(model, "img_size", None) == spec.img_size, name


def test_kwargs_for_data_pass_the_image_side_only_to_fixed_size_models():
    cnn = model_kwargs_for("ge2mst_cnn_tiny", num_classes=7, in_chans=1, img_size=8)
    assert cnn == {"num_classes": 7, "in_chans": 1, "T": 4, "G": 2}
    assert "img_size" not in model_kwargs_for("ge2mst_cifar_tiny", num_classes=10, in_chans=3,
                                              img_size=32)
    fitted = model_kwargs_for("ge2mst_cifar_tiny", num_classes=10, in_chans=3, img_size=64, T=2,
                              G=1, width=8)
    assert fitted == {"num_classes": 10, "in_chans": 3, "T": 2, "G": 1, "img_size": 64, "width": 8}
    assert create_model("ge2mst_cifar_tiny", **fitted)(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_stbp_models_take_no_groups():
    kwargs = model_kwargs_for("spikformer_tiny", num_classes=10, in_chans=3, img_size=32)
    assert "G" not in kwargs and kwargs["T"] == 4
    with pytest.raises(ConfigError, match="STBP baseline without temporal groups"):
        model_kwargs_for("spikformer_tiny", num_classes=10, in_chans=3, img_size=32, G=2)


def test_registration_metadata_is_checked():
    with pytest.raises(ConfigError, match="method must be one of"):
        register_model(method="backprop")
    with pytest.raises(ConfigError, match="img_size must be a whole number"):
        register_model(img_size=0)
    def ge2mst_cnn_tiny(**kwargs):  # the name of a registered model
        return torch.nn.Identity()

    with pytest.raises(ConfigError, match="registered twice"):
        register_model(ge2mst_cnn_tiny)
    with pytest.raises(ConfigError, match="unknown model 'ge2mst_cifar_tiyn'; did you mean"):
        model_spec("ge2mst_cifar_tiyn")


@pytest.mark.parametrize("name", ["spikformer_4_384", "spikformer_tiny", "ge2mst_cnn_tiny"])
def test_info_runs_for_every_kind_of_model(name, capsys):
    """`ge2mst info` once failed for STBP models ("unexpected keyword argument 'G'")."""
    assert main(["info", "--model", name, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["T"] == 4 and info["params"] > 0 and info["sops_upper_bound"] > 0
    assert info["G"] == (None if model_spec(name).method == "stbp" else 2)


def _tiny_kwargs(name: str) -> dict:
    """The smallest build of each family that keeps its structure (widths, a 32-pixel side)."""
    spec = model_spec(name)
    if spec.method == "stbp":
        return {"T": 2, "embed_dim": 16, "num_heads": 2, "depth": 1}
    kwargs = {"T": 2, "G": 1, "num_classes": 10}
    if name.startswith("ge2mst_") and name != "ge2mst_cnn_tiny":
        kwargs["width"] = 8
        if spec.img_size != 32:
            kwargs["img_size"] = 64  # the ImageNet stems need more than 32 pixels for their windows
    else:
        kwargs["width"] = 4
    return kwargs


@pytest.fixture(scope="module")
def two_images(cache_dir):
    if not CIFAR.is_file():
        pytest.skip(CIFAR_MISSING)
    from ge2mst.data import load_dataset, normalize

    data = load_dataset(str(CIFAR), split="test", limit=2, cache_dir=cache_dir, progress=False)
    mean, std = data.channel_stats()
    return normalize(data.images, mean, std)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_runs_and_converts_exactly(name, two_images):
    torch.manual_seed(0)
    kwargs = _tiny_kwargs(name)
    model = create_model(name, **kwargs).eval()
    side = kwargs.get("img_size", 32)
    x = torch.nn.functional.interpolate(two_images, size=(side, side), mode="bilinear",
                                        align_corners=False).double()
    if model_spec(name).method == "stbp":  # its own spiking network: forward only
        out = model(x.float())
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        return
    calibrate(model, [x.float()])
    model = model.double()
    with torch.no_grad():
        ann = model(x)
        snn = convert(model)(x)
    assert ann.shape == (2, 10) and torch.isfinite(ann).all()
    # the ANN's own forward pass is the oracle: the spiking network must reproduce its logits
    assert (snn - ann).abs().max() <= 1e-9 * ann.abs().max().clamp_min(1.0), name
    assert torch.equal(snn.argmax(1), ann.argmax(1))
