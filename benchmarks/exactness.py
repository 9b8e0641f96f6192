"""Exactness of ExpG conversion on real images, across (T, G): a markdown table.

    python benchmarks/exactness.py --data ../shared/data/cifar10-jpg.tar.gz --limit 512

Each row runs the same check as ``ge2mst verify`` (calibrated, untrained ge2mst_cnn_tiny, float64
event-driven SNN against the ANN) and times it.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from ge2mst import calibrate, create_model
from ge2mst.analysis.verification import verify
from ge2mst.data import load_dataset, normalize


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--limit", type=int, default=512)
    parser.add_argument("--model", default="ge2mst_cnn_tiny")
    args = parser.parse_args()
    data = load_dataset(args.data, split="test", limit=args.limit)
    mean, std = data.channel_stats()
    batches = [(normalize(x, mean, std), y) for x, y in data.batches(64)]
    print(f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads,"
          f" torch {torch.__version__}; data: {args.data} test, {len(data)} images\n")
    print("| T | G | form | step mode | dtype | agreement | code mismatches / compared | "
          "max rel diff | max spikes | mean spikes | illegal | near boundary | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for T, G in [(4, 2), (4, 1), (4, 4), (8, 2), (8, 4)]:
        for form, mode, dtype in [("search", "event", "float64"), ("sequential", "event", "float64"),
                                  ("search", "collapsed", "float32")]:
            torch.manual_seed(0)
            model = create_model(args.model, num_classes=data.num_classes, in_chans=data.in_chans,
                                 T=T, G=G)
            calibrate(model, [x for x, _ in batches[:4]])
            start = time.perf_counter()
            ref = "folded" if dtype == "float32" else "trained"
            r = verify(model, batches, form=form, step_mode=mode, dtype=dtype, reference=ref)
            sec = time.perf_counter() - start
            print(f"| {T} | {G} | {form} | {mode} | {dtype} | {r['prediction_agreement']:.3f} | "
                  f"{r['code_mismatches']} / {r['codes_compared']:,} | {r['max_rel_diff']:.2e} | "
                  f"{r['max_spikes_per_neuron']} | {r['mean_spikes_per_neuron']:.3f} | "
                  f"{r['illegal_patterns']} | {r['near_boundary']} | {sec:.1f} |")


if __name__ == "__main__":
    main()
