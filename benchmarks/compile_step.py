"""Training step on the CPU, eager against ``torch.compile`` (``ge2mst train --compile``).

    python benchmarks/compile_step.py --rounds 3

For each model, T = 4 (G = 2), batch 16 of CIFAR-10 training JPEGs, a fresh process per setting
(`compare.py --worker train`): median of ``--steps`` AdamW steps after one warm-up step (which
compiles), peak resident memory added over the process before the first timed step; the settings
are measured in ``--rounds`` interleaved rounds and the median of the rounds is reported.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--models", nargs="+", default=["ge2mst_cifar_tiny", "ge2mst_cifar_small"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: dict[tuple[str, bool], list[dict]] = {}
    for round_ in range(args.rounds):
        for model in args.models:
            for compiled in (False, True):
                cmd = [sys.executable, str(HERE / "compare.py"), "--worker", "train", "--network",
                       model, "--T", "4", "--batch", "16", "--steps", str(args.steps), "--data",
                       args.data] + (["--compile"] if compiled else [])
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                runs.setdefault((model, compiled), []).append(r)
                print(f"round {round_ + 1} {model} compile={compiled}: {r}", file=sys.stderr, flush=True)
    print(f"device: {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| model | params | mode | step (s) | peak added memory (MiB) | first (compiling) step (s) "
          "| rounds |")
    print("|---|---|---|---|---|---|---|")
    for (model, compiled), rs in runs.items():
        step = statistics.median(r["step_s"] for r in rs)
        peak = statistics.median(r["peak_mb"] for r in rs)
        first = statistics.median(r["compile_step_s"] for r in rs) if compiled else None
        rounds = ", ".join(f"{r['step_s']:.3f}" for r in rs)
        mode = "compiled" if compiled else "eager"
        first_s = "" if first is None else f"{first:.0f}"
        print(f"| {model} | {rs[0]['params'] / 1e6:.2f} M | {mode} | {step:.3f} | {peak:.0f} | "
              f"{first_s} | {rounds} |")


if __name__ == "__main__":
    main()
