"""Image data without torchvision: the bundled digits, ImageFolder directories and their archives.

``load_dataset(spec, split, limit, seed)`` accepts

- ``"digits"``: scikit-learn's bundled 8 x 8 handwritten digits (offline), with a fixed
  stratified 80 / 20 train / test split that never depends on ``seed`` (``"val"`` = ``"test"``);
- an ImageFolder directory ``<dir>/<class>/<image>`` (the ImageNet layout; labels follow the
  sorted class names; ``split`` is not used);
- a directory of split folders (``train/``, ``test/``, optionally ``val/``), each an ImageFolder;
- ``"cifar10"`` / ``"cifar100"``: the python batches in the cache folder, downloaded there when
  absent (`ge2mst.cifar_batches`); a folder or archive in that layout is recognised too;
- event recordings ``<dir>/<class>/<file>.npz|.aedat`` (CIFAR10-DVS): ``2 * frames`` channel
  images of event counts, 90 / 10 train / test per class (`ge2mst.dvs`);
- a ``.tar.gz`` / ``.tgz`` archive of either, extracted once, atomically, into a cache folder
  (``cache_dir``, else ``$GE2MST_CACHE``, else ``~/.cache/ge2mst``). A single folder that wraps
  the whole content of an archive is looked through.

Images come back as float32 N x C x H x W in [0, 1] (RGB for folders, one channel for digits);
`normalize` applies per-channel statistics such as those of `ImageDataset.channel_stats`.
With ``limit``, a seeded, class-balanced subset is chosen before any file is decoded.
Every user-facing failure raises `DataError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import shutil
import struct
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._files import sha256_of
from .errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
SPLIT_NAMES = ("train", "test", "val")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
DIGITS_SPEC = "digits"
CIFAR_SPECS = ("cifar10", "cifar100")  # downloaded python batches, see cifar_batches

_MARKER = ".ge2mst-complete"  # written last into an extraction: without it a folder is not used
_PARTIAL = ".partial-"  # infix of the temporary folders that extractions are built in
_STALE_SECONDS = 3600.0  # a temporary folder untouched this long belongs to a killed extraction
_PROGRESS_MIN = 2000  # show a progress bar (when asked for) from this many images on
_STATS_CHUNK = 4096  # images per chunk when channel statistics are accumulated


@dataclass
class ImageDataset:
    """Images (float32 N x C x H x W in [0, 1], not normalised), int64 labels and class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``); labels lie in ``0 .. num_classes - 1``."""
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        """Channels per image (3 for folders, 1 for digits)."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and (unbiased) standard deviation, float32, std clamped at >= 1e-6.

        Accumulated in float64, chunk by chunk, so large sets need no float64 copy.
        """
        x = self.images
        count = x.numel() // max(1, x.shape[1])
        if count == 0:
            raise DataError(f"data set {self.name!r} holds no images: there are no statistics")
        dims = (0, *range(2, x.dim()))
        shape = (1, -1) + (1,) * (x.dim() - 2)
        total = torch.zeros(x.shape[1], dtype=torch.float64)
        for chunk in x.split(_STATS_CHUNK):
            total += chunk.sum(dims, dtype=torch.float64)
        mean = total / count
        squares = torch.zeros_like(total)
        for chunk in x.split(_STATS_CHUNK):
            squares += (chunk.to(torch.float64) - mean.view(shape)).square().sum(dims)
        std = (squares / max(1, count - 1)).sqrt()
        return mean.float(), std.clamp_min(1e-6).float()

    def batches(self, batch_size: int, shuffle: bool = False,
                seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches of ``batch_size`` (the last may be smaller).

        In stored order the batches are views of the stored tensors; ``shuffle`` draws one
        permutation from a ``torch.Generator`` seeded with ``seed``.
        """
        size = _whole_number(batch_size, "batch size")
        n = len(self)
        if not shuffle:
            for i in range(0, n, size):
                yield self.images[i:i + size], self.labels[i:i + size]
            return
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        for i in range(0, n, size):
            idx = order[i:i + size]
            yield self.images[idx], self.labels[idx]


def normalize(images: torch.Tensor, mean: torch.Tensor | Sequence[float],
              std: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """``(x - mean[c]) / std[c]`` for B x C x ... images (channels on dimension 1)."""
    chans = images.shape[1] if images.dim() >= 2 else 0
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).flatten()
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).flatten()
    if chans == 0 or mean.numel() != chans or std.numel() != chans:
        raise DataError(f"normalize: images of shape {tuple(images.shape)} have {chans} channels "
                        f"but mean has {mean.numel()} and std {std.numel()} values: give B x C x "
                        "H x W images and one value per channel")
    shape = (1, -1) + (1,) * (images.dim() - 2)
    return (images - mean.view(shape)) / std.view(shape)


