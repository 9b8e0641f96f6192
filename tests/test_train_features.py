"""Training options: moving average, mixed precision, TensorBoard, fine-tuning with a new head and
an input adapter, method checks; each observed in what the run produces."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.datasets import load_digits
from torch import nn

from ge2mst.cli import main
from ge2mst.core.quantizers import ExpGQuant
from ge2mst.models import create_model
from ge2mst.training.trainer import ModelEma, TrainConfig, Trainer

QUICK = ["--data", "digits", "--train-limit", "200", "--limit", "60", "--epochs", "2",
         "--batch-size", "25", "--seed", "2", "--json"]


def _run(capsys, *argv) -> dict:
    assert main(["train", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_ema_update_follows_its_warmed_up_decay():
    model = nn.Linear(2, 1)
    ema = ModelEma(model, decay=0.9)
    old = ema.module.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=0)  # decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.module.weight, 0.1 * old + 0.9 * model.weight)
    before = ema.module.weight.detach().clone()
    ema.update(model, step=1000)  # decay 0.9
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * model.weight)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_run_exports_the_average_and_stays_exact(capsys, tmp_path):
    report = _run(capsys, *QUICK, "--ema-decay", "0.9", "--out", str(tmp_path / "ema"))
    assert report["exact"] is True
    state = torch.load(tmp_path / "ema" / "trainer.pt", weights_only=True)["trainer"]
    saved = load_file(tmp_path / "ema" / "last.safetensors")
    assert all(torch.equal(saved[k], state["ema"][k]) for k in saved)  # the average is exported
    assert any(not torch.equal(saved[k], state["model"][k]) for k in saved)  # not the raw weights


def test_quantizer_levels_stay_float32_under_bfloat16_autocast():
    torch.manual_seed(0)
    layer, q = nn.Linear(8, 16), ExpGQuant(T=8, G=4, lam=2.0)
    x = torch.randn(64, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pre = layer(x)
        out = q(pre)
    assert pre.dtype == torch.bfloat16 and out.dtype == torch.float32
    assert torch.equal(out, q(pre.float()))  # the same levels as a float32 quantizer picks
    levels = out / q.delta
    assert torch.equal(levels, levels.round())


def test_mixed_precision_training_learns_and_resumes_its_settings(capsys, tmp_path):
    report = _run(capsys, *QUICK, "--epochs", "3", "--amp", "--out", str(tmp_path / "amp"))
    losses = [row.split(",")[1] for row in (tmp_path / "amp" / "metrics.csv").read_text().split()[1:]]
    assert float(losses[-1]) < float(losses[0])
    assert report["exact"] is True  # conversion is from the float32 weights, whatever trained them
    # resuming without --amp is a different run: refused, and the saved state is untouched
    good = (tmp_path / "amp" / "trainer.pt").read_bytes()
    assert main(["train", *QUICK, "--epochs", "4", "--out", str(tmp_path / "amp"), "--resume"]) == 2
    assert "differ" in capsys.readouterr().err
    assert (tmp_path / "amp" / "trainer.pt").read_bytes() == good


def test_tensorboard_scalars_match_metrics_csv(capsys, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(capsys, *QUICK, "--out", str(tmp_path / "tb"))
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    logged = [e.value for e in acc.Scalars("train/loss")]
    csv_rows = (tmp_path / "tb" / "metrics.csv").read_text().split()[1:]
    assert logged == pytest.approx([float(r.split(",")[1]) for r in csv_rows], rel=1e-6)
    assert [e.step for e in acc.Scalars("test/accuracy")] == [1, 2]
    _run(capsys, *QUICK, "--no-tensorboard", "--out", str(tmp_path / "none"))
    assert not (tmp_path / "none" / "tensorboard").exists()


def _digit_folder(root: Path, classes: range, rgb: bool) -> Path:
    """An ImageFolder (train/ and test/) of scikit-learn digits of ``classes``."""
    digits = load_digits()
    for split, part in (("train", slice(0, 1200)), ("test", slice(1200, None))):
        for i, (img, label) in enumerate(zip(digits.images[part], digits.target[part], strict=True)):
            if label not in classes:
                continue
            pixels = (img * 255 / 16).astype(np.uint8)
            if rgb:  # three different views of the digit
                pixels = np.stack([pixels, 255 - pixels, pixels // 2], axis=-1)
            folder = root / split / f"d{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    assert main(["train", *QUICK, "--epochs", "3", "--out", str(out)]) == 0
    return out / "last.safetensors"


def test_finetune_new_head_keeps_the_trained_body(capsys, tmp_path):
    ten = _digit_folder(tmp_path / "ten", range(10), rgb=True)
    five = _digit_folder(tmp_path / "five", range(5), rgb=True)
    assert main(["train", *QUICK, "--data", str(ten), "--out", str(tmp_path / "pre")]) == 0
    capsys.readouterr()
    pretrained = tmp_path / "pre" / "last.safetensors"
    report = _run(capsys, "--data", str(five), "--finetune", str(pretrained), "--epochs", "1",
                  "--batch-size", "25", "--lr", "1e-9", "--warmup-epochs", "0", "--json",
                  "--out", str(tmp_path / "ft"))
    assert report["exact"] is True and report["finetuned_from"] == str(pretrained)
    config = json.loads((tmp_path / "ft" / "last.json").read_text())
    assert config["model_kwargs"]["num_classes"] == 5 and "adapter_chans" not in config["model_kwargs"]
    before, after = load_file(pretrained), load_file(tmp_path / "ft" / "last.safetensors")
    assert after["10.weight"].shape == (5, before["10.weight"].shape[1])  # the new head
    # with a vanishing learning rate the body is the pretrained one (BN statistics move)
    for key in ("0.conv.weight", "2.conv.weight", "6.conv.weight", "1.lam", "7.lam"):
        assert torch.allclose(after[key], before[key], atol=1e-6), key


def test_finetune_on_other_channels_puts_an_input_adapter_in_front(capsys, tmp_path, pretrained):
    data = _digit_folder(tmp_path / "rgb", range(10), rgb=True)
    report = _run(capsys, "--data", str(data), "--finetune", str(pretrained), "--epochs", "1",
                  "--batch-size", "50", "--json", "--out", str(tmp_path / "ad"))
    assert report["exact"] is True  # the adapter converts with the rest
    config = json.loads((tmp_path / "ad" / "last.json").read_text())
    assert config["model_kwargs"]["adapter_chans"] == 3 and config["model_kwargs"]["in_chans"] == 1
    after = load_file(tmp_path / "ad" / "last.safetensors")
    assert after["adapter.weight"].shape == (1, 3, 1, 1) and "body.0.conv.weight" in after
    # ge2mst verify rebuilds the adapted network from the checkpoint alone
    assert main(["verify", "--checkpoint", str(tmp_path / "ad" / "last.safetensors"), "--data",
                 str(data), "--limit", "40", "--json", "--strict"]) == 0
    assert json.loads(capsys.readouterr().out)["code_mismatches"] == 0


def test_input_adapter_starts_as_the_channel_mean():
    model = create_model("ge2mst_cnn_tiny", adapter_chans=4, in_chans=2)
    x = torch.rand(3, 4, 8, 8)
    mean = x.mean(1, keepdim=True).expand(3, 2, 8, 8)
    assert torch.allclose(model.adapter(x), mean, atol=1e-6)
    wrapped = create_model("ge2mst_cifar_tiny", adapter_chans=4, T=8, G=4)
    assert (wrapped.T, wrapped.G, wrapped.img_size) == (8, 4, 32)  # the network's attributes show


@pytest.mark.parametrize("argv,message", [
    (["--ema-decay", "1"], "expected a number in [0, 1)"),
    (["--mixup", "-0.5"], "expected a number >= 0"),
    (["--crop-padding", "-1"], "expected a whole number >= 0"),
    (["--method", "stbp"], "trains with --method progressive"),
    (["--finetune", "missing.safetensors"], "does not exist"),
])
def test_bad_training_options_are_one_line_errors(capsys, tmp_path, argv, message):
    try:
        code = main(["train", *QUICK, "--out", str(tmp_path / "x"), *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "trainer.pt").exists()


def test_trainer_rejects_more_processes_than_batch_items():
    cfg = TrainConfig(epochs=1, batch_size=4)
    trainer = Trainer(nn.Linear(2, 2), torch.zeros(8, 2), torch.zeros(8, dtype=torch.long), cfg)
    assert trainer.world == 1 and trainer.ema is None and not trainer.quantized


def test_linear_and_cosine_schedules_warm_up_then_reach_zero():
    from ge2mst.training.trainer import learning_rate

    total, warm = 100, 10
    for schedule in ("linear", "cosine"):
        lrs = [learning_rate(s, total, warm, 2e-3, schedule) for s in range(total + 1)]
        assert lrs[warm - 1] == pytest.approx(2e-3) and lrs[0] == pytest.approx(2e-4)
        assert lrs[warm] == pytest.approx(2e-3) and lrs[total] == 0.0
        assert all(a >= b for a, b in zip(lrs[warm:-1], lrs[warm + 1:], strict=True))  # never rises
    mid = warm + (total - warm) // 2
    assert learning_rate(mid, total, warm, 1.0, "linear") == pytest.approx(0.5)
    assert learning_rate(mid, total, warm, 1.0, "cosine") == pytest.approx(0.5)
    quarter = warm + (total - warm) // 4  # cosine stays higher early, linear drops evenly
    assert learning_rate(quarter, total, warm, 1.0, "cosine") > learning_rate(quarter, total, warm, 1.0,
                                                                              "linear")
    with pytest.raises(Exception, match="schedule must be one of"):
        TrainConfig(schedule="step")


def test_alternating_flips_show_every_image_both_ways_every_two_epochs():
    """An image is flipped in exactly one of any two consecutive epochs; about half the images
    are flipped in each epoch; the choice depends on the seed only (resumable)."""
    n = 64
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1) * torch.linspace(0, 1, 8).view(1, 1, 1, 8)
    images = images.expand(n, 1, 8, 8).contiguous()
    labels = torch.zeros(n, dtype=torch.long)
    cfg = TrainConfig(epochs=2, batch_size=n, hflip=True, alternate_flip=True, crop_padding=0, seed=3)
    trainer = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), images, labels, cfg)

    def flipped_in_epoch(epoch: int) -> torch.Tensor:
        ((x, _, _, _),) = trainer.data.epoch([torch.arange(n)], epoch)
        return x[:, 0, 0, 0] > x[:, 0, 0, -1]  # each row rises left to right unless flipped

    e0, e1, e2 = flipped_in_epoch(0), flipped_in_epoch(1), flipped_in_epoch(2)
    real = images[:, 0, 0, -1] > 0  # image 0 is all zeros: flipping it changes nothing
    assert torch.equal((e0 ^ e1)[real], torch.ones(int(real.sum()), dtype=torch.bool))
    assert torch.equal(e0, e2) and 16 < int(e0.sum()) < 48
    again = Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), images, labels, cfg)
    assert torch.equal(again.data.flip_base, trainer.data.flip_base)
    with pytest.raises(Exception, match="alternate_flip needs hflip"):
        TrainConfig(alternate_flip=True)


def test_hflip_alternate_and_linear_schedule_from_the_command_line(capsys, tmp_path):
    report = _run(capsys, *QUICK, "--out", str(tmp_path / "r"), "--hflip", "alternate",
                  "--schedule", "linear", "--model", "ge2mst_cnn_tiny", "--width", "8")
    state = torch.load(tmp_path / "r" / "trainer.pt", weights_only=False)
    cfg = state["trainer"]["config"]
    assert cfg["hflip"] and cfg["alternate_flip"] and cfg["schedule"] == "linear"
    # 8 steps an epoch, 8 of warm-up: the last step is 7/8 of the way down the linear decay
    assert report["last_epoch"]["lr"] == pytest.approx(3e-3 / 8)


def test_checkpoint_records_provenance_and_recipe(capsys, tmp_path):
    """The run's checkpoint says what a figure needs beside it: commit, versions, device, start
    time, wall seconds and the training settings."""
    _run(capsys, *QUICK, "--out", str(tmp_path / "p"), "--model", "ge2mst_cnn_tiny", "--width", "8",
         "--schedule", "linear")
    config = json.loads((tmp_path / "p" / "last.json").read_text())
    assert config["commit"] is None or len(config["commit"]) == 40
    assert config["torch"] == torch.__version__ and "CPU" in config["device_name"]
    assert config["training"]["schedule"] == "linear" and config["training"]["epochs"] == 2
    assert config["seconds"] > 0 and config["started"].endswith("+00:00") and config["epoch"] == 2
