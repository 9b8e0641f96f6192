"""Ge2mS-T against its baselines on one machine, in one run: training cost against T, inference
time, operations and energy per image.

    python benchmarks/compare.py --data ../shared/data/cifar10-jpg.tar.gz --steps 5 --rounds 3

For each network (similar parameter counts: Ge2mS-T CIFAR Base 8.9 M, Spikformer-4-384 9.3 M and
its attention / temporal-grouping variants) and T in 1, 2, 4, 8, a fresh subprocess builds the
network, takes one batch of CIFAR-10 training JPEGs and times AdamW training steps (forward,
backward, update; median of ``--steps`` after one warm-up step) and the peak resident memory the
steps add over the process before its first step (the kernel's peak mark, reset just before,
after the heap's freed pages are handed back; fused quantizers are compiled beforehand on a
throwaway copy of the network, so their first step counts as an eager one's does).
With ``--rounds R`` every training setting is measured R times, in rounds over all settings, and
the median of the rounds is reported, so that a shared machine's drift falls on all settings alike.
Ge2mS-T trains through one forward pass whatever T is (ExpG quantizers at p = 1,
G = max(1, T / 2)); Spikformer unrolls its LIF neurons over T steps and backpropagates through
time.

At T = 4 each network then runs as a spiking network on ``--images`` test images: Ge2mS-T
converted (event mode, ExpG-IF) after lambda / BatchNorm calibration, Spikformer in eval mode
after BatchNorm statistics from the same images. Time per image is the median of three runs;
SOPs, MACs and energy per image come from the counters (`ge2mst.analysis.energy.count_operations`,
`ge2mst.analysis.energy_stbp.count_stbp_operations`). The networks are untrained: their firing is
not that of trained networks, so the operation counts show the counters and the architectures'
dense costs, not trained figures.

Writes benchmarks/compare.json, benchmarks/compare.png and prints a markdown table.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
NETWORKS = {
    "Ge2mS-T CIFAR Base": ("ge2mst_cifar_base", {}),
    "Spikformer-4-384 (SSA)": ("spikformer_4_384", {}),
    "Spikformer-4-384 + A2OS2A": ("spikformer_4_384", {"attention": "a2os2a"}),
    "Spikformer-4-384 + shifted windows (seed 001)": (
        "spikformer_4_384", {"attention": "window", "attention_options": {"window": 4, "shift": True}}),
    "Spikformer-4-384 + channel groups (seed 001)": (
        "spikformer_4_384", {"attention": "channel_group", "attention_options": {"groups": 2}}),
    "Spikformer-4-384 + temporal groups k=2 (seed 001)": ("spikformer_4_384", {"temporal_group": 2}),
}
ALL_T = ("Ge2mS-T CIFAR Base", "Spikformer-4-384 (SSA)", "Spikformer-4-384 + A2OS2A")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _SpikingJellySpikformer(torch.nn.Module):
    """SpikingJelly 2.0's own ``spikformer_cifar10`` (multi-step LIF, the image repeated over T),
    built as its library builds it; logits are the mean over the T steps, and the neurons'
    state is reset before every forward (one independent batch per call)."""

    def __init__(self, T: int) -> None:
        super().__init__()
        from spikingjelly.activation_based import functional
        from spikingjelly.activation_based.model.spikformer import spikformer_cifar10

        self.net, self._reset = spikformer_cifar10(T=T, num_classes=10), functional.reset_net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._reset(self.net)
        return self.net(x).mean(0)


#: networks built outside ge2mst (training step only); need SpikingJelly 2.0 (and h5py, which its
#: package imports)
EXTERNAL = {"SpikingJelly 2.0 spikformer_cifar10": _SpikingJellySpikformer}


def _build(label: str, T: int):
    from ge2mst import create_model

    if label in EXTERNAL:
        return EXTERNAL[label](T)

    name, kwargs = NETWORKS.get(label, (label, {}))  # a label above, or a registered model name
    kwargs = dict(kwargs, T=T)
    if name.startswith("ge2mst"):
        kwargs["G"] = max(1, T // 2)
    if kwargs.get("temporal_group", 1) > T:
        return None
    return create_model(name, num_classes=10, **kwargs)


def _images(data: str, split: str, n: int) -> torch.Tensor:
    from ge2mst.data import load_dataset, normalize

    ds = load_dataset(data, split=split, limit=max(n, 10), seed=0)
    mean, std = ds.channel_stats()
    return normalize(ds.images, mean, std)[:n], ds.labels[:n]


def _release_freed_memory() -> None:
    """Hand the heap's freed pages back to the kernel (glibc ``malloc_trim``), so that the steps'
    peak is measured over what the process really holds, the same way in every setting."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement stands without it
        pass


