"""The spike constant C fitted across two trained models and eight (T, G) settings on CIFAR-10.

    python benchmarks/effdim_fit.py --data ../shared/data/cifar10-jpg.tar.gz

Models: ge2mst_cifar_tiny from checkpoints/ge2mst_cifar_tiny_effdim.safetensors (trained by
benchmarks/effdim_cifar.py) and ge2mst_cnn_tiny (width 16) trained here on the same 8000 images
for 8 epochs (seed 0), saved to checkpoints/ge2mst_cnn_tiny_cifar.safetensors. For every model
and (T, G): epsilon of the converted SNN against the full-precision network on 256 test images
and the spikes it emitted; then spikes = C L_f^2 n d / eps^2 fitted per model and jointly.
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import asdict

import torch

from ge2mst import calibrate, create_model
from ge2mst.analysis import effdim as ed
from ge2mst.data import load_dataset, normalize
from ge2mst.io.checkpoint import load_checkpoint, save_checkpoint
from ge2mst.training.trainer import TrainConfig, accuracy, train

SETTINGS = [(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4), (8, 2), (8, 4)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    args = parser.parse_args()
    tiny, cfg_tiny = load_checkpoint("checkpoints/ge2mst_cifar_tiny_effdim.safetensors")
    mean, std = torch.tensor(cfg_tiny["mean"]), torch.tensor(cfg_tiny["std"])
    tr = load_dataset(args.data, split="train", limit=8000, seed=0)
    te = load_dataset(args.data, split="test", limit=2000, seed=0)
    xtr, xte = normalize(tr.images, mean, std), normalize(te.images, mean, std)
    torch.manual_seed(0)
    cnn = create_model("ge2mst_cnn_tiny", width=16)
    calibrate(cnn, [xtr[:256]])
    cfg = TrainConfig(epochs=8, batch_size=64, lr=3e-3, hflip=True, crop_padding=2)
    train(cnn, xtr, tr.labels, cfg, progress=False)
    save_checkpoint("checkpoints/ge2mst_cnn_tiny_cifar.safetensors", cnn, mean=mean.tolist(),
                    std=std.tolist(), data=args.data, train=asdict(cfg), train_images=8000)
    d = ed.estimate_dimensions(xte.reshape(len(te), -1), bootstrap=0)["participation_ratio"]["value"]
    print(f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads,"
          f" torch {torch.__version__}; d = {d:.2f} (participation ratio of the test pixels)\n")
    print("| model | test acc | L_f | n (neurons) | T | G | epsilon | spikes per image |")
    print("|---|---|---|---|---|---|---|---|")
    points, per_model = [], {}
    for name, model in (("ge2mst_cifar_tiny", tiny), ("ge2mst_cnn_tiny", cnn)):
        acc = accuracy(model, xte, te.labels)
        l_f = ed.lipschitz_estimate(ed.full_precision(model), xte[:64])
        curve = ed.epsilon_curve(model, xte[:256], SETTINGS)
        pts = [dict(p, L_f=l_f, n=p["neurons_per_image"], d=d) for p in curve]
        per_model[name] = ed.fit_constant(pts)
        points += pts
        for p in pts:
            print(f"| {name} | {acc:.4f} | {l_f:.3f} | {p['n']:,} | {p['T']} | {p['G']} | "
                  f"{p['epsilon']:.4f} | {p['spikes_per_image']:,.0f} |", flush=True)
    print("\n| fit | points | C | 95 % CI | R^2 |")
    print("|---|---|---|---|---|")
    for name, fit in [*per_model.items(), ("joint", ed.fit_constant(points))]:
        print(f"| {name} | {fit['points']} | {fit['C']:.4g} | {fit['ci'][0]:.3g}-{fit['ci'][1]:.3g} "
              f"| {fit['r2']:.3f} |")


if __name__ == "__main__":
    main()
