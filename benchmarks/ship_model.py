"""Ship a trained run as package data: ``create_model(NAME, pretrained=True)`` then loads it.

    python benchmarks/ship_model.py --run runs/cifar_mini --name ge2mst_cifar_mini \\
        --eval runs/cifar_mini/eval.json --verify runs/cifar_mini/verify.json \\
        --command "ge2mst train ..." [--eval-command "ge2mst eval ..."]

Copies the run's ``last.safetensors`` (the last epoch, never the best) to
``src/ge2mst/weights/NAME.safetensors``, writes its model card ``NAME.md`` (command, commit,
data sha256, seed, device, wall time, the metrics.csv summary, last-epoch ANN and SNN accuracy,
exactness and energy from the ``ge2mst eval --json`` and ``ge2mst verify --json`` reports) and
records the file's sha256 in ``index.json``. A run that went on over several sittings (``--resume``,
perhaps on other machines) lists them, from the ``resumed`` record of its ``trainer.pt``;
``--plot FILE`` draws its held-out accuracy against the hours of training.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ge2mst.io.checkpoint import read_checkpoint  # noqa: E402
from ge2mst.models.pretrained import sha256_of  # noqa: E402

WEIGHTS = ROOT / "src" / "ge2mst" / "weights"


def sittings(run: dict, count: int | None = None, extensions: list | None = None) -> list[str]:
    """The card's lines on a resumed run: each start of the process (the first, then each
    ``--resume``; a sitting may hold several), the number of sittings when given, and each change
    of the planned length (``--epochs`` on resumption)."""
    resumed = run.get("resumed", [])
    starts = 1 + len(resumed)
    lines = ["", f"## Sittings ({count})" if count else f"## Starts of the run ({starts})", "",
             f"{starts} starts of the training process" + (f" over {count} sittings" if count else "")
             + " (the first, then each `--resume`); the hours count the training up to the last save "
             "before each stop.", "",
             "| start | started (UTC) | from step | hours before it | CPU | commit | compile |",
             "|---|---|---|---|---|---|---|",
             f"| 1 | {run.get('started')} | 0 | 0.00 | {run.get('cpu', run.get('device_name'))} | "
             f"{str(run.get('commit'))[:7]} | off |"]
    for i, r in enumerate(resumed, 2):
        lines.append(f"| {i} | {r.get('started')} | {r.get('at_step')} | "
                     f"{float(r.get('at_seconds') or 0) / 3600:.2f} | {r.get('cpu')} | "
                     f"{str(r.get('commit'))[:7]} | {r.get('compile')} |")
    for e in extensions or []:
        lines += ["", f"- planned length changed at epoch {e.get('at_epoch')} (step {e.get('at_step')}): "
                      f"{e.get('from_epochs')} → {e.get('to_epochs')} epochs (the learning rate follows "
                      "the new length's schedule from there on; the mixing ramp keeps the first plan's)"]
    return lines


def plot_curve(rows: list[dict], name: str, path: Path, device: str) -> None:
    """Held-out and training accuracy against the hours of training, p on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [float(r["seconds"]) / 3600 for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(hours, [100 * float(r["test_accuracy"]) for r in rows], "o-", ms=3,
            label="held-out top-1 (ANN = SNN at p = 1)")
    ax.plot(hours, [100 * float(r["train_accuracy"]) for r in rows], "-", alpha=0.6,
            label="training top-1 (augmented, running)")
    ax.axhline(90, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"hours of training ({device})")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(max(0, min(100 * float(r["test_accuracy"]) for r in rows) - 5), 100)
    twin = ax.twinx()
    twin.plot(hours, [float(r["p"]) for r in rows], color="tab:green", lw=0.8, alpha=0.5)
    twin.set_ylabel("mixing fraction p", color="tab:green")
    twin.set_ylim(0, 1.05)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{name}: accuracy against training time", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def card(name: str, config: dict, rows: list[dict], ev: dict, ver: dict | None, args,
         data_sha: str | None, params: int, run: dict | None = None,
         extensions: list | None = None) -> str:
    snn, ann = ev.get("snn", {}), ev.get("ann", {})
    energy = snn.get("energy", {})
    last = rows[-1]
    hours = float(last["seconds"]) / 3600 if last.get("seconds") else None
    lines = [
        f"# {name}: model card",
        "",
        f"A Ge²mS-T network for CIFAR-10 (32×32), {params / 1e6:.2f} M parameters, T = "
        f"{ev.get('T')}, G = {ev.get('groups')}, trained with ge2mst's progressive ClipReLU → ExpG "
        "schedule and converted to ExpG-IF neurons. These are the weights of the **last epoch**.",
        "",
        "```python",
        f'model = ge2mst.create_model("{name}", pretrained=True)   # mean/std: model.pretrained_cfg',
        "```",
        "",
        "## Results (CIFAR-10 JPEG test split of ../shared/data, "
        f"{ev.get('images')} images)",
        "",
        "| | value |",
        "|---|---|",
        f"| SNN top-1 (`ge2mst eval`, event mode, {ev.get('dtype')}) | {snn.get('top1', 0):.2%} |",
        f"| ANN top-1 | {ann.get('top1', 0):.2%} |",
        f"| prediction agreement SNN = ANN | {ev.get('agreement')} |",
        f"| largest logit difference | {ev.get('max_abs_diff')} |",
    ]
    if ver is not None:
        lines += [f"| `ge2mst verify --strict` exact | {ver.get('exact')} ({ver.get('code_mismatches')} of "
                  f"{ver.get('codes_compared')} neuron codes differ) |"]
    if energy:
        lines += [f"| energy per image ({energy.get('preset')}) | {energy.get('energy_mj', 0) * 1e3:.3f} µJ "
                  f"(ANN {energy.get('ann_energy_mj', 0) * 1e3:.3f} µJ, "
                  f"{energy.get('energy_ratio', 0):.2f}× less) |",
                  f"| spikes per neuron | {energy.get('spikes_per_neuron', 0):.3f} |",
                  f"| SOPs / MACs per image | {energy.get('sops', 0) / 1e6:.2f} M / "
                  f"{energy.get('macs', 0) / 1e6:.2f} M |"]
    lines += [
        "",
        "## How it was made",
        "",
        f"- command (from a fresh clone, after `pip install -e .`): `{args.command}`",
        f"- evaluated with: `{args.eval_command}`" if args.eval_command else "",
        f"- commit {config.get('commit')}, ge2mst {config.get('ge2mst_version')}, "
        f"torch {config.get('torch')}",
        f"- device: {config.get('device_name')}; wall time {hours:.2f} h over all sittings "
        "(`--resume`)" if hours is not None else f"- device: {config.get('device_name')}",
        f"- data: `{config.get('data')}`" + (f", sha256 {data_sha}" if data_sha else ""),
        f"- seed {config.get('seed')}, {config.get('epoch')} epochs; training settings: "
        f"`{json.dumps(config.get('training', {}), sort_keys=True)}`",
        f"- weights sha256 {sha256_of(WEIGHTS / f'{name}.safetensors')}",
        *(sittings(run, args.sittings, extensions) if run else []),
        "",
        "## Training curve (metrics.csv)",
        "",
        "| epoch | loss | train top-1 | test top-1 (ANN, held-out subset) | p | lr | hours |",
        "|---|---|---|---|---|---|---|",
    ]
    step = max(1, len(rows) // 12)
    for r in rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else []):
        lines.append(f"| {r['epoch']} | {float(r['loss']):.4f} | {float(r['train_accuracy']):.2%} | "
                     f"{float(r['test_accuracy']):.2%} | {float(r['p']):.2f} | {float(r['lr']):.2e} | "
                     f"{float(r['seconds']) / 3600:.2f} |")
    return "\n".join(line for line in lines if line is not None) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True, help="the ge2mst train run folder")
    parser.add_argument("--name", required=True, help="the registered model name")
    parser.add_argument("--eval", required=True, help="ge2mst eval --json report on the test split")
    parser.add_argument("--verify", help="ge2mst verify --json report")
    parser.add_argument("--command", required=True, help="the ge2mst train command of the run")
    parser.add_argument("--eval-command", default=None)
    parser.add_argument("--plot", help="write the accuracy-against-hours curve to this PNG")
    parser.add_argument("--sittings", type=int, default=None,
                        help="how many sittings the run took (its starts are on record; a sitting may "
                             "hold several)")
    parser.add_argument("--data-name", default="cifar10",
                        help="what --data to give ge2mst eval for this model (quickstart's hint)")
    args = parser.parse_args()
    run = Path(args.run)
    tensors, config = read_checkpoint(run / "last.safetensors")
    if config.get("model") != args.name:
        raise SystemExit(f"the run trained {config.get('model')!r}, not {args.name!r}")
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    ev = json.loads(Path(args.eval).read_text())
    ver = json.loads(Path(args.verify).read_text()) if args.verify else None
    data = Path(config.get("data", ""))
    data_sha = sha256_of(data) if data.is_file() else None
    WEIGHTS.mkdir(exist_ok=True)
    shutil.copy(run / "last.safetensors", WEIGHTS / f"{args.name}.safetensors")
    params = sum(t.numel() for k, t in tensors.items() if not k.endswith(("running_mean", "running_var",
                                                                          "num_batches_tracked")))
    state = run / "trainer.pt"
    saved = torch.load(state, map_location="cpu", weights_only=True) if state.is_file() else {}
    record = saved.get("run")
    extensions = saved.get("trainer", {}).get("extensions", [])
    text = card(args.name, config, rows, ev, ver, args, data_sha, params, record, extensions)
    if args.plot:
        plot_curve(rows, args.name, Path(args.plot),
                   (record or {}).get("cpu") or str(config.get("device_name")))
    (WEIGHTS / f"{args.name}.md").write_text(text)
    index_path = WEIGHTS / "index.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    index[args.name] = {"file": f"{args.name}.safetensors", "card": f"{args.name}.md",
                        "sha256": sha256_of(WEIGHTS / f"{args.name}.safetensors"),
                        "snn_top1": ev.get("snn", {}).get("top1"), "test_images": ev.get("images"),
                        "data_sha256": data_sha, "data": args.data_name}
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    print(text)


if __name__ == "__main__":
    main()
