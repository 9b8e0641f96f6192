"""Where a Ge2mS-T training step goes on this CPU: achieved GFLOP/s against the machine's matmul
GFLOP/s, and a profile table by kind of work.

    python benchmarks/step_profile.py --model ge2mst_cifar_base
    python benchmarks/step_profile.py --model ge2mst_cifar_tiny ge2mst_cifar_mini --batch 128
    python benchmarks/step_profile.py --kernel      # one quantizer alone
    python benchmarks/step_profile.py --model ge2mst_cifar_medium --batch 128 --fused --p 0.5
    python benchmarks/step_profile.py --table --model ge2mst_cifar_tiny ge2mst_cifar_mini \
        ge2mst_cifar_medium ge2mst_cifar_base --batch 128 128 128 16 --rounds 2

The floating-point operations of one AdamW step (``--batch`` CIFAR-10 training JPEGs, T = 4,
G = 2, p = 1) are three times those of the forward pass that ``torch.utils.flop_counter`` counts
(matrix products and convolutions; a backward costs twice its forward: the usual convention, used
because FlopCounterMode's count of ``convolution_backward`` over-counts grouped convolutions); the
step time is the median of ``--steps`` steps after two warm-ups; the machine's limit is the median
GFLOP/s of float32 ``torch.mm`` on 2048 x 2048 matrices. The profile lists the operators with the
largest self CPU time over three steps, and the same step with every quantizer bypassed (ReLU /
identity) says what the quantizers cost: their share is 1 - bypassed / step. ``--fused`` times
the quantizers' fused kernels (`ge2mst.fuse_quantizers`, ``ge2mst train --compile quantizers``;
compiled in the untimed warm-up steps), ``--p`` a step of the progressive mix (p < 1). The step
and the bypassed step are timed in turn. ``--table`` prints the before/after table: eager against
fused quantizers at p = 1 and 0.5, each cell in a fresh process, ``--rounds`` alternated rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

HERE = Path(__file__).resolve().parent


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def training_step(data_path: str, name: str, batch: int, fused: bool = False, p: float = 1.0):
    """The model ``name`` (T = 4, G = 2, training mode), a batch of ``batch`` CIFAR-10 training
    JPEGs and a function that runs one AdamW step on it."""
    from ge2mst.core.quantizers import fuse_quantizers, set_mixing
    from ge2mst.data import load_dataset, normalize
    from ge2mst.models import create_model

    data = load_dataset(data_path, split="train", limit=batch, seed=0)
    mean, std = data.channel_stats()
    x, y = normalize(data.images, mean, std), data.labels
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, T=4, G=2).train()
    fuse_quantizers(model, fused)
    set_mixing(model, p)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, x, step


def profile(args, name: str, batch: int, ops: bool = True) -> dict:
    """One model's row: step time, FLOPs, the step with every quantizer bypassed, the quantizers'
    share (1 - bypassed / step) and the operators with the largest self CPU time. The step and the
    bypassed step are timed in alternation, so that a machine whose speed drifts moves both."""
    from ge2mst.core.quantizers import quantizers

    model, x, step = training_step(args.data, name, batch, args.fused, args.p)
    with FlopCounterMode(display=False) as counter:
        model(x)
    flops = 3 * counter.get_total_flops()  # forward, and a backward of twice its cost

    def bypass(flag: bool) -> None:  # ablation: the quantizers as plain ReLU / identity
        for _, q in quantizers(model):
            q.bypass = flag

    step()  # (compiles the fused kernels)
    seconds, bypassed = interleaved(step, bypass, args.steps)
    top = []
    if ops:
        with torch.profiler.profile() as prof:
            for _ in range(3):
                step()
        events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
        whole = sum(t for _, t in events)
        top = [(k, t / whole) for k, t in sorted(events, key=lambda kv: -kv[1])[:12]]
    return {"model": name, "batch": batch, "fused": args.fused, "p": args.p, "seconds": seconds,
            "flops": flops, "bypassed": bypassed, "share": 1 - bypassed / seconds, "top": top}


def interleaved(step, bypass, steps: int) -> tuple[float, float]:
    """Median seconds of ``step`` with the quantizers on and bypassed, timed in turn after a warm-up
    of each."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for flag in (True, False):
        bypass(flag)
        step()
    for _ in range(steps):
        for flag in (False, True):
            bypass(flag)
            start = time.perf_counter()
            step()
            times[flag].append(time.perf_counter() - start)
    bypass(False)
    return statistics.median(times[False]), statistics.median(times[True])


def quantizer_kernel(steps: int, fused: bool = False) -> tuple[float, float]:
    """Median seconds of one ``ExpGQuant(4, 2)`` in training mode on a 128 x 64 x 32 x 32 float32
    activation: its forward alone (no graph), and its forward with the backward."""
    from ge2mst.core.quantizers import ExpGQuant

    torch.manual_seed(0)
    quant = ExpGQuant(4, 2, lam=1.5).train()
    quant.fused = fused
    x = torch.randn(128, 64, 32, 32, requires_grad=True)
    grad = torch.randn_like(x)

    def forward() -> None:
        with torch.no_grad():
            quant(x)

    return median_step(forward, steps), median_step(lambda: quant(x).backward(grad), steps)


