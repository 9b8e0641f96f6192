"""Accuracy after the same training budget: Ge2mS-T (progressive ExpG, one forward pass per image)
against STBP Spikformer (backpropagation through T steps) and a QCFS CNN (vanilla IF), all through
`ge2mst train` on the same data with the same recipe.

    python benchmarks/budget.py --minutes 45                   # the same wall-clock for each
    python benchmarks/budget.py --match ge2mst --only spikformer  # the wall-clock ge2mst's run took
    python benchmarks/budget.py --epochs 8 --train-limit 5000  # the same epochs for each
    python benchmarks/budget.py --report --plot budget.png     # the table and figure of the JSON

A CPU-sized version of the comparison the paper makes on GPUs: ge2mst_cifar_tiny (0.29 M
parameters, T = 4, G = 2), spikformer_tiny widened to D = 96 (0.36 M, T = 4) and, with ``--only``
naming it, ge2mst_cnn_tiny with QCFS quantizers (L = T = 8, vanilla IF neurons after conversion).

With ``--minutes``, each network's epochs are chosen so that its run fills the budget: two short
probe runs (one epoch of ``--probe`` and of 3 x ``--probe`` images) give its images per second and
its fixed cost (start, data, evaluation), and the run then takes the most whole epochs of the
training images that fit (fewer images per epoch when not even two epochs fit); the probes grow
until the larger takes a quarter longer than the smaller. When 20 or more epochs fit, a run of two
whole epochs is timed as well: its second epoch (in its metrics.csv) is the cost of an epoch, the
rest of its wall-clock the fixed cost (decoding and per-epoch evaluation counted as a long run
pays them). The wall-clock of
each run is measured and reported beside the budget. The probes rate Ge2mS-T at about its speed at
p = 1, but its epochs in which the quantizers still mix ClipReLU and ExpG take about 1.6x as long,
so its run overshoots the budget; ``--match KEY`` then gives the next network the wall-clock that
KEY's run in the JSON actually took.

After training, each network's last-epoch weights are scored by `ge2mst eval --mode both` on
``--eval-limit`` test images (not part of the budget): top-1 of the ANN and of the spiking network,
their agreement, energy per image and spikes per neuron counted from the emitted spikes. Writes
benchmarks/budget.json (or ``--json``) and, with ``--plot``, accuracy against energy per image.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from ge2mst.io.checkpoint import load_checkpoint, portable_path

HERE = Path(__file__).resolve().parent
RUNS = {
    "ge2mst": ("Ge2mS-T tiny (progressive ExpG)",
               ["--model", "ge2mst_cifar_tiny", "--T", "4", "--groups", "2"]),
    "spikformer": ("Spikformer tiny D=96 (STBP)",
                   ["--model", "spikformer_tiny", "--T", "4", "--model-arg", "embed_dim=96"]),
    "qcfs": ("QCFS CNN tiny (vanilla IF)",
             ["--model", "ge2mst_cnn_tiny", "--T", "8", "--model-arg", "quantizer=qcfs"]),
}
# The CPU recipe of issue 15 (benchmarks/RESULTS.md), without the weight average: an EMA horizon of
# 1,000 steps is longer than some of these runs.
RECIPE = ["--batch-size", "128", "--lr", "3e-3", "--weight-decay", "0.05", "--warmup-epochs", "1",
          "--schedule", "linear", "--label-smoothing", "0.1", "--crop-padding", "4",
          "--hflip", "alternate"]


def _run(cmd: list[str]) -> tuple[dict, float]:
    """Run one ``ge2mst`` command with ``--json``; its report and its wall-clock seconds."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: trained, but the conversion was not exact
        raise SystemExit(f"{' '.join(cmd[2:6])} ... failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout[done.stdout.index("{"):]), seconds


def _train_command(args, extra: list[str], out: Path, epochs: int, images: int) -> list[str]:
    return [sys.executable, "-m", "ge2mst.cli", "train", "--data", args.data, "--epochs", str(epochs),
            "--train-limit", str(images), "--limit", str(args.limit), "--seed", str(args.seed),
            *RECIPE, "--json", "--no-tensorboard", "--out", str(out), *extra]


def _probe(args, extra: list[str], out: Path, epochs: int, images: int) -> tuple[float, list]:
    """Seconds of one scratch training run of ``epochs`` epochs of ``images`` images, and the
    cumulative seconds its metrics.csv records at the end of each epoch."""
    probe = out / f"probe_{epochs}x{images}"
    shutil.rmtree(probe, ignore_errors=True)  # scratch runs of this script's own
    seconds = _run(_train_command(args, extra, probe, epochs, images))[1]
    with open(probe / "metrics.csv", newline="") as f:
        marks = [float(row["seconds"]) for row in csv.DictReader(f)]
    shutil.rmtree(probe)
    return seconds, marks


def plan_epochs(args, extra: list[str], out: Path) -> dict:
    """Images per second and fixed seconds of one network's runs, from one-epoch probes, and
    the epochs (of how many images) that fill ``args.minutes``."""
    small = args.probe
    t_small = _probe(args, extra, out, 1, small)[0]
    while True:
        large = min(3 * small, args.train_limit)
        t_large = _probe(args, extra, out, 1, large)[0]
        # A fast network trains the probes' images in less time than its start-up's jitter: the
        # difference then says nothing of its speed. Probe with more images until it does (the
        # larger probe becomes the next smaller one).
        if t_large - t_small >= 0.25 * t_small or large >= args.train_limit:
            break
        small, t_small = large, t_large
    if t_large <= t_small:
        raise SystemExit(f"the probes of {large} and {small} images took {t_large:.1f} and "
                         f"{t_small:.1f} s: no training speed to plan from")
    rate = (large - small) / (t_large - t_small)
    fixed = max(0.0, t_small - small / rate)
    budget = args.minutes * 60
    usable = max(0.0, 0.97 * budget - fixed)  # a margin for per-epoch evaluation
    images = args.train_limit
    epochs = math.floor(rate * usable / images)
    plan = {"images_per_s": rate, "fixed_seconds": fixed}
    if epochs >= 20:
        # Cheap epochs: the one-epoch probes count the decoding of each image and the per-epoch
        # evaluation as training time, which a run of many epochs pays once and every epoch.
        # Time two whole epochs instead: the second's seconds in metrics.csv are what an epoch
        # costs (within one process, none of the start-up's jitter), the rest is fixed.
        wall, marks = _probe(args, extra, out, 2, images)
        epoch = marks[1] - marks[0]
        if epoch > 0:
            plan.update(epoch_seconds=epoch, fixed_seconds=max(0.0, wall - 2 * epoch))
            epochs = math.floor((0.99 * budget - plan["fixed_seconds"]) / epoch)
    if epochs < 2:  # not two epochs of the whole set: two epochs of as many images as fit
        epochs, images = 2, max(args.probe, int(rate * usable / 2))
    return {**plan, "epochs": epochs, "train_images": images}


def evaluate(args, out: Path) -> dict:
    """`ge2mst eval --mode both` of a run's last-epoch weights on ``--eval-limit`` test images."""
    cmd = [sys.executable, "-m", "ge2mst.cli", "eval", "--checkpoint", str(out / "last.safetensors"),
           "--data", args.data, "--limit", str(args.eval_limit), "--mode", "both", "--json"]
    report, _ = _run(cmd)
    snn = report["snn"]
    model, _ = load_checkpoint(out / "last.safetensors")
    return {"eval_command": " ".join(_shown(args, cmd, out)), "test_images": report["images"],
            "parameters": sum(p.numel() for p in model.parameters()),
            "ann_top1": report.get("ann", {}).get("top1"), "snn_top1": snn["top1"],
            "agreement": report.get("agreement"), "T": report["T"], "method": report["method"],
            "energy_mj": snn["energy"]["energy_mj"], "sops": snn["energy"]["sops"],
            "macs": snn["energy"]["macs"],
            "spikes_per_neuron": snn["energy"]["spikes_per_neuron"]}


def _shown(args, cmd: list[str], out: Path) -> list[str]:
    """A command as recorded: ``ge2mst ...`` with paths relative to the working directory."""
    paths = {args.data, str(out), str(out / "last.safetensors")}
    return ["ge2mst", *(portable_path(part) if part in paths else part for part in cmd[3:])]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, run in results["runs"].items():
        if "snn_top1" not in run:
            continue
        ax.scatter(run["energy_mj"], 100 * run["snn_top1"], s=40)
        ax.annotate(f"{label}\n{run['epochs']} ep, {run['seconds'] / 60:.0f} min, "
                    f"{run['spikes_per_neuron']:.2f} spikes/neuron",
                    (run["energy_mj"], 100 * run["snn_top1"]), fontsize=7,
                    xytext=(5, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.margins(x=0.4, y=0.15)
    ax.set_xlabel("energy per image, mJ (45 nm fp32, counted from emitted spikes)")
    ax.set_ylabel(f"SNN top-1 on {results['eval_images']} CIFAR-10 test images, %")
    ax.set_title(f"Same training budget, {results['device']}", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results: dict) -> str:
    """The runs of ``results`` as a Markdown table."""
    rows = ["| network | parameters | T | epochs x images | wall-clock | ANN top-1 | SNN top-1 | "
            "agreement | spikes / neuron | SOPs / image | MACs / image | energy / image |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, run in results["runs"].items():
        if "snn_top1" not in run:
            continue
        ann = "-" if run["ann_top1"] is None else f"{100 * run['ann_top1']:.2f}%"
        agree = "-" if run["agreement"] is None else f"{run['agreement']:.4f}"
        params = f"{run['parameters'] / 1e6:.2f} M" if "parameters" in run else "-"
        rows.append(f"| {label} | {params} | {run['T']} | {run['epochs']} x {run['train_images']:,} "
                    f"| {run['seconds'] / 60:.1f} min | {ann} | {100 * run['snn_top1']:.2f}% | "
                    f"{agree} | {run['spikes_per_neuron']:.3f} | {run['sops'] / 1e6:.2f} M | "
                    f"{run['macs'] / 1e6:.2f} M | {1000 * run['energy_mj']:.1f} uJ |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared/data/cifar10-jpg.tar.gz"))
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="the same wall-clock for each network")
    budget.add_argument("--match", choices=list(RUNS),
                        help="the wall-clock that this network's run in --json took")
    budget.add_argument("--epochs", type=int, help="the same epochs for each network")
    parser.add_argument("--train-limit", type=int, default=50000, help="training images per epoch")
    parser.add_argument("--limit", type=int, default=1000, help="test images scored after each epoch")
    parser.add_argument("--eval-limit", type=int, default=5000, help="test images of the final eval")
    parser.add_argument("--probe", type=int, default=1280, help="images of the smaller probe run")
    parser.add_argument("--only", nargs="+", choices=list(RUNS), default=["ge2mst", "spikformer"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/budget")
    parser.add_argument("--json", default=str(HERE / "budget.json"))
    parser.add_argument("--plot", help="write accuracy against energy per image as a PNG")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: print the runs of --json as a Markdown table (and --plot)")
    args = parser.parse_args()
    if args.report:
        results = json.loads(Path(args.json).read_text())
        print(table(results))
        if args.plot:
            plot(results, Path(args.plot))
        return
    if not (args.minutes or args.epochs or args.match):
        parser.error("give --minutes, --match or --epochs (or --report)")
    results = {"device": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch "
                         f"{torch.__version__}", "recipe": " ".join(RECIPE),
               "test_images_per_epoch": args.limit, "eval_images": args.eval_limit,
               "seed": args.seed, "runs": {}}
    earlier = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else {}
    if all(earlier.get(k) == results[k] for k in ("recipe", "test_images_per_epoch", "eval_images",
                                                  "seed")):
        results["runs"] = earlier.get("runs", {})  # the same recipe: add to the runs already there
    budget = f"{args.epochs} epochs" if args.epochs else f"{args.minutes} min"
    if args.match:
        matched = results["runs"].get(RUNS[args.match][0])
        if matched is None:
            parser.error(f"--match {args.match}: no run of it in {args.json} with this recipe")
        args.minutes = matched["seconds"] / 60
        budget = f"{args.minutes:.1f} min, the wall-clock of {RUNS[args.match][0]}"
    for key in args.only:
        label, extra = RUNS[key]
        out = Path(args.out) / key
        if args.minutes:
            plan = plan_epochs(args, extra, out)
            epochs, images = plan["epochs"], plan["train_images"]
        else:
            plan, epochs, images = {}, args.epochs, args.train_limit
        cmd = _train_command(args, extra, out / "run", epochs, images)
        report, seconds = _run(cmd)
        run = {"budget": budget, "command": " ".join(_shown(args, cmd, out / "run")),
               "seconds": seconds,
               "epochs": epochs, "train_images": images, **{f"plan_{k}": v for k, v in plan.items()},
               "last_epoch": report["last_epoch"]}
        run.update(evaluate(args, out / "run"))
        results["runs"][label] = run
        print(f"{label}: {epochs} epochs of {images} images in {seconds:.0f} s; SNN top-1 "
              f"{run['snn_top1']:.4f} on {run['test_images']} images, {run['energy_mj']:.4f} mJ",
              flush=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if args.plot:
        plot(results, Path(args.plot))


if __name__ == "__main__":
    main()
