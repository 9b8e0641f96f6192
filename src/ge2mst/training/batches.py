"""The training batches of one process: which images, augmented and mixed how.

`TrainingBatches` turns the index lists of an epoch's global batches into (inputs, targets,
labels, skipped images) for this rank. Images in memory: every rank augments the whole global
batch on the training device (random crops of the padded image and flips, drawn from the run's
generator; alternating flips from a fixed seeded half), mixes it, and keeps its slice
``batch[rank::world]``. Streamed images: every rank decodes only its slice, each image augmented
in a worker from (seed, epoch, index), and mixes within it. The generator is the trainer's, so
its state (saved with the run) covers every draw made here.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data.augment import augment, cutout, mix_batch
from ..errors import ConfigError
from .config import TrainConfig
from .sources import StreamInput, is_streaming


class TrainingBatches:
    """This rank's batches of ``images`` (a tensor with ``labels``, or a `StreamInput`)."""

    def __init__(self, images: torch.Tensor | StreamInput, labels: torch.Tensor | None,
                 cfg: TrainConfig, gen: torch.Generator, device: torch.device, rank: int = 0,
                 world: int = 1) -> None:
        self.stream = images if is_streaming(images) else None
        if self.stream is not None:
            labels = self.stream.labels
            if cfg.alternate_flip:
                raise ConfigError("alternating flips need the images in memory: streamed images "
                                  "are flipped at random (hflip)")
        elif labels is None or images.shape[0] != labels.shape[0]:
            raise ConfigError(f"{images.shape[0]} images but "
                              f"{'no' if labels is None else labels.shape[0]} labels")
        else:
            cfg.check_in_memory()
            if device.type == "cuda":  # a set that fits stays on the GPU: no copies
                images, labels = images.to(device), labels.to(device)
        self.images, self.labels = images, labels
        self.cfg, self.gen, self.device, self.rank, self.world = cfg, gen, device, rank, world
        self.num_classes = int(labels.max()) + 1 if labels.numel() else 1
        # alternating flips: a fixed random half of the images is flipped in even epochs, the
        # other half in odd ones (every image seen both ways every two epochs); from the seed
        self.flip_base = (torch.rand(len(labels), generator=torch.Generator().manual_seed(cfg.seed + 1))
                          < 0.5) if cfg.alternate_flip else None

    def __len__(self) -> int:
        return len(self.labels)

    def epoch(self, index_lists: list[torch.Tensor], epoch: int
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
        """(inputs, targets for the loss, labels for the accuracy, skipped images) of this rank
        for each global batch of ``index_lists``, in epoch ``epoch`` (0-based)."""
        if self.stream is None:
            for idx in index_lists:
                yield (*self._from_memory(idx, epoch), 0)
            return
        keys = [[(i, epoch) for i in idx[self.rank::self.world].tolist()] for idx in index_lists]
        for x, y, skipped in self.stream.batches(keys, self.device):
            yield (*self._mix(x, y), y, skipped)

    def _from_memory(self, idx: torch.Tensor, epoch: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        flips = None
        if self.flip_base is not None:
            flips = self.flip_base[idx] ^ bool(epoch % 2)
        x = _standard_strides(augment(self.images[idx.to(self.images.device)].to(self.device),
                                      self.gen, padding=cfg.crop_padding, hflip=cfg.hflip,
                                      flips=flips))
        y = self.labels[idx.to(self.labels.device)].to(self.device)
        x, target = self._mix(x, y)
        if self.world > 1:
            x, target, y = (t[self.rank::self.world] for t in (x, target, y))
        return x, target, y

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cutout, then mixup / cutmix, as configured: (images, soft targets) when mixing, else
        (images, labels)."""
        cfg = self.cfg
        x = cutout(x, self.gen, cfg.cutout)
        if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
            return mix_batch(x, y, self.num_classes, self.gen, mixup_alpha=cfg.mixup_alpha,
                             cutmix_alpha=cfg.cutmix_alpha, label_smoothing=cfg.label_smoothing)
        return x, y


def _standard_strides(x: torch.Tensor) -> torch.Tensor:
    """``x`` with row-major strides. A crop of one-channel images can come out with strides
    that count as channels-last too, and convolutions then answer in channels-last layout, where
    a user's forward code cannot ``.view()`` its features (``.contiguous()`` keeps such strides)."""
    standard = [1] * x.dim()
    for i in range(x.dim() - 2, -1, -1):
        standard[i] = standard[i + 1] * x.shape[i + 1]
    if list(x.stride()) == standard:
        return x
    return x.clone(memory_format=torch.contiguous_format)


__all__ = ["TrainingBatches"]
