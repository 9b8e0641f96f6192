"""Seconds of one AdamW training step of Ge2mS-T CIFAR layouts of several widths and depths: the
probe that chose ``ge2mst_cifar_medium`` (eager quantizers) and ``ge2mst_cifar_deep`` (``--fused``).

    python benchmarks/width_probe.py
    python benchmarks/width_probe.py --fused   # the quantizers' fused kernels, as the runs train

Batch 128 of random 32x32 inputs, T = 4, G = 2, p = 1, eager quantizers with lambda 2, the
process's threads; median of five steps after one warm-up, and the minutes a 50,000-image epoch
would take at that pace.
"""

from __future__ import annotations

import argparse

import torch
from step_profile import median_step  # benchmarks/ is the script's folder

import ge2mst
from ge2mst.core.quantizers import ExpGQuant, fuse_quantizers, set_mixing

CANDIDATES = {
    "width 24 (mini)": dict(width=24),
    "width 32 (medium)": dict(width=32),
    "width 24, depths (1, 1, 3, 1)": dict(width=24, depths=(1, 1, 3, 1)),
    "width 32, depths (1, 1, 2, 1)": dict(width=32, depths=(1, 1, 2, 1)),
    "width 32, depths (1, 2, 2, 1)": dict(width=32, depths=(1, 2, 2, 1)),
    "width 40": dict(width=40),
    "width 32, depths (1, 1, 3, 1) (deep)": dict(width=32, depths=(1, 1, 3, 1)),
    "width 32, depths (1, 1, 2, 2)": dict(width=32, depths=(1, 1, 2, 2)),
}


def main() -> None:
    from ge2mst.training.provenance import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fused", action="store_true", help="the quantizers' fused kernels")
    fused = parser.parse_args().fused
    torch.manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    print(f"device: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{'fused' if fused else 'eager'} quantizers\n")
    print("| layout (tiny's, MLP ratio 2) | parameters | step (s) | minutes a 50,000-image epoch |")
    print("|---|---|---|---|")
    for label, kwargs in CANDIDATES.items():
        model = ge2mst.create_model("ge2mst_cifar_mini", **kwargs).train()
        set_mixing(model, 1.0)
        fuse_quantizers(model, fused)
        for q in model.modules():
            if isinstance(q, ExpGQuant):
                q.lam.data.fill_(2.0)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)

        def train_step(model=model, opt=opt) -> None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step = median_step(train_step, 5)  # one warm-up, then the median of five
        params = sum(p.numel() for p in model.parameters())
        print(f"| {label} | {params / 1e6:.2f} M | {step:.3f} | {50000 / 128 * step / 60:.1f} |")


if __name__ == "__main__":
    main()
