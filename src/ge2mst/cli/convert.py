"""``ge2mst convert``: a trained checkpoint's spiking network, saved (safetensors + JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from . import _args

#: the outputs of the command, checked before any work (`_args.check_outputs`)
OUTPUTS = {"out": "pair"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a trained checkpoint into its spiking "
                                              "network and save it (safetensors + JSON)")
    p.add_argument("checkpoint", help="the trained .safetensors checkpoint")
    p.add_argument("--out", required=True, help="the spiking network's .safetensors (its "
                   "description goes beside it as .json)")
    _args.add_time_steps(p, help="time steps (default: the checkpoint's)")
    _args.add_groups(p, help="temporal groups G, dividing T (default: the checkpoint's)")
    _args.add_choice(p, "--form", help="ExpG-IF firing form")
    _args.add_choice(p, "--step-mode")
    _args.add_choice(p, "--encoding", help="default: repeat for QCFS models (vanilla IF), else once")
    _args.add_choice(p, "--attention-products")
    p.add_argument("--if-steps", type=_args._positive_int, default=None,
                   help="time steps of vanilla IF neurons (QCFS models; default: the quantizer's L)")
    _args.add_overwrite(p)
    _args.add_json(p, help="print the description as one JSON object")
    p.set_defaults(func=run)


def _output_path(args) -> Path:
    """``--out``; `CheckpointError` unless it names a .safetensors file (and its .json) other
    than the trained checkpoint's."""
    from ..errors import CheckpointError

    out, src = Path(args.out), Path(args.checkpoint)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"--out must end in .safetensors, got {args.out!r}")
    if src.exists() and (out.resolve() == src.resolve()
                         or out.with_suffix(".json").resolve() == src.with_suffix(".json").resolve()):
        raise CheckpointError(f"--out {args.out!r} would overwrite the trained checkpoint "
                              f"{args.checkpoint!r}: choose another file")
    description = out.with_suffix(".json")
    for path, what in ((out, "the file"), (description, "its description " + repr(str(description)))):
        if path.exists() and not args.overwrite:
            raise CheckpointError(f"--out {args.out!r} cannot be written: {what} exists; pass "
                                  "--overwrite to replace it, or choose another name")
    return out


def run(args) -> int:
    from ..io.spiking import convert_checkpoint, save_spiking

    out = _output_path(args)
    snn, description = convert_checkpoint(
        args.checkpoint, T=args.T, G=args.groups, form=args.form, step_mode=args.step_mode,
        encoding=args.encoding, attention_products=args.attention_products,
        if_steps=args.if_steps)
    save_spiking(out, snn, description)
    files = {"weights": str(out), "description": str(out.with_suffix(".json"))}
    if args.json:
        print(json.dumps({**description, "files": files}, indent=2))
    else:
        groups = f", G={description['G']}" if description["G"] is not None else ""
        print(f"converted {description['model']} (T={description['T']}{groups}, "
              f"{', '.join(description['neurons'])}, form {args.form}, {args.step_mode} steps)")
        print(f"wrote {files['weights']} and {files['description']}")
    return 0
