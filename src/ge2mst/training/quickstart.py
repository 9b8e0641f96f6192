"""The main job, ``ge2mst quickstart``: train a small ExpG network, convert it, verify exactness,
count its energy, and save the report, its plot and the checkpoint in one folder."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..analysis.energy import EVENT_CLASSES, count_operations
from ..analysis.plots import figure, label, readable_layers
from ..analysis.verification import is_exact, verify
from ..conversion.calibration import calibrate
from ..conversion.converter import convert
from ..data import CROP_RATIO, load_dataset, normalize
from ..io.checkpoint import atomic_write_bytes, save_checkpoint
from ..models import create_model
from .trainer import TrainConfig, accuracy, train


def run_quickstart(args) -> dict:
    """Train, convert, verify and count as ``args`` (the options of ``ge2mst quickstart``) ask;
    writes report.json (and report.png with matplotlib) and the checkpoint under ``args.out``."""
    torch.manual_seed(args.seed)
    out = Path(args.out)
    common = dict(seed=args.seed, cache_dir=args.data_dir, progress=not args.json,
                  img_size=getattr(args, "img_size", None),
                  crop_ratio=getattr(args, "crop_ratio", CROP_RATIO))
    train_set = load_dataset(args.data, split="train", limit=args.train_limit, **common)
    test_set = load_dataset(args.data, split=args.split, limit=args.limit, **common)
    mean, std = train_set.channel_stats()
    x_train = normalize(train_set.images, mean, std)
    x_test = normalize(test_set.images, mean, std)
    model = create_model(args.model, num_classes=train_set.num_classes,
                         in_chans=train_set.in_chans, T=args.T, G=args.groups, width=args.width)
    calibrate(model, [x_train[:256]], seed=args.seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      hflip=train_set.in_chans == 3)
    start = time.perf_counter()
    history = train(model, x_train, train_set.labels, cfg, progress=not args.json)
    train_seconds = time.perf_counter() - start
    ann_acc = accuracy(model, x_test, test_set.labels)
    batches = [(x_test[i:i + 128], test_set.labels[i:i + 128]) for i in range(0, len(test_set), 128)]
    check = verify(model, batches)
    snn = convert(model)
    energy = count_operations(snn, [x for x, _ in batches])
    out.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(out / f"{args.model}.safetensors", model, mean=mean.tolist(),
                           std=std.tolist(), data=args.data, seed=args.seed, train=asdict(cfg))
    report = {
        "model": args.model, "T": args.T, "groups": args.groups,
        "params": sum(p.numel() for p in model.parameters()),
        "data": args.data, "train_images": len(train_set), "test_images": len(test_set),
        "image_size": list(train_set.image_size),
        "epochs": args.epochs, "seed": args.seed, "train_seconds": train_seconds,
        "device": f"cpu ({platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads)",
        "ann_accuracy_float32": ann_acc,
        "history": history, "verify": check, "energy": energy,
        "exact": is_exact(check),
        "files": {"checkpoint": str(ckpt), "report": str(out / "report.json")},
    }
    plot = _plot(report, out / "report.png")
    if plot:
        report["files"]["plot"] = str(plot)
    atomic_write_bytes(out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    return report


def _plot(report: dict, path: Path) -> Path | None:
    try:
        import matplotlib  # noqa: F401 - optional: no plot without it
    except ImportError:
        return None
    with figure(path, 3, (14, 4)) as (fig, axes):
        draw_report(report, fig, axes)
    return path


#: the middle panel's height over its tallest bar or marker: the top of the panel is left to the
#: legend, which then covers no bar and no marker
LEGEND_HEADROOM = 1.7


def draw_report(report: dict, fig, axes) -> None:
    """The quickstart figure on ``axes`` (three panels): training, operations per layer, energy."""
    hist = report["history"]
    ax = axes[0]
    ax.plot([h["epoch"] for h in hist], [h["train_accuracy"] for h in hist], label="train acc")
    ax.plot([h["epoch"] for h in hist], [h["p"] for h in hist], "--", label="ExpG mix p")
    ax.axhline(report["verify"]["snn_accuracy"], color="k", lw=0.8,
               label=f"held-out SNN = ANN {report['verify']['snn_accuracy']:.3f}")
    label(ax, "epoch", "fraction (top-1; mixing p)", "progressive ExpG training", 8)
    rows = report["energy"]["per_layer"]
    names = readable_layers([r["name"] for r in rows])
    shown = dict(zip((r["name"] for r in rows), names, strict=True))
    ax = axes[1]
    ax.bar(names, [r["sops"] for r in rows], label="SOPs (spike events x fan-out)")
    ax.bar(names, [r["macs"] for r in rows], bottom=[r["sops"] for r in rows],
           label="MACs (real-valued input)")
    spiking = [r for r in rows if r["input"] in EVENT_CLASSES]
    ax.scatter([shown[r["name"]] for r in spiking], [r["sops_upper_bound"] for r in spiking],
               marker="_", s=600, color="k", zorder=3,
               label="SOP upper bound (every neuron at G spikes)")
    tallest = max([r["sops"] + r["macs"] for r in rows] + [r["sops_upper_bound"] for r in spiking])
    ax.set_ylim(0, LEGEND_HEADROOM * tallest)
    ax.set_xlabel("layer")
    ax.set_ylabel("operations per image")
    ax.set_title("operations per layer")
    ax.legend(fontsize=8, loc="upper left")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax = axes[2]
    e = report["energy"]
    ax.bar(["SNN", "ANN"], [e["energy_mj"] * 1e3, e["ann_energy_mj"] * 1e3], color=["C2", "C7"])
    ax.set_ylabel(f"energy per image (uJ, {e['preset']})")
    ax.set_title(f"energy: {e['energy_ratio']:.2f}x less than the ANN")
    fig.suptitle(f"{report['model']}  T={report['T']} G={report['groups']}: exact = {report['exact']}")
