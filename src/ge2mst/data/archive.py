"""``.tar.gz`` / ``.tgz`` archives of data sets, extracted once, atomically, into a cache folder.

The cache folder is ``cache_dir``, else ``$GE2MST_CACHE``, else ``~/.cache/ge2mst``. An
extraction is built in a temporary sibling folder and renamed into place after its marker file
(with the archive's sha256) is written, so an interrupted extraction is never taken as complete;
temporary folders of killed runs are removed later. A single folder that wraps the whole content
of an archive is looked through (`unwrap`). Also the small file-system helpers every loader
shares: `visible` (no hidden entries) and `one_line` (an exception on one line).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

from .._files import sha256_of
from ..errors import DataError
from .dataset import SPLIT_NAMES

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")

_MARKER = ".ge2mst-complete"  # written last into an extraction: without it a folder is not used
_PARTIAL = ".partial-"  # infix of the temporary folders that extractions are built in
_STALE_SECONDS = 3600.0  # a temporary folder untouched this long belongs to a killed extraction


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def visible(entries: Iterable[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
    """Entries whose names do not start with a dot (hidden files, AppleDouble ``._*``, markers)."""
    return [e for e in entries if not e.name.startswith(".")]


def archive_stem(filename: str) -> str:
    """``cifar10-jpg.tar.gz`` -> ``cifar10-jpg``."""
    lower = filename.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where archives are extracted: ``cache_dir``, else ``$GE2MST_CACHE``, else ~/.cache/ge2mst."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GE2MST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ge2mst"


def extract(archive: Path, cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache folder holding ``archive``'s content, extracted on first use.

    The folder is ``<stem>-<12 hex digits>``, keyed on the archive's file name, size and
    modification time (so a changed archive is extracted afresh). Extraction goes into a
    temporary sibling folder; the marker file (with the archive's sha256) is written last and the
    folder is then renamed into place, so an interrupted extraction is never taken as complete.
    """
    if not hasattr(tarfile, "data_filter"):
        raise DataError(f"archive {str(archive)!r}: safe extraction needs Python >= 3.11.4; "
                        "extract it yourself and pass the folder")
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.name}\n{stat.st_size}\n{stat.st_mtime_ns}".encode())
    cache = cache_root(cache_dir)
    target = cache / f"{archive_stem(archive.name)}-{key.hexdigest()[:12]}"
    if (target / _MARKER).is_file():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(cache, target.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_PARTIAL}", dir=cache))
    except OSError as exc:
        raise DataError(f"cannot write to the cache folder {str(cache)!r} ({exc}): give a "
                        "writable folder with --data-dir (cache_dir= in Python) or "
                        "$GE2MST_CACHE") from None
    try:
        digest = sha256_of(archive)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        marker = {"archive": str(archive.resolve()), "sha256": digest, "size": stat.st_size,
                  "mtime_ns": stat.st_mtime_ns}
        (tmp / _MARKER).write_text(json.dumps(marker) + "\n")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"archive {str(archive)!r} could not be extracted ({one_line(exc)}): "
                        "check that it is a complete .tar.gz") from None
    _install(tmp, target)
    return target


def _install(tmp: Path, target: Path) -> None:
    """Rename the finished extraction ``tmp`` to ``target``.

    A ``target`` without marker (left incomplete by some other means) is moved aside and removed
    first; if another process installed a complete ``target`` meanwhile, ``tmp`` is dropped.
    """
    if target.exists() and not (target / _MARKER).is_file():
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}{_PARTIAL}", dir=target.parent))
        os.replace(target, stale / "old")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / _MARKER).is_file():
            raise DataError(f"cannot move the extraction into {str(target)!r} ({exc}): remove "
                            "that folder and retry") from None


def _remove_stale_partials(cache: Path, target_name: str) -> None:
    """Delete temporary extraction folders of ``target_name`` left by killed runs."""
    prefix = f".{target_name}{_PARTIAL}"
    now = time.time()
    for entry in cache.iterdir():
        if entry.name.startswith(prefix):
            try:
                if now - entry.stat().st_mtime > _STALE_SECONDS:
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                pass


def unwrap(root: Path) -> Path:
    """Look through folders that wrap a whole extracted archive (``set/train/...``).

    A lone sub-folder is entered only while the current folder has nothing else and no split
    folders, and the sub-folder holds only folders (so a one-class ImageFolder is kept as is).
    """
    while not any((root / s).is_dir() for s in SPLIT_NAMES):
        with os.scandir(root) as it:
            entries = visible(it)
        if len(entries) != 1 or not entries[0].is_dir():
            break
        with os.scandir(entries[0].path) as it:
            inner = visible(it)
        if not inner or not all(e.is_dir() for e in inner):
            break
        root = Path(entries[0].path)
    return root


__all__ = ["ARCHIVE_SUFFIXES", "archive_stem", "cache_root", "extract", "one_line", "unwrap",
           "visible"]
