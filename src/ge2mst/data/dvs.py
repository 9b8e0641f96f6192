"""CIFAR10-DVS (and other DVS128-sized) event recordings as stacks of event-count frames.

A data set is a folder ``<root>/<class>/<recording>`` (10 classes for CIFAR10-DVS), each
recording either

- ``.npz`` with 1-D arrays ``t``, ``x``, ``y``, ``p`` (the layout SpikingJelly converts the
  recordings to): timestamps, column, row, polarity (0 / 1; -1 is read as 0); or
- ``.aedat`` (AEDAT 2.0, as the CIFAR10-DVS recordings are published): header lines that start
  with ``#`` (each ending with a newline), then big-endian records of 8 bytes, a uint32 address
  and a uint32 timestamp (microseconds). The DVS128 address is decoded as

  ===========  ================================  ==========================
  bits         field                             value used
  ===========  ================================  ==========================
  0            polarity                          ``p = addr & 1``
  1 .. 7       column, mirrored by the camera    ``x = 127 - ((addr >> 1) & 0x7F)``
  8 .. 14      row                               ``y = (addr >> 8) & 0x7F``
  ===========  ================================  ==========================

  and the other bits are ignored. A trailing partial record (a cut-off file) is dropped.

Events are sorted by time (stably) when a file stores them out of order. `events_to_frames`
counts the events of each polarity in ``T`` consecutive slices, of equal event counts
(``split_by="number"``) or equal time spans (``split_by="time"``). `load_dvs` turns every
recording into a ``2T x H x W`` image (frame-major: channel ``2 t + p``), optionally average-pooled
to ``size`` x ``size``, and divided by its own largest value so that it lies in [0, 1] (an empty
recording stays all zero). Memory: 10,000 recordings at T = 10 are 13 GB at 128 x 128, 3.3 GB at
64 x 64 and 1.8 GB at 48 x 48, so pass ``size`` (or ``limit``) for large sets.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .._checks import whole_number
from ..errors import DataError
from .archive import one_line, visible
from .dataset import ImageDataset, balanced_choice, check_split
from .folders import list_class_folders

EVENT_EXTENSIONS = (".npz", ".aedat")
SENSOR_SIZE = (128, 128)  # (H, W) of the DVS128 camera of CIFAR10-DVS
DEFAULT_FRAMES = 10
TRAIN_FRACTION = 0.9
SPLIT_BY = ("number", "time")


class Events(NamedTuple):
    """One recording: int64 arrays of equal length, sorted by ``t``; ``p`` in {0, 1}."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray


# ---- readers ------------------------------------------------------------------------------------
def _finish(file: str | os.PathLike[str], t, x, y, p) -> Events:
    """Check and convert the four arrays; sort by time."""
    arrays = []
    for name, a in zip("txyp", (t, x, y, p), strict=True):
        a = np.asarray(a)
        if a.ndim != 1:
            raise DataError(f"event file {os.fspath(file)!r}: array {name!r} has shape {a.shape}, "
                            "expected one dimension")
        if a.dtype.kind == "f":
            if not np.isfinite(a).all() or not (a == np.round(a)).all():
                raise DataError(f"event file {os.fspath(file)!r}: array {name!r} holds values "
                                "that are not whole numbers")
        elif a.dtype.kind not in "iub":
            raise DataError(f"event file {os.fspath(file)!r}: array {name!r} has dtype {a.dtype}, "
                            "expected integers")
        arrays.append(a.astype(np.int64))
    t, x, y, p = arrays
    if not len(t) == len(x) == len(y) == len(p):
        raise DataError(f"event file {os.fspath(file)!r}: arrays t, x, y, p have lengths "
                        f"{len(t)}, {len(x)}, {len(y)}, {len(p)}; they must be equal")
    if len(p) and not np.isin(p, (-1, 0, 1)).all():
        raise DataError(f"event file {os.fspath(file)!r}: polarities must be 0 or 1 (or -1 / 1)")
    p = (p > 0).astype(np.int64)
    if len(t) > 1 and (np.diff(t) < 0).any():
        order = np.argsort(t, kind="stable")
        t, x, y, p = t[order], x[order], y[order], p[order]
    return Events(t, x, y, p)


