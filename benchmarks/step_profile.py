"""Where a Ge2mS-T training step goes on this CPU: achieved GFLOP/s against the machine's matmul
GFLOP/s, and a profile table by kind of work.

    python benchmarks/step_profile.py --model ge2mst_cifar_base
    python benchmarks/step_profile.py --model ge2mst_cifar_tiny ge2mst_cifar_mini --batch 128
    python benchmarks/step_profile.py --kernel      # one quantizer alone
    python benchmarks/step_profile.py --model ge2mst_cifar_medium --batch 128 --fused --p 0.5

The floating-point operations of one AdamW step (``--batch`` CIFAR-10 training JPEGs, T = 4,
G = 2, p = 1) are three times those of the forward pass that ``torch.utils.flop_counter`` counts
(matrix products and convolutions; a backward costs twice its forward: the usual convention, used
because FlopCounterMode's count of ``convolution_backward`` over-counts grouped convolutions); the
step time is the median of ``--steps`` steps after two warm-ups; the machine's limit is the median
GFLOP/s of float32 ``torch.mm`` on 2048 x 2048 matrices. The profile lists the operators with the
largest self CPU time over three steps, and the same step with every quantizer bypassed (ReLU /
identity) says what the quantizers cost: their share is 1 - bypassed / step. ``--fused`` times
the quantizers' fused kernels (`ge2mst.fuse_quantizers`, ``ge2mst train --compile quantizers``;
compiled in the untimed warm-up steps), ``--p`` a step of the progressive mix (p < 1).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

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


def profile(args, name: str) -> dict:
    """One model's row: step time, FLOPs, the step with every quantizer bypassed, the quantizers'
    share (1 - bypassed / step) and the operators with the largest self CPU time."""
    from ge2mst.core.quantizers import quantizers

    model, x, step = training_step(args.data, name, args.batch, args.fused, args.p)
    with FlopCounterMode(display=False) as counter:
        model(x)
    flops = 3 * counter.get_total_flops()  # forward, and a backward of twice its cost
    step()  # (compiles the fused kernels)
    seconds = median_step(step, args.steps)
    with torch.profiler.profile() as prof:
        for _ in range(3):
            step()
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    whole = sum(t for _, t in events)
    for _, q in quantizers(model):  # ablation: the quantizers as plain ReLU / identity
        q.bypass = True
    bypassed = median_step(step, args.steps)
    return {"model": name, "seconds": seconds, "flops": flops, "bypassed": bypassed,
            "share": 1 - bypassed / seconds,
            "top": [(k, t / whole) for k, t in sorted(events, key=lambda kv: -kv[1])[:12]]}


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
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--kernel", action="store_true",
                        help="time one quantizer alone instead (forward; forward and backward)")
    parser.add_argument("--fused", action="store_true", help="the quantizers' fused kernels")
    parser.add_argument("--p", type=float, default=1.0, help="mixing fraction of the step")
    args = parser.parse_args()
    if args.kernel:
        forward, both = quantizer_kernel(max(args.steps, 9), args.fused)
        print(f"ExpGQuant(4, 2){', fused' if args.fused else ''}, 128 x 64 x 32 x 32 float32, "
              f"training mode: forward {forward:.4f} s, "
              f"forward and backward {both:.4f} s")
        return
    rows = [profile(args, name) for name in args.model]
    limit = matmul_gflops()
    print(f"device: {cpu_model()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; batch {args.batch}, T = 4, G = 2, p = {args.p:g}, "
          f"{'fused' if args.fused else 'eager'} quantizers\n")
    print("| model | step (s) | GFLOP per step (3 x forward) | achieved GFLOP/s | float32 mm 2048² GFLOP/s | "
          "fraction of the limit | step with the quantizers as ReLU (s) | quantizers' share |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        rate = r["flops"] / r["seconds"] / 1e9
        print(f"| {r['model']} | {r['seconds']:.3f} | {r['flops'] / 1e9:.1f} | {rate:.1f} | {limit:.1f} | "
              f"{rate / limit:.0%} | {r['bypassed']:.3f} | {r['share']:.0%} |")
    for r in rows:
        print(f"\n| operator ({r['model']}) | share of the step's self CPU time |")
        print("|---|---|")
        for name, share in r["top"]:
            print(f"| {name} | {share:.1%} |")


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
