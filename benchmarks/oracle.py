"""The independent oracle of ``ge2mst verify`` on real images, and the faults it catches: two tables.

    python benchmarks/oracle.py --data ../shared/data/cifar10-jpg.tar.gz --limit 512

Table 1 runs ``ge2mst verify --strict`` (every neuron examined by the oracle and by the other
firing form) on ``ge2mst_cifar_tiny``, calibrated and as shipped trained, with the attention
products formed from the codes and from the spike trains (event level). Table 2 runs the same
command on ``ge2mst_cnn_tiny`` with each deliberate fault of ``--inject-fault`` and without one.
Every row is one command, printed above the tables; each runs in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import torch

CHECKPOINT = "checkpoints/ge2mst_cifar_tiny_effdim.safetensors"
FAULTS = [None, "floor", "ties-down", "reversed-weights", "lambda-drift", "no-refractoriness"]


def run(argv: list[str]) -> tuple[dict, int, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ge2mst.cli", "verify", *argv, "--json", "--strict"],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"verify failed ({done.returncode}): {done.stderr}")
    print("    ge2mst verify " + " ".join(argv) + " --json --strict", file=sys.stderr)
    return json.loads(done.stdout), done.returncode, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--limit", type=int, default=512)
    args = parser.parse_args()
    data = ["--data", args.data, "--limit", str(args.limit)]
    print(f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {args.limit} CIFAR-10 test images\n")

    print("| model | attention products | codes compared | oracle checked | oracle mismatches | "
          "form mismatches | code mismatches | max rel diff | exact | exit | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for source in (["--model", "ge2mst_cifar_tiny"], ["--checkpoint", CHECKPOINT]):
        for products in ("codes", "spikes"):
            r, code, sec = run([*source, *data, "--attention-products", products])
            name = "cifar_tiny, calibrated" if source[0] == "--model" else "cifar_tiny, trained"
            print(f"| {name} | {products} | {r['codes_compared']:,} | {r['oracle_checked']:,} | "
                  f"{r['oracle_mismatches']} | {r['form_mismatches']} | {r['code_mismatches']} | "
                  f"{r['max_rel_diff']:.2e} | {r['exact']} | {code} | {sec:.0f} |")

    print("\n| injected fault | form | code mismatches | oracle mismatches | form mismatches | "
          "illegal patterns | lambda mismatches | max rel diff | agreement | exact | exit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for fault in FAULTS:
        form = "sequential" if fault == "no-refractoriness" else "search"
        extra = ["--inject-fault", fault] if fault else []
        r, code, _ = run(["--model", "ge2mst_cnn_tiny", *data, "--form", form, *extra])
        print(f"| {fault or '(none)'} | {form} | {r['code_mismatches']:,} | {r['oracle_mismatches']:,} | "
              f"{r['form_mismatches']:,} | {r['illegal_patterns']:,} | {r['lambda_mismatches']} | "
              f"{r['max_rel_diff']:.2e} | {r['prediction_agreement']:.3f} | {r['exact']} | {code} |")


if __name__ == "__main__":
    main()
