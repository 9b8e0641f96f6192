"""File helpers shared by every layer (a leaf: imports nothing of ge2mst)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def progress(items: Iterable | None, desc: str, enabled: bool, total: int | None = None,
             unit: str = "it", **options) -> Iterable | None:
    """``items`` behind a tqdm bar (cleared when done) when ``enabled`` and tqdm is installed,
    else ``items`` itself; ``total`` is the bar's length (default ``len(items)`` where defined).
    ``items=None`` gives a bar to advance by hand (or None); ``options`` go to tqdm (e.g.
    ``disable=None``: no bar when the output is not a terminal)."""
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, total=total, unit=unit, leave=False, **options)


__all__ = ["progress", "sha256_of"]
