"""CIFAR-10 and CIFAR-100 in their original "python batch" layout, and their download.

The layouts (as published at https://www.cs.toronto.edu/~kriz/cifar.html):

- ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` (train), ``test_batch`` and
  ``batches.meta`` (``b"label_names"``);
- ``cifar-100-python/``: ``train``, ``test`` and ``meta`` (``b"fine_label_names"``).

Every batch is a Python-2 pickle of a dict with ``b"data"`` (uint8, N x 3072: the 1024 red, then
green, then blue pixels of a 32 x 32 image, row-major) and ``b"labels"`` (CIFAR-10) or
``b"fine_labels"`` (CIFAR-100). The pickles are read with an unpickler that only builds plain
containers and numpy arrays (no other code can run while loading a file).

`load_cifar_batches` takes the batches folder itself, its parent, or the ``.tar.gz`` archive
(extracted once into the cache, see `ge2mst.data.archive`). `download_cifar` fetches an archive with
urllib and checks its md5. Images come back as float32 N x 3 x 32 x 32 in [0, 1].
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._checks import whole_number
from ..errors import DataError
from .archive import ARCHIVE_SUFFIXES, cache_root, extract, one_line
from .dataset import ImageDataset, balanced_choice, check_split


@dataclass(frozen=True)
class CifarSource:
    """Where one CIFAR archive comes from and what it unpacks to."""

    url: str
    md5: str
    archive: str  # file name of the archive
    folder: str  # the batches folder inside it
    train: tuple[str, ...]  # batch files of the train split
    test: str  # batch file of the test split
    meta: str  # file with the class names
    names_key: bytes  # key of the class names in ``meta``
    labels_key: bytes  # key of the labels in every batch


CIFAR_SPECS = ("cifar10", "cifar100")  # the names load_dataset takes for these sets

SOURCES: dict[str, CifarSource] = {
    "cifar10": CifarSource(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a", "cifar-10-python.tar.gz", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
        b"label_names", b"labels"),
    "cifar100": CifarSource(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python.tar.gz", "cifar-100-python",
        ("train",), "test", "meta", b"fine_label_names", b"fine_labels"),
}

_IMAGE_SIDE = 32
_ROW = 3 * _IMAGE_SIDE * _IMAGE_SIDE  # 3072 bytes per image
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0

# the only globals a CIFAR pickle may name: numpy's array reconstruction (numpy 1 and 2 paths)
_SAFE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"the pickle refers to {module}.{name}, which a CIFAR "
                                         "batch never does")
        return super().find_class(module, name)


# ---- layout detection ---------------------------------------------------------------------------
def _layout_of(folder: Path) -> CifarSource | None:
    """The source whose batches folder layout ``folder`` has (meta and test files present)."""
    for source in SOURCES.values():
        if (folder / source.meta).is_file() and (folder / source.test).is_file():
            return source
    return None


def find_cifar_batches(path: str | os.PathLike[str]) -> tuple[Path, CifarSource] | None:
    """``(batches folder, source)`` if ``path`` is a batches folder or holds one, else None."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    source = _layout_of(folder)
    if source is not None:
        return folder, source
    for source in SOURCES.values():
        inner = folder / source.folder
        if inner.is_dir() and _layout_of(inner) is source:
            return inner, source
    return None


def _dataset_name(source: CifarSource) -> str:
    return next(k for k, v in SOURCES.items() if v is source)


# ---- reading ------------------------------------------------------------------------------------
def _read_pickle(file: Path) -> dict:
    try:
        with open(file, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"cannot read the CIFAR file {str(file)!r} ({one_line(exc)})") from None
    except Exception as exc:  # any unpickling failure: truncated, garbage, foreign objects
        raise DataError(f"CIFAR file {str(file)!r} is corrupt ({one_line(exc)}): download the "
                        "archive again") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR file {str(file)!r} is corrupt (holds a {type(obj).__name__}, not "
                        "a dict): download the archive again")
    return obj


def _get(obj: dict, key: bytes):
    """``obj[key]``, also under the str key (pickles written by Python 3 code)."""
    if key in obj:
        return obj[key]
    return obj.get(key.decode(), None)


