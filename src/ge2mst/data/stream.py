"""Streaming ImageFolders: images decoded one at a time, for sets too large to hold in memory.

`open_stream` lists an ImageFolder (no file is decoded) and returns a `StreamingImageFolder`, a
``torch.utils.data.Dataset`` whose items are decoded on demand: ``data[i]`` is image ``i``
through the `EvalTransform`, ``data[i, epoch]`` through the `TrainTransform` with the generator
``sample_rng(seed, epoch, i)``, so what a DataLoader worker draws depends on the image and the
epoch alone. Items are ``(uint8 3 x S x S tensor, label)``; `collate_stream` stacks them and
counts the images skipped as unreadable (``skip_bad=True``). `decoded_bytes` says what a set
would take decoded in memory, to choose between the two.

File names are kept as one NumPy bytes array rather than a list of strings, so DataLoader
workers that read them do not copy the list page by page (reference counts touch every object).
"""

from __future__ import annotations

import operator
import os
from pathlib import Path

import numpy as np
import torch

from .._checks import whole_number
from ..errors import ConfigError, DataError
from .dataset import balanced_choice
from .folders import list_image_folder, open_image
from .transforms import CROP_RATIO, EvalTransform, TrainTransform, sample_rng

Item = tuple[torch.Tensor, int]


