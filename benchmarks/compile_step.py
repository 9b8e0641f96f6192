"""Training step on the CPU, eager against ``torch.compile`` (``ge2mst train --compile``).

    python benchmarks/compile_step.py --rounds 3

For each model, T = 4 (G = 2), batch 16 of CIFAR-10 training JPEGs, a fresh process per setting
(`compare.py --worker train`): median of ``--steps`` AdamW steps after one warm-up step (which
compiles), peak resident memory added over the process before the first timed step; the settings
are measured in ``--rounds`` interleaved rounds and the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from compare import device_line, measure_rounds, median_of  # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--models", nargs="+", default=["ge2mst_cifar_tiny", "ge2mst_cifar_small"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = [((model, compiled), model, 4, compiled) for model in args.models
                for compiled in (False, True)]
    runs = measure_rounds(args.data, settings, args.rounds, args.steps)
    print(device_line() + "\n")
    print("| model | params | mode | step (s) | peak added memory (MiB) | first (compiling) step (s) "
          "| rounds |")
    print("|---|---|---|---|---|---|---|")
    for (model, compiled), rs in runs.items():
        first = f"{median_of(rs, 'compile_step_s'):.0f}" if compiled else ""
        rounds = ", ".join(f"{r['step_s']:.3f}" for r in rs)
        print(f"| {model} | {rs[0]['params'] / 1e6:.2f} M | {'compiled' if compiled else 'eager'} | "
              f"{median_of(rs, 'step_s'):.3f} | {median_of(rs, 'peak_mb'):.0f} | {first} | {rounds} |")


if __name__ == "__main__":
    main()
