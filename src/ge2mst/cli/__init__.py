"""The ``ge2mst`` command line: one module per command (`verify`, `energy`, `evaluate` for
``eval``, `convert`, `effdim`, `train`, `quickstart`, `info`, `list_models` for ``list-models``),
each with ``add_parser(subparsers)`` (its options, ``set_defaults(func=run)``) and
``run(args) -> int``; the work itself is done by the library. `_args` holds the argument types and
the option groups several commands share, `_runs` the model and data of a run.

Every user error (bad argument, missing data, corrupt checkpoint, impossible T/G) is printed as one
line ``ge2mst: error: ...`` on standard error with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import inspect
import sys

from .._version import __version__
from ..errors import Ge2msError
from . import convert, effdim, energy, evaluate, info, list_models, quickstart, train, verify
from ._args import _Parser, check_outputs
from ._config import expand_config
from ._runs import load_model_for, prepare_run

#: the command modules, in the order of ``ge2mst --help``
COMMANDS = (verify, energy, evaluate, convert, effdim, train, quickstart, info, list_models)

__all__ = ["COMMANDS", "build_parser", "load_model_for", "main", "prepare_run"]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ge2mst",
        description="Ge2mS-T: ExpG spiking networks, exactly lossless conversion, energy counts.")
    parser.add_argument("--version", action="version", version=f"ge2mst {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        argv = expand_config(list(sys.argv[1:] if argv is None else argv), parser)
    except Ge2msError as exc:
        print(f"ge2mst: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        check_outputs(args, getattr(inspect.getmodule(args.func), "OUTPUTS", {}))
        return args.func(args)
    except Ge2msError as exc:
        print(f"ge2mst: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ge2mst: interrupted{_after_interrupt(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0


def _after_interrupt(args) -> str:
    """What a user can do after Ctrl-C: a training run resumes from its last save."""
    from pathlib import Path

    from ..training.run import STATE

    if getattr(args, "command", None) != "train":
        return ""
    if not (Path(args.out) / STATE).is_file():
        return (f"; nothing of the run was saved yet ({args.out!r} is written at the end of each "
                "epoch, or every --save-every STEPS steps)")
    return (f"; {args.out!r} keeps the last saved state: run the same command with --resume to "
            "continue it (--save-every STEPS saves within epochs too)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
