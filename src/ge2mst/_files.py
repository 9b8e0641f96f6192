"""File helpers shared by every layer (a leaf: imports nothing of ge2mst)."""

from __future__ import annotations

import hashlib
import os
import sys
import time
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


class LineProgress:
    """Progress as plain lines, for output that is not a terminal (logs, CI, nohup), where a tqdm
    bar cannot draw: the tqdm calls a training loop makes (``update``, ``set_postfix``,
    ``close``), and a line at most every ``interval`` seconds (and at the end)."""

    def __init__(self, total: int, desc: str, unit: str = "step", interval: float = 30.0,
                 stream=None) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.stream = stream
        self.n, self.shown, self.postfix = 0, -1, {}
        self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.n != self.shown:
            self._line()

    def _line(self) -> None:
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total} {self.unit}s{share}{extra}",
              file=self.stream or sys.stderr, flush=True)
        self.shown, self.last = self.n, time.monotonic()


__all__ = ["LineProgress", "progress", "sha256_of"]
