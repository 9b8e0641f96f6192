"""Code books: which spike patterns are legal, which integer code each one stands for.

A code book is pure integer arithmetic, shared by the ANN-mode quantizers and the SNN-mode neurons,
so that both modes decide with the very same boundaries (docs/METHOD: exactness in floating point).

ExpG (grouped exponential coding), with T time steps and G temporal groups of m = T / G
contiguous steps:

- step t (0-based here) carries the base beta_t = 2**(T - 1 - t), largest first;
- a legal pattern has at most one spike in each group, so at most G spikes;
- its code is n(s) = sum_t beta_t * s_t, distinct for distinct patterns, (m + 1)**G codes;
- the levels are delta * n, with delta = lambda / n_max; rounding is to the nearest level with
  ties going up, so the decision boundaries are the midpoints of adjacent codes (half-integers).

The uniform code book (QCFS, the baseline) has the codes 0..L and no spike patterns: its neuron is
the vanilla IF neuron, which fires online and needs no pattern table.
"""

from __future__ import annotations

import itertools
import math
from functools import cache

import torch

from ..errors import ConfigError

#: code books are built on the host, whatever default device is in force (``with
#: torch.device("meta"):`` model construction included), and copied per device by `CodeBook.on`
_HOST = torch.device("cpu")


def check_time_groups(T: object, G: object) -> tuple[int, int]:
    """Validate the number of time steps ``T`` and of temporal groups ``G``; return them as ints."""
    for name, value in (("T", T), ("G", G)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
    assert isinstance(T, int) and isinstance(G, int)
    if T < 1:
        raise ConfigError(f"T (time steps) must be at least 1, got {T}")
    if T > 16:
        raise ConfigError(f"T = {T} is too large: ExpG codes grow as 2**T; use T <= 16")
    if G < 1 or G > T:
        raise ConfigError(f"G (temporal groups) must lie in 1..T = 1..{T}, got {G}")
    if T % G:
        raise ConfigError(
            f"G = {G} must divide T = {T} (each group holds T/G steps); "
            f"valid G for T = {T}: {[g for g in range(1, T + 1) if T % g == 0]}"
        )
    return T, G


class CodeBook:
    """Sorted integer codes ``codes`` (0 first) and the half-integer boundaries between them."""

    kind: str = "abstract"

    def __init__(self, codes: list[int]) -> None:
        codes = sorted(set(codes))
        if codes[0] != 0 or len(codes) < 2:
            raise ConfigError("a code book needs the code 0 and at least one positive code")
        self.codes = torch.tensor(codes, dtype=torch.int64, device=_HOST)
        self.n_max = int(codes[-1])
        # Midpoints of adjacent codes; exact in float64 (half-integers far below 2**53).
        c = self.codes.to(torch.float64)
        self.mids = (c[:-1] + c[1:]) / 2
        self._copies: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def on(self, name: str, device: torch.device | str) -> torch.Tensor:
        """The table ``name`` (``codes``, ``mids``, ``grid_codes``, ...) on ``device``.

        Copies are made once per device and reused, so that a model on a GPU never meets a CPU
        table and never uploads one per call. A copy is made again if the table itself has been
        replaced (code books are immutable in use; `ge2mst.analysis.faults` replaces tables).
        """
        source = self.grid_codes if name == "grid_codes" else getattr(self, name)
        device = torch.device(device)
        if source.device == device:
            return source
        key = (name, device)
        hit = self._copies.get(key)
        if hit is None or hit[0] is not source:
            hit = self._copies[key] = (source, source.to(device))
        return hit[1]

    @property
    def grid_codes(self) -> torch.Tensor:
        """Code of every point k / 2 (k = 0 .. 2 n_max + 1) of the half-integer grid: the last
        code whose boundary lies at or below it (ties go up)."""
        mids = self.mids
        cached = getattr(self, "_grid", None)
        if cached is None or cached[0] is not mids:
            half = torch.arange(2 * self.n_max + 2, dtype=torch.float64, device=_HOST) / 2
            cached = self._grid = (mids, self.codes[torch.searchsorted(mids, half, right=True)])
        return cached[1]

    @property
    def num_levels(self) -> int:
        """M, the number of distinct (unsigned) levels, zero included."""
        return int(self.codes.numel())

    @property
    def comparisons(self) -> int:
        """Comparisons a binary search over the boundaries needs: ceil(log2 M)."""
        return math.ceil(math.log2(self.num_levels))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"

    def describe(self) -> str:  # pragma: no cover - overridden
        return ""


class ExpGCodeBook(CodeBook):
    """Grouped exponential code book for ``T`` steps and ``G`` groups of contiguous steps."""

    kind = "expg"

    def __init__(self, T: int, G: int) -> None:
        T, G = check_time_groups(T, G)
        self.T, self.G, self.m = T, G, T // G
        self.beta = torch.tensor([2 ** (T - 1 - t) for t in range(T)], dtype=torch.int64,
                                 device=_HOST)
        self.group_of_step = torch.arange(T, device=_HOST) // self.m
        patterns = _legal_patterns(T, G)
        codes = [sum(int(b) * s for b, s in zip(self.beta.tolist(), p, strict=True)) for p in patterns]
        order = sorted(range(len(codes)), key=codes.__getitem__)
        super().__init__([codes[i] for i in order])
        #: M x T table of the legal patterns, row j is the pattern of ``codes[j]``.
        self.patterns = torch.tensor([patterns[i] for i in order], dtype=torch.int8, device=_HOST)
        # Form B (sequential IF): the pre-firing threshold of step t, in code units, is the
        # midpoint between beta_t and the largest code reachable without firing at t (a later
        # step of the same group, then the first step of every later group).
        pre = []
        for t in range(T):
            rest = 0
            if (t + 1) % self.m:  # a later step of t's own group can still fire
                rest += 2 ** (T - 2 - t)
            first_group_after = t // self.m + 1
            rest += sum(2 ** (T - 1 - g * self.m) for g in range(first_group_after, G))
            pre.append((2 ** (T - 1 - t) + rest) / 2)
        self.pre = torch.tensor(pre, dtype=torch.float64, device=_HOST)

    def describe(self) -> str:
        return f"T={self.T}, G={self.G}, M={self.num_levels}, n_max={self.n_max}"

    @property
    def digits(self) -> torch.Tensor:
        """(n_max + 1) x T int64 table: row k holds the binary digits of k in the step weights
        beta_t, largest first (the spike pattern of the code k when k is legal)."""
        cached = getattr(self, "_digits", None)
        if cached is None:
            k = torch.arange(self.n_max + 1, dtype=torch.int64, device=_HOST)
            cached = self._digits = torch.bitwise_and(k[:, None] // self.beta, 1).contiguous()
        return cached

    @property
    def popcount(self) -> torch.Tensor:
        """Spikes of the pattern of each code 0..n_max (int64): the number of its binary digits."""
        cached = getattr(self, "_popcount", None)
        if cached is None:
            cached = self._popcount = self.digits.sum(1)
        return cached

    def code_of(self, spikes: torch.Tensor) -> torch.Tensor:
        """Integer code of spike trains ``spikes`` (T first); ternary spikes give signed codes."""
        if spikes.shape[0] != self.T:
            raise ConfigError(f"expected {self.T} time steps first, got shape {tuple(spikes.shape)}")
        beta = self.on("beta", spikes.device).view(-1, *([1] * (spikes.dim() - 1)))
        return (spikes.to(torch.int64) * beta).sum(0)

    def illegal_mask(self, spikes: torch.Tensor) -> torch.Tensor:
        """True where a neuron's pattern has more than one spike in some group."""
        per_group = spikes.abs().to(torch.int16).unflatten(0, (self.G, self.m)).sum(1)
        return (per_group > 1).any(0)


class UniformCodeBook(CodeBook):
    """Uniform code book 0..L of the QCFS quantizer (the vanilla-IF baseline)."""

    kind = "uniform"

    def __init__(self, L: int) -> None:
        if isinstance(L, bool) or not isinstance(L, int) or L < 1:
            raise ConfigError(f"L (quantization levels) must be a whole number >= 1, got {L!r}")
        self.L = L
        super().__init__(list(range(L + 1)))

    def describe(self) -> str:
        return f"L={self.L}"


@cache
def _legal_patterns(T: int, G: int) -> list[tuple[int, ...]]:
    """Every binary pattern of length T with at most one spike in each group of T/G steps."""
    m = T // G
    per_group = [tuple(0 for _ in range(m))] + [
        tuple(int(i == k) for i in range(m)) for k in range(m)
    ]
    return [sum(choice, ()) for choice in itertools.product(per_group, repeat=G)]


@cache
def expg_codebook(T: int, G: int) -> ExpGCodeBook:
    """Cached ExpG code book (code books are immutable)."""
    return ExpGCodeBook(T, G)


@cache
def uniform_codebook(L: int) -> UniformCodeBook:
    """Cached uniform code book."""
    return UniformCodeBook(L)


def level_spacing(lam: torch.Tensor, n_max: int) -> torch.Tensor:
    """delta = lambda / n_max, rounded to float32 and returned in float64.

    Rounding delta to 24 significant bits makes every product delta * (code or half-integer code)
    exact in float64, so the quantizer, the binary-search neuron and the sequential IF neuron
    compare a membrane with the very same boundary values.
    """
    return (lam.detach().to(torch.float32) / n_max).to(torch.float64)
