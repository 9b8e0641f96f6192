"""File helpers shared by every layer (a leaf: imports nothing of ge2mst)."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: the lock file of a folder in use (`folder_lock`)
LOCK_NAME = ".ge2mst.lock"


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


class FolderInUse(RuntimeError):
    """`folder_lock` found the folder locked by another process (the message says which)."""


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder`` (created when missing) for this process while the block runs.

    The lock is an advisory ``flock`` on ``folder/.ge2mst.lock``, which the operating system
    releases when the process ends in any way (a killed run leaves nothing stuck); the file keeps
    the holder's process id, host and start time for the message another process gets
    (`FolderInUse`). Where ``fcntl`` is missing (Windows) the block runs unlocked.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            raise FolderInUse(f"{str(folder)!r} is in use by {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (f"process {os.getpid()} on {socket.gethostname()} since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


__all__ = ["LOCK_NAME", "FolderInUse", "LineProgress", "folder_lock", "progress", "sha256_of"]
