"""Checkpoints: round trip, atomic writes, and clear errors for damaged or foreign files."""

import json

import pytest
import torch

from ge2mst import CheckpointError, create_model
from ge2mst.io.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint


def test_round_trip_keeps_weights_lambda_and_config(tmp_path):
    torch.manual_seed(0)
    model = create_model("ge2mst_cnn_tiny", in_chans=1, T=8, G=2, width=4)
    with torch.no_grad():
        model[1].lam.fill_(2.5)
    path = save_checkpoint(tmp_path / "m.safetensors", model, mean=[0.1], std=[0.3])
    loaded, config = load_checkpoint(path, model_name="ge2mst_cnn_tiny")
    assert config["mean"] == [0.1] and config["model_kwargs"]["T"] == 8
    assert json.loads((tmp_path / "m.json").read_text())["model"] == "ge2mst_cnn_tiny"
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert loaded[1].T == 8 and loaded[1].G == 2
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model.eval()(x), loaded.eval()(x))
    assert not list(tmp_path.glob("*.tmp"))  # no temporary file left behind


def test_truncated_and_garbage_files(tmp_path):
    model = create_model("ge2mst_cnn_tiny", in_chans=1, width=4)
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_safetensors_of_another_tool_or_a_converted_network(tmp_path):
    from safetensors.torch import save_file

    from ge2mst.conversion.converter import convert
    from ge2mst.io.spiking import save_spiking

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a ge2mst training checkpoint.*another tool"):
        read_checkpoint(foreign)
    model = create_model("ge2mst_cnn_tiny", in_chans=1, width=4).eval()
    snn_path = tmp_path / "snn.safetensors"
    save_spiking(snn_path, convert(model), {"model": "ge2mst_cnn_tiny"})
    with pytest.raises(CheckpointError, match="converted spiking network"):
        read_checkpoint(snn_path)
    bad_config = tmp_path / "bad_config.safetensors"
    save_file({"weight": torch.zeros(2)}, str(bad_config), metadata={"ge2mst": "{not json"})
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(bad_config)


def test_checkpoint_of_another_model_or_shape(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors",
                           create_model("ge2mst_cnn_tiny", in_chans=1, width=4))
    with pytest.raises(CheckpointError, match="holds model"):
        load_checkpoint(path, model_name="ge2mst_other")
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path, width=8)


def test_failed_save_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    model = create_model("ge2mst_cnn_tiny", in_chans=1, width=4)
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    good = path.read_bytes()
    import ge2mst.io.checkpoint as ck

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "fsync", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, create_model("ge2mst_cnn_tiny", in_chans=1, width=4))
    assert path.read_bytes() == good
    assert not list(tmp_path.glob("*.tmp"))


def test_no_absolute_machine_path_is_recorded(tmp_path, monkeypatch):
    """An absolute --data path is written relative to the working directory; names stay."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "shared" / "cifar10-jpg.tar.gz"
    save_checkpoint(tmp_path / "a.safetensors", create_model("ge2mst_cnn_tiny"), data=str(data))
    recorded = json.loads((tmp_path / "a.json").read_text())["data"]
    assert recorded == "shared/cifar10-jpg.tar.gz" and str(tmp_path) not in (tmp_path / "a.json").read_text()
    _, config = load_checkpoint(tmp_path / "a.safetensors")
    assert config["data"] == recorded
    save_checkpoint(tmp_path / "b.safetensors", create_model("ge2mst_cnn_tiny"), data="digits")
    assert json.loads((tmp_path / "b.json").read_text())["data"] == "digits"
