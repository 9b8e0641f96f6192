"""Pilot: BatchNorm statistics re-estimated at p = 1 after training, weights and lambda untouched.

    python benchmarks/bn_reestimate.py --model ge2mst_cifar_medium --images 5120

Loads a shipped model (``pretrained=True``: the EMA weights of the run's last epoch, whose
BatchNorm buffers are the EMA of the training batches' running statistics), scores its ANN
(float32, equal to its spiking network) on the 5,000 CIFAR-10 test images, then resets every
BatchNorm's running statistics, averages them anew (cumulative, ``momentum=None``) over
``--images`` training images without augmentation, in batches of 128 at p = 1, and scores again.
A lever of TRAINING.md section 3, kept only if it wins.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import ge2mst
from ge2mst.conversion.calibration import _update_batchnorm  # calibration's own BN pass
from ge2mst.data import load_dataset, normalize
from ge2mst.training import accuracy

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--model", default="ge2mst_cifar_medium")
    parser.add_argument("--images", type=int, default=5120, help="training images for the statistics")
    args = parser.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(f"CIFAR-10 archive not found: {args.data} (see ../shared/data/README)")
    model = ge2mst.create_model(args.model, pretrained=True)
    ge2mst.set_mixing(model, 1.0)
    mean, std = (torch.tensor(model.pretrained_cfg[k]) for k in ("mean", "std"))
    test = load_dataset(args.data, split="test", seed=0)
    train = load_dataset(args.data, split="train", limit=args.images, seed=1)
    x, y = normalize(test.images, mean, std), test.labels
    before = accuracy(model, x, y)
    with torch.no_grad():
        _update_batchnorm(model, list(normalize(train.images, mean, std).split(128)))
    after = accuracy(model, x, y)
    print(f"{args.model}: top-1 on {len(y):,} test images, ANN float32 (= its SNN): shipped "
          f"{before:.2%}, BatchNorm re-estimated on {len(train.labels):,} training images "
          f"{after:.2%} ({(after - before) * 100:+.2f} points)")


if __name__ == "__main__":
    main()
