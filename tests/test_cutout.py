"""Cutout: one square of every training image set to 0, clipped at the border, seeded, on the
batch's device; in memory and streamed batches alike, and from the command line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ge2mst.data.augment import cutout
from ge2mst.errors import ConfigError
from ge2mst.training import TrainConfig, Trainer


def _zeroed(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """B x H x W: where ``out`` is 0 but ``x`` was not (x has no zeros of its own)."""
    assert (x != 0).all()
    return (out == 0).all(1)


def _square(mask: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) of the one rectangle ``mask`` (H x W) holds; fails if it is not one."""
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    assert len(rows) and len(cols)
    assert torch.equal(rows, torch.arange(int(rows[0]), int(rows[-1]) + 1))
    assert torch.equal(cols, torch.arange(int(cols[0]), int(cols[-1]) + 1))
    box = torch.zeros_like(mask)
    box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    assert torch.equal(mask, box)
    return len(rows), len(cols)


def test_one_clipped_square_per_image_in_every_channel():
    x = torch.rand(400, 3, 16, 16) + 0.5
    out = cutout(x, torch.Generator().manual_seed(0), 6)
    zeroed = _zeroed(x, out)
    assert torch.equal(out[~zeroed.unsqueeze(1).expand_as(x)], x[~zeroed.unsqueeze(1).expand_as(x)])
    assert ((out == 0).any(1) == zeroed).all()  # all channels or none
    sides = [_square(m) for m in zeroed]
    assert all(1 <= r <= 6 and 1 <= c <= 6 for r, c in sides)
    assert sum((r, c) == (6, 6) for r, c in sides) > 100  # whole squares away from the border
    assert sum(r * c < 36 for r, c in sides) > 100  # clipped ones near it
    tops = [int(m.any(1).nonzero()[0]) for m in zeroed]
    bottoms = [int(m.any(1).nonzero()[-1]) for m in zeroed]
    # centres 0 .. 15, the square from centre - 3 to centre + 2: first/last centre rows reached
    assert max(tops) == 15 - 3 and min(bottoms) == 0 + 2


def test_seeded_off_and_device():
    x = torch.rand(8, 2, 8, 8) + 0.1
    a = cutout(x, torch.Generator().manual_seed(3), 4)
    assert torch.equal(a, cutout(x, torch.Generator().manual_seed(3), 4))
    assert not torch.equal(a, cutout(x, torch.Generator().manual_seed(4), 4))
    assert cutout(x, torch.Generator(), 0) is x
    meta = cutout(torch.empty(8, 2, 8, 8, device="meta"), torch.Generator(), 4)
    assert meta.device.type == "meta" and meta.shape == (8, 2, 8, 8)


@pytest.mark.parametrize("size, match", [(-1, "whole number >= 0"), (2.5, "whole number"),
                                         (True, "whole number"), (9, "does not fit 8 x 8")])
def test_bad_sizes(size, match):
    with pytest.raises(ConfigError, match=match):
        cutout(torch.ones(2, 1, 8, 8), torch.Generator(), size)


def test_bad_images():
    with pytest.raises(ConfigError, match="B x C x H x W"):
        cutout(torch.ones(1, 8, 8), torch.Generator(), 2)
    with pytest.raises(ConfigError, match="cutout must be a whole number"):
        TrainConfig(cutout=-3)


def test_training_batches_in_memory_are_cut_out_and_resume_the_same_draws():
    n = 32
    images = torch.rand(n, 3, 8, 8) + 0.5
    labels = torch.arange(n) % 4
    cfg = TrainConfig(epochs=1, batch_size=n, crop_padding=0, seed=1, cutout=3)

    def first_batch(config):
        torch.manual_seed(0)
        trainer = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(192, 4)), images, labels, config)
        ((x, target, y, _),) = trainer.data.epoch([torch.arange(n)], 0)
        return x, target, y

    x, target, y = first_batch(cfg)
    assert torch.equal(y, labels) and torch.equal(target, labels)
    for mask in _zeroed(images, x):
        r, c = _square(mask)
        assert r <= 3 and c <= 3
    assert torch.equal(x, first_batch(cfg)[0])
    plain, _, _ = first_batch(TrainConfig(epochs=1, batch_size=n, crop_padding=0, seed=1))
    assert torch.equal(plain, images)


def test_cutout_from_the_command_line(capsys, tmp_path):
    from ge2mst.cli import main

    main(["train", "--data", "digits", "--limit", "64", "--test-limit", "20", "--epochs", "1",
          "--batch-size", "32", "--model", "ge2mst_cnn_tiny", "--width", "8", "--cutout", "4",
          "--no-tensorboard", "--out", str(tmp_path / "r"), "--json"])
    capsys.readouterr()
    state = torch.load(tmp_path / "r" / "trainer.pt", weights_only=False)
    assert state["trainer"]["config"]["cutout"] == 4
    with pytest.raises(SystemExit):
        main(["train", "--data", "digits", "--cutout", "-1", "--out", str(tmp_path / "s")])