def _compile_quantizers_aside(network: str, T: int, x: torch.Tensor, y: torch.Tensor) -> None:
    """Compile the fused quantizer kernels on a throwaway copy of the network (forward and backward
    of the same batch, no optimizer state): the compiled kernels are shared by shape, so the
    measured network starts from the same point as an eager one, its first step counted alike."""
    from ge2mst.core.quantizers import fuse_quantizers, set_mixing

    aside = _build(network, T)
    set_mixing(aside, 1.0)
    fuse_quantizers(aside, True)
    aside.train()
    torch.nn.functional.cross_entropy(aside(x), y).backward()
    del aside


def worker_train(args) -> dict:
    from ge2mst.core.quantizers import fuse_quantizers, set_mixing

    torch.manual_seed(0)
    x, y = _images(args.data, "train", args.batch)
    model = _build(args.network, args.T)
    if model is None:
        return {"skipped": "temporal group larger than T"}
    set_mixing(model, 1.0)
    fuse_quantizers(model, args.compile == "quantizers")
    model.train()
    if args.compile == "quantizers":
        _compile_quantizers_aside(args.network, args.T, x, y)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # the whole model compiles in the warm-up step (its memory is then left out, below)
    forward = torch.compile(model) if args.compile == "model" else model
    _release_freed_memory()
    before = _rss_mb()
    _reset_peak()
    times = []
    for i in range(args.steps + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
            continue
        first_s = time.perf_counter() - start
        if args.compile == "model":  # the compiler's own memory is not the step's: from here
            before = _rss_mb()
            _reset_peak()
    params = sum(p.numel() for p in model.parameters())
    out = {"step_s": statistics.median(times), "peak_mb": _peak_mb() - before, "params": params,
           "load_avg_1min": os.getloadavg()[0]}
    if args.compile:
        out["compile_step_s"] = first_s
    return out


@torch.no_grad()
def worker_infer(args) -> dict:
    from ge2mst import calibrate, convert
    from ge2mst.analysis.energy import count_operations
    from ge2mst.analysis.energy_stbp import count_stbp_operations

    torch.manual_seed(0)
    x, _ = _images(args.data, "test", args.images)
    model = _build(args.network, 4)
    if hasattr(model, "training_method"):  # Spikformer: BatchNorm statistics of these images
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        model.train()
        model(x)
        model.eval()
        run = model
        report = count_stbp_operations(model, [x])
    else:
        calibrate(model, [x])
        run = convert(model.eval())
        report = count_operations(run, [x])
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    keys = ("sops", "macs", "energy_mj", "ann_macs", "ann_energy_mj", "firing_rate", "sops_upper_bound")
    return {"ms_per_image": 1e3 * statistics.median(times) / x.shape[0], **{k: report[k] for k in keys}}


def train_worker(data: str, network: str, T: int, steps: int, batch: int = 16,
                 compile: bool | str = False) -> dict:
    """One training-cost measurement (`worker_train`) in a fresh process: its JSON result
    (``compile``: True or "model" for the whole model, "quantizers" for the fused quantizers)."""
    cmd = [sys.executable, __file__, "--worker", "train", "--network", network, "--T", str(T),
           "--data", data, "--batch", str(batch), "--steps", str(steps)]
    mode = "model" if compile is True else compile
    done = subprocess.run(cmd + (["--compile", mode] if mode else []), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{network} T={T} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_rounds(data: str, settings: list[tuple], rounds: int, steps: int) -> dict:
    """``settings``: (key, network, T, compile) tuples, each measured by `train_worker` once per
    round, the rounds interleaved; returns key -> the list of results."""
    runs: dict = {}
    for round_ in range(rounds):
        for key, network, T, compiled in settings:
            r = train_worker(data, network, T, steps, compile=compiled)
            runs.setdefault(key, []).append(r)
            print(f"round {round_ + 1} {key}: {r}", file=sys.stderr, flush=True)
    return runs


def median_of(results: list[dict], field: str) -> float:
    return statistics.median(r[field] for r in results)


def device_line() -> str:
    return f"device: {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _spawn(args, network: str, mode: str, T: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--network", network, "--T", str(T),
           "--data", args.data, "--batch", str(args.batch), "--steps", str(args.steps),
           "--images", str(args.images)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{network} T={T} {mode} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for label, rows in results["train"].items():
        Ts = sorted(int(t) for t, r in rows.items() if "step_s" in r)
        if len(Ts) < 2:
            continue
        for ax, key in zip(axes, ("step_s", "peak_mb"), strict=True):
            ax.plot(Ts, [rows[str(t)][key] for t in Ts], "o-", label=label)
    for ax, title in zip(axes, ("training step time (s)", "peak memory added by the steps (MiB)"),
                         strict=True):
        ax.set_xlabel("time steps T")
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8], ["1", "2", "4", "8"])
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"batch {results['batch']} CIFAR-10 images, {results['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--Ts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every training setting this many times, in rounds over all "
                             "settings, and report the median of the rounds' medians (drift of a "
                             "shared machine falls on every setting alike)")
    parser.add_argument("--worker", choices=["train", "infer"])
    parser.add_argument("--network", help=f"one of {sorted(NETWORKS)} or a registered model name")
    parser.add_argument("--compile", nargs="?", const="model", choices=("model", "quantizers"),
                        help="worker: torch.compile the model (alone, or 'model'), or fuse the "
                             "quantizers' kernels ('quantizers')")
    parser.add_argument("--T", type=int, default=4)
    args = parser.parse_args()
    if args.worker:
        fn = worker_train if args.worker == "train" else worker_infer
        print(json.dumps(fn(args)))
        return
    device = (f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    results = {"device": device, "batch": args.batch, "steps": args.steps, "images": args.images,
               "rounds": args.rounds, "train": {}, "infer": {}}
    settings = [(label, T) for label in NETWORKS for T in (args.Ts if label in ALL_T else [4])]
    runs: dict[tuple[str, int], list[dict]] = {key: [] for key in settings}
    for round_ in range(args.rounds):
        for label, T in settings:
            r = _spawn(args, label, "train", T)
            runs[label, T].append(r)
            print(f"round {round_ + 1}/{args.rounds} {label} T={T}: {r}", flush=True)
    for (label, T), rs in runs.items():
        done = [r for r in rs if "step_s" in r]
        row = dict(rs[0])
        if done:
            row.update(step_s=statistics.median(r["step_s"] for r in done),
                       peak_mb=statistics.median(r["peak_mb"] for r in done),
                       step_s_rounds=[r["step_s"] for r in done],
                       peak_mb_rounds=[r["peak_mb"] for r in done])
        results["train"].setdefault(label, {})[str(T)] = row
    for label in NETWORKS:
        results["infer"][label] = _spawn(args, label, "infer", 4)
        print(f"{label} inference T=4: {results['infer'][label]}", flush=True)
        (HERE / "compare.json").write_text(json.dumps(results, indent=1))
    _plot(results, HERE / "compare.png")
    print(to_markdown(results))


def to_markdown(results: dict) -> str:
    ge2 = results["train"]["Ge2mS-T CIFAR Base"]
    Ts = sorted({int(t) for rows in results["train"].values() for t in rows})
    rounds = results.get("rounds", 1)
    lines = [f"Device: {results['device']}; batch {results['batch']}, median of {results['steps']} "
             "steps after one warm-up"
             + (f", median over {rounds} interleaved rounds." if rounds > 1 else "."), "",
             "| network | params | " + " | ".join(f"step s / peak MiB, T = {t}" for t in Ts)
             + " | time / step vs Ge2mS-T at T = 4 | memory vs Ge2mS-T at T = 4 |",
             "|---|---|" + "---|" * (len(Ts) + 2)]
    for label, rows in results["train"].items():
        cells = []
        for t in Ts:
            r = rows.get(str(t))
            cells.append("-" if r is None or "step_s" not in r else f"{r['step_s']:.2f} / {r['peak_mb']:.0f}")
        r4 = rows.get("4", {})
        params = next((r["params"] for r in rows.values() if "params" in r), 0)
        ratio_t = f"{r4['step_s'] / ge2['4']['step_s']:.1f}x" if "step_s" in r4 else "-"
        ratio_m = f"{r4['peak_mb'] / ge2['4']['peak_mb']:.1f}x" if "peak_mb" in r4 else "-"
        lines.append(f"| {label} | {params / 1e6:.2f} M | " + " | ".join(cells)
                     + f" | {ratio_t} | {ratio_m} |")
    lines += ["", "| network (T = 4, untrained, calibrated) | SNN ms / image | SOPs / image | MACs / image "
              "| energy / image (mJ, 45 nm fp32) | ANN MACs | spikes / neuron |",
              "|---|---|---|---|---|---|---|"]
    for label, r in results["infer"].items():
        lines.append(f"| {label} | {r['ms_per_image']:.1f} | {r['sops'] / 1e6:.1f} M | "
                     f"{r['macs'] / 1e6:.2f} M | {r['energy_mj']:.4f} | {r['ann_macs'] / 1e6:.0f} M | "
                     f"{r['firing_rate']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
