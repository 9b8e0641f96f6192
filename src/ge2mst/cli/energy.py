"""``ge2mst energy``: SOPs, MACs, spikes and energy per image, counted from the spikes that the
converted model (or an STBP baseline, its own spiking network) emits."""

from __future__ import annotations

import json
import sys

from ..conversion.kinds import is_stbp
from . import _args
from ._runs import batch_images, prepare_run

#: the outputs of the command, checked before any work (`_args.check_outputs`)
OUTPUTS = {"plot": "figure", "markdown": "file"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("energy", help="count SOPs, MACs, spikes and energy per image from "
                                             "the spikes a converted model emits")
    _args.add_run_args(p, limit=64)
    _args.add_choice(p, "--form", help="ExpG-IF firing form (changes the neuron comparisons, not the spikes)")
    _args.add_choice(p, "--preset", help="energy per accumulate / per MAC (default: 45nm-fp32, 0.9 / 4.6 pJ)")
    p.add_argument("--plot", default=None, help="write a PNG: cumulative SOPs and upper bound, "
                   "firing rate per layer")
    p.add_argument("--markdown", default=None, help="write the per-layer table as markdown")
    _args.add_overwrite(p)
    _args.add_json(p, help="print one JSON object")
    p.set_defaults(func=run)


def _counts(model, images: list, form: str, preset: str) -> dict:
    """T and the operation counts of ``model`` on ``images``."""
    if is_stbp(model):  # already its own spiking network
        from ..analysis.energy_stbp import count_stbp_operations

        return {"T": model.T, **count_stbp_operations(model.eval(), images, preset=preset)}
    from ..analysis.energy import count_operations
    from ..conversion.converter import convert

    snn = convert(model.eval(), form=form)
    return {"T": snn.T, **count_operations(snn, images, preset=preset)}


def run(args) -> int:
    from ..analysis.energy import plot_report, to_markdown

    model, batches, header = prepare_run(args)
    report = {**header, **_counts(model, batch_images(batches), args.form, args.preset)}
    if args.plot:
        state = "" if report["trained"] else " (untrained)"
        plot_report(report, args.plot, title=f"{args.model}{state} on {report['images']} images "
                                               f"of {args.data}")
        report["plot"] = args.plot
        print(f"wrote {args.plot}", file=sys.stderr)
    table = to_markdown(report)
    if args.markdown:
        from ..io.checkpoint import atomic_write_bytes

        atomic_write_bytes(args.markdown, (table + "\n").encode())
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table)
    return 0
