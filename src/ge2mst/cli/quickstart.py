"""``ge2mst quickstart``: train a small ExpG network, convert it, verify it and report its energy.

The job itself is `ge2mst.training.quickstart.run_quickstart` (re-exported here under its old
name); this module declares the command and prints the summary."""

from __future__ import annotations

import json

from ..training.quickstart import run_quickstart
from . import _args

__all__ = ["NO_PLOT", "add_parser", "run", "run_quickstart"]

#: what the summary says when matplotlib is missing
NO_PLOT = "no report.png (matplotlib is not installed: pip install matplotlib, or -e \".[plot]\")"

#: the outputs of the command, checked before any work (`_args.check_outputs`)
OUTPUTS = {"out": "folder"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("quickstart", help="train a small ExpG network, convert it, verify "
                              "it and report its energy (the embedded default runs in minutes on "
                              "a CPU)")
    _args.add_data_args(p)
    p.add_argument("--model", default="ge2mst_cnn_tiny", help="registered model (ge2mst list-models)")
    p.add_argument("--width", type=_args._positive_int, default=16, help="base channel width")
    _args.add_time_steps(p, default=4, help="time steps of the spiking network")
    _args.add_groups(p, default=2, help="temporal groups G, dividing T")
    p.add_argument("--epochs", type=_args._positive_int, default=30, help="training epochs")
    p.add_argument("--batch-size", type=_args._positive_int, default=64, help="images per batch")
    p.add_argument("--lr", type=_args._positive_float, default=3e-3, help="peak AdamW learning rate")
    p.add_argument("--train-limit", type=_args._positive_int, default=None,
                   help="use this many training images (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data subset, weights and order")
    p.add_argument("--out", default="runs/quickstart",
                   help="folder for report.json, report.png and the checkpoint")
    _args.add_json(p, help="print the report as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    report = run_quickstart(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report)
    return 0 if report["exact"] else 1


def _print_summary(report: dict) -> None:
    v, e = report["verify"], report["energy"]
    print(f"model            {report['model']}  (T={report['T']}, G={report['groups']}, "
          f"{report['params']:,} parameters)")
    print(f"data             {report['data']}: {report['train_images']} train / "
          f"{report['test_images']} held-out images")
    print(f"training         {report['epochs']} epochs in {report['train_seconds']:.1f} s "
          f"(seed {report['seed']})")
    print(f"accuracy         ANN {v['ann_accuracy']:.4f}   SNN {v['snn_accuracy']:.4f}")
    print(f"exactness        max |SNN - ANN| = {v['max_abs_diff']:.3g} (rel {v['max_rel_diff']:.3g}),"
          f" {v['code_mismatches']} of {v['codes_compared']:,} neuron codes differ, "
          f"prediction agreement {v['prediction_agreement']:.4f}")
    print(f"spikes           {v['mean_spikes_per_neuron']:.3f} per neuron (max "
          f"{v['max_spikes_per_neuron']}, cap G = {report['groups']}), "
          f"{v['illegal_patterns']} illegal patterns")
    print(f"operations/image {e['sops']:,.0f} SOPs + {e['macs']:,.0f} MACs "
          f"(SOP upper bound {e['sops_upper_bound']:,.0f})")
    print(f"energy/image     SNN {e['energy_mj'] * 1e3:.4f} uJ vs ANN {e['ann_energy_mj'] * 1e3:.4f} uJ "
          f"({e['preset']}: {e['energy_ratio']:.2f}x less)")
    print(f"saved            {report['files']['report']}, {report['files'].get('plot', NO_PLOT)}, "
          f"{report['files']['checkpoint']}")
    print("verdict          " + ("EXACT: the spiking network reproduces the ANN on every image"
                                 if report["exact"] else "NOT EXACT: see report.json"))
    for line in shipped_hint():
        print(line)


def shipped_hint() -> list[str]:
    """Where to go next: the trained models that ship with ge2mst, one command each (nothing
    when none ships)."""
    from ..models.pretrained import shipped_weights

    lines = []
    for name, entry in sorted(shipped_weights().items()):
        top1, images = entry.get("snn_top1"), entry.get("test_images")
        what = f" (SNN top-1 {top1:.2%} on {images:,} test images)" if top1 and images else ""
        lines.append(f"next             a trained {name} ships with ge2mst{what}: "
                     f"ge2mst eval --model {name} --pretrained --data {entry.get('data', 'DATA')}")
    return lines
