"""Training on streamed image folders: every image once per epoch, in worker processes and across
ranks; a kill mid-epoch resumes to the weights of an uninterrupted run; bad files are named."""

import csv
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ge2mst.cli import main
from ge2mst.core.quantizers import ExpGQuant
from ge2mst.data import StreamingImageFolder, TrainTransform, open_stream
from ge2mst.training.sources import StreamInput
from ge2mst.training.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
SIDE = 16  # the model's input side: every image is cropped or resized to it


def _folder(root: Path, per_class: int, classes: int = 4, seed: int = 0) -> Path:
    """An ImageFolder of JPEGs of mixed sizes (64-256 px per side), each class a colour."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(64, 257, size=2)
            base = np.zeros((h, w, 3), np.uint8)
            base[..., c % 3] = 60 + 60 * (c // 3)
            noise = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(base + noise).save(root / f"class{c}" / f"{i:04d}.jpg", quality=80)
    return root


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("stream") / "images", per_class=500)  # 2,000 files


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    _folder(root / "train", per_class=24, seed=1)
    _folder(root / "test", per_class=6, seed=2)
    return root


class _Witness(StreamingImageFolder):
    """Leaves one file per decoded (image, epoch) in ``seen``; a second decode of the same
    pair fails (the file exists), in whatever process it happens."""

    seen: str = ""

    def __getitem__(self, key):
        index, epoch = key
        with open(os.path.join(self.seen, f"{index}-{epoch}"), "x"):
            pass
        return super().__getitem__(key)


def _witness(folder: Path, seen: Path) -> _Witness:
    data = open_stream(folder, "images", SIDE, None, seed=3, train=TrainTransform(SIDE, hflip=0.5))
    data.__class__ = _Witness
    data.seen = str(seen)
    return data


def _model() -> nn.Module:
    torch.manual_seed(0)  # no BatchNorm: per-process statistics would differ by design
    return nn.Sequential(nn.AvgPool2d(4), nn.Flatten(1), nn.Linear(3 * 16, 24),
                         ExpGQuant(T=4, G=2), nn.Linear(24, 4))


STATS = (torch.tensor([0.3, 0.3, 0.25]), torch.tensor([0.2, 0.2, 0.2]))


def test_an_epoch_with_two_workers_decodes_every_image_once(big_folder, tmp_path):
    data = _witness(big_folder, tmp_path)
    cfg = TrainConfig(epochs=1, batch_size=100, seed=1, hflip=True)
    trainer = Trainer(_model(), StreamInput(data, *STATS, workers=2), None, cfg)
    trainer.fit(progress=False)
    seen = sorted(int(name.split("-")[0]) for name in os.listdir(tmp_path))
    assert seen == list(range(2000))  # each of the 2,000 files exactly once
    assert all(name.endswith("-0") for name in os.listdir(tmp_path))  # all in epoch 0
    assert trainer.history[0]["skipped_images"] == 0
    assert trainer.step == 20


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CFG = dict(epochs=2, batch_size=16, lr=1e-2, seed=5, warmup_epochs=0.5, hflip=True)


def _rank(rank: int, world: int, port: int, folder: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        seen = Path(out) / "seen"
        seen.mkdir(exist_ok=True)
        model = _model()
        data = StreamInput(_witness(Path(folder) / "train", seen), *STATS, workers=1)
        trainer = Trainer(DistributedDataParallel(model), data, None, TrainConfig(**CFG))
        trainer.fit(progress=False)
        torch.save({"state": model.state_dict(), "history": trainer.history}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_ranks_share_each_batch_and_train_like_one_process(small_folder, tmp_path):
    mp.spawn(_rank, args=(2, _port(), str(small_folder), str(tmp_path)), nprocs=2, join=True)
    seen = sorted(os.listdir(tmp_path / "seen"))
    assert seen == sorted(f"{i}-{e}" for i in range(96) for e in (0, 1))  # once across the ranks
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    model = _model()
    single_seen = tmp_path / "single"
    single_seen.mkdir()
    single = Trainer(model, StreamInput(_witness(small_folder / "train", single_seen), *STATS),
                     None, TrainConfig(**CFG))
    single.fit(progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
        assert torch.allclose(ranks[0]["state"][key], value, rtol=1e-4, atol=1e-5), key
    for a, b in zip(ranks[0]["history"], single.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def _train(folder: Path, out: Path, *extra: str, fault: str | None = None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("GE2MST_FAULT", None)
    if fault:
        env["GE2MST_FAULT"] = fault
    cmd = [sys.executable, "-m", "ge2mst.cli", "train", "--data", str(folder), "--data-mode",
           "stream", "--img-size", str(SIDE), "--workers", "1", "--epochs", "2", "--batch-size",
           "16", "--seed", "2", "--hflip", "--auto-augment", "trivial", "--random-erase", "0.5",
           "--drop-path", "0.1", "--model", "ge2mst_cifar_tiny", "--save-every", "2", "--json",
           "--no-tensorboard", "--out", str(out), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_a_kill_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(small_folder, tmp_path):
    whole = _train(small_folder, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    report = json.loads(whole.stdout)
    assert report["exact"] is True and report["last_epoch"]["skipped_images"] == 0
    # 96 images in batches of 16: 6 steps an epoch; saved after steps 2, 4, (6: epoch end), 8
    killed = _train(small_folder, tmp_path / "cut", fault="step:9")
    assert killed.returncode == -9
    state = torch.load(tmp_path / "cut" / "trainer.pt", weights_only=False)
    saved = state["trainer"]
    assert saved["step"] == 8 and saved["epoch"] == 1 and "epoch_order" in saved
    # the wall-clock up to the mid-epoch save is kept: the resumed run counts on from it
    assert state["run"]["seconds_saved"] > saved["history"][0]["seconds"]
    resumed = _train(small_folder, tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(tmp_path / "whole" / "last.safetensors")
    b = load_file(tmp_path / "cut" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last = json.loads(resumed.stdout)["last_epoch"]
    assert last["loss"] == report["last_epoch"]["loss"]
    assert last["seconds"] > state["run"]["seconds_saved"]


def test_a_corrupt_image_is_named_or_skipped_and_counted(small_folder, tmp_path, capsys):
    folder = tmp_path / "data"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        for cls in (small_folder / split).iterdir():
            (folder / split / cls.name).symlink_to(cls)
    bad = folder / "train" / "zzz_bad"
    bad.mkdir()
    good = (small_folder / "train" / "class0" / "0000.jpg").read_bytes()
    (bad / "cut.jpg").write_bytes(good[: len(good) // 3])  # truncated
    (bad / "junk.jpg").write_bytes(b"not an image at all")
    held_out_bad = folder / "test" / "zzz_bad"  # the held-out split has one as well
    held_out_bad.mkdir()
    (held_out_bad / "junk.jpg").write_bytes(b"\xff\xd8 not a JPEG either")
    args = ["train", "--data", str(folder), "--data-mode", "stream", "--img-size", str(SIDE),
            "--epochs", "1", "--batch-size", "32", "--model", "ge2mst_cnn_tiny", "--workers", "1",
            "--no-tensorboard"]
    assert main([*args, "--json", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "zzz_bad" in err and ".jpg" in err
    assert main([*args, "--json", "--skip-bad-images", "--out", str(tmp_path / "b")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["last_epoch"]["skipped_images"] == 2
    assert report["last_epoch"]["skipped_test_images"] == 1
    with open(tmp_path / "b" / "metrics.csv") as fh:  # counted in the metrics, as --help says
        (row,) = list(csv.DictReader(fh))
    assert row["skipped_images"] == "2" and row["skipped_test_images"] == "1"
    assert main([*args, "--skip-bad-images", "--out", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out  # and in the summary a person reads
    assert re.search(r"images skipped\s+2 of the train split, 1 held out", text)


def test_the_imagenet_recipe_reads_as_options_the_command_line_overrides():
    from ge2mst.cli import build_parser
    from ge2mst.cli._config import expand_config

    parser = build_parser()
    argv = ["train", "--config", str(ROOT / "recipes" / "imagenet_ge2mst_small.toml"),
            "--epochs", "3", "--data", "somewhere"]
    args = parser.parse_args(expand_config(argv, parser))
    assert (args.model, args.data_mode, args.img_size, args.split) == ("ge2mst_small", "stream",
                                                                       224, "val")
    assert args.epochs == 3 and args.amp is True and args.drop_path == pytest.approx(0.1)
    assert args.auto_augment == "rand" and args.hflip == "random"


@pytest.mark.parametrize("text,match", [("epoch = 3\n", "'epoch' is not an option"),
                                        ("epochs = [\n", "not valid TOML"),
                                        ("amp = 3\n", "true or false"),
                                        ("epochs = true\n", "takes a value")])
def test_a_bad_config_file_is_one_line(tmp_path, capsys, text, match):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    code = main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert match in err


def test_eval_and_verify_take_images_of_any_size_with_img_size(small_folder, capsys):
    common = ["--data", str(small_folder), "--model", "ge2mst_cnn_tiny", "--limit", "12",
              "--img-size", str(SIDE), "--json"]
    assert main(["verify", *common]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["images"] == 12 and check["exact"] is True
    assert main(["verify", *common[:-3], "--json"]) == 2  # mixed sizes without --img-size
    assert "--img-size" in capsys.readouterr().err


@pytest.mark.parametrize("setting", [{"auto_augment": "rand"}, {"random_erase": 0.25},
                                     {"min_crop_scale": 0.3}])
def test_streamed_only_augmentation_is_refused_for_images_in_memory(setting):
    from ge2mst.errors import ConfigError

    images, labels = torch.rand(8, 3, SIDE, SIDE), torch.arange(8) % 4
    with pytest.raises(ConfigError, match="streamed images only"):
        Trainer(_model(), images, labels, TrainConfig(epochs=1, batch_size=4, **setting))


def test_eval_and_verify_stream_a_folder_with_the_results_of_memory(small_folder, tmp_path, capsys):
    from ge2mst import calibrate, create_model
    from ge2mst.io.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("ge2mst_cnn_tiny", num_classes=4)
    calibrate(model, [torch.randn(32, 3, SIDE, SIDE)])
    checkpoint = tmp_path / "m.safetensors"
    save_checkpoint(checkpoint, model.eval(), mean=[0.4, 0.3, 0.3], std=[0.25, 0.25, 0.25])
    common = ["--checkpoint", str(checkpoint), "--data", str(small_folder), "--limit", "20",
              "--img-size", str(SIDE), "--batch-size", "8", "--json"]
    reports = {}
    for mode in ("memory", "stream"):
        assert main(["eval", *common, "--data-mode", mode, "--workers", "1"]) == 0
        reports[mode] = json.loads(capsys.readouterr().out)
    memory, stream = reports["memory"], reports["stream"]
    assert stream["images"] == memory["images"] == 20
    for key in ("ann", "snn"):  # the same pixels, the same network: the same scores
        assert stream[key]["top1"] == memory[key]["top1"]
    assert stream["snn"]["energy"]["sops"] == memory["snn"]["energy"]["sops"]
    assert stream["agreement"] == 1.0 and stream["max_abs_diff"] == memory["max_abs_diff"]
    assert main(["verify", *common, "--data-mode", "stream", "--strict"]) == 0
    assert json.loads(capsys.readouterr().out)["exact"] is True
    assert main(["verify", *common[:-5], "--json", "--data-mode", "stream"]) == 2  # no --img-size
    assert "--img-size" in capsys.readouterr().err


def test_streamed_batches_are_cut_out_like_images_in_memory(small_folder):
    """The same streamed batch with and without cutout differs in one square of side <= 5 of
    every image, in all channels, and nowhere else."""
    def first_batch(cut: int) -> torch.Tensor:
        data = open_stream(small_folder / "train", "images", SIDE, None, seed=3,
                           train=TrainTransform(SIDE, hflip=0.5))
        cfg = TrainConfig(epochs=1, batch_size=16, seed=1, cutout=cut)
        trainer = Trainer(_model(), StreamInput(data, *STATS, workers=0), None, cfg)
        x, _, _, _ = next(trainer.data.epoch([torch.arange(16)], 0))
        return x

    plain, cut = first_batch(0), first_batch(5)
    changed = (plain != cut).any(1)
    assert ((cut == 0) | ~changed.unsqueeze(1)).all()  # what changed became 0
    for mask in changed:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 5 and 1 <= len(cols) <= 5
        assert int(mask.sum()) == len(rows) * len(cols)  # one rectangle
