"""Speed of the spiking simulation against its ANN: images/s from ``ge2mst eval``, one table.

    python benchmarks/simulation.py --data ../shared/data/cifar10-jpg.tar.gz

For each model: the ANN (float32), the spiking network collapsed (float32), event by event
(float32 and float64), each ``ge2mst eval ... --no-energy --json`` in a fresh process (λ and
BatchNorm calibrated on the images, seed 0). The energy column is the cost of counting operations
and energy from the emitted spikes (the same command without ``--no-energy``), as a fraction of the
event-mode float32 simulation time: ``ge2mst eval`` counts during its timed pass, so the column is
(seconds of that pass with counting) / (seconds without) - 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import torch

SETTINGS = [("ANN", ["--mode", "ann", "--dtype", "float32"]),
            ("SNN collapsed float32", ["--mode", "snn", "--dtype", "float32", "--step-mode", "collapsed"]),
            ("SNN event float32", ["--mode", "snn", "--dtype", "float32"]),
            ("SNN event float64", ["--mode", "snn", "--dtype", "float64"])]


def run(argv: list[str]) -> tuple[dict, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ge2mst.cli", "eval", *argv, "--json"],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--models", nargs="+", default=["ge2mst_cifar_tiny:256", "ge2mst_cifar_small:64"],
                        help="NAME:IMAGES pairs")
    args = parser.parse_args()
    print(f"device: {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| model | images | ANN img/s | SNN collapsed f32 | SNN event f32 | SNN event f64 | "
          "event f32 / ANN time | collapsed / ANN time | energy counting / event f32 time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in args.models:
        name, images = spec.split(":")
        base = ["--model", name, "--data", args.data, "--limit", images, "--batch-size", "64"]
        ips = {}
        for label, extra in SETTINGS:
            report, _ = run([*base, *extra, "--no-energy"])
            ips[label] = report["ann" if label == "ANN" else "snn"]["images_per_s"]
            print(f"{name} {label}: {ips[label]:.1f} images/s", file=sys.stderr, flush=True)
        event = SETTINGS[2][1]
        without, _ = run([*base, *event, "--no-energy"])
        counted, _ = run([*base, *event])  # one timed pass that also counts
        overhead = counted["snn"]["seconds"] / without["snn"]["seconds"] - 1
        ann = ips["ANN"]
        print(f"| {name} | {images} | {ann:.1f} | {ips['SNN collapsed float32']:.1f} | "
              f"{ips['SNN event float32']:.1f} | {ips['SNN event float64']:.1f} | "
              f"{ann / ips['SNN event float32']:.2f}x | {ann / ips['SNN collapsed float32']:.2f}x | "
              f"{overhead:.0%} |")


if __name__ == "__main__":
    main()
