"""What the references beyond the recorded run cost ``verify --strict``, and what they catch.

    python benchmarks/verify_references.py --data ../shared/data/cifar10-jpg.tar.gz --limit 1000

Table 1: every shipped model (``pretrained=True``), ``verify`` as ``--strict`` runs it (oracle and
form cross-check on every neuron, float64, event mode), timed twice in this process: with the
recorded comparison alone (what ``--strict`` ran before the references) and with the trained
function, the unrecorded run and the float32 path added. Table 2: ``ge2mst_cifar_tiny`` with each
fault that only a reference sees (``--inject-fault``), on the first ``--fault-images`` images.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import torch

from ge2mst import create_model
from ge2mst.analysis.faults import inject
from ge2mst.analysis.verification import verify
from ge2mst.data import load_dataset, normalize
from ge2mst.models.pretrained import shipped_weights

ALONE = {"trained_function": False, "unrecorded": False, "float32_path": False}
ALL = {"trained_function": True, "unrecorded": True, "float32_path": True}
FAULTS = [None, "attention-scale", "ignored-attention-products", "unrecorded-magnitude",
          "float32-kernel"]


def batches_for(model, data, limit: int, batch_size: int) -> list:
    cfg = model.pretrained_cfg
    x = normalize(data.images[:limit], torch.tensor(cfg["mean"]), torch.tensor(cfg["std"]))
    y = data.labels[:limit]
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def timed(model, batches, **options) -> tuple[dict, float]:
    start = time.perf_counter()
    report = verify(model, batches, oracle_sample=None, **options)
    return report, time.perf_counter() - start


def cost_table(data, limit: int, batch_size: int, models: list[str] | None = None) -> None:
    print("| model | images | recorded comparison alone, s | with the references, s | ratio | "
          "exact | trained code mismatches / compared | trained max rel diff | "
          "unrecorded max rel diff | float32 max abs diff | float32 kernel mismatches / checked |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in models or sorted(shipped_weights()):
        model = create_model(name, pretrained=True)
        batches = batches_for(model, data, limit, batch_size)
        _, alone = timed(model, batches, **ALONE)
        r, full = timed(model, batches, **ALL)
        print(f"| {name} | {r['images']} | {alone:.0f} | {full:.0f} | {full / alone:.2f} | "
              f"{r['exact']} | {r['trained_code_mismatches']} / {r['trained_codes_compared']:,} | "
              f"{r['trained_max_rel_diff']:.2e} | {r['unrecorded_max_rel_diff']:.2e} | "
              f"{r['float32_max_abs_diff']:.1e} | {r['float32_kernel_mismatches']} / "
              f"{r['float32_kernel_checked']:,} |", flush=True)


def fault_table(data, images: int, batch_size: int) -> None:
    print("\n| injected fault | code / oracle / form mismatches | max rel diff | trained code "
          "mismatches | trained agreement | unrecorded max rel diff | float32 kernel mismatches | "
          "settings mismatches | exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    model = create_model("ge2mst_cifar_tiny", pretrained=True)
    batches = batches_for(model, data, images, batch_size)
    for fault in FAULTS:
        products = "spikes" if fault == "ignored-attention-products" else "codes"
        context = contextlib.nullcontext() if fault is None else inject(fault, model)
        with context:
            r, _ = timed(model, batches, attention_products=products, **ALL)
        print(f"| {fault or '(none)'} | {r['code_mismatches']} / {r['oracle_mismatches']} / "
              f"{r['form_mismatches']} | {r['max_rel_diff']:.2e} | {r['trained_code_mismatches']:,} "
              f"| {r['trained_prediction_agreement']:.3f} | {r['unrecorded_max_rel_diff']:.2e} | "
              f"{r['float32_kernel_mismatches']:,} | {len(r['settings_mismatches'])} | "
              f"{r['exact']} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--fault-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", nargs="*", default=None, help="default: every shipped model")
    parser.add_argument("--no-faults", action="store_true", help="the cost table alone")
    args = parser.parse_args()
    data = load_dataset(args.data, split="test", limit=args.limit)
    print(f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}; {args.limit} CIFAR-10 test images\n")
    cost_table(data, args.limit, args.batch_size, args.models)
    if not args.no_faults:
        fault_table(data, args.fault_images, args.batch_size)


if __name__ == "__main__":
    main()
