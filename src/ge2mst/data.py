"""Image data without torchvision: the bundled digits, ImageFolder directories and their archives.

``load_dataset(spec, split, limit, seed)`` accepts

- ``"digits"``: scikit-learn's bundled 8 x 8 handwritten digits (offline; the embedded default),
  with a fixed stratified 80 / 20 train / test split that never depends on ``seed``;
- an ImageFolder directory ``<dir>/<class>/<image>`` (the ImageNet layout);
- a directory of split folders (``train/``, ``test/``, ``val/``), each an ImageFolder;
- a ``.tar.gz`` / ``.tgz`` archive of either, extracted once (atomically) into a cache folder.

Images come back as float32 N x C x H x W in [0, 1]; `normalize` applies per-channel statistics.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLIT_NAMES = ("train", "test", "val")
_MARKER = ".ge2mst-complete"


@dataclass
class ImageDataset:
    """Images (float32 N x C x H x W in [0, 1]), integer labels and class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation (std at least 1e-6)."""
        x = self.images.transpose(0, 1).flatten(1).to(torch.float64)
        return x.mean(1).float(), x.std(1).clamp_min(1e-6).float()

    def batches(self, batch_size: int, shuffle: bool = False,
                seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches, in order or shuffled by ``seed``."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch size must be a whole number >= 1, got {batch_size!r}")
        n = len(self)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle
                 else torch.arange(n))
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield self.images[idx], self.labels[idx]


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean[c]) / std[c] for B x C x ... images."""
    shape = (1, -1) + (1,) * (images.dim() - 2)
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return (images - mean) / std


def load_dataset(spec: str, split: str = "test", limit: int | None = None, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None,
                 progress: bool = False) -> ImageDataset:
    """Load a data set by ``spec`` (see the module docstring)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a whole number >= 1, got {limit!r}")
    if spec == "digits":
        return _digits(split, limit, seed)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data {spec!r} not found: give 'digits', an ImageFolder directory, a "
                        "directory with train/ and test/ folders, or a .tar.gz of one")
    if path.is_file():
        if not path.name.endswith((".tar.gz", ".tgz")):
            raise DataError(f"data file {spec!r} is not a .tar.gz/.tgz archive")
        path = _extract(path, cache_dir)
    root, name = _split_root(path, split)
    return _image_folder(root, name, limit, seed, progress)


# ---- digits -----------------------------------------------------------------------------------
def _digits(split: str, limit: int | None, seed: int) -> ImageDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in SPLIT_NAMES:
        raise DataError(f"digits has the splits train and test (val = test), not {split!r}")
    d = load_digits()
    idx = np.arange(len(d.target))
    train_idx, test_idx = train_test_split(idx, test_size=0.2, random_state=0, stratify=d.target)
    chosen = np.sort(train_idx if split == "train" else test_idx)
    labels = torch.as_tensor(d.target[chosen], dtype=torch.int64)
    images = torch.as_tensor(d.images[chosen], dtype=torch.float32).unsqueeze(1) / 16.0
    keep = _balanced(labels.tolist(), limit, seed)
    classes = [str(c) for c in range(10)]
    return ImageDataset(images[keep], labels[keep], classes, f"digits/{split}")


def _balanced(labels: list[int], limit: int | None, seed: int) -> list[int]:
    """Indices of ``limit`` items balanced over classes (seeded), in round-robin order."""
    if limit is None or limit >= len(labels):
        return list(range(len(labels)))
    gen = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    queues = []
    for y in sorted(by_class):
        members = by_class[y]
        perm = torch.randperm(len(members), generator=gen).tolist()
        queues.append([members[p] for p in perm])
    picked: list[int] = []
    depth = 0
    while len(picked) < limit:
        for q in queues:
            if depth < len(q) and len(picked) < limit:
                picked.append(q[depth])
        depth += 1
    return picked


# ---- folders and archives ---------------------------------------------------------------------
def _split_root(path: Path, split: str) -> tuple[Path, str]:
    if not path.is_dir():
        raise DataError(f"{str(path)!r} is not a directory")
    present = [s for s in SPLIT_NAMES if (path / s).is_dir()]
    if present:
        if split not in present:
            raise DataError(f"split {split!r} not found in {str(path)!r}; present: {present}")
        return path / split, f"{path.name}/{split}"
    return path, path.name


def _image_folder(root: Path, name: str, limit: int | None, seed: int,
                  progress: bool) -> ImageDataset:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{str(root)!r} has no class sub-folders (expected <dir>/<class>/<image>)")
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        members = sorted(p for p in (root / cls).iterdir()
                         if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not members:
            raise DataError(f"class folder {str(root / cls)!r} holds no images "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
        files += members
        labels += [label] * len(members)
    keep = _balanced(labels, limit, seed)
    arrays = []
    size = None
    it = keep
    if progress and len(keep) > 2000:
        try:
            from tqdm.auto import tqdm

            it = tqdm(keep, desc=f"decode {name}", unit="img", leave=False)
        except ImportError:  # pragma: no cover
            pass
    for i in it:
        arr = _decode(files[i])
        if size is None:
            size = arr.shape
        elif arr.shape != size:
            raise DataError(f"image {str(files[i])!r} is {arr.shape[1]}x{arr.shape[0]}, others are "
                            f"{size[1]}x{size[0]}: all images must share one size")
        arrays.append(arr)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    return ImageDataset(images.contiguous(), torch.tensor([labels[i] for i in keep]), classes, name)


def _decode(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"image {str(path)!r} is corrupt or truncated ({exc})") from None


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("GE2MST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ge2mst"


def _extract(archive: Path, cache_dir: str | os.PathLike | None) -> Path:
    """Extract ``archive`` once into the cache; a folder counts only once its marker exists."""
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    stem = archive.name.removesuffix(".tar.gz").removesuffix(".tgz")
    target = _cache_root(cache_dir) / f"{stem}-{key.hexdigest()[:12]}"
    if (target / _MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=target.parent))
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        (tmp / _MARKER).write_text(f"sha256 {digest}\n")
        if target.exists():  # a leftover without marker (an interrupted extraction)
            shutil.rmtree(target)
        os.replace(tmp, target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if (target / _MARKER).is_file():  # another process finished first
            return target
        raise DataError(f"archive {str(archive)!r} could not be extracted ({exc})") from None
    return target
