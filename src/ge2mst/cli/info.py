"""``ge2mst info``: parameters, MACs, SOPs upper bound, tokens and attention groups per stage of
a registered model (`ge2mst.analysis.info.describe_model`)."""

from __future__ import annotations

import json

from . import _args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="parameters, MACs, SOPs upper bound, tokens and "
                                           "attention groups per stage of a model")
    p.add_argument("--model", default="ge2mst_small", help="registered model (ge2mst list-models)")
    p.add_argument("--img-size", type=_args._positive_int, default=None,
                   help="input side (default: the model's, e.g. 224 or 32)")
    p.add_argument("--in-chans", type=_args._positive_int, default=3, help="input channels")
    p.add_argument("--num-classes", type=_args._positive_int, default=None,
                   help="classes of the head (default: the model's)")
    _args.add_time_steps(p, help="time steps (default: 4)")
    _args.add_groups(p, help="temporal groups of ExpG models (default: 2)")
    _args.add_json(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.info import describe_model, format_info

    info = describe_model(args.model, img_size=args.img_size, in_chans=args.in_chans,
                          num_classes=args.num_classes, T=args.T, G=args.groups)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
