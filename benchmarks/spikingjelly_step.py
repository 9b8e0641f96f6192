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
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SETTINGS = [("Ge2mS-T CIFAR Base", (1, 2, 4, 8)), ("ge2mst_cifar_small", (4,)),
            ("Spikformer-4-384 (SSA)", (4,)), ("SpikingJelly 2.0 spikformer_cifar10", (1, 2, 4, 8))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[tuple[str, int], list[dict]] = {}
    for round_ in range(args.rounds):
        for label, steps in SETTINGS:
            for T in steps:
                cmd = [sys.executable, str(HERE / "compare.py"), "--worker", "train", "--network",
                       label, "--T", str(T), "--batch", "16", "--steps", str(args.steps), "--data",
                       args.data]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{label} T={T} failed:\n{done.stderr[-2000:]}")
                r = json.loads(done.stdout.strip().splitlines()[-1])
                runs.setdefault((label, T), []).append(r)
                print(f"round {round_ + 1} {label} T={T}: {r}", file=sys.stderr, flush=True)
    base = {T: statistics.median(r["step_s"] for r in runs["Ge2mS-T CIFAR Base", T])
            for T in (1, 2, 4, 8)}
    base_mb = {T: statistics.median(r["peak_mb"] for r in runs["Ge2mS-T CIFAR Base", T])
               for T in (1, 2, 4, 8)}
    print(f"device: {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| network | params | T | step (s) | peak added memory (MiB) | time vs Ge2mS-T Base | "
          "memory vs Ge2mS-T Base |")
    print("|---|---|---|---|---|---|---|")
    for (label, T), rs in runs.items():
        step = statistics.median(r["step_s"] for r in rs)
        peak = statistics.median(r["peak_mb"] for r in rs)
        print(f"| {label} | {rs[0]['params'] / 1e6:.2f} M | {T} | {step:.2f} | {peak:.0f} | "
              f"{step / base[T]:.2f}x | {peak / base_mb[T]:.2f}x |")


if __name__ == "__main__":
    main()