def load_dataset(spec: str | os.PathLike[str], split: str = "test", limit: int | None = None,
                 seed: int = 0, cache_dir: str | os.PathLike[str] | None = None,
                 progress: bool = False, frames: int | None = None,
                 event_size: int | None = None) -> ImageDataset:
    """Load the ``split`` of the data set ``spec`` (see the module docstring for the forms).

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
        limit = _whole_number(limit, "limit")
    if frames is not None:
        frames = _whole_number(frames, "frames")
    if event_size is not None:
        event_size = _whole_number(event_size, "event_size")
    if isinstance(spec, str) and spec == DIGITS_SPEC:
        _no_frames(frames, spec, event_size)
        return _load_digits(split, limit, seed)
    if isinstance(spec, str) and spec in CIFAR_SPECS:
        from .cifar_batches import load_named_cifar

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
        display = _archive_stem(path.name)
        path = _unwrap(_extract(path, cache_dir))
    from .cifar_batches import find_cifar_batches, load_cifar_batches
    from .dvs import DEFAULT_FRAMES, is_event_folder, load_dvs

    if path.is_dir() and find_cifar_batches(path) is not None:
        _no_frames(frames, text, event_size)
        return load_cifar_batches(path, split, limit, seed, cache_dir)
    if is_event_folder(path):
        return load_dvs(path, split, DEFAULT_FRAMES if frames is None else frames,
                        size=event_size, limit=limit, seed=seed)
    _no_frames(frames, text, event_size)
    root, name = _pick_split(path, split, display)
    return _load_image_folder(root, name, limit, seed, progress)


def _no_frames(frames: int | None, spec: str, event_size: int | None = None) -> None:
    """DataError when ``frames`` or ``event_size`` is given for data that are not events."""
    for value, flag in ((frames, "--frames"), (event_size, "--event-size")):
        if value is not None:
            raise DataError(f"{flag} applies to event data only (<dir>/<class>/<file>.npz|.aedat); "
                            f"{spec!r} holds images: drop {flag}")


def _whole_number(value: object, what: str) -> int:
    """``value`` as an int >= 1, else DataError."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = 0
    if number < 1:
        raise DataError(f"{what} must be a whole number >= 1, got {value!r}")
    return number


def _balanced_choice(labels: Sequence[int], limit: int | None, seed: int) -> list[int]:
    """Indices of ``limit`` items balanced over classes, in round-robin class order.

    Each class (in increasing label order) is permuted by one ``torch.Generator`` seeded with
    ``seed``; the classes then take turns. Without ``limit`` (or when it covers everything) all
    indices come back in stored order.
    """
    if limit is None or limit >= len(labels):
        return list(range(len(labels)))
    gen = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    queues = []
    for y in sorted(by_class):
        members = by_class[y]
        queues.append([members[p] for p in torch.randperm(len(members), generator=gen).tolist()])
    picked: list[int] = []
    depth = 0
    while len(picked) < limit:
        picked += [q[depth] for q in queues if depth < len(q)][:limit - len(picked)]
        depth += 1
    return picked


# ---- digits -------------------------------------------------------------------------------------
def _load_digits(split: str, limit: int | None, seed: int) -> ImageDataset:
    """scikit-learn's 8 x 8 digits, one channel in [0, 1], fixed stratified 80 / 20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in SPLIT_NAMES:
        raise DataError(f"split {split!r} does not exist for 'digits': use 'train' or 'test' "
                        "('val' is the same as 'test')")
    split = "test" if split == "val" else split
    digits = load_digits()
    index = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(index, test_size=0.2, random_state=0,
                                           stratify=digits.target)
    chosen = np.sort(train_idx if split == "train" else test_idx)
    labels = torch.as_tensor(digits.target[chosen], dtype=torch.int64)
    images = torch.as_tensor(digits.images[chosen], dtype=torch.float32).unsqueeze(1) / 16.0
    keep = torch.as_tensor(_balanced_choice(labels.tolist(), limit, seed), dtype=torch.int64)
    classes = [str(c) for c in range(10)]
    return ImageDataset(images[keep].contiguous(), labels[keep], classes, f"digits/{split}")


# ---- image folders ------------------------------------------------------------------------------
def _visible(entries: Iterable[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
    """Entries whose names do not start with a dot (hidden files, AppleDouble ``._*``, markers)."""
    return [e for e in entries if not e.name.startswith(".")]


def _pick_split(path: Path, split: str, display: str) -> tuple[Path, str]:
    """The ImageFolder for ``split`` under ``path`` and the data set's name."""
    if not path.is_dir():
        raise DataError(f"{str(path)!r} is not a directory: give an ImageFolder directory")
    present = [s for s in SPLIT_NAMES if (path / s).is_dir()]
    if not present:
        return path, display
    if split not in present:
        raise DataError(f"split {split!r} not found in {display!r} ({str(path)!r}); present: "
                        f"{', '.join(present)}")
    return path / split, f"{display}/{split}"


