"""GW-SSA against plain SSA across input sizes: attention spike-pair operations and time per image.

    python benchmarks/attention_scaling.py [--plot benchmarks/attention_scaling.png]

The attention module of Ge2mS-T Small's stage 2 (96 channels, 4 heads, half global, group side 4)
is fed the stage-2 token map of each image size (size / 8 per side): 4x4 at 32 ... 36x36 at 288.
SSA is the same module with one group over all tokens. Counted on the converted spiking module
(event mode, T = 4, G = 2) fed with random spike-coded input, lambda calibrated on it: the upper
bound of spike-pair coincidences (every neuron at G spikes), the coincidences actually emitted,
and wall-clock per image of the spiking forward pass (median of 3).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from ge2mst import calibrate, convert
from ge2mst.analysis.energy import count_operations
from ge2mst.core.quantizers import ExpGQuant
from ge2mst.nn.attention import GWSSA, SSA


def measure(attn: nn.Module, side: int, batch: int) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(ExpGQuant(), attn)
    x = torch.randn(batch, 96, side, side)
    calibrate(model, [x], update_bn=True)
    snn = convert(model.eval())
    report = count_operations(snn, [x])
    row = next(r for r in report["per_layer"] if r["input"] == "spike pairs")
    times = []
    with torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            snn(x)
            times.append((time.perf_counter() - start) / batch)
    return {"upper": row["sops_upper_bound"], "actual": row["sops"], "ann_macs": row["ann_macs"],
            "ms": statistics.median(times) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[32, 64, 128, 224, 288])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    print(f"device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads,"
          f" torch {torch.__version__}\n")
    print("| image | tokens | GW-SSA groups x tokens | GW-SSA bound | GW-SSA actual | GW-SSA ms | "
          "SSA bound | SSA actual | SSA ms | bound ratio SSA / GW-SSA |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for size in args.sizes:
        side = size // 8
        g = measure(GWSSA(96, 4, window=4), side, args.batch)
        s = measure(SSA(96, 4), side, args.batch)
        k = side // 4
        rows.append((size, side * side, g, s))
        print(f"| {size} | {side * side} | {k * k} x {16} | {g['upper']:,.0f} | {g['actual']:,.0f} | "
              f"{g['ms']:.2f} | {s['upper']:,.0f} | {s['actual']:,.0f} | {s['ms']:.2f} | "
              f"{s['upper'] / g['upper']:.1f} |", flush=True)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        tokens = [r[1] for r in rows]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for key, label, ax in (("upper", "spike-pair operations per image", axes[0]),
                               ("ms", "spiking forward, ms per image", axes[1])):
            ax.loglog(tokens, [r[2][key] for r in rows], "o-", label="GW-SSA (group side 4)"
                      + (", bound" if key == "upper" else ""))
            ax.loglog(tokens, [r[3][key] for r in rows], "s-", label="SSA (all tokens)"
                      + (", bound" if key == "upper" else ""))
            if key == "upper":
                ax.loglog(tokens, [r[2]["actual"] for r in rows], "o--", alpha=0.6,
                          label="GW-SSA, emitted")
                ax.loglog(tokens, [r[3]["actual"] for r in rows], "s--", alpha=0.6,
                          label="SSA, emitted")
            for r in rows:
                ax.annotate(f"{r[0]}px", (r[1], r[2][key]), fontsize=7, xytext=(3, -10),
                            textcoords="offset points")
            ax.set_xlabel("tokens in the stage-2 map")
            ax.set_title(label)
            ax.legend(fontsize=8)
        fig.suptitle("attention cost: GW-SSA grows linearly with tokens, SSA quadratically")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
