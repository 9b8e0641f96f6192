"""Exactness of the converted Ge2mS-T models on real CIFAR-10 images: a markdown table.

    python benchmarks/verify_models.py --data ../shared/data/cifar10-jpg.tar.gz

CIFAR variants: ``--limit`` (512) test images at 32x32. ImageNet models: ``--imagenet-images``
(8) of the same images up-sampled (bilinear) to 224x224 and to 288x288. Every model is untrained,
with lambda and BatchNorm calibrated on the images (seed 0); the SNN runs event by event in
float64 against the ANN in float64.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from ge2mst import calibrate, create_model
from ge2mst.analysis.verification import verify
from ge2mst.data import load_dataset, normalize


def row(name, size, images, r, sec, params):
    return (f"| {name} | {size} | {params / 1e6:.2f} M | {images} | {r['prediction_agreement']:.3f} | "
            f"{r['code_mismatches']} / {r['codes_compared']:,} | {r['max_rel_diff']:.2e} | "
            f"{r['max_spikes_per_neuron']} | {r['mean_spikes_per_neuron']:.3f} | "
            f"{r['illegal_patterns']} | {r['near_boundary']} | {sec:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--limit", type=int, default=512)
    parser.add_argument("--imagenet-images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", nargs="*", default=None)
    args = parser.parse_args()
    data = load_dataset(args.data, split="test", limit=args.limit)
    mean, std = data.channel_stats()
    images = normalize(data.images, mean, std)
    print(f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}\n")
    print("| model | input | params | images | agreement | code mismatches / compared | "
          "max rel diff | max spikes | mean spikes | illegal | near boundary | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    jobs = [(m, 32, len(images)) for m in ("ge2mst_cifar_tiny", "ge2mst_cifar_small",
                                           "ge2mst_cifar_base", "ge2mst_cifar_large")]
    jobs += [(m, s, args.imagenet_images) for m in ("ge2mst_small", "ge2mst_base", "ge2mst_large")
             for s in (224, 288)]
    for name, size, n in jobs:
        if args.models and name not in args.models:
            continue
        torch.manual_seed(0)
        x = images[:n] if size == 32 else F.interpolate(images[:n], size=(size, size),
                                                        mode="bilinear", align_corners=False)
        y = data.labels[:n]
        model = create_model(name, num_classes=10)  # img_size only checks the grouping
        calibrate(model, [x[:64]])
        batches = [(x[i:i + args.batch_size], y[i:i + args.batch_size])
                   for i in range(0, n, args.batch_size)]
        start = time.perf_counter()
        r = verify(model, batches)
        params = sum(p.numel() for p in model.parameters())
        print(row(name, f"{size}x{size}", n, r, time.perf_counter() - start, params), flush=True)


if __name__ == "__main__":
    main()
