"""Accuracy after the same training budget: Ge2mS-T (progressive ExpG, one forward pass per image)
against STBP Spikformer (backpropagation through T steps), both through `ge2mst train`.

    python benchmarks/budget.py --data ../shared/data/cifar10-jpg.tar.gz --epochs 10

A CPU-sized miniature of the comparison the paper makes on GPUs: ge2mst_cifar_tiny (0.29 M
parameters, T = 4, G = 2) and spikformer_tiny widened to D = 96 (0.36 M, T = 4), the same CIFAR-10
training images (``--train-limit``), epochs, batch, learning-rate schedule, augmentation and seed.
Reports the wall-clock of each run and its last-epoch test accuracy (Ge2mS-T: ANN and converted
SNN, which must be equal; Spikformer: the spiking network itself). Writes benchmarks/budget.json
and keeps the two run folders (weights, metrics.csv) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from ge2mst.checkpoint import portable_path

HERE = Path(__file__).resolve().parent
RUNS = {
    "Ge2mS-T tiny (progressive ExpG)": ["--model", "ge2mst_cifar_tiny", "--T", "4", "--groups", "2"],
    "Spikformer tiny D=96 (STBP)": ["--model", "spikformer_tiny", "--T", "4",
                                    "--model-arg", "embed_dim=96"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-limit", type=int, default=5000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/budget")
    args = parser.parse_args()
    results = {"device": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch "
                         f"{torch.__version__}", "epochs": args.epochs,
               "train_images": args.train_limit, "test_images": args.limit, "seed": args.seed,
               "runs": {}}
    for label, extra in RUNS.items():
        out = Path(args.out) / extra[1]
        cmd = [sys.executable, "-m", "ge2mst.cli", "train", "--data", args.data, "--epochs",
               str(args.epochs), "--train-limit", str(args.train_limit), "--limit", str(args.limit),
               "--seed", str(args.seed), "--hflip", "--crop-padding", "4", "--json",
               "--no-tensorboard", "--out", str(out), *extra]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode not in (0, 1):
            raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
        report = json.loads(done.stdout[done.stdout.index("{"):])
        shown = [portable_path(part) if part in (args.data, str(out)) else part for part in cmd[1:]]
        results["runs"][label] = {"command": " ".join(shown), "seconds": seconds,
                                  "ann_accuracy": report["ann_accuracy"],
                                  "snn_accuracy": report["snn_accuracy"], "exact": report["exact"],
                                  "last_epoch": report["last_epoch"]}
        print(f"{label}: {seconds:.0f} s, ANN {report['ann_accuracy']}, SNN {report['snn_accuracy']}",
              flush=True)
        (HERE / "budget.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