def read_npz_events(file: str | os.PathLike[str]) -> Events:
    """The events of an ``.npz`` file with arrays ``t``, ``x``, ``y``, ``p``."""
    try:
        with np.load(file, allow_pickle=False) as npz:
            missing = [k for k in "txyp" if k not in npz.files]
            if missing:
                raise DataError(f"event file {os.fspath(file)!r} lacks the array(s) "
                                f"{', '.join(missing)}: expected t, x, y and p")
            t, x, y, p = (npz[k] for k in "txyp")
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DataError(f"event file {os.fspath(file)!r} is corrupt ({one_line(exc)}): replace "
                        "or remove it") from None
    return _finish(file, t, x, y, p)


def read_aedat_events(file: str | os.PathLike[str]) -> Events:
    """The events of an AEDAT 2.0 DVS128 file (address layout in the module docstring)."""
    try:
        raw = Path(file).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the event file {os.fspath(file)!r} ({one_line(exc)})") from None
    pos = 0
    while raw.startswith(b"#", pos):
        end = raw.find(b"\n", pos)
        if end < 0:
            raise DataError(f"event file {os.fspath(file)!r}: the AEDAT header never ends")
        pos = end + 1
    body = raw[pos:]
    body = body[: len(body) - len(body) % 8]
    records = np.frombuffer(body, dtype=">u4").reshape(-1, 2).astype(np.int64)
    addr, t = records[:, 0], records[:, 1]
    x = 127 - ((addr >> 1) & 0x7F)
    y = (addr >> 8) & 0x7F
    return _finish(file, t, x, y, addr & 1)


def read_events(file: str | os.PathLike[str]) -> Events:
    """The events of an ``.npz`` or ``.aedat`` file, by its extension."""
    suffix = Path(file).suffix.lower()
    if suffix == ".npz":
        return read_npz_events(file)
    if suffix == ".aedat":
        return read_aedat_events(file)
    raise DataError(f"event file {os.fspath(file)!r}: unknown extension (use .npz or .aedat)")


# ---- frames -------------------------------------------------------------------------------------
def events_to_frames(events: Events, T: int, H: int = SENSOR_SIZE[0], W: int = SENSOR_SIZE[1],
                     split_by: str = "number", file: str | os.PathLike[str] | None = None
                     ) -> torch.Tensor:
    """Event counts per slice and polarity: float32 ``T x 2 x H x W``.

    ``split_by="number"``: event ``i`` of ``N`` (in time order) goes to slice ``floor(i T / N)``,
    so slices hold equally many events (up to one). ``split_by="time"``: with ``t0``, ``t1`` the
    first and last timestamps and ``span = t1 - t0 + 1``, an event goes to slice
    ``floor((t - t0) T / span)``: slices cover equal time spans. Channel ``p`` counts polarity
    ``p``. No events give all zeros. Coordinates outside ``W`` x ``H`` raise `DataError` (naming
    ``file`` when given).
    """
    T = whole_number("frames", T, error=DataError)
    if split_by not in SPLIT_BY:
        raise DataError(f"split_by must be 'number' or 'time', got {split_by!r}")
    t, x, y, p = (np.asarray(a, dtype=np.int64) for a in events)
    n = len(t)
    frames = np.zeros(T * 2 * H * W, dtype=np.float32)
    if n:
        where = f"event file {os.fspath(file)!r}" if file is not None else "events"
        if x.min() < 0 or x.max() >= W or y.min() < 0 or y.max() >= H:
            raise DataError(f"{where}: coordinates x in {x.min()}..{x.max()}, y in "
                            f"{y.min()}..{y.max()} lie outside the {W} x {H} sensor")
        if p.min() < 0 or p.max() > 1:
            raise DataError(f"{where}: polarities must be 0 or 1")
        if split_by == "number":
            slot = np.arange(n, dtype=np.int64) * T // n
        else:
            t0 = int(t.min())
            span = int(t.max()) - t0 + 1
            slot = (t - t0) * T // span
        index = ((slot * 2 + p) * H + y) * W + x
        frames = np.bincount(index, minlength=T * 2 * H * W).astype(np.float32)
    return torch.from_numpy(frames).view(T, 2, H, W)


# ---- folders ------------------------------------------------------------------------------------
def _event_files(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.path for e in visible(it) if e.is_file()
                      and e.name.lower().endswith(EVENT_EXTENSIONS))


