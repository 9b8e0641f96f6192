"""``create_model(name, pretrained=...)``: shipped weights (package data, sha256-checked, strict),
a checkpoint file or a run folder, torch.hub from a checkout, and the wheel's package data."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import CIFAR, CIFAR_MISSING

import ge2mst.models.pretrained as pretrained_module
from ge2mst import create_model
from ge2mst.errors import CheckpointError, ConfigError
from ge2mst.io.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = pretrained_module.shipped_weights()
needs_cifar = pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)


def _saved(tmp_path, name="ge2mst_cifar_tiny", **kwargs):
    torch.manual_seed(7)
    model = create_model(name, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # not the initialisation
    path = save_checkpoint(tmp_path / f"{name}.safetensors", model, mean=[0.5, 0.4, 0.3],
                           std=[0.2, 0.2, 0.2], seed=7, epoch=3)
    return model, path


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_pretrained_from_a_file_and_from_a_run_folder(tmp_path):
    model, path = _saved(tmp_path, width=8)
    loaded = create_model("ge2mst_cifar_tiny", pretrained=str(path))
    assert _same_weights(model, loaded)
    assert loaded.model_kwargs == {"width": 8}  # the recorded builder arguments
    cfg = loaded.pretrained_cfg
    assert cfg["mean"] == [0.5, 0.4, 0.3] and cfg["seed"] == 7 and cfg["source"] == str(path)
    assert cfg["sha256"] == pretrained_module.sha256_of(path)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(path, run / "last.safetensors")
    assert _same_weights(model, create_model("ge2mst_cifar_tiny", pretrained=run))


def test_pretrained_errors(tmp_path):
    _, path = _saved(tmp_path, width=8)
    with pytest.raises(CheckpointError, match="do not exist"):
        create_model("ge2mst_cifar_tiny", pretrained=tmp_path / "nope.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="without last.safetensors"):
        create_model("ge2mst_cifar_tiny", pretrained=tmp_path / "empty")
    with pytest.raises(ConfigError, match="of model 'ge2mst_cifar_tiny', not 'ge2mst_cifar_small'"):
        create_model("ge2mst_cifar_small", pretrained=path)
    with pytest.raises(CheckpointError, match="shape"):  # kwargs that change a tensor's shape
        create_model("ge2mst_cifar_tiny", pretrained=path, num_classes=100)
    with pytest.raises(CheckpointError, match="True, False or a path"):
        create_model("ge2mst_cifar_tiny", pretrained=3)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        create_model("ge2mst_cifar_tiny", pretrained=broken)


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(pretrained_module, "_weights_dir", lambda: folder)
    return folder


def test_shipped_weights_are_checked_by_sha256(tmp_path, weights_dir):
    model, path = _saved(tmp_path, width=8)
    shutil.copy(path, weights_dir / "tiny.safetensors")
    index = {"ge2mst_cifar_tiny": {"file": "tiny.safetensors",
                                   "sha256": pretrained_module.sha256_of(path)}}
    (weights_dir / "index.json").write_text(json.dumps(index))
    loaded = create_model("ge2mst_cifar_tiny", pretrained=True)
    assert _same_weights(model, loaded) and loaded.pretrained_cfg["source"] == "shipped"
    with pytest.raises(CheckpointError, match="no shipped weights for model 'ge2mst_cifar_small'"):
        create_model("ge2mst_cifar_small", pretrained=True)
    data = bytearray((weights_dir / "tiny.safetensors").read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside a weight
    (weights_dir / "tiny.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged: sha256"):
        create_model("ge2mst_cifar_tiny", pretrained=True)
    (weights_dir / "tiny.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing from the installed package"):
        create_model("ge2mst_cifar_tiny", pretrained=True)
    (weights_dir / "index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="index of ge2mst's shipped weights is corrupt"):
        create_model("ge2mst_cifar_tiny", pretrained=True)


def test_torch_hub_loads_from_a_local_checkout(tmp_path):
    model, path = _saved(tmp_path, width=8)
    loaded = torch.hub.load(str(ROOT), "ge2mst_cifar_tiny", source="local", pretrained=str(path))
    assert _same_weights(model, loaded)
    fresh = torch.hub.load(str(ROOT), "ge2mst_cnn_tiny", source="local", width=8)
    assert fresh.model_name == "ge2mst_cnn_tiny" and not hasattr(fresh, "pretrained_cfg")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_model_loads_with_its_card(name):
    """The real package data: the file of each index entry has its sha256, loads strictly,
    rebuilds from torch.hub alike, and has a model card that names its command and accuracy."""
    entry = SHIPPED[name]
    model = create_model(name, pretrained=True)
    assert model.pretrained_cfg["sha256"] == entry["sha256"]
    hub = torch.hub.load(str(ROOT), name, source="local", pretrained=True)
    assert _same_weights(model, hub)
    card = (ROOT / "src" / "ge2mst" / "weights" / entry["card"]).read_text()
    assert "ge2mst train" in card and "ge2mst eval" in card and "%" in card
    assert "/work/" not in card and "/root/" not in card and "/home/" not in card


@pytest.mark.parametrize("card", sorted((ROOT / "benchmarks" / "weights").glob("*.md")))
def test_superseded_weights_kept_in_the_repository_load_as_their_card_says(card):
    """Weights a shipped model once had, kept beside the RESULTS figures they stand behind: the
    file the card names loads strictly into the model it names, with the sha256 the card records."""
    import re

    text = card.read_text()
    name = re.search(r'create_model\("([a-z0-9_]+)"', text).group(1)
    path = re.search(r'pretrained="(benchmarks/weights/[^"]+)"', text).group(1)
    model = create_model(name, pretrained=str(ROOT / path))
    assert f"weights sha256 {model.pretrained_cfg['sha256']}" in text
    assert model.pretrained_cfg["sha256"] not in {e["sha256"] for e in SHIPPED.values()}


@needs_cifar
@pytest.mark.cifar
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_model_is_exact_and_accurate_on_real_images(name, capsys, cache_dir):
    """The shipped weights as a user meets them: ``verify --pretrained --strict`` on 200 real
    CIFAR-10 test images finds every neuron code equal to the oracle's, and the spiking network
    scores what the index claims (within the noise of 200 images; weights loaded wrongly, or the
    wrong normalisation, fall to about chance)."""
    from ge2mst.cli import main

    code = main(["verify", "--model", name, "--pretrained", "--data", str(CIFAR), "--data-dir",
                 cache_dir, "--limit", "200", "--strict", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["exact"] is True
    assert report["oracle_mismatches"] == 0 and report["oracle_checked"] == report["codes_compared"]
    assert report["snn_accuracy"] == report["ann_accuracy"]
    assert report["snn_accuracy"] >= SHIPPED[name]["snn_top1"] - 0.1


def test_the_wheel_carries_the_weights_and_their_index(tmp_path):
    """A wheel built from the checkout holds ge2mst/weights/index.json and every file and card
    it lists (the weights are package data)."""
    def build(*isolation):
        return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                               "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)

    done = build("--no-build-isolation")  # offline, with this environment's setuptools
    if done.returncode != 0:  # too old a setuptools here: pip fetches the declared build backend
        done = build()
    if done.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {done.stderr.strip().splitlines()[-1]}")
    (wheel,) = tmp_path.glob("ge2mst-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "ge2mst/weights/index.json" in names and "ge2mst/models/pretrained.py" in names
    index = json.loads(zipfile.ZipFile(wheel).read("ge2mst/weights/index.json"))
    assert index == SHIPPED
    for entry in index.values():
        assert f"ge2mst/weights/{entry['file']}" in names
        assert f"ge2mst/weights/{entry['card']}" in names


def test_eval_with_pretrained_equals_eval_with_the_checkpoint(tmp_path, capsys):
    """``ge2mst eval --model NAME --pretrained PATH`` runs the very network that
    ``--checkpoint PATH`` runs (no calibration over it), and says where its weights came from."""
    from ge2mst.cli import main
    from ge2mst.conversion.calibration import calibrate

    torch.manual_seed(0)
    model = create_model("ge2mst_cnn_tiny", in_chans=1, width=8)
    calibrate(model, [torch.randn(64, 1, 8, 8)])
    path = save_checkpoint(tmp_path / "digits.safetensors", model, mean=[0.3], std=[0.4])
    common = ["eval", "--data", "digits", "--limit", "60", "--json", "--no-energy"]
    assert main([*common, "--checkpoint", str(path)]) == 0
    by_checkpoint = json.loads(capsys.readouterr().out)
    assert main([*common, "--model", "ge2mst_cnn_tiny", "--pretrained", str(path)]) == 0
    by_pretrained = json.loads(capsys.readouterr().out)
    assert by_pretrained["pretrained"] == str(path) and by_pretrained["calibrated"] is False
    for mode in ("ann", "snn"):
        assert by_pretrained[mode]["top1"] == by_checkpoint[mode]["top1"]
    assert by_pretrained["max_abs_diff"] == by_checkpoint["max_abs_diff"]
    assert main([*common, "--checkpoint", str(path), "--pretrained", str(path)]) == 2
    assert "not both" in capsys.readouterr().err
