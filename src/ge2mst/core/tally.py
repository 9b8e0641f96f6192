"""What a layer of spiking neurons emitted, tallied without keeping the spike trains."""

from __future__ import annotations

import torch

from .coding import ExpGCodeBook


class SpikeTally:
    """What energy accounting needs of one layer's spikes in one call, kept instead of its spike
    trains: spikes per step over the batch (int64, T), the histogram of spikes per neuron
    (int64, 0..T), whether any spike is negative (0-dim bool), neurons per image, and the spikes
    of each neuron (B x ..., int64, made on demand). Made from the spike trains (`from_spikes`) or,
    without them, from the levels of an ExpG layer (`from_levels`); both give the same numbers
    (tested)."""

    def __init__(self, per_step: torch.Tensor, histogram: torch.Tensor, negative: torch.Tensor,
                 shape: torch.Size, per_neuron) -> None:
        self.per_step, self.histogram, self.negative = per_step, histogram, negative
        self.shape = shape  # B x ...
        self._per_neuron = per_neuron

    @property
    def neurons(self) -> int:
        """Neurons per image."""
        return self.shape[1:].numel()

    @property
    def numel(self) -> int:
        """Neurons times images."""
        return self.shape.numel()

    def total(self) -> int:
        return int(self.per_step.sum())

    def per_neuron(self) -> torch.Tensor:
        if callable(self._per_neuron):
            self._per_neuron = self._per_neuron()
        return self._per_neuron

    @classmethod
    def from_spikes(cls, spikes: torch.Tensor) -> SpikeTally:
        mag = spikes.abs()
        count = mag.sum(0, dtype=torch.int64)
        return cls(mag.flatten(1).sum(1, dtype=torch.int64),
                   torch.bincount(count.flatten(), minlength=spikes.shape[0] + 1),
                   (spikes < 0).any(), count.shape, count)

    @classmethod
    def from_levels(cls, rows: torch.Tensor, book: ExpGCodeBook, signed: bool) -> SpikeTally:
        """From the level of each neuron, its index into the code book (signed: plus M where the
        membrane is negative, M the number of levels): one histogram of the rows, read through
        the code book's pattern table."""
        M = book.num_levels
        patterns = book.on("patterns", rows.device).to(torch.int64)  # M x T
        hist = torch.bincount(rows.reshape(-1), minlength=2 * M if signed else M)
        pop = patterns.sum(1)  # spikes of each level
        if signed:
            negative = hist[M + 1:].sum() > 0  # a negative membrane above level 0
            hist = hist[:M] + hist[M:]
            pop_rows = torch.cat([pop, pop])
        else:
            negative = torch.zeros((), dtype=torch.bool, device=rows.device)
            pop_rows = pop
        histogram = torch.zeros(book.T + 1, dtype=torch.int64, device=rows.device)
        return cls((patterns * hist[:, None]).sum(0), histogram.index_add_(0, pop, hist),
                   negative, rows.shape, lambda: pop_rows[rows])
