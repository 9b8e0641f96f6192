"""Data-parallel training: two CPU processes with gloo train as one process on the whole batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ge2mst._files import LOCK_NAME
from ge2mst.core.quantizers import ExpGQuant
from ge2mst.training.trainer import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model() -> nn.Module:
    torch.manual_seed(0)  # no BatchNorm: per-process statistics would differ by design
    return nn.Sequential(nn.Flatten(1), nn.Linear(16, 24), ExpGQuant(T=4, G=2), nn.Linear(24, 3))


def _data():
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(40, 1, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (40,), generator=gen)
    return images, labels


CFG = dict(epochs=2, batch_size=8, lr=1e-2, crop_padding=1, hflip=True, seed=5, mixup_alpha=0.4,
           warmup_epochs=0.5)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _model()
        trainer = Trainer(DistributedDataParallel(model), *_data(), TrainConfig(**CFG))
        trainer.fit(progress=False)
        torch.save({"state": model.state_dict(), "history": trainer.history}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_train_like_one_on_the_whole_batch(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    model = _model()
    single = Trainer(model, *_data(), TrainConfig(**CFG))
    single.fit(progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key  # ranks in step
        # slices of the same augmented, mixed global batch; the averaged gradient is the mean's
        assert torch.allclose(ranks[0]["state"][key], value, rtol=1e-4, atol=1e-5), key
    for a, b in zip(ranks[0]["history"], single.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)  # summed over both ranks
        assert a["train_accuracy"] == pytest.approx(b["train_accuracy"])


def test_torchrun_two_processes_one_report_and_one_run_folder(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "ge2mst.cli", "train", "--data", "digits",
           "--train-limit", "200", "--limit", "60", "--epochs", "2", "--batch-size", "20", "--seed", "3",
           "--no-tensorboard", "--out", str(out), "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)  # exactly one JSON document: rank 1 prints nothing
    assert report["processes"] == 2 and report["exact"] is True
    assert report["ann_accuracy"] == report["snn_accuracy"]
    # the test accuracy of the last epoch was shared over the ranks with rank 0's BN statistics,
    # so it is the accuracy of the saved weights on the whole test split
    assert report["last_epoch"]["test_accuracy"] == report["ann_accuracy"]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + one row per epoch, written once
    kept = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    assert kept == ["last.json", "last.safetensors", "metrics.csv", "trainer.pt"]
