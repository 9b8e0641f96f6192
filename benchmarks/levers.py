"""Training-step levers measured on their own: channels_last against the default layout.

    python benchmarks/levers.py --rounds 2

ge2mst_cifar_base, T = 4, G = 2, batch 16 of random 32x32 inputs, AdamW; each setting in a fresh
process, rounds alternating; the figure is the minimum of five timed steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time

import torch


def worker(mode: str) -> None:
    from ge2mst import create_model

    torch.manual_seed(0)
    model = create_model("ge2mst_cifar_base", T=4, G=2)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    print(min(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", choices=("default", "channels_last"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    print(f"device: {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| layout | step (s), one per round |\n|---|---|")
    results: dict[str, list[float]] = {"default": [], "channels_last": []}
    for _ in range(args.rounds):
        for mode in results:
            out = subprocess.run([sys.executable, __file__, "--worker", mode], capture_output=True,
                                 text=True, check=True)
            results[mode].append(float(out.stdout.strip().splitlines()[-1]))
    for mode, values in results.items():
        print(f"| {mode} | {', '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