class StreamingImageFolder(torch.utils.data.Dataset):
    """ImageFolder images decoded on demand: ``data[i]`` (evaluation) or ``data[i, epoch]``
    (training), each a ``(uint8 3 x size x size tensor, int label)``.

    Args:
        files: the image files, in item order.
        labels: their labels, ``0 .. len(classes) - 1``.
        classes: the class names.
        name: the data set's name.
        size: side of the square images.
        train: the training transform (its ``size`` must be ``size``), or None for a set that is
            only evaluated.
        evaluation: the evaluation transform (its ``size`` must be ``size``).
        seed: the seed of the training draws (`sample_rng`) and of `channel_stats`' sample.
        skip_bad: give None for an image that cannot be decoded instead of raising DataError.

    Attributes mirror those of `ImageDataset`: ``labels`` (int64 tensor), ``classes``, ``name``,
    ``num_classes``, ``in_chans`` (3), ``image_size``; ``streaming`` is True (False there).
    """

    streaming = True
    in_chans = 3

    def __init__(self, files: list[str], labels: list[int], classes: list[str], name: str,
                 size: int, train: TrainTransform | None, evaluation: EvalTransform, seed: int,
                 skip_bad: bool = False) -> None:
        self.size = whole_number("StreamingImageFolder: size", size)
        for role, transform in (("train", train), ("evaluation", evaluation)):
            if transform is not None and transform.size != self.size:
                raise ConfigError(f"StreamingImageFolder: the {role} transform makes "
                                  f"{transform.size}x{transform.size} images but size is "
                                  f"{self.size}: give both the same size")
        if len(files) != len(labels):
            raise DataError(f"StreamingImageFolder: {len(files)} files but {len(labels)} labels")
        self._files = np.array([os.fsencode(f) for f in files], dtype=np.bytes_)
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)
        self.classes = list(classes)
        self.name = name
        self.train = train
        self.evaluation = evaluation
        self.seed = int(seed)
        self.skip_bad = bool(skip_bad)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``); labels lie in ``0 .. num_classes - 1``."""
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image: ``(size, size)``."""
        return self.size, self.size

    def __len__(self) -> int:
        return len(self._files)

    def file(self, index: int) -> str:
        """The file of item ``index``."""
        return os.fsdecode(bytes(self._files[index]))

    def __getitem__(self, key: int | tuple[int, int]) -> Item | None:
        """Item ``key``: an index (evaluation transform) or ``(index, epoch)`` (training).

        Raises:
            IndexError: an index outside ``-len .. len - 1``.
            DataError: an image that cannot be decoded (None instead with ``skip_bad``), a
                training key without a training transform, or a key of another form.
        """
        index, epoch = self._key(key)
        try:
            img = open_image(self.file(index))
        except DataError:
            if self.skip_bad:
                return None
            raise
        if epoch is None:
            pixels = self.evaluation(img)
        else:
            pixels = self.train(img, sample_rng(self.seed, epoch, index))  # type: ignore[misc]
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), int(self.labels[index])

    def _key(self, key: object) -> tuple[int, int | None]:
        """(index >= 0, epoch or None) of an item key."""
        epoch = None
        if isinstance(key, tuple):
            if len(key) != 2:
                raise DataError(f"{self.name}: an item key is an index or (index, epoch), got {key!r}")
            key, epoch = key
            epoch = whole_number(f"{self.name}: epoch", epoch, minimum=0, error=DataError)
            if self.train is None:
                raise DataError(f"{self.name}: data[index, epoch] needs a training transform, and "
                                "this set has none: give train= (or use data[index])")
        try:
            index = operator.index(key)  # type: ignore[arg-type]
        except TypeError:
            raise DataError(f"{self.name}: an item index must be an integer, got {key!r}") from None
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"{self.name}: index {index} out of range for {count} images")
        return index % count, epoch

    def collate(self, items: list[Item | None]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """`collate_stream` with this set's image size (so an all-skipped batch keeps it)."""
        return collate_stream(items, self.size)

    def channel_stats(self, sample: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and (unbiased) standard deviation of the evaluation images, float32,
        pixels in [0, 1], std clamped at >= 1e-6 (as `ImageDataset.channel_stats`).

        Estimated from at most ``sample`` images, a class-balanced choice seeded with ``seed``
        (`balanced_choice`), so the result is deterministic; with ``sample >= len`` it is that of
        the whole set. Images skipped as unreadable (``skip_bad``) are left out.
        """
        sample = whole_number("channel_stats: sample", sample, error=DataError)
        count, mean, squares = 0, np.zeros(3), np.zeros(3)
        for index in balanced_choice(self.labels.tolist(), sample, self.seed):
            item = self[index]
            if item is None:
                continue
            x = item[0].numpy().reshape(3, -1).astype(np.float32) / np.float32(255.0)
            n, m = x.shape[1], x.mean(1, dtype=np.float64)
            m2 = np.square(x - m[:, None], dtype=np.float64).sum(1)
            # Chan et al.'s pairwise combination of (count, mean, squared deviations)
            delta, total = m - mean, count + n
            mean = mean + delta * n / total
            squares = squares + m2 + delta * delta * count * n / total
            count = total
        if count == 0:
            raise DataError(f"data set {self.name!r}: no image of the sample could be decoded, "
                            "there are no statistics")
        std = np.sqrt(squares / max(1, count - 1))
        return (torch.from_numpy(mean).float(),
                torch.from_numpy(std).clamp_min(1e-6).float())


def collate_stream(items: list[Item | None],
                   size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the items that are not None; count those that are (skipped images).

    Returns ``(B x 3 x S x S uint8 images, B int64 labels, skipped)``. A batch of None only gives
    empty tensors, ``0 x 3 x size x size`` (``0 x 3 x 0 x 0`` without ``size``: pass it, or use
    `StreamingImageFolder.collate`).
    """
    kept = [item for item in items if item is not None]
    skipped = len(items) - len(kept)
    if not kept:
        side = 0 if size is None else whole_number("collate_stream: size", size, error=DataError)
        return (torch.empty((0, 3, side, side), dtype=torch.uint8),
                torch.empty(0, dtype=torch.int64), skipped)
    images = torch.stack([image for image, _ in kept])
    labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
    return images, labels, skipped


def open_stream(root: Path, name: str, size: int, limit: int | None, seed: int,
                train: TrainTransform | None, crop_ratio: float = CROP_RATIO,
                skip_bad: bool = False) -> StreamingImageFolder:
    """The ImageFolder ``root`` as a `StreamingImageFolder` of ``size x size`` images.

    Only the listing is read (no image is decoded). With ``limit``, a class-balanced choice
    seeded with ``seed`` is kept, the same as `load_image_folder`'s; ``seed`` also seeds the
    training draws. The evaluation transform is ``EvalTransform(size, crop_ratio)``.
    """
    size = whole_number("image size", size, error=DataError)
    if limit is not None:
        limit = whole_number("limit", limit, error=DataError)
    classes, files, labels = list_image_folder(Path(root))
    keep = balanced_choice(labels, limit, seed)
    return StreamingImageFolder([files[i] for i in keep], [labels[i] for i in keep], classes, name,
                                size, train, EvalTransform(size, crop_ratio), seed, skip_bad)


def decoded_bytes(count: int, size: int) -> int:
    """Bytes of ``count`` decoded RGB images of ``size x size`` as float32 (in memory)."""
    count = whole_number("decoded_bytes: count", count, minimum=0, error=DataError)
    size = whole_number("decoded_bytes: size", size, error=DataError)
    return count * 3 * size * size * 4


__all__ = ["StreamingImageFolder", "collate_stream", "decoded_bytes", "open_stream"]
