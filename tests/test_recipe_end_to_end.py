"""The ImageNet recipe run end to end at a small scale, as someone renting GPUs for it would first
run it: a generated folder of 224-px JPEGs in the ImageNet layout (train/ and val/, no test/),
every option of ``recipes/imagenet_ge2mst_small.toml`` on (streaming, RandAugment, random erasing,
mixup and cutmix, drop path, EMA, AMP, mid-epoch saves), then ``--resume`` training longer, then
``eval`` at 224 and 288 px and ``verify``, which read the data settings the run recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ge2mst.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "imagenet_ge2mst_small.toml"
#: what the test changes in the recipe: the size of the run, never an option's kind
SMALL = ["--epochs", "1", "--batch-size", "4", "--train-limit", "8", "--test-limit", "2",
         "--workers", "1", "--save-every", "1", "--warmup-epochs", "0.5", "--no-tensorboard",
         "--json"]


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory) -> Path:
    """train/ and val/ ImageFolders of 224 x 224 RGB JPEGs, two classes (no test/ split)."""
    root = tmp_path_factory.mktemp("imagenet_like")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 1)):
        for cls in ("n01440764", "n01443537"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{cls}_{i}.JPEG", quality=90)
    return root


def test_the_imagenet_recipe_runs_resumes_evaluates_and_verifies(imagenet_like, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    argv = ["train", "--config", str(RECIPE), "--data", str(imagenet_like), "--out", str(out),
            *SMALL]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["model"] == "ge2mst_small" and first["last_epoch"]["epoch"] == 1
    assert first["exact"] is True
    state_files = sorted(p.name for p in out.iterdir())
    assert "trainer.pt" in state_files and "last.safetensors" in state_files

    # train longer from the saved state: the schedule continues, the mix stays at p = 1
    assert main([*argv[:-len(SMALL)], *SMALL[2:], "--epochs", "2", "--resume"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["last_epoch"]["epoch"] == 2 and second["exact"] is True
    assert second["extensions"] == [{"at_epoch": 1, "at_step": 2, "from_epochs": 1,
                                     "to_epochs": 2}]

    checkpoint = str(out / "last.safetensors")
    for side in (224, 288):  # the split (val) and the crop come from the checkpoint
        extra = [] if side == 224 else ["--img-size", "288"]
        assert main(["eval", "--checkpoint", checkpoint, "--data", str(imagenet_like), "--json",
                     "--step-mode", "collapsed", "--no-energy", *extra]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["images"] == 2 and report["split"] == "val"
        assert report["agreement"] == 1.0 and report["max_abs_diff"] <= 1e-9
        recorded = report["data_settings_recorded"]  # what was not given came from the run
        assert recorded["split"] == "val" and recorded.get("img_size") == (224 if side == 224
                                                                           else None)
    assert main(["verify", "--checkpoint", checkpoint, "--data", str(imagenet_like), "--json",
                 "--strict", "--step-mode", "collapsed"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["exact"] is True and check["images"] == 2 and check["split"] == "val"
