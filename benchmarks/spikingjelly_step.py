"""Training step of Ge2mS-T against two STBP Spikformer-4-384 implementations: ours and
SpikingJelly 2.0's own ``spikformer_cifar10``, side by side (needs ``spikingjelly`` and ``h5py``).

    python benchmarks/spikingjelly_step.py --rounds 3

Each setting runs `compare.py --worker train` in a fresh process (one batch of 16 CIFAR-10
training JPEGs, median of ``--steps`` AdamW steps after one warm-up, peak resident memory added
over the process before its first step); the settings are measured in ``--rounds`` interleaved
rounds and the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compare import device_line, measure_rounds, median_of  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
SETTINGS = [("Ge2mS-T CIFAR Base", (1, 2, 4, 8)), ("ge2mst_cifar_small", (4,)),
            ("Spikformer-4-384 (SSA)", (4,)), ("SpikingJelly 2.0 spikformer_cifar10", (1, 2, 4, 8))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = [((label, T), label, T, False) for label, steps in SETTINGS for T in steps]
    runs = measure_rounds(args.data, settings, args.rounds, args.steps)
    base = {T: runs["Ge2mS-T CIFAR Base", T] for T in (1, 2, 4, 8)}
    print(device_line() + "\n")
    print("| network | params | T | step (s) | peak added memory (MiB) | time vs Ge2mS-T Base | "
          "memory vs Ge2mS-T Base |")
    print("|---|---|---|---|---|---|---|")
    for (label, T), rs in runs.items():
        step, peak = median_of(rs, "step_s"), median_of(rs, "peak_mb")
        print(f"| {label} | {rs[0]['params'] / 1e6:.2f} M | {T} | {step:.2f} | {peak:.0f} | "
              f"{step / median_of(base[T], 'step_s'):.2f}x | "
              f"{peak / median_of(base[T], 'peak_mb'):.2f}x |")


if __name__ == "__main__":
    main()
