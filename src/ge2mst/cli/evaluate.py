"""``ge2mst eval``: top-1/top-5 accuracy, images/s and energy of a checkpoint's ANN and of its
spiking network (or of a spiking network written by ``ge2mst convert``)."""

from __future__ import annotations

import json
import sys

from ..analysis.evaluation import MODES, TTAS
from . import _args
from ._runs import emit, prepare_run, prepare_spiking

#: what a user waiting for the default, exact evaluation is told
SLOW_PATH = ("the spiking network runs event by event in float64 (the exact comparison with "
             "the ANN, and the energy counted from its spikes); on a CPU that takes minutes per "
             "thousand images. For the accuracy alone, --mode snn --step-mode collapsed --dtype "
             "float32 --no-energy gives the predictions of the BatchNorm-folded ANN bit for bit, "
             "many times faster")

#: the outputs of the command, checked before any work (`_args.check_outputs`)
OUTPUTS = {"out": "file"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="top-1/top-5 accuracy, images/s and energy of a "
                                           "checkpoint's ANN and of its spiking network")
    _args.add_run_args(p, limit=None)
    p.add_argument("--mode", choices=MODES, default=None,
                   help="run the trained network (ann), its converted spiking network (snn) or "
                        "both and compare them (default: both; snn for a 'ge2mst convert' file)")
    _args.add_choice(p, "--form", help="ExpG-IF firing form of the conversion")
    _args.add_choice(p, "--encoding", help="image as the input current of step 1 (once) or x / T at every "
                               "step (repeat); default: repeat for QCFS models, else once")
    _args.add_choice(p, "--dtype", help="arithmetic of both modes (float64: the exact comparison)")
    _args.add_choice(p, "--step-mode", help="spiking network layer by layer over T steps of spike trains "
                                "(event), or with the synapses summed over time in one pass "
                                "(collapsed: same spikes and outputs; ExpG models only)")
    _args.add_choice(p, "--preset", help="energy per accumulate / per MAC (default: 45nm-fp32)")
    p.add_argument("--no-energy", dest="energy", action="store_false",
                   help="skip the operation and energy counts (counted during the timed pass in "
                        "event mode, whose images/s then include the counting; a second, "
                        "event-mode pass with --step-mode collapsed)")
    p.add_argument("--tta", choices=tuple(TTAS), default="none",
                   help="test-time augmentation: flip classifies each image by the summed logits of "
                        "itself and its mirror image, in both modes, at twice the spiking "
                        "network's energy per classification (reported; default: none, one view)")
    _args.add_overwrite(p)
    _args.add_json(p, help="print one JSON object")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.evaluation import evaluate, format_report
    from ..io.spiking import is_spiking_file

    if args.checkpoint and is_spiking_file(args.checkpoint):
        model, batches, header = prepare_spiking(args)
        mode = args.mode or "snn"
    else:
        model, batches, header = prepare_run(args)
        mode = args.mode or "both"
    if mode != "ann" and args.step_mode == "event" and args.dtype == "float64" and not args.json:
        print(f"note: {SLOW_PATH}", file=sys.stderr)
    report = evaluate(model, batches, mode=mode, form=args.form, encoding=args.encoding,
                      dtype=args.dtype, preset=args.preset, energy=args.energy,
                      step_mode=args.step_mode, progress=not args.json, tta=args.tta)
    report = {**header, **report}
    if args.out:
        from ..io.checkpoint import atomic_write_bytes

        atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
        print(f"wrote {args.out}", file=sys.stderr)
    return emit(args, report, format_report)
