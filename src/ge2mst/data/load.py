"""`load_dataset`: which loader a data spec goes to (the one module that imports every format).

The forms it accepts are listed in the `ge2mst.data` package docstring. A name (``"digits"``,
``"cifar10"``, ``"cifar100"``) goes to its loader; a path is extracted first when it is an
archive, then recognised as CIFAR python batches, event recordings or (the rest) an ImageFolder.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._checks import whole_number
from ..errors import DataError
from .archive import ARCHIVE_SUFFIXES, archive_stem, extract, unwrap
from .cifar import CIFAR_SPECS, find_cifar_batches, load_cifar_batches, load_named_cifar
from .dataset import ImageDataset
from .digits import DIGITS_SPEC, load_digits
from .dvs import DEFAULT_FRAMES, is_event_folder, load_dvs
from .folders import load_image_folder, pick_split


def load_dataset(spec: str | os.PathLike[str], split: str = "test", limit: int | None = None,
                 seed: int = 0, cache_dir: str | os.PathLike[str] | None = None,
                 progress: bool = False, frames: int | None = None,
                 event_size: int | None = None) -> ImageDataset:
    """Load the ``split`` of the data set ``spec`` (see `ge2mst.data` for the forms).

    Args:
        spec: ``"digits"``, an ImageFolder directory, a directory of split folders, or a
            ``.tar.gz`` / ``.tgz`` archive of either.
        split: ``"train"``, ``"test"`` or ``"val"``; unused for a plain ImageFolder.
        limit: keep only this many images (>= 1), balanced over classes and chosen by ``seed``.
        seed: seed of the ``limit`` choice (the digits split itself never depends on it).
        cache_dir: where archives are extracted (default ``$GE2MST_CACHE`` or
            ``~/.cache/ge2mst``).
        progress: show a tqdm bar while many images are decoded (if tqdm is installed).
        frames: T, the time slices of event data (default 10 there); DataError for other data.
        event_size: average-pool event frames to this side (e.g. 48); DataError for other data.
    """
    if limit is not None:
        limit = whole_number("limit", limit, error=DataError)
    if frames is not None:
        frames = whole_number("frames", frames, error=DataError)
    if event_size is not None:
        event_size = whole_number("event_size", event_size, error=DataError)
    if isinstance(spec, str) and spec == DIGITS_SPEC:
        _no_frames(frames, spec, event_size)
        return load_digits(split, limit, seed)
    if isinstance(spec, str) and spec in CIFAR_SPECS:
        _no_frames(frames, spec, event_size)
        return load_named_cifar(spec, split, limit, seed, cache_dir)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if not text or not path.exists():
        raise DataError(f"data {text!r} not found: give 'digits', 'cifar10', 'cifar100', an "
                        "ImageFolder directory "
                        "(<dir>/<class>/<image>), a directory with train/ and test/ folders, or "
                        "a .tar.gz of one")
    display = path.resolve().name
    if path.is_file():
        if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(f"data file {text!r} is not a .tar.gz/.tgz archive: give an archive, "
                            "an ImageFolder directory or 'digits'")
        display = archive_stem(path.name)
        path = unwrap(extract(path, cache_dir))
    if path.is_dir() and find_cifar_batches(path) is not None:
        _no_frames(frames, text, event_size)
        return load_cifar_batches(path, split, limit, seed, cache_dir)
    if is_event_folder(path):
        return load_dvs(path, split, DEFAULT_FRAMES if frames is None else frames,
                        size=event_size, limit=limit, seed=seed)
    _no_frames(frames, text, event_size)
    root, name = pick_split(path, split, display)
    return load_image_folder(root, name, limit, seed, progress)


def _no_frames(frames: int | None, spec: str, event_size: int | None = None) -> None:
    """DataError when ``frames`` or ``event_size`` is given for data that are not events."""
    for value, flag in ((frames, "--frames"), (event_size, "--event-size")):
        if value is not None:
            raise DataError(f"{flag} applies to event data only (<dir>/<class>/<file>.npz|.aedat); "
                            f"{spec!r} holds images: drop {flag}")


__all__ = ["load_dataset"]
