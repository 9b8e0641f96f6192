"""Operations and energy of the Ge2mS-T models, counted from emitted spikes: a markdown table.

    python benchmarks/energy_models.py --data ../shared/data/cifar10-jpg.tar.gz

ImageNet models at 224x224 (CIFAR-10 test images up-sampled, bilinear), CIFAR models at 32x32.
Untrained networks with lambda and BatchNorm calibrated on the images (seed 0): their firing is
not that of trained networks, so the emitted SOPs are not comparable with the paper's (trained)
figures; the upper bound (every neuron at G spikes) depends on the architecture only and is.
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from ge2mst import calibrate, convert, create_model
from ge2mst.analysis.energy import count_operations
from ge2mst.data import load_dataset, normalize

PAPER = {"ge2mst_small": (1.29e9, 1.16), "ge2mst_base": (2.14e9, 1.92), "ge2mst_large": (3.15e9, 2.83)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    data = load_dataset(args.data, split="test", limit=max(args.images, 64))
    mean, std = data.channel_stats()
    images = normalize(data.images, mean, std)
    print(f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads,"
          f" torch {torch.__version__}; preset 45nm-fp32 (0.9 pJ / accumulate, 4.6 pJ / MAC)\n")
    print("| model | input | SOPs / image | MACs / image | SOPs upper bound | ANN MACs | "
          "energy SNN (mJ) | energy ANN (mJ) | firing rate | paper (trained): SOPs, mJ |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, size in [("ge2mst_cifar_tiny", 32), ("ge2mst_cifar_small", 32),
                       ("ge2mst_small", 224), ("ge2mst_base", 224), ("ge2mst_large", 224)]:
        torch.manual_seed(0)
        x = images if size == 32 else F.interpolate(images, size=(size, size), mode="bilinear",
                                                    align_corners=False)
        model = create_model(name, num_classes=10 if size == 32 else 1000)
        calibrate(model, [x[:64] if size == 32 else x[:16]])
        r = count_operations(convert(model.eval()), [x[:args.images]])
        paper = PAPER.get(name)
        ref = f"{paper[0] / 1e9:.2f} G, {paper[1]:.2f}" if paper else "-"
        print(f"| {name} | {size}x{size} | {r['sops'] / 1e6:,.1f} M | {r['macs'] / 1e6:,.1f} M | "
              f"{r['sops_upper_bound'] / 1e6:,.1f} M | {r['ann_macs'] / 1e6:,.1f} M | "
              f"{r['energy_mj']:.3f} | {r['ann_energy_mj']:.3f} | {r['firing_rate']:.3f} | {ref} |",
              flush=True)


if __name__ == "__main__":
    main()
