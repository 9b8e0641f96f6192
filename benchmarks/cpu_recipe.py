"""Pilot runs that choose the CPU training recipe: one ``ge2mst train`` per setting, one table.

    python benchmarks/cpu_recipe.py --data ../shared/data/cifar10-jpg.tar.gz --out runs/pilots

Each pilot trains the same model on the same ``--train-limit`` training images for ``--epochs``
epochs (a fresh process, seed 0) and is scored on ``--limit`` test images (the ANN at p = 1, equal
to its spiking network by construction; the full run is verified). A setting is the base recipe
with one change. Results go to ``OUT/pilots.jsonl`` (one line per pilot, kept across calls: a
pilot already there is not run again) and a markdown table on stdout, with the images/s of the
training loop (epoch seconds include the per-epoch evaluation).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

BASE = {"--lr": "2e-3", "--weight-decay": "0.05", "--warmup-epochs": "1", "--schedule": "cosine",
        "--ramp-end": "0.5", "--label-smoothing": "0.1", "--crop-padding": "4", "--hflip": "random",
        "--batch-size": "128"}
#: name -> the changes to BASE
PILOTS = {
    "base": {},
    "lr 3e-3": {"--lr": "3e-3"},
    "linear decay": {"--schedule": "linear"},
    "alternating flips": {"--hflip": "alternate"},
    "EMA 0.99": {"--ema-decay": "0.99"},
    "batch 64": {"--batch-size": "64"},
    "batch 256": {"--batch-size": "256"},
    "ramp end 0.7": {"--ramp-end": "0.7"},
    "width 24": {"--width": "24"},
}


def pilot(args, name: str, changes: dict) -> dict:
    settings = {**BASE, **changes}
    out = Path(args.out) / name.replace(" ", "_")
    cmd = [sys.executable, "-m", "ge2mst.cli", "train", "--model", args.model, "--data", args.data,
           "--train-limit", str(args.train_limit), "--limit", str(args.limit), "--epochs",
           str(args.epochs), "--seed", "0", "--out", str(out), "--json", "--no-tensorboard",
           *[a for kv in settings.items() for a in kv], *args.extra]
    if args.width:
        cmd += ["--width", str(args.width)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pilot {name!r} failed:\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    seconds = float(rows[-1]["seconds"])
    return {"pilot": name, "settings": settings, "model": args.model, "width": args.width,
            "train_images": args.train_limit, "epochs": args.epochs, "test_images": args.limit,
            "test_accuracy": float(rows[-1]["test_accuracy"]),
            "train_accuracy": float(rows[-1]["train_accuracy"]),
            "exact": report.get("exact"), "seconds": seconds,
            "images_per_s": args.train_limit * args.epochs / seconds,
            "wall_s": time.perf_counter() - start, "command": " ".join(cmd[1:])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--model", default="ge2mst_cifar_tiny")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--train-limit", type=int, default=10000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="runs/pilots")
    parser.add_argument("--only", nargs="*", default=None, help="pilot names to run")
    parser.add_argument("extra", nargs="*", help="more ge2mst train arguments (after --)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "pilots.jsonl"
    done = {}
    if log.is_file():
        done = {r["pilot"]: r for r in map(json.loads, log.read_text().splitlines()) if r}
    for name, changes in PILOTS.items():
        if (args.only and name not in args.only) or name in done:
            continue
        row = pilot(args, name, changes)
        done[name] = row
        with open(log, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{name}: {row['test_accuracy']:.4f} test, {row['images_per_s']:.1f} img/s",
              file=sys.stderr, flush=True)
    print(f"device: {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| pilot | change from the base recipe | test top-1 (ANN = SNN) | train top-1 | images/s |")
    print("|---|---|---|---|---|")
    for name in PILOTS:
        if name in done:
            r = done[name]
            change = ", ".join(f"{k} {v}" for k, v in PILOTS[name].items()) or "-"
            print(f"| {name} | {change} | {r['test_accuracy']:.2%} | {r['train_accuracy']:.2%} | "
                  f"{r['images_per_s']:.1f} |")


if __name__ == "__main__":
    main()
