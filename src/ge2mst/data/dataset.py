"""The in-memory data set every loader returns, and what all loaders share.

`ImageDataset` holds float32 N x C x H x W images in [0, 1] (not normalised), int64 labels and
the class names; `normalize` applies per-channel statistics such as those of
`ImageDataset.channel_stats`. `balanced_choice` is the seeded, class-balanced ``limit`` choice
(made before any file is decoded), and `check_split` the one reading of a split name (``"val"``
is ``"test"``) for the loaders whose data have a fixed train / test split.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .._checks import whole_number
from ..errors import DataError

SPLIT_NAMES = ("train", "test", "val")

_STATS_CHUNK = 4096  # images per chunk when channel statistics are accumulated


@dataclass
class ImageDataset:
    """Images (float32 N x C x H x W in [0, 1], not normalised), int64 labels and class names.

    ``streaming`` is False: the images are all in memory (a `StreamingImageFolder` decodes them
    on demand and says True).
    """

    streaming = False  # a class attribute, not a field

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
        size = whole_number("batch size", batch_size, error=DataError)
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


def check_split(split: str, data: str) -> str:
    """``split`` of data with a fixed train / test split: ``"train"`` or ``"test"``.

    ``"val"`` is read as ``"test"``; any other name raises `DataError` naming ``data`` (the
    words for the data in the message, e.g. ``"CIFAR"``).
    """
    if split not in SPLIT_NAMES:
        raise DataError(f"split {split!r} does not exist for {data}: use 'train' or 'test' "
                        "('val' is the same as 'test')")
    return "test" if split == "val" else split


def balanced_choice(labels: Sequence[int], limit: int | None, seed: int) -> list[int]:
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


__all__ = ["SPLIT_NAMES", "ImageDataset", "balanced_choice", "check_split", "normalize"]
