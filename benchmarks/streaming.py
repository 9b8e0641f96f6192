"""Streaming image folders: decode + augment speed against workers, and the memory of an epoch.

    python benchmarks/streaming.py [--images 3000] [--json out.json]

Makes an ImageFolder of JPEGs the size of ImageNet's (sides 250-500 px, 10 classes, quality 90)
in a temporary folder, then

1. **decode + augment images/s** against ``--workers`` 0, 1, 2: one training epoch of keys through
   `StreamInput.batches` (Pillow decode, RandomResizedCrop to 224, flip, TrivialAugment, random
   erasing, normalisation), batches of 64, no model;
2. **peak memory of a training epoch**, streamed (2 workers) and in memory, each in a fresh
   process, with a model so small that the data dominate: the peak resident memory of the
   training process and of its largest worker (``getrusage``), beside the float32 size of the
   decoded images.

Every figure comes with the device (CPU model, cores) and torch version.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ge2mst.data import TrainTransform, decoded_bytes, open_stream
from ge2mst.training.sources import StreamInput


def make_folder(root: Path, images: int, classes: int = 10, seed: int = 0) -> Path:
    """``images`` JPEGs of ImageNet-like sizes: smooth colour fields with noise."""
    rng = np.random.default_rng(seed)
    for i in range(images):
        folder = root / "train" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in rng.integers(250, 501, size=2))
        base = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BICUBIC)
        noise = rng.integers(0, 24, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(np.asarray(img) // 2 + noise).save(folder / f"{i:06d}.jpg", quality=90)
    for c in range(classes):  # a small held-out split
        src = root / "train" / f"c{c}"
        dst = root / "test" / f"c{c}"
        dst.mkdir(parents=True, exist_ok=True)
        first = sorted(src.iterdir())[0]
        (dst / first.name).write_bytes(first.read_bytes())
    return root


def decode_speed(root: Path, workers: int, batch: int = 64) -> float:
    transform = TrainTransform(224, hflip=0.5, auto_augment="trivial", erase_prob=0.25)
    data = open_stream(root / "train", "bench", 224, None, 0, transform)
    stream = StreamInput(data, torch.zeros(3), torch.ones(3), workers)
    keys = [[(i, 0) for i in range(s, min(s + batch, len(data)))] for s in range(0, len(data), batch)]
    start = time.perf_counter()
    seen = sum(int(y.shape[0]) for _, y, _ in stream.batches(keys, torch.device("cpu")))
    return seen / (time.perf_counter() - start)


_EPOCH = """
import json, resource, sys, time
from pathlib import Path
import torch
from torch import nn
from ge2mst.core.quantizers import ExpGQuant
from ge2mst.data import TrainTransform, load_dataset, open_stream
from ge2mst.training.sources import StreamInput
from ge2mst.training.trainer import TrainConfig, Trainer

mode, folder = sys.argv[1], Path(sys.argv[2])
torch.manual_seed(0)
model = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(1), nn.Linear(3 * 28 * 28, 64),
                      ExpGQuant(T=4, G=2), nn.Linear(64, 10))
cfg = TrainConfig(epochs=1, batch_size=64, hflip=True)
start = time.perf_counter()
if mode == "stream":
    data = open_stream(folder, "bench", 224, None, 0, TrainTransform(224, hflip=0.5))
    trainer = Trainer(model, StreamInput(data, torch.zeros(3), torch.ones(3), workers=2), None, cfg)
else:
    data = load_dataset(folder, img_size=224)
    trainer = Trainer(model, data.images, data.labels, cfg)
trainer.fit(progress=False)
print(json.dumps({"seconds": time.perf_counter() - start,
                  "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "workers_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def epoch_memory(root: Path, mode: str) -> dict:
    """Peak resident memory of one training epoch over the folder at 224 px, in a fresh
    process: ``stream`` (2 workers) or ``memory`` (decoded first), with a model so small that
    the data dominate (average-pool to 28 x 28, two linear layers, one ExpG quantizer)."""
    done = subprocess.run([sys.executable, "-c", _EPOCH, mode, str(root / "train")],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    usage = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": usage["seconds"], "peak_rss_training_process_mib": usage["self_kib"] / 1024,
            "peak_rss_largest_worker_mib": usage["workers_kib"] / 1024}


def device() -> str:
    from ge2mst.training.provenance import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp) / "folder", args.images)
        on_disk = sum(f.stat().st_size for f in root.rglob("*.jpg"))
        speed = {w: decode_speed(root, w) for w in (0, 1, 2)}
        memory = {mode: epoch_memory(root, mode) for mode in ("stream", "memory")}
    result = {"device": device(), "images": args.images, "jpeg_mib": on_disk / 2**20,
              "decoded_float32_mib": decoded_bytes(args.images, 224) / 2**20,
              "decode_augment_img_per_s": speed, "epoch": memory,
              "max_rss_this_process_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"device: {result['device']}")
    print(f"{args.images} JPEGs, {result['jpeg_mib']:.0f} MiB on disk; decoded at 224 px as "
          f"float32: {result['decoded_float32_mib']:.0f} MiB")
    print("| workers | decode + augment, img/s |\n|---|---|")
    for w, v in speed.items():
        print(f"| {w} | {v:.0f} |")
    print("| one training epoch at 224 px | seconds | peak RSS, training process (MiB) | "
          "largest worker (MiB) |\n|---|---|---|---|")
    for mode, m in memory.items():
        print(f"| {mode} | {m['seconds']:.0f} | {m['peak_rss_training_process_mib']:.0f} | "
              f"{m['peak_rss_largest_worker_mib']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
