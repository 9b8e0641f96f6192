"""Stochastic depth: a per-image drop of residual branches while training, nothing at inference,
so the converted spiking network stays exactly the evaluated ANN."""

import pytest
import torch
from conftest import CIFAR, CIFAR_MISSING

from ge2mst import calibrate, create_model
from ge2mst.analysis.verification import is_exact, verify
from ge2mst.data import load_dataset, normalize
from ge2mst.errors import ConfigError
from ge2mst.nn.blocks import Residual
from ge2mst.training.trainer import TrainConfig, Trainer


def test_a_training_block_keeps_or_drops_each_image_branch_whole():
    torch.manual_seed(0)
    branch = torch.nn.Conv2d(3, 3, 3, padding=1)
    block = Residual(branch, drop_path=0.5).train()
    x = torch.randn(64, 3, 5, 5)
    out = block(x)
    full = branch(x)
    dropped = torch.isclose(out, x, atol=1e-6).flatten(1).all(1)
    kept = torch.isclose(out, x + 2 * full, atol=1e-5).flatten(1).all(1)
    assert bool((dropped ^ kept).all())  # each image: all of its branch, or none of it
    assert 16 < int(dropped.sum()) < 48  # about half of 64 images
    block.eval()
    assert torch.equal(block(x), x + full)  # inference: the plain residual


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), True])
def test_impossible_rates_are_refused(bad):
    with pytest.raises(ConfigError, match="drop_path"):
        create_model("ge2mst_cifar_tiny", drop_path_rate=bad)


def test_rates_rise_linearly_over_the_blocks_and_rebuild_from_the_recorded_kwargs():
    model = create_model("ge2mst_cifar_tiny", drop_path_rate=0.2)
    rates = [m.drop_path for m in model.modules() if isinstance(m, Residual)]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.2)
    assert all(b > a for a, b in zip(rates, rates[1:], strict=False))
    again = create_model(model.model_name, **model.model_kwargs)
    assert [m.drop_path for m in again.modules() if isinstance(m, Residual)] == rates


@pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)
def test_trained_with_drop_path_converts_exactly_on_real_images(cache_dir):
    data = load_dataset(CIFAR, split="test", limit=96, cache_dir=cache_dir)
    mean, std = data.channel_stats()
    x = normalize(data.images, mean, std)
    torch.manual_seed(0)
    model = create_model("ge2mst_cifar_tiny", drop_path_rate=0.3)
    calibrate(model, [x[:64]])
    trainer = Trainer(model, x[:64], data.labels[:64],
                      TrainConfig(epochs=1, batch_size=32, ramp_end=0.5, seed=1))
    trainer.fit(progress=False)  # two steps with branches dropped, the second at p = 1
    check = verify(model.eval(), [(x[64:], data.labels[64:])], step_mode="event")
    assert is_exact(check), check["exactness_failures"]
    assert check["prediction_agreement"] == 1.0