def list_class_folders(root: Path, members_of, layout: str, kind: str,
                       pick=None) -> tuple[list[str], list[str], list[int]]:
    """Sorted class folders of ``root``, their files and labels, with one-line errors.

    ``members_of(folder)`` lists a class folder's files (sorted); ``layout`` and ``kind`` word
    the errors (the expected layout, what a class folder must hold); ``pick(members)`` keeps a
    part of each class (a split), all of it when None.
    """
    try:
        with os.scandir(root) as it:
            classes = sorted(e.name for e in _visible(it) if e.is_dir())
    except OSError as exc:
        raise DataError(f"cannot read the folder {str(root)!r} ({exc})") from None
    if not classes:
        raise DataError(f"{str(root)!r} has no class sub-folders: expected {layout}")
    files: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        try:
            members = members_of(root / cls)
        except OSError as exc:
            raise DataError(f"cannot read the class folder {str(root / cls)!r} ({exc})") from None
        if not members:
            raise DataError(f"class folder {cls!r} ({str(root / cls)!r}) holds no {kind} or "
                            "remove the folder")
        chosen = members if pick is None else pick(members)
        files += chosen
        labels += [label] * len(chosen)
    return classes, files, labels


def _image_files(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.path for e in _visible(it) if e.is_file()
                      and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)


def _list_image_folder(root: Path) -> tuple[list[str], list[str], list[int]]:
    """Sorted class names, image paths (sorted within a class) and their labels."""
    return list_class_folders(
        root, _image_files, "<dir>/<class>/<image> or train/ and test/ folders of that form",
        f"images: add {'/'.join(sorted(IMAGE_EXTENSIONS))} files")


def _load_image_folder(root: Path, name: str, limit: int | None, seed: int,
                       progress: bool) -> ImageDataset:
    """Decode the chosen images of the ImageFolder ``root`` (all of them without ``limit``)."""
    classes, files, labels = _list_image_folder(root)
    keep = _balanced_choice(labels, limit, seed)
    chosen = [files[i] for i in keep]
    pixels: np.ndarray | None = None
    for n, file in enumerate(_with_progress(chosen, name, progress)):
        arr = _decode(file)
        if pixels is None:
            pixels = np.empty((len(chosen), *arr.shape), dtype=np.uint8)
        elif arr.shape != pixels.shape[1:]:
            raise DataError(f"image {file!r} is {arr.shape[1]}x{arr.shape[0]} but "
                            f"{chosen[0]!r} is {pixels.shape[2]}x{pixels.shape[1]}: all images "
                            "must share one size (resize them first)")
        pixels[n] = arr
    assert pixels is not None  # there is at least one class, and no class is empty
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    targets = torch.tensor([labels[i] for i in keep], dtype=torch.int64)
    return ImageDataset(images, targets, classes, name)


def _with_progress(items: list[str], name: str, progress: bool) -> Iterable[str]:
    """``items``, behind a tqdm bar when asked for, worth it and tqdm is installed."""
    if not progress or len(items) < _PROGRESS_MIN:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=f"decode {name}", unit="img", leave=False)


def _decode(file: str) -> np.ndarray:
    """H x W x 3 uint8 RGB pixels of one image file; DataError names a corrupt one."""
    from PIL import Image

    try:
        with Image.open(file) as img:
            img.load()  # decode now, so that a truncated file fails here
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
            Image.DecompressionBombError) as exc:
        raise DataError(f"image {file!r} is corrupt or truncated ({_one_line(exc)}): replace or "
                        "remove it") from None


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (its type name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


# ---- archives -----------------------------------------------------------------------------------
def _archive_stem(filename: str) -> str:
    """``cifar10-jpg.tar.gz`` -> ``cifar10-jpg``."""
    lower = filename.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return filename


def _cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where archives are extracted: ``cache_dir``, else ``$GE2MST_CACHE``, else ~/.cache/ge2mst."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GE2MST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ge2mst"


def _extract(archive: Path, cache_dir: str | os.PathLike[str] | None) -> Path:
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
    cache = _cache_root(cache_dir)
    target = cache / f"{_archive_stem(archive.name)}-{key.hexdigest()[:12]}"
    if (target / _MARKER).is_file():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(cache, target.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_PARTIAL}", dir=cache))
    except OSError as exc:
        raise DataError(f"cannot write to the cache folder {str(cache)!r} ({exc}): pass "
                        "cache_dir or set GE2MST_CACHE to a writable folder") from None
    try:
        digest = sha256_of(archive)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        marker = {"archive": str(archive.resolve()), "sha256": digest, "size": stat.st_size,
                  "mtime_ns": stat.st_mtime_ns}
        (tmp / _MARKER).write_text(json.dumps(marker) + "\n")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"archive {str(archive)!r} could not be extracted ({_one_line(exc)}): "
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


def _unwrap(root: Path) -> Path:
    """Look through folders that wrap a whole extracted archive (``set/train/...``).

    A lone sub-folder is entered only while the current folder has nothing else and no split
    folders, and the sub-folder holds only folders (so a one-class ImageFolder is kept as is).
    """
    while not any((root / s).is_dir() for s in SPLIT_NAMES):
        with os.scandir(root) as it:
            entries = _visible(it)
        if len(entries) != 1 or not entries[0].is_dir():
            break
        with os.scandir(entries[0].path) as it:
            inner = _visible(it)
        if not inner or not all(e.is_dir() for e in inner):
            break
        root = Path(entries[0].path)
    return root
