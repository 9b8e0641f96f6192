"""Where training and evaluation batches come from when the images do not fit in memory.

A `StreamInput` wraps a streaming image folder (`ge2mst.data.StreamingImageFolder`) with the
normalisation of the run and the number of decoding worker processes. Its batches are decoded
with Pillow in `torch.utils.data.DataLoader` workers, each rank decoding only its own share of
every global batch (``batch[rank::world]``, the slice an in-memory run trains on), and are
normalised on the training device. Every random draw of the augmentation of image ``i`` in
epoch ``e`` comes from ``(seed, e, i)``, so a run resumed mid-epoch decodes exactly what an
uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from .._checks import whole_number
from ..data.dataset import normalize
from ..data.stream import StreamingImageFolder
from ..errors import ConfigError, Ge2msError


def _one_line_errors(loader: DataLoader):
    """The loader's batches; a ge2mst error raised in a worker process (which the DataLoader
    re-raises with the worker's traceback in its message) comes back as its own one line."""
    try:
        yield from loader
    except Ge2msError as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        last = lines[-1] if lines else type(exc).__name__
        prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
        raise type(exc)(last.removeprefix(prefix)) from None


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # workers decode; the training process keeps the cores' threads


@dataclass
class StreamInput:
    """A streaming folder, the run's per-channel ``mean`` / ``std`` and ``workers`` processes."""

    dataset: StreamingImageFolder
    mean: torch.Tensor
    std: torch.Tensor
    workers: int = 0

    def __post_init__(self) -> None:
        if not getattr(self.dataset, "streaming", False):
            raise ConfigError("StreamInput needs a streaming image folder "
                              f"(ge2mst.data.open_stream), got {type(self.dataset).__name__}")
        if self.workers != 0:
            whole_number("workers", self.workers)
        self.mean = torch.as_tensor(self.mean, dtype=torch.float32)
        self.std = torch.as_tensor(self.std, dtype=torch.float32)

    streaming = True

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> torch.Tensor:
        return self.dataset.labels

    def batches(self, keys: Sequence[Sequence], device: torch.device
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """(normalised images on ``device``, labels on ``device``, skipped images) per list of
        ``keys`` (``i`` for evaluation, ``(i, epoch)`` for training), in order."""
        loader = DataLoader(self.dataset, batch_sampler=[list(k) for k in keys],
                            num_workers=self.workers, collate_fn=self.dataset.collate,
                            worker_init_fn=_one_thread if self.workers else None,
                            generator=torch.Generator(),  # the global RNG is left untouched
                            prefetch_factor=4 if self.workers else None)
        for pixels, labels, skipped in _one_line_errors(loader):
            x = pixels.to(device, non_blocking=True).float().div_(255.0)
            yield normalize(x, self.mean, self.std), labels.to(device), skipped

    def evaluation_batches(self, device: torch.device, batch_size: int = 256, rank: int = 0,
                           world: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of the whole folder (images ``rank, rank + world, ...``), in batches
        of ``batch_size``, through the evaluation transform."""
        share = list(range(rank, len(self), world))
        keys = [share[i:i + batch_size] for i in range(0, len(share), batch_size)]
        self.skipped = 0  # images of this pass skipped as unreadable (``skip_bad``)
        for x, y, lost in self.batches(keys, device):
            self.skipped += lost
            yield x, y

    def first(self, count: int, device: torch.device) -> torch.Tensor:
        """The first ``count`` images, normalised (calibration, a shape check)."""
        keys = [list(range(min(count, len(self))))]
        return next(iter(self.batches(keys, device)))[0]


class EvaluationBatches:
    """The whole streamed set as (normalised images, labels) batches on ``device``, re-iterable:
    each pass decodes the images anew, so none is held after its batch. ``labels`` are known
    without decoding (what `ge2mst.analysis.evaluation.evaluate` reads up front)."""

    def __init__(self, inputs: StreamInput, batch_size: int,
                 device: torch.device | str = "cpu") -> None:
        self.inputs = inputs
        self.batch_size = whole_number("batch size", batch_size)
        self.device = torch.device(device)

    @property
    def labels(self) -> torch.Tensor:
        return self.inputs.labels

    def __len__(self) -> int:
        return -(-len(self.inputs) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.inputs.evaluation_batches(self.device, self.batch_size)


def is_streaming(data) -> bool:
    """Whether ``data`` is a `StreamInput` (else: an in-memory tensor of images)."""
    return isinstance(data, StreamInput)


__all__ = ["EvaluationBatches", "StreamInput", "is_streaming"]
