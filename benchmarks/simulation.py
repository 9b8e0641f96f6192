"""Speed of the spiking simulation against its ANN: images/s from ``ge2mst eval``, one table.

    python benchmarks/simulation.py --data ../shared/data/cifar10-jpg.tar.gz

For each model: the ANN (float32), the spiking network collapsed (float32), event by event
(float32 and float64), each ``ge2mst eval ... --no-energy --json`` in a fresh process (λ and
BatchNorm calibrated on the images, seed 0). The energy column is the cost of counting operations
and energy from the emitted spikes (the same command without ``--no-energy``), as a fraction of the
event-mode float32 simulation time: ``ge2mst eval`` counts during its timed pass, so the column is
(seconds of that pass with counting) / (seconds without) - 1. With ``--rounds N`` every setting
runs N times, interleaved (round 1 of every setting, then round 2, ...), and each figure is the
median over the rounds; the ratios are medians of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
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
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; each figure is the median over them")
    args = parser.parse_args()
    print(f"device: {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.rounds} interleaved rounds, medians\n")
    print("| model | images | ANN img/s | SNN collapsed f32 | SNN event f32 | SNN event f64 | "
          "event f32 / ANN time | collapsed / ANN time | energy counting / event f32 time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in args.models:
        name, images = spec.split(":")
        base = ["--model", name, "--data", args.data, "--limit", images, "--batch-size", "64"]
        event = SETTINGS[2][1]
        ips: dict[str, list[float]] = {label: [] for label, _ in SETTINGS}
        ratios: dict[str, list[float]] = {"event": [], "collapsed": [], "counting": []}
        for r in range(args.rounds):
            got = {}
            for label, extra in SETTINGS:
                report, _ = run([*base, *extra, "--no-energy"])
                got[label] = report["ann" if label == "ANN" else "snn"]
                ips[label].append(got[label]["images_per_s"])
                print(f"{name} round {r + 1} {label}: {ips[label][-1]:.1f} images/s", file=sys.stderr,
                      flush=True)
            counted, _ = run([*base, *event])  # one timed pass that also counts
            ann_s = got["ANN"]["seconds"]
            ratios["event"].append(got["SNN event float32"]["seconds"] / ann_s)
            ratios["collapsed"].append(got["SNN collapsed float32"]["seconds"] / ann_s)
            ratios["counting"].append(counted["snn"]["seconds"] / got["SNN event float32"]["seconds"] - 1)
        med = {label: statistics.median(v) for label, v in ips.items()}
        rat = {k: statistics.median(v) for k, v in ratios.items()}
        print(f"| {name} | {images} | {med['ANN']:.1f} | {med['SNN collapsed float32']:.1f} | "
              f"{med['SNN event float32']:.1f} | {med['SNN event float64']:.1f} | "
              f"{rat['event']:.2f}x | {rat['collapsed']:.2f}x | {rat['counting']:.0%} |", flush=True)


if __name__ == "__main__":
    main()
