"""`load_dataset` and `open_stream_dataset`: which loader a data spec goes to (the one module that
imports every format).

The forms they accept are listed in the `ge2mst.data` package docstring. A name (``"digits"``,
``"cifar10"``, ``"cifar100"``) goes to its loader; a path is extracted first when it is an
archive, then recognised as CIFAR python batches, event recordings or (the rest) an ImageFolder.
Only ImageFolders stream (`open_stream_dataset`); the other sets fit in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .._checks import whole_number
from ..errors import DataError
from .archive import ARCHIVE_SUFFIXES, archive_stem, extract, unwrap
from .cifar import CIFAR_SPECS, find_cifar_batches, load_cifar_batches, load_named_cifar
from .dataset import ImageDataset
from .digits import DIGITS_SPEC, load_digits
from .dvs import DEFAULT_FRAMES, is_event_folder, load_dvs
from .folders import load_image_folder, pick_split
from .stream import StreamingImageFolder, open_stream
from .transforms import CROP_RATIO, TrainTransform

_RESIZE_CHUNK = 1024  # images resized at a time (bounds the temporary memory)


def load_dataset(spec: str | os.PathLike[str], split: str = "test", limit: int | None = None,
                 seed: int = 0, cache_dir: str | os.PathLike[str] | None = None,
                 progress: bool = False, frames: int | None = None,
                 event_size: int | None = None, img_size: int | None = None,
                 crop_ratio: float = CROP_RATIO) -> ImageDataset:
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
        img_size: square images of this side: folder images are resized and centre-cropped as
            they are decoded (`EvalTransform`, so they may differ in size); CIFAR and digits are
            resized (bilinear, antialiased) when their side differs; DataError for event data.
        crop_ratio: with ``img_size``, the centre crop's share of a folder image's shorter side
            after resizing (in (0, 1]).
    """
    limit, frames, event_size, img_size = (
        None if value is None else whole_number(label, value, error=DataError)
        for label, value in (("limit", limit), ("frames", frames), ("event_size", event_size),
                             ("img_size", img_size)))
    if isinstance(spec, str) and spec in (DIGITS_SPEC, *CIFAR_SPECS):
        _no_frames(frames, spec, event_size)
        data = (load_digits(split, limit, seed) if spec == DIGITS_SPEC
                else load_named_cifar(spec, split, limit, seed, cache_dir))
        return _resized(data, img_size)
    text, path, display = _resolve(spec, cache_dir)
    if path.is_dir() and find_cifar_batches(path) is not None:
        _no_frames(frames, text, event_size)
        return _resized(load_cifar_batches(path, split, limit, seed, cache_dir), img_size)
    if is_event_folder(path):
        if img_size is not None:
            raise DataError(f"--img-size applies to images; {text!r} holds event recordings: "
                            "pool their frames with --event-size instead")
        return load_dvs(path, split, DEFAULT_FRAMES if frames is None else frames,
                        size=event_size, limit=limit, seed=seed)
    _no_frames(frames, text, event_size)
    root, name = pick_split(path, split, display)
    return load_image_folder(root, name, limit, seed, progress, img_size=img_size,
                             crop_ratio=crop_ratio)


def open_stream_dataset(spec: str | os.PathLike[str], split: str, img_size: int,
                        limit: int | None = None, seed: int = 0,
                        cache_dir: str | os.PathLike[str] | None = None,
                        train_transform: TrainTransform | None = None, crop_ratio: float = CROP_RATIO,
                        skip_bad: bool = False) -> StreamingImageFolder:
    """The ``split`` of the ImageFolder ``spec`` as a `StreamingImageFolder` (see `open_stream`).

    ``spec`` is resolved as by `load_dataset` (archives are extracted, split folders picked); no
    image is decoded here. ``train_transform`` (its ``size`` must be ``img_size``) serves
    ``data[index, epoch]``; ``EvalTransform(img_size, crop_ratio)`` serves ``data[index]``.
    Named sets, CIFAR batches and event data raise `DataError`: they fit in memory.
    """
    img_size = whole_number("img_size", img_size, error=DataError)
    if limit is not None:
        limit = whole_number("limit", limit, error=DataError)
    if isinstance(spec, str) and spec in (DIGITS_SPEC, *CIFAR_SPECS):
        _no_stream(spec)
    text, path, display = _resolve(spec, cache_dir)
    if (path.is_dir() and find_cifar_batches(path) is not None) or is_event_folder(path):
        _no_stream(text)
    root, name = pick_split(path, split, display)
    return open_stream(root, name, img_size, limit, seed, train_transform, crop_ratio, skip_bad)


def _resolve(spec: str | os.PathLike[str],
             cache_dir: str | os.PathLike[str] | None) -> tuple[str, Path, str]:
    """(the spec as text, the folder it names, extracted when an archive, and its display name)."""
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
    return text, path, display


def _resized(data: ImageDataset, size: int | None) -> ImageDataset:
    """``data`` with its images resized to ``size x size`` (bilinear, antialiased, clamped to
    [0, 1]) when ``size`` is given and differs; ``data`` itself otherwise."""
    if size is None or data.image_size == (size, size):
        return data
    x = data.images
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=x.dtype)
    for start in range(0, x.shape[0], _RESIZE_CHUNK):
        chunk = x[start:start + _RESIZE_CHUNK]
        out[start:start + chunk.shape[0]] = torch.nn.functional.interpolate(
            chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        ).clamp_(0.0, 1.0)
    return ImageDataset(out, data.labels, data.classes, data.name)


def _no_stream(spec: str) -> None:
    """DataError: ``spec`` is not an ImageFolder, so it does not stream."""
    raise DataError(f"{spec!r}: only image folders stream; this data set fits in memory: use "
                    "--data-mode memory")


def _no_frames(frames: int | None, spec: str, event_size: int | None = None) -> None:
    """DataError when ``frames`` or ``event_size`` is given for data that are not events."""
    for value, flag in ((frames, "--frames"), (event_size, "--event-size")):
        if value is not None:
            raise DataError(f"{flag} applies to event data only (<dir>/<class>/<file>.npz|.aedat); "
                            f"{spec!r} holds images: drop {flag}")


__all__ = ["load_dataset", "open_stream_dataset"]
