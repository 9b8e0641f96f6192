"""Training step of Ge2mS-T against two STBP Spikformer-4-384 implementations: ours and
SpikingJelly 2.0's own ``spikformer_cifar10``, side by side (needs ``spikingjelly`` and ``h5py``).

    python benchmarks/spikingjelly_step.py --rounds 3
    python benchmarks/spikingjelly_step.py --rounds 3 --fused --Ts 4   # + fused quantizers

Each setting runs `compare.py --worker train` in a fresh process (one batch of 16 CIFAR-10
training JPEGs, median of ``--steps`` AdamW steps after one warm-up, peak resident memory added
over the process before its first step); the settings are measured in ``--rounds`` interleaved
rounds and the median of the rounds is reported. ``--fused`` adds Ge2mS-T Base with its
quantizers' fused kernels (``ge2mst train --compile quantizers``; compiled beforehand on a
throwaway copy, so that its memory is counted from the same point as the eager rows'); ``--Ts``
keeps the settings at those T only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compare import device_line, measure_rounds, median_of  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent
BASE = "Ge2mS-T CIFAR Base"
FUSED = "fused quantizers"
SETTINGS = [(BASE, (1, 2, 4, 8)), ("ge2mst_cifar_small", (4,)),
            ("Spikformer-4-384 (SSA)", (4,)), ("SpikingJelly 2.0 spikformer_cifar10", (1, 2, 4, 8))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fused", action="store_true", help="add Base with fused quantizers")
    parser.add_argument("--Ts", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    settings = [((label, T), label, T, False) for label, steps in SETTINGS for T in steps
                if T in args.Ts]
    if args.fused:
        settings[1:1] = [((f"{FUSED} ({BASE})", T), BASE, T, "quantizers") for T in args.Ts]
    runs = measure_rounds(args.data, settings, args.rounds, args.steps)
    base = {T: runs[BASE, T] for T in args.Ts}
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
