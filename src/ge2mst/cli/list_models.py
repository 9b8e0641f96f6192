"""``ge2mst list-models``: the registered models whose names match a pattern."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("list-models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*",
                   help="shell-style pattern of the names, e.g. 'ge2mst_cifar_*' (default: all)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..models import list_models

    names = list_models(args.pattern)
    if names:
        print("\n".join(names))
    return 0
