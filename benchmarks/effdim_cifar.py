"""Effective dimension on CIFAR-10: raw pixels and a trained Ge2mS-T's attention inputs.

    python benchmarks/effdim_cifar.py --data ../shared/data/cifar10-jpg.tar.gz

Trains ge2mst_cifar_tiny (T = 4, G = 2, progressive ExpG schedule, seed 0) on ``--train`` images
for ``--epochs`` epochs on the CPU, saves it to checkpoints/ge2mst_cifar_tiny_effdim.safetensors,
then measures PCA-90/95/99, participation ratio and entropy rank (basic bootstrap 95 %
intervals) on ``--images`` test images: raw pixels, and the tokens entering each attention block.
Finally the error curve over (T, G) against the full-precision network and the fit of C.
Prints markdown.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import asdict

import torch

from ge2mst import calibrate, create_model
from ge2mst.analysis import effdim as ed
from ge2mst.data import load_dataset, normalize
from ge2mst.io.checkpoint import save_checkpoint
from ge2mst.training.trainer import TrainConfig, accuracy, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--out", default="checkpoints/ge2mst_cifar_tiny_effdim.safetensors")
    args = parser.parse_args()
    tr = load_dataset(args.data, split="train", limit=args.train, seed=0)
    te = load_dataset(args.data, split="test", limit=args.images, seed=0)
    mean, std = tr.channel_stats()
    xtr, xte = normalize(tr.images, mean, std), normalize(te.images, mean, std)
    torch.manual_seed(0)
    model = create_model("ge2mst_cifar_tiny")
    calibrate(model, [xtr[:256]])
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, lr=3e-3, hflip=True, crop_padding=2)
    start = time.perf_counter()
    history = train(model, xtr, tr.labels, cfg, progress=False)
    seconds = time.perf_counter() - start
    acc = accuracy(model, xte, te.labels)
    save_checkpoint(args.out, model, mean=mean.tolist(), std=std.tolist(), data=args.data,
                    train=asdict(cfg), train_images=args.train, test_accuracy=acc)
    print(f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"trained ge2mst_cifar_tiny on {args.train} images, {args.epochs} epochs, {seconds:.0f} s; "
          f"last-epoch test accuracy {acc:.4f} on {len(te)} images "
          f"(train accuracy {history[-1]['train_accuracy']:.4f}); saved {args.out}\n")
    feats = ed.features(model, xte)
    print("| features | samples | dims | PCA-90 | PCA-95 | PCA-99 | participation ratio (95 % CI) "
          "| entropy rank (95 % CI) |")
    print("|---|---|---|---|---|---|---|---|")
    dims = {}
    for name, x in feats.items():
        d = ed.estimate_dimensions(x, bootstrap=50, max_samples=4000)
        dims[name] = d
        pr, er = d["participation_ratio"], d["entropy_rank"]
        print(f"| {name} | {d['samples']} | {d['features']} | {d['pca_90']['value']:.0f} | "
              f"{d['pca_95']['value']:.0f} | {d['pca_99']['value']:.0f} | {pr['value']:.1f} "
              f"({pr['ci'][0]:.1f}-{pr['ci'][1]:.1f}) | {er['value']:.1f} "
              f"({er['ci'][0]:.1f}-{er['ci'][1]:.1f}) |", flush=True)
    settings = [(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4), (8, 2), (8, 4)]
    curve = ed.epsilon_curve(model, xte[:256], settings)
    l_f = ed.lipschitz_estimate(ed.full_precision(model), xte[:64])
    n = curve[0]["neurons_per_image"]
    d = dims["pixels"]["participation_ratio"]["value"]
    fit = ed.fit_constant([dict(p, L_f=l_f, n=n, d=d) for p in curve])
    print("\n| T | G | epsilon vs full precision | agreement with full precision | "
          "spikes per image |")
    print("|---|---|---|---|---|")
    for p in curve:
        print(f"| {p['T']} | {p['G']} | {p['epsilon']:.4f} | "
              f"{p['prediction_agreement_with_fp']:.3f} | {p['spikes_per_image']:,.0f} |")
    print(f"\nfit spikes = C L_f^2 n d / eps^2 with L_f = {l_f:.3g}, n = {n:,} neurons, d = {d:.1f}"
          f" (pixel participation ratio): C = {fit['C']:.3g} (95 % CI {fit['ci'][0]:.3g}-"
          f"{fit['ci'][1]:.3g}), R^2 = {fit['r2']:.3f}")


if __name__ == "__main__":
    main()