def is_event_folder(path: str | os.PathLike[str]) -> bool:
    """True when the first (sorted) class sub-folder of ``path`` holds .npz / .aedat files."""
    root = Path(path)
    if not root.is_dir():
        return False
    try:
        with os.scandir(root) as it:
            classes = sorted(e.path for e in visible(it) if e.is_dir())
        return bool(classes) and bool(_event_files(Path(classes[0])))
    except OSError:
        return False


def _split_files(root: Path, split: str) -> tuple[list[str], list[str], list[int]]:
    """Class names, recordings of ``split`` and their labels (first 90 % of a class = train)."""

    def pick(members: list[str]) -> list[str]:
        n_train = min(len(members), max(1, math.floor(TRAIN_FRACTION * len(members) + 1e-9)))
        if len(members) > 1:
            n_train = min(n_train, len(members) - 1)  # every class with 2+ files is tested too
        return members[:n_train] if split == "train" else members[n_train:]

    return list_class_folders(root, _event_files,
                              "<dir>/<class>/<recording>.npz|.aedat",
                              ".npz or .aedat recordings: add some", pick)


def load_dvs(root: str | os.PathLike[str], split: str = "test", frames: int = DEFAULT_FRAMES,
             size: int | tuple[int, int] | None = None, limit: int | None = None, seed: int = 0,
             split_by: str = "number", sensor_size: tuple[int, int] = SENSOR_SIZE) -> ImageDataset:
    """Event recordings ``<root>/<class>/<file>.npz|.aedat`` as ``2T``-channel images.

    Args:
        root: the folder of class folders (labels follow the sorted class names).
        split: ``"train"`` (the first 90 % of each class's sorted files, at least one, and at
            most all but one when a class has two or more), ``"test"`` (the rest) or ``"val"``
            (the same as ``"test"``).
        frames: T, the number of time slices.
        size: average-pool every frame to ``size`` x ``size`` (or ``(h, w)``), e.g. 64 or 48.
        limit: keep this many recordings, balanced over classes and chosen by ``seed``, before
            any file is read.
        seed: seed of the ``limit`` choice (the split itself never depends on it).
        split_by: ``"number"`` or ``"time"`` slices (see `events_to_frames`).
        sensor_size: (H, W) of the camera.

    Returns:
        float32 N x 2T x H x W images (channel ``2 t + p``), each divided by its largest value
        (after pooling) so that it lies in [0, 1].
    """
    split = check_split(split, "event data")
    T = whole_number("frames", frames, error=DataError)
    if split_by not in SPLIT_BY:
        raise DataError(f"split_by must be 'number' or 'time', got {split_by!r}")
    if limit is not None:
        limit = whole_number("limit", limit, error=DataError)
    out_hw: tuple[int, int] | None = None
    if size is not None:
        pair = (size, size) if not isinstance(size, tuple | list) else tuple(size)
        if len(pair) != 2:
            raise DataError(f"size must be one whole number or a pair, got {size!r}")
        out_hw = (whole_number("size", pair[0], error=DataError),
                  whole_number("size", pair[1], error=DataError))
    path = Path(root).expanduser()
    classes, files, labels = _split_files(path, split)
    if not files:
        raise DataError(f"the {split} split of {str(path)!r} is empty: every class has a single "
                        "recording, which goes to 'train'")
    keep = balanced_choice(labels, limit, seed)
    h, w = sensor_size
    oh, ow = out_hw if out_hw is not None else (h, w)
    images = torch.empty(len(keep), 2 * T, oh, ow, dtype=torch.float32)
    for n, i in enumerate(keep):
        counts = events_to_frames(read_events(files[i]), T, h, w, split_by, file=files[i])
        img = counts.view(1, 2 * T, h, w)
        if out_hw is not None and out_hw != (h, w):
            img = torch.nn.functional.adaptive_avg_pool2d(img, out_hw)
        peak = float(img.max())
        images[n] = img[0] / peak if peak > 0 else img[0]
    targets = torch.tensor([labels[i] for i in keep], dtype=torch.int64)
    return ImageDataset(images, targets, classes, f"{path.resolve().name}/{split}")


__all__ = ["DEFAULT_FRAMES", "EVENT_EXTENSIONS", "SENSOR_SIZE", "SPLIT_BY", "TRAIN_FRACTION",
           "Events", "events_to_frames", "is_event_folder", "load_dvs", "read_aedat_events",
           "read_events", "read_npz_events"]