def _class_names(file: Path, source: CifarSource) -> list[str]:
    names = _get(_read_pickle(file), source.names_key)
    if not isinstance(names, list | tuple) or not names:
        raise DataError(f"CIFAR file {str(file)!r} has no {source.names_key.decode()!r} list: "
                        "download the archive again")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_batch(file: Path, source: CifarSource, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(N x 3072 uint8 pixels, N int64 labels) of one batch file, checked."""
    obj = _read_pickle(file)
    pixels, labels = _get(obj, b"data"), _get(obj, source.labels_key)
    if pixels is None or labels is None:
        raise DataError(f"CIFAR file {str(file)!r} lacks b'data' or "
                        f"{source.labels_key!r}: download the archive again")
    pixels = np.asarray(pixels)
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"CIFAR file {str(file)!r} has labels that are not whole numbers") from None
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != _ROW:
        raise DataError(f"CIFAR file {str(file)!r} holds {pixels.dtype} data of shape "
                        f"{pixels.shape}, not uint8 N x {_ROW}: download the archive again")
    if len(labels) != len(pixels):
        raise DataError(f"CIFAR file {str(file)!r} has {len(pixels)} images but {len(labels)} "
                        "labels: download the archive again")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"CIFAR file {str(file)!r} has labels outside 0 .. {num_classes - 1}")
    return pixels, labels


def load_cifar_batches(root: str | os.PathLike[str], split: str = "test", limit: int | None = None,
                       seed: int = 0, cache_dir: str | os.PathLike[str] | None = None) -> ImageDataset:
    """The ``split`` of CIFAR-10 / CIFAR-100 from python batches.

    Args:
        root: the batches folder (``cifar-10-batches-py`` / ``cifar-100-python``), its parent,
            or the ``.tar.gz`` archive (extracted once into the cache).
        split: ``"train"``, ``"test"`` or ``"val"`` (the same as ``"test"``).
        limit: keep only this many images, balanced over classes and chosen by ``seed``
            (`ge2mst.data.dataset.balanced_choice`), in that order.
        seed: seed of the ``limit`` choice.
        cache_dir: where an archive is extracted (default ``$GE2MST_CACHE`` or ~/.cache/ge2mst).

    Returns:
        float32 N x 3 x 32 x 32 images in [0, 1] (``byte / 255``), int64 labels, the class names
        of the meta file, named ``cifar10/<split>`` or ``cifar100/<split>``.
    """
    split = check_split(split, "CIFAR")
    if limit is not None:
        limit = whole_number("limit", limit, error=DataError)
    path = Path(root).expanduser()
    if path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES):
        path = extract(path, cache_dir)
    found = find_cifar_batches(path)
    if found is None:
        raise DataError(f"{str(root)!r} holds no CIFAR python batches: expected "
                        "cifar-10-batches-py/ (batches.meta, data_batch_1..5, test_batch) or "
                        "cifar-100-python/ (meta, train, test), or their .tar.gz")
    folder, source = found
    classes = _class_names(folder / source.meta, source)
    files = source.train if split == "train" else (source.test,)
    parts = []
    for name in files:
        if not (folder / name).is_file():
            raise DataError(f"CIFAR batch {str(folder / name)!r} is missing: download the "
                            "archive again")
        parts.append(_read_batch(folder / name, source, len(classes)))
    pixels = np.concatenate([p for p, _ in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([lab for _, lab in parts]) if len(parts) > 1 else parts[0][1]
    if len(labels) == 0:
        raise DataError(f"the CIFAR {split} split in {str(folder)!r} holds no images")
    keep = np.asarray(balanced_choice(labels.tolist(), limit, seed), dtype=np.int64)
    chosen = pixels[keep].reshape(-1, 3, _IMAGE_SIDE, _IMAGE_SIDE)
    images = torch.from_numpy(np.ascontiguousarray(chosen)).float().div_(255.0)
    targets = torch.from_numpy(labels[keep].copy())
    return ImageDataset(images, targets, classes, f"{_dataset_name(source)}/{split}")


# ---- named sets and download --------------------------------------------------------------------
def download_cifar(name: str, data_dir: str | os.PathLike[str]) -> Path:
    """Download the archive of ``name`` (``"cifar10"`` / ``"cifar100"``) into ``data_dir``.

    The file is written to a temporary name, its md5 checked, then renamed into place, so a
    broken download never leaves a file that looks complete. An archive already there is kept.

    Returns:
        The path of the archive.

    Raises:
        DataError: unknown name, no network, a failed download or an md5 mismatch.
    """
    source = SOURCES.get(name)
    if source is None:
        raise DataError(f"unknown CIFAR set {name!r}: use one of {', '.join(sorted(SOURCES))}")
    folder = Path(data_dir).expanduser()
    target = folder / source.archive
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{source.archive}.partial-", dir=folder)
    except OSError as exc:
        raise DataError(f"cannot write to {str(folder)!r} ({one_line(exc)}): pass --data-dir "
                        "with a writable folder") from None
    tmp = Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source.url,
                                                                timeout=_TIMEOUT_S) as resp:
            for block in iter(lambda: resp.read(_CHUNK), b""):
                digest.update(block)
                out.write(block)
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot download {name} from {source.url} ({one_line(exc)}): without "
                        f"network, place {source.archive} or its {source.folder}/ folder in the "
                        f"folder given by --data-dir ({str(folder)!r}), or give --data an image "
                        "folder (<dir>/<class>/<image>, or train/ and test/ folders of them) or a "
                        ".tar.gz of one, or 'digits' (bundled, no download)") from None
    if digest.hexdigest() != source.md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"the download of {source.url} is damaged (md5 {digest.hexdigest()}, "
                        f"expected {source.md5}); it was removed: try again, or place "
                        f"{source.archive} in --data-dir yourself")
    os.replace(tmp, target)
    return target


def load_named_cifar(name: str, split: str = "test", limit: int | None = None, seed: int = 0,
                     cache_dir: str | os.PathLike[str] | None = None) -> ImageDataset:
    """``"cifar10"`` / ``"cifar100"`` from the cache folder, downloaded there when absent.

    The cache folder is ``cache_dir`` (``--data-dir``), else ``$GE2MST_CACHE``, else
    ~/.cache/ge2mst; it is searched for the batches folder, then for the archive.
    """
    source = SOURCES[name]
    cache = cache_root(cache_dir)
    if find_cifar_batches(cache / source.folder) is not None:
        return load_cifar_batches(cache / source.folder, split, limit, seed, cache_dir)
    archive = cache / source.archive
    if not archive.is_file():
        archive = download_cifar(name, cache)
    return load_cifar_batches(archive, split, limit, seed, cache_dir)


__all__ = ["CIFAR_SPECS", "SOURCES", "CifarSource", "download_cifar", "find_cifar_batches",
           "load_cifar_batches", "load_named_cifar"]
