"""An independent oracle for ExpG-IF neurons: which code a membrane must give, which spikes must carry it.

`ge2mst.analysis.verification` compares the ANN's quantizer codes with the codes of the spikes the
SNN emits. Both
sides read the same code book (`ge2mst.core.coding`): the same sorted codes, the same midpoints, the
same step weights, and both decide with ``searchsorted``. A fault in that shared code book (ties
going down, floor instead of round-to-nearest, step weights in reversed order) would move both
sides together and stay invisible. This oracle shares none of it:

- the level set is enumerated here from its definition: a code is a T-bit number read most
  significant step first (step t weighs 2**(T - t), t = 1..T), legal when each group of T / G
  contiguous steps holds at most one set bit;
- delta = lambda / n_max is rounded to float32 with the standard library (``struct``), not torch;
- the nearest level, ties going up, is a count of the boundaries the membrane reaches, written as
  ``2 |V| >= delta * (level_{j-1} + level_j)`` (exact in float64: delta has 24 significant bits and
  the level sums stay far below 2**29), compared against every boundary at once, no search;
- the expected spike pattern is the binary expansion of that code (times the membrane's sign for
  ternary neurons), compared element by element with what the neuron emitted, so a pattern that
  decodes to the right code through a wrong weight table is caught as well.
"""

from __future__ import annotations

import struct

import torch

#: elements times boundaries compared in one chunk (bounds the oracle's memory)
CHUNK_CELLS = 1 << 24


def float32_round(value: float) -> float:
    """``value`` rounded to the nearest float32, computed without torch."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def legal_levels(T: int, G: int) -> list[int]:
    """Every legal ExpG code for T steps in G groups, ascending, by direct enumeration."""
    m = T // G
    levels = []
    for code in range(2 ** T):
        bits = [(code >> (T - 1 - t)) & 1 for t in range(T)]  # step 1 first
        if all(sum(bits[g * m:(g + 1) * m]) <= 1 for g in range(G)):
            levels.append(code)
    return levels


class ExpGOracle:
    """Expected codes and spike patterns of one ExpG-IF neuron with T steps, G groups, clip ``lam``."""

    def __init__(self, T: int, G: int, lam: float, signed: bool) -> None:
        self.T, self.G, self.signed = T, G, signed
        levels = legal_levels(T, G)
        self.n_max = levels[-1]
        self.delta = float32_round(float32_round(float(lam)) / self.n_max)
        self._levels = torch.tensor(levels, dtype=torch.int64)
        # twice the boundaries: delta * (level_{j-1} + level_j), exact in float64
        pairs = zip(levels[:-1], levels[1:], strict=True)
        self._twice_bounds = torch.tensor([self.delta * (a + b) for a, b in pairs], dtype=torch.float64)
        self._weights = torch.tensor([1 << (T - 1 - t) for t in range(T)], dtype=torch.int64)

    def codes(self, membrane: torch.Tensor) -> torch.Tensor:
        """Signed integer code (int64) that each whole-window membrane (float64) must give."""
        v = membrane.reshape(-1).to(torch.float64)
        mag = v.abs() if self.signed else v
        twice = self._twice_bounds.to(v.device)
        index = torch.empty(v.shape, dtype=torch.int64, device=v.device)
        step = max(1, CHUNK_CELLS // max(1, twice.numel()))
        for i in range(0, v.numel(), step):
            part = 2.0 * mag[i:i + step]
            index[i:i + step] = (part.unsqueeze(-1) >= twice).sum(-1)
        codes = self._levels.to(v.device)[index]
        if self.signed:
            codes = codes * torch.sign(v).to(torch.int64)
        return codes.reshape(membrane.shape)

    def patterns(self, codes: torch.Tensor) -> torch.Tensor:
        """Expected spikes (int8, T x ...) of signed codes: the binary expansion, step 1 first."""
        mag = codes.abs().unsqueeze(0)
        weights = self._weights.to(codes.device).view(-1, *([1] * codes.dim()))
        bits = (mag // weights) % 2
        return (bits * torch.sign(codes).unsqueeze(0)).to(torch.int8)

    def check(self, membrane: torch.Tensor, spikes: torch.Tensor) -> tuple[int, int]:
        """(neurons checked, neurons whose emitted spikes differ from the expected pattern).

        ``membrane``: B x ... whole-window membranes; ``spikes``: T x B x ... emitted spikes.
        """
        expected = self.patterns(self.codes(membrane))
        wrong = (expected != spikes.to(torch.int8).to(expected.device)).any(0)
        return wrong.numel(), int(wrong.sum())
