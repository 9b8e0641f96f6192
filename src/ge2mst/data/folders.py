"""ImageFolder directories: ``<dir>/<class>/<image>`` (the ImageNet layout), and split folders.

Labels follow the sorted class names; images are sorted within a class. A directory that holds
split folders (``train/``, ``test/``, optionally ``val/``), each an ImageFolder, gives the one of
the asked split (`pick_split`); a plain ImageFolder has no splits. Images are decoded with
Pillow to RGB (`open_image`, the one decoder, shared with the streaming data sets) and come back
as float32 N x 3 x H x W in [0, 1]; they must share one size unless ``img_size`` is given, which
resizes and centre-crops each (`EvalTransform`) as it is decoded. With ``limit``, the
class-balanced subset is chosen before any file is decoded.
"""

from __future__ import annotations

import os
import struct
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._files import progress as with_progress
from ..errors import DataError
from .archive import one_line, visible
from .dataset import SPLIT_NAMES, ImageDataset, balanced_choice
from .transforms import CROP_RATIO, EvalTransform, to_rgb

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

_PROGRESS_MIN = 2000  # show a progress bar (when asked for) from this many images on


def pick_split(path: Path, split: str, display: str) -> tuple[Path, str]:
    """The ImageFolder for ``split`` under ``path`` and the data set's name."""
    if not path.is_dir():
        raise DataError(f"{str(path)!r} is not a directory: give an ImageFolder directory")
    present = [s for s in SPLIT_NAMES if (path / s).is_dir()]
    if not present:
        return path, display
    if split == "test" and split not in present and "val" in present:
        # the ImageNet layout: train/ and val/, no test/; the validation split is the held-out one
        print(f"note: {display!r} has no test/ split: using val/ as the held-out split "
              "(--split val says so and silences this note)", file=sys.stderr)
        split = "val"
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
            classes = sorted(e.name for e in visible(it) if e.is_dir())
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


def image_files(folder: Path) -> list[str]:
    """The image files of ``folder`` (by extension, hidden ones skipped), sorted."""
    with os.scandir(folder) as it:
        return sorted(e.path for e in visible(it) if e.is_file()
                      and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)


def list_image_folder(root: Path) -> tuple[list[str], list[str], list[int]]:
    """Sorted class names, image paths (sorted within a class) and their labels (no decoding)."""
    return list_class_folders(
        root, image_files, "<dir>/<class>/<image> or train/ and test/ folders of that form",
        f"images: add {'/'.join(sorted(IMAGE_EXTENSIONS))} files")


def load_image_folder(root: Path, name: str, limit: int | None, seed: int, progress: bool,
                      img_size: int | None = None, crop_ratio: float = CROP_RATIO) -> ImageDataset:
    """Decode the chosen images of the ImageFolder ``root`` (all of them without ``limit``).

    With ``img_size``, each image goes through ``EvalTransform(img_size, crop_ratio)`` (shorter
    side to ``round(img_size / crop_ratio)``, centre ``img_size`` crop) as it is decoded, so
    images of any sizes load; without it they must all share one size.
    """
    classes, files, labels = list_image_folder(root)
    keep = balanced_choice(labels, limit, seed)
    chosen = [files[i] for i in keep]
    resize = None if img_size is None else EvalTransform(img_size, crop_ratio)
    pixels: np.ndarray | None = None
    for n, file in enumerate(_with_progress(chosen, name, progress)):
        arr = _decode(file) if resize is None else resize(open_image(file))
        if pixels is None:
            pixels = np.empty((len(chosen), *arr.shape), dtype=np.uint8)
        elif arr.shape != pixels.shape[1:]:
            raise DataError(f"image {file!r} is {arr.shape[1]}x{arr.shape[0]} but "
                            f"{chosen[0]!r} is {pixels.shape[2]}x{pixels.shape[1]}: all images "
                            "must share one size (resize them first, or give --img-size "
                            "(img_size=) to resize and centre-crop each)")
        pixels[n] = arr
    assert pixels is not None  # there is at least one class, and no class is empty
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
    targets = torch.tensor([labels[i] for i in keep], dtype=torch.int64)
    return ImageDataset(images, targets, classes, name)


def _with_progress(items: list[str], name: str, progress: bool) -> Iterable[str]:
    """``items``, behind a tqdm bar when asked for, worth it and tqdm is installed."""
    return with_progress(items, f"decode {name}", progress and len(items) >= _PROGRESS_MIN,
                         unit="img")


def _decode(file: str) -> np.ndarray:
    """H x W x 3 uint8 RGB pixels of one image file; DataError names a corrupt one."""
    return np.asarray(open_image(file), dtype=np.uint8)


def open_image(file: str) -> Image.Image:
    """The decoded image of one file, in RGB mode, detached from the file (which is closed).

    A missing or unreadable file, or a corrupt or truncated one (decoded in full here, so that a
    cut file fails now), raises `DataError` with a one-line message naming it.
    """
    try:
        with Image.open(file) as img:
            img.load()
            rgb = to_rgb(img)
            return img.copy() if rgb is img else rgb
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise DataError(f"image {file!r} cannot be read ({one_line(exc)}): check that it exists "
                        "and is readable") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
            Image.DecompressionBombError) as exc:
        raise DataError(f"image {file!r} is corrupt or truncated ({one_line(exc)}): replace or "
                        "remove it") from None


__all__ = ["IMAGE_EXTENSIONS", "image_files", "list_class_folders", "list_image_folder",
           "load_image_folder", "open_image", "pick_split"]