def main() -> None:
    from ge2mst.training.provenance import cpu_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--model", nargs="+", default=["ge2mst_cifar_base"])
    parser.add_argument("--batch", type=int, nargs="+", default=[16],
                        help="one batch size, or one per model")
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--kernel", action="store_true",
                        help="time one quantizer alone instead (forward; forward and backward)")
    parser.add_argument("--fused", action="store_true", help="the quantizers' fused kernels")
    parser.add_argument("--p", type=float, default=1.0, help="mixing fraction of the step")
    parser.add_argument("--table", action="store_true",
                        help="the before/after table: eager and fused at p = 1 and 0.5, each model and "
                             "setting in a fresh process, --rounds alternated rounds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one --table cell
    args = parser.parse_args()
    if len(args.batch) not in (1, len(args.model)):
        parser.error("--batch takes one size, or one per --model")
    batches = args.batch * len(args.model) if len(args.batch) == 1 else args.batch
    if args.kernel:
        forward, both = quantizer_kernel(max(args.steps, 9), args.fused)
        print(f"ExpGQuant(4, 2){', fused' if args.fused else ''}, 128 x 64 x 32 x 32 float32, "
              f"training mode: forward {forward:.4f} s, "
              f"forward and backward {both:.4f} s")
        return
    if args.table:
        return table(args, batches)
    rows = [profile(args, name, b, ops=not args.json) for name, b in zip(args.model, batches, strict=True)]
    limit = matmul_gflops()
    if args.json:
        print(json.dumps({"rows": rows, "mm_gflops": limit}))
        return
    print(f"device: {cpu_model()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; T = 4, G = 2, p = {args.p:g}, "
          f"{'fused' if args.fused else 'eager'} quantizers\n")
    print("| model | batch | step (s) | GFLOP per step (3 x forward) | achieved GFLOP/s | "
          "float32 mm 2048² GFLOP/s | fraction of the limit | step with the quantizers as ReLU (s) | "
          "quantizers' share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rate = r["flops"] / r["seconds"] / 1e9
        print(f"| {r['model']} | {r['batch']} | {r['seconds']:.3f} | {r['flops'] / 1e9:.1f} | {rate:.1f} | "
              f"{limit:.1f} | {rate / limit:.0%} | {r['bypassed']:.3f} | {r['share']:.0%} |")
    for r in rows:
        print(f"\n| operator ({r['model']}) | share of the step's self CPU time |")
        print("|---|---|")
        for name, share in r["top"]:
            print(f"| {name} | {share:.1%} |")


def table(args, batches: list[int]) -> None:
    """Eager against fused quantizers at p = 1 and p = 0.5: each (model, p, mode) cell in a fresh
    process, the modes alternated within each round, so that drift between processes shows as
    spread across rounds rather than as a difference between the modes."""
    from ge2mst.training.provenance import cpu_model

    cells: dict[tuple, list[dict]] = {}
    rates = []
    for _ in tqdm(range(args.rounds), desc="rounds"):
        for name, batch in zip(args.model, batches, strict=True):
            for p in (1.0, 0.5):
                for fused in (False, True):
                    cmd = [sys.executable, __file__, "--json", "--data", args.data, "--model", name,
                           "--batch", str(batch), "--steps", str(args.steps), "--p", str(p)]
                    out = subprocess.run(cmd + (["--fused"] if fused else []), check=True,
                                         capture_output=True, text=True).stdout
                    result = json.loads(out.strip().splitlines()[-1])
                    rates.append(result["mm_gflops"])
                    cells.setdefault((name, batch, p, fused), []).extend(result["rows"])
    print(f"device: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"T = 4, G = 2; {args.rounds} rounds; float32 mm 2048² {min(rates):.0f} to {max(rates):.0f} "
          "GFLOP/s across the processes\n")
    print("| model | batch | p | eager: step (s) | eager: quantizers' share | fused: step (s) | "
          "fused: quantizers' share |")
    print("|---|---|---|---|---|---|---|")
    for name, batch in zip(args.model, batches, strict=True):
        for p in (1.0, 0.5):
            line = f"| {name} | {batch} | {p:g} |"
            for fused in (False, True):
                rows = cells[(name, batch, p, fused)]
                line += (" " + " / ".join(f"{r['seconds']:.3f}" for r in rows) + " | "
                         + " / ".join(f"{r['share']:.0%}" for r in rows) + " |")
            print(line)


def median_step(step, steps: int, warmups: int = 1) -> float:
    for _ in range(warmups):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


if __name__ == "__main__":
    main()
