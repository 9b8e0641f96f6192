"""Vanilla IF (QCFS) conversion against T, beside ExpG-IF on the same architecture, on CIFAR-10.

    python benchmarks/vanilla_if.py --data ../shared/data/cifar10-jpg.tar.gz

`ge2mst_cnn_tiny` (width 16) is trained with QCFS quantizers (L levels) on the same 8000 CIFAR-10
training images, recipe and seed as the shipped ExpG checkpoint
(checkpoints/ge2mst_cnn_tiny_cifar.safetensors, T = 4, G = 2), and saved beside it. Its vanilla
IF network (online IF neurons, membrane starting at theta/2, input repeated x/T per step) is run
for T = 4 ... 64 steps on held-out test images; the ExpG network is converted at T = 4 and
compared neuron by neuron with its ANN on the same images. Prints a markdown table, writes a PNG.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ge2mst import calibrate, convert, create_model
from ge2mst.analysis.verification import verify
from ge2mst.data import load_dataset, normalize
from ge2mst.io.checkpoint import load_checkpoint, save_checkpoint
from ge2mst.training.trainer import TrainConfig, accuracy, train

STEPS = (4, 8, 16, 32, 64)


@torch.no_grad()
def snn_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, T: int) -> tuple[float, float]:
    """Accuracy of the vanilla IF network at T steps, and its agreement with the ANN."""
    snn = convert(model, encoding="repeat", T=T)
    hits = agree = 0
    for i in range(0, len(x), 250):
        s, a = snn(x[i:i + 250]), model(x[i:i + 250])
        hits += int((s.argmax(1) == y[i:i + 250]).sum())
        agree += int((s.argmax(1) == a.argmax(1)).sum())
    return hits / len(x), agree / len(x)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--levels", type=int, default=8, help="QCFS quantization levels L")
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--expg", default="checkpoints/ge2mst_cnn_tiny_cifar.safetensors")
    parser.add_argument("--out", default="checkpoints/ge2mst_cnn_tiny_qcfs_cifar.safetensors")
    parser.add_argument("--plot", default="benchmarks/vanilla_if.png")
    args = parser.parse_args()
    expg, config = load_checkpoint(args.expg)
    mean, std = torch.tensor(config["mean"]), torch.tensor(config["std"])
    cfg = TrainConfig(**config["train"])
    tr = load_dataset(args.data, split="train", limit=config["train_images"], seed=cfg.seed)
    te = load_dataset(args.data, split="test", limit=args.test_images, seed=0)
    xtr, xte = normalize(tr.images, mean, std), normalize(te.images, mean, std)
    torch.manual_seed(cfg.seed)
    qcfs = create_model("ge2mst_cnn_tiny", width=16, T=args.levels, quantizer="qcfs")
    calibrate(qcfs, [xtr[:256]])
    start = time.perf_counter()
    train(qcfs, xtr, tr.labels, cfg, progress=False)
    seconds = time.perf_counter() - start
    save_checkpoint(args.out, qcfs, mean=mean.tolist(), std=std.tolist(), data=args.data,
                    train=asdict(cfg), train_images=len(tr))
    print(f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; QCFS L = {args.levels} trained in {seconds:.0f} s; "
          f"{len(te)} test images\n")
    rows = {"qcfs_ann": accuracy(qcfs, xte, te.labels), "steps": {}}
    print("| network | T | ANN acc | SNN acc | SNN = ANN predictions |\n|---|---|---|---|---|")
    for T in STEPS:
        acc, agree = snn_accuracy(qcfs, xte, te.labels, T)
        rows["steps"][T] = {"snn": acc, "agreement": agree}
        print(f"| vanilla IF (QCFS, L = {args.levels}) | {T} | {rows['qcfs_ann']:.4f} | {acc:.4f} | "
              f"{agree:.4f} |", flush=True)
    batches = [(xte[i:i + 250], te.labels[i:i + 250]) for i in range(0, len(xte), 250)]
    check = verify(expg, batches)
    rows["expg"] = check
    print(f"| ExpG-IF (T = 4, G = 2) | 4 | {check['ann_accuracy']:.4f} | {check['snn_accuracy']:.4f} | "
          f"{check['prediction_agreement']:.4f} |")
    print(f"\nExpG-IF: {check['code_mismatches']} of {check['codes_compared']:,} neuron codes differ, "
          f"max |SNN - ANN| / max |ANN| = {check['max_rel_diff']:.3g}")
    Path(args.plot).with_suffix(".json").write_text(json.dumps(rows, indent=2, default=str))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(STEPS, [rows["steps"][T]["snn"] for T in STEPS], "o-", label="vanilla IF (QCFS) SNN")
    ax.axhline(rows["qcfs_ann"], ls="--", color="C0", alpha=0.6, label="QCFS ANN")
    ax.plot([4], [check["snn_accuracy"]], "s", color="C3", ms=9, label="ExpG-IF SNN, T = 4 (= its ANN)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(STEPS, [str(T) for T in STEPS])
    ax.set_xlabel("time steps T")
    ax.set_ylabel(f"test accuracy ({len(te)} CIFAR-10 images)")
    ax.set_title("ge2mst_cnn_tiny: conversion error against T")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
