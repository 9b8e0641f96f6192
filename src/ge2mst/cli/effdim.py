"""``ge2mst effdim``: effective dimension of pixels and attention inputs, the error against
(T, G), and a fit of the spike constant C (`ge2mst.analysis.effdim.effdim_report`)."""

from __future__ import annotations

import sys

from ..errors import ConfigError
from . import _args
from ._runs import batch_images, emit, prepare_run

#: the outputs of the command, checked before any work (`_args.check_outputs`)
OUTPUTS = {"plot": "figure"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("effdim", help="effective dimension of pixels and attention inputs, "
                                             "the error against (T, G), and a fit of the spike "
                                             "constant C")
    _args.add_run_args(p, limit=256)
    p.add_argument("--layers", nargs="*", default=None, help="also measure these named layers")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap draws (default: 100)")
    p.add_argument("--settings", nargs="*", default=["1:1", "2:1", "2:2", "4:1", "4:2", "4:4",
                                                     "8:2", "8:4"],
                   help="T:G pairs of the error curve (default: 1:1 2:1 2:2 4:1 4:2 4:4 8:2 8:4)")
    p.add_argument("--curve-images", type=_args._positive_int, default=128,
                   help="images of the error-against-(T, G) curve")
    p.add_argument("--target-epsilon", type=float, default=0.05,
                   help="error target of the time-step advice (default: 0.05)")
    p.add_argument("--plot", default=None, help="write a PNG")
    _args.add_overwrite(p)
    _args.add_json(p)
    p.set_defaults(func=run)


def _settings(texts: list[str]) -> list[tuple[int, int]]:
    """``--settings`` as (T, G) pairs; `ConfigError` for a text that is not ``T:G``."""
    out = []
    for text in texts:
        try:
            T, G = (int(v) for v in text.split(":"))
        except ValueError:
            raise ConfigError(f"settings are T:G pairs such as 4:2, got {text!r}") from None
        out.append((T, G))
    return out


def run(args) -> int:
    import torch

    from ..analysis.effdim import effdim_report, format_effdim

    settings = _settings(args.settings)
    model, batches, header = prepare_run(args)
    report = effdim_report(model, torch.cat(batch_images(batches)), settings, layers=args.layers,
                           bootstrap=args.bootstrap, curve_images=args.curve_images,
                           target_epsilon=args.target_epsilon, seed=args.seed, plot=args.plot)
    report = {**header, **report}
    if args.plot:
        print(f"wrote {args.plot}", file=sys.stderr)
    return emit(args, report, format_effdim)
