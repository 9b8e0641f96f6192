"""The data of a training run: its two splits, decoded into memory or streamed from the folder.

``--data-mode memory`` decodes the splits whole (small sets: digits, CIFAR, event recordings;
there augmentation runs on the batch's device); ``stream`` reads an image folder lazily, each
image decoded (and augmented, for training) by a DataLoader worker when its batch comes; ``auto``
streams an image folder whose decoded float32 images would take more than `MEMORY_SHARE` of this
machine's memory. ``--img-size S`` gives the model's input side: streamed training images are
random-resized-cropped to it, evaluation images resized and centre-cropped (``--crop-ratio``).
"""

from __future__ import annotations

import os

import torch

from .._checks import one_of
from ..data import CROP_RATIO, TrainTransform, decoded_bytes, load_dataset, normalize
from ..data.load import open_stream_dataset
from ..errors import DataError
from .config import TrainConfig
from .sources import StreamInput

#: ``--data-mode``: chosen by size, or forced
DATA_MODES = ("auto", "memory", "stream")
#: ``auto`` streams when the decoded splits would take more than this share of the memory
MEMORY_SHARE = 0.25


def machine_memory() -> int:
    """Bytes of physical memory (8 GiB when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 8 << 30


def train_transform(cfg: TrainConfig, size: int) -> TrainTransform:
    """The per-image augmentation of streamed training images under ``cfg``."""
    auto = None if cfg.auto_augment == "none" else cfg.auto_augment
    return TrainTransform(size, scale=(cfg.min_crop_scale, 1.0), hflip=0.5 if cfg.hflip else 0.0,
                          auto_augment=auto, erase_prob=cfg.random_erase)


def load_splits(spec: str, args, cfg: TrainConfig, img_size: int | None):
    """(training split, held-out split), both in memory or both streamed as ``args.data_mode``
    says (`DATA_MODES`)."""
    mode = one_of("--data-mode", getattr(args, "data_mode", "auto"), DATA_MODES, error=DataError)
    extra = {key: value for key, value in (("frames", args.frames),
                                           ("event_size", getattr(args, "event_size", None)))
             if value is not None}  # event data only
    if mode != "memory" and not extra:
        streams = _streams(spec, args, cfg, img_size, forced=mode == "stream")
        if streams is not None:
            return streams
    crop = getattr(args, "crop_ratio", None)
    common = dict(seed=args.seed, cache_dir=args.data_dir, progress=not args.json,
                  img_size=img_size, **({} if crop is None else {"crop_ratio": crop}), **extra)
    return (load_dataset(spec, split="train", limit=args.train_limit, **common),
            load_dataset(spec, split=args.split, limit=args.limit, **common))


def _streams(spec: str, args, cfg: TrainConfig, img_size: int | None, forced: bool):
    """The two splits streamed; None when ``auto`` finds that they fit in memory (or are not an
    image folder)."""
    try:
        test = _open(spec, args, args.split, args.limit, img_size, None)
    except DataError:
        if forced:
            raise
        return None
    size = test.image_size[0]
    train = _open(spec, args, "train", args.train_limit, size, train_transform(cfg, size))
    if not forced and decoded_bytes(len(train) + len(test), size) <= MEMORY_SHARE * machine_memory():
        return None
    return train, test


def _open(spec, args, split: str, limit: int | None, img_size: int | None, transform):
    if img_size is None:
        raise DataError("streamed images need their side: give --img-size (e.g. 224)")
    return open_stream_dataset(spec, split, img_size, limit, args.seed, args.data_dir, transform,
                               getattr(args, "crop_ratio", CROP_RATIO),
                               getattr(args, "skip_bad_images", False))


def model_inputs(split, mean: torch.Tensor, std: torch.Tensor, workers: int = 0):
    """What the trainer and the scoring take: normalised images in memory, or a `StreamInput`."""
    if getattr(split, "streaming", False):
        return StreamInput(split, mean, std, workers)
    return normalize(split.images, mean, std)


def first_images(inputs, count: int) -> torch.Tensor:
    """The first ``count`` normalised images of `model_inputs` (calibration, shape checks)."""
    if isinstance(inputs, StreamInput):
        return inputs.first(count, torch.device("cpu"))
    return inputs[:count]


def scoring_batches(inputs, labels: torch.Tensor, batch_size: int = 128):
    """(images, labels) batches of a whole held-out split, on the CPU."""
    if isinstance(inputs, StreamInput):
        yield from inputs.evaluation_batches(torch.device("cpu"), batch_size)
        return
    for i in range(0, len(labels), batch_size):
        yield inputs[i:i + batch_size], labels[i:i + batch_size]


__all__ = ["DATA_MODES", "MEMORY_SHARE", "first_images", "load_splits", "machine_memory",
           "model_inputs", "scoring_batches", "train_transform"]
