"""What the progressive schedule's mixing costs a training step: p < 1 against p = 1.

    python benchmarks/mixing_step.py --model ge2mst_cifar_tiny --batch-size 128

While p < 1 every quantizer outputs (1 - p) clip(x, 0, lambda) + p Q(x). ge2mst computes that mix
inside the quantizer's own autograd node (one straight-through mask for both parts). The column
"composed" runs the same step with the mix written out as separate autograd operations around
the p = 1 quantizer (what ge2mst did before): clamp, two products and a sum, each with its own
backward. Median seconds of ``--steps`` AdamW steps on ``--batch-size`` CIFAR-10 training JPEGs
after two warm-ups, on the threads torch uses here (set OMP_NUM_THREADS to compare machines).
Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
from pathlib import Path

import torch
from step_profile import median_step, training_step

HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def composed_mixing():
    """Every quantizer's forward as the written-out mix around the p = 1 quantizer."""
    from ge2mst.core.quantizers import Quantizer, quantize

    plain = Quantizer.forward

    def forward(self, x):
        if self.p >= 1.0 or self.bypass:
            return plain(self, x)
        q = quantize(x, self.lam, self.book, self.signed)
        low = -self.lam if self.signed else torch.zeros_like(self.lam)
        clipped = torch.minimum(torch.maximum(x, low.to(x.dtype)), self.lam.to(x.dtype))
        return (1.0 - self.p) * clipped + self.p * q

    Quantizer.forward = forward
    try:
        yield
    finally:
        Quantizer.forward = plain


def main() -> None:
    from ge2mst.core.quantizers import set_mixing

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--model", default="ge2mst_cifar_tiny")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--p", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    args = parser.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(f"no data at {args.data}: see ../shared/data/README")
    model, _, step = training_step(args.data, args.model, args.batch_size)
    rows = []
    for p in args.p:
        set_mixing(model, p)
        fused = median_step(step, args.steps, warmups=2)
        with composed_mixing():
            composed = median_step(step, args.steps, warmups=2)
        rows.append((p, fused, composed))
    print(f"device: {platform.machine()} CPU ({platform.processor() or 'unknown'}), "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; model {args.model}, "
          f"batch {args.batch_size}, T = 4, G = 2, median of {args.steps} steps\n")
    print("| p | step, mix in the quantizer (s) | images/s | step, mix composed (s) | images/s |")
    print("|---|---|---|---|---|")
    for p, fused, composed in rows:
        print(f"| {p:g} | {fused:.3f} | {args.batch_size / fused:.0f} | {composed:.3f} | "
              f"{args.batch_size / composed:.0f} |")


if __name__ == "__main__":
    main()
