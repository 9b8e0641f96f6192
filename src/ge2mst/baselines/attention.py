"""Baseline spiking self-attention modules for the STBP Spikformer backbone.

Four attention modules are registered here and can be built by name with
``build_attention(name, dim, num_heads, **kwargs)``: ``"ssa"`` (Spikformer's) and the three below.
Each takes a T x B x N x C tensor (T time steps, B samples, N tokens, C = ``dim`` channels;
spikes from the previous layer) and returns a T x B x N x C spike tensor.

``"a2os2a"`` -- `A2OS2A`, the addition-only spiking self-attention of the A^2OS^2A paper
(arXiv:2503.00226, CVPR 2025), as far as the short description we hold goes: Q from a binary
spiking neuron, K through a ReLU (real, non-negative), V from a ternary spiking neuron (-1/0/+1),
no softmax, no scale. Every product then has a spike operand, so it needs additions only. By
default it is evaluated in linear time, Q (K^T V) per head: O(N d^2) per head instead of O(N^2 d).

``"window"`` -- `WindowSSA`: Spikformer spiking self-attention restricted to non-overlapping
windows of the token grid, optionally with Swin-style shifted windows.

``"channel_group"`` -- `ChannelGroupSSA`: Spikformer spiking self-attention split into g
independent channel groups.

Provenance and status. ``"window"`` and ``"channel_group"`` are baselines we built from ideas in a
third-party summary of the Ge^2mS-T paper (seed 001) that we do not trust: its code is not the
paper's and its numbers are not verified. They are offered as honest, plainly specified
comparison points, not as a reproduction of that paper or as claims about it. The A^2OS^2A
description we hold is a one-paragraph abstract; the details it leaves open are listed in the
docstring of `A2OS2A` and were chosen by us.

Shared structure (all three modules), in the Spikformer layout:

    q, k, v = neuron(BN(Linear(x)))      per-token Linear, BatchNorm over the C channels
    y = attention(q, k, v) per head       heads: channel h*d .. (h+1)*d - 1, d = C / num_heads
    out = LIF(BN(Linear(LIF_attn(y))))    LIF_attn fires at ``attn_threshold`` (0.5 by default)

BatchNorm in training mode mixes statistics over T, B and N; locality statements (a token only
depends on the tokens of its window, a group only on its channels) hold in eval mode, or for the
attention functions themselves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import positive_number, whole_number
from ..errors import ConfigError, InputError
from .attention_functions import (
    _check_window,
    _pair,
    linear_attention,
    quadratic_attention,
    shifted_window_mask,
    window_attention,
)
from .lif import LIF, TernaryLIF

__all__ = [
    "A2OS2A",
    "ATTENTION",
    "build_attention",
    "register_attention",
    "ChannelGroupSSA",
    "GroupedProjection",
    "SpikingSelfAttention",
    "WindowSSA",
    "linear_attention",
    "quadratic_attention",
    "shifted_window_mask",
    "window_attention",
]


# ---- registry ----------------------------------------------------------------------------------

#: name -> attention class; every class takes (dim, num_heads, **options)
ATTENTION: dict[str, type[nn.Module]] = {}


def register_attention(name: str):
    """Class decorator: make the attention module buildable by ``name``."""
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in ATTENTION:
            raise ConfigError(f"attention {name!r} is registered twice")
        ATTENTION[name] = cls
        cls.registered_name = name
        return cls
    return add


def build_attention(name: str, dim: int, num_heads: int, **options) -> nn.Module:
    """The registered attention ``name`` (``"ssa"``, ``"a2os2a"``, ``"window"``,
    ``"channel_group"``) for ``dim`` channels and ``num_heads`` heads."""
    if name not in ATTENTION:
        raise ConfigError(f"unknown attention {name!r}; known: {', '.join(sorted(ATTENTION))}")
    try:
        return ATTENTION[name](dim, num_heads, **options)
    except TypeError as exc:
        raise ConfigError(f"attention {name!r}: {exc}") from None


# ---- argument checks ---------------------------------------------------------------------------


def _check_heads(dim, num_heads) -> tuple[int, int]:
    dim = whole_number("dim", dim)
    num_heads = whole_number("num_heads", num_heads)
    if dim % num_heads:
        raise ConfigError(f"dim = {dim} is not divisible by num_heads = {num_heads}")
    return dim, num_heads


class GroupedProjection(nn.Module):
    """Per-token Linear (C -> C) with a block-diagonal weight of ``groups`` blocks, then
    BatchNorm1d over the C channels. Output channel block i depends on input channel block i only;
    ``groups=1`` is an ordinary dense Linear. Input ... x C, output ... x C."""

    def __init__(self, dim: int, groups: int = 1) -> None:
        super().__init__()
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or dim % groups:
            raise ConfigError(f"grouped projection: groups must be a whole number >= 1 dividing "
                              f"the embedding dimension {dim}, got {groups!r}")
        self.dim, self.groups = dim, groups
        gd = dim // groups
        bound = 1.0 / math.sqrt(gd)
        self.weight = nn.Parameter(torch.empty(groups, gd, gd).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xg = x.reshape(-1, self.groups, self.dim // self.groups)
        y = torch.einsum("mgi,goi->mgo", xg, self.weight).reshape(-1, self.dim) + self.bias
        return self.bn(y).reshape(*lead, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, groups={self.groups}"


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """T x B x N x C -> T x B x H x N x d."""
    T, B, N, C = x.shape
    return x.reshape(T, B, N, heads, C // heads).permute(0, 1, 3, 2, 4)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """T x B x H x N x d -> T x B x N x C."""
    T, B, H, N, d = x.shape
    return x.permute(0, 1, 3, 2, 4).reshape(T, B, N, H * d)


class _SpikingAttentionBase(nn.Module):
    """Projections, neurons and input checks shared by the attention modules."""

    def __init__(self, dim: int, num_heads: int, groups: int = 1, tau: float = 2.0,
                 v_threshold: float = 1.0, attn_threshold: float = 0.5) -> None:
        super().__init__()
        self.dim, self.num_heads = _check_heads(dim, num_heads)
        self.head_dim = self.dim // self.num_heads
        self.groups = groups
        self.tau = positive_number("tau", tau)
        self.v_threshold = positive_number("v_threshold", v_threshold)
        self.attn_threshold = positive_number("attn_threshold", attn_threshold)
        self.q_proj = GroupedProjection(self.dim, groups)
        self.k_proj = GroupedProjection(self.dim, groups)
        self.v_proj = GroupedProjection(self.dim, groups)
        self.out_proj = GroupedProjection(self.dim, groups)
        self.out_lif = LIF(tau=self.tau, v_threshold=self.v_threshold)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise InputError(f"{type(self).__name__} expects a T x B x N x C tensor with C = "
                             f"{self.dim}, got shape {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise InputError(f"{type(self).__name__} expects a floating-point tensor, got {x.dtype}")

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """Merged heads (T x B x N x C) -> attention neuron -> projection -> output LIF."""
        return self.out_lif(self.out_proj(self.attn_lif(y)))


# ---- A2OS2A ------------------------------------------------------------------------------------


@register_attention("a2os2a")
class A2OS2A(_SpikingAttentionBase):
    """Addition-only spiking self-attention (A^2OS^2A), T x B x N x C -> T x B x N x C.

        Q = LIF(BN(Linear(x)))            binary spikes {0, 1}
        K = ReLU(BN(Linear(x)))           real, >= 0
        V = TernaryLIF(BN(Linear(x)))     ternary spikes {-1, 0, 1}
        Y = Q K^T V per head              no softmax, no scale
        out = LIF(BN(Linear(attn_neuron(Y))))

    Y is computed as Q (K^T V) (`linear_attention`, O(N d^2) per head, no N x N tensor) unless
    ``quadratic=True``, which computes (Q K^T) V (`quadratic_attention`) for checking; both give
    the same value up to float rounding. K^T V sums +-K entries selected by the V spikes and Q
    selects rows of the result, so both orders need additions only.

    Choices where the description we hold is silent (ours, not the paper's):

    - Q, K and V each come from a per-token Linear + BatchNorm over channels (Spikformer layout);
      the heads split the channels evenly.
    - The neurons are the baseline `LIF` / `TernaryLIF` with the same ``tau`` and
      ``v_threshold``.
    - Y is real and signed. ``attn_neuron="lif"`` (default) turns it into binary spikes with a LIF
      firing at ``attn_threshold`` = 0.5 (Spikformer's attention neuron); ``"ternary"`` uses a
      TernaryLIF at that threshold so that negative values are kept as -1 spikes.
    - The output goes through Linear + BatchNorm + LIF, like Spikformer's projection, and is a
      binary spike tensor.

    Args:
        dim, num_heads: channels C and heads (C divisible by num_heads).
        quadratic: evaluate (Q K^T) V instead of Q (K^T V).
        tau, v_threshold: LIF time constant and threshold of the Q, V and output neurons.
        attn_threshold: threshold of the attention neuron.
        attn_neuron: "lif" or "ternary".
    """

    def __init__(self, dim: int, num_heads: int, *, quadratic: bool = False, tau: float = 2.0,
                 v_threshold: float = 1.0, attn_threshold: float = 0.5,
                 attn_neuron: str = "lif") -> None:
        super().__init__(dim, num_heads, 1, tau, v_threshold, attn_threshold)
        if not isinstance(quadratic, bool):
            raise ConfigError(f"quadratic must be True or False, got {quadratic!r}")
        if attn_neuron not in ("lif", "ternary"):
            raise ConfigError(f"attn_neuron must be 'lif' or 'ternary', got {attn_neuron!r}")
        self.quadratic = quadratic
        self.attn_neuron = attn_neuron
        self.q_lif = LIF(tau=self.tau, v_threshold=self.v_threshold)
        self.v_lif = TernaryLIF(tau=self.tau, v_threshold=self.v_threshold)
        neuron = LIF if attn_neuron == "lif" else TernaryLIF
        self.attn_lif = neuron(tau=self.tau, v_threshold=self.attn_threshold)

    linear_attention = staticmethod(linear_attention)
    quadratic_attention = staticmethod(quadratic_attention)

    @staticmethod
    def attention_multiplies(n_tokens: int, head_dim: int, num_heads: int,
                             quadratic: bool = False) -> int:
        """Multiply-accumulates of the attention products for one time step of one sample:
        2 H N d^2 for Q (K^T V), 2 H N^2 d for (Q K^T) V."""
        n, d, h = n_tokens, head_dim, num_heads
        return 2 * h * n * n * d if quadratic else 2 * h * n * d * d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        q = self.q_lif(self.q_proj(x))
        k = F.relu(self.k_proj(x))
        v = self.v_lif(self.v_proj(x))
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        attend = quadratic_attention if self.quadratic else linear_attention
        return self._output(_merge_heads(attend(q, k, v)))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, "
                f"{'quadratic' if self.quadratic else 'linear'}, attn_neuron={self.attn_neuron}")


# ---- Spikformer SSA with windows and channel groups ---------------------------------------------


@register_attention("ssa")
class SpikingSelfAttention(_SpikingAttentionBase):
    """Spikformer spiking self-attention with optional windows and channel groups (registered as
    ``"ssa"``: with the defaults it is Spikformer's global SSA, the reference for the baselines).

        Q, K, V = LIF(BN(GroupedLinear(x)))     binary spikes
        Y = (Q K^T * scale) V per head, within each window (no softmax)
        out = LIF(BN(GroupedLinear(LIF_attn(Y))))

    Windows (``window``, ``shift``): see `window_attention`. The token grid is ``grid`` = (h, w)
    when given, else N must be a perfect square and the grid is sqrt(N) x sqrt(N).

    Channel groups (``groups`` = g): channel block i = channels [i C/g, (i+1) C/g) and head block
    i = heads [i H/g, (i+1) H/g), which carry exactly those channels. The Q, K, V and output
    Linears are block-diagonal over the g channel blocks and heads never mix channels, while
    BatchNorm and the neurons act per channel, so output block i depends on input block i only:
    the module is g independent SSAs of C/g channels and H/g heads each, run side by side and
    concatenated. Needs g | C and g | H.

    Args:
        dim, num_heads: channels C and heads H.
        window: window side or (wh, ww); None: global attention.
        shift: Swin-style shifted windows (needs a window side >= 2).
        groups: channel groups g.
        grid: token grid (h, w) or side; None: square grid inferred from N at each call.
        scale: score scale; None: head_dim ** -0.5 (0.125 for Spikformer-4-384's d = 64).
        tau, v_threshold: LIF parameters of the Q, K, V and output neurons.
        attn_threshold: threshold of the attention LIF (0.5 as in Spikformer).
    """

    def __init__(self, dim: int, num_heads: int, *, window: int | tuple[int, int] | None = None,
                 shift: bool = False, groups: int = 1, grid: int | tuple[int, int] | None = None,
                 scale: float | None = None, tau: float = 2.0, v_threshold: float = 1.0,
                 attn_threshold: float = 0.5) -> None:
        dim, num_heads = _check_heads(dim, num_heads)
        groups = whole_number("groups", groups)
        if dim % groups or num_heads % groups:
            raise ConfigError(f"groups = {groups} must divide both dim = {dim} and num_heads = "
                              f"{num_heads} (each group gets whole heads)")
        super().__init__(dim, num_heads, groups, tau, v_threshold, attn_threshold)
        self.window = None if window is None else _pair("window", window)
        if not isinstance(shift, bool):
            raise ConfigError(f"shift must be True or False, got {shift!r}")
        if shift and self.window is None:
            raise ConfigError("shift=True needs a window")
        if shift and max(self.window) < 2:
            raise ConfigError(f"shift=True needs a window side >= 2, got {window!r}")
        self.shift = shift
        self.grid = None if grid is None else _pair("grid", grid)
        if self.grid is not None and self.window is not None:
            _check_window(self.grid, self.window)
        self.scale = self.head_dim ** -0.5 if scale is None else positive_number("scale", scale)
        self.q_lif = LIF(tau=self.tau, v_threshold=self.v_threshold)
        self.k_lif = LIF(tau=self.tau, v_threshold=self.v_threshold)
        self.v_lif = LIF(tau=self.tau, v_threshold=self.v_threshold)
        self.attn_lif = LIF(tau=self.tau, v_threshold=self.attn_threshold)

    def token_grid(self, n_tokens: int) -> tuple[int, int]:
        """The (h, w) grid of ``n_tokens`` tokens (checked)."""
        if self.grid is not None:
            if self.grid[0] * self.grid[1] != n_tokens:
                raise ConfigError(f"grid = {self.grid} holds {self.grid[0] * self.grid[1]} tokens, "
                                  f"the input has N = {n_tokens}")
            return self.grid
        side = math.isqrt(n_tokens)
        if side * side != n_tokens:
            raise ConfigError(f"N = {n_tokens} tokens is not a square number; pass grid=(h, w)")
        return side, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        grid = self.token_grid(x.shape[2])
        q = self.q_lif(self.q_proj(x))
        k = self.k_lif(self.k_proj(x))
        v = self.v_lif(self.v_proj(x))
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        y = window_attention(q, k, v, self.scale, grid, self.window, self.shift)
        return self._output(_merge_heads(y))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, window={self.window}, "
                f"shift={self.shift}, groups={self.groups}, grid={self.grid}, scale={self.scale:g}")


@register_attention("window")
class WindowSSA(SpikingSelfAttention):
    """Spiking self-attention inside non-overlapping ``window`` x ``window`` token windows
    (default 4), optionally shifted (``shift=True``); see `SpikingSelfAttention` for the other
    arguments. Baseline built from an unreliable summary (seed 001), not a claim about Ge^2mS-T."""

    def __init__(self, dim: int, num_heads: int, *, window: int | tuple[int, int] = 4,
                 shift: bool = False, grid: int | tuple[int, int] | None = None,
                 scale: float | None = None, tau: float = 2.0, v_threshold: float = 1.0,
                 attn_threshold: float = 0.5) -> None:
        if window is None:
            raise ConfigError("WindowSSA needs a window side")
        super().__init__(dim, num_heads, window=window, shift=shift, groups=1, grid=grid,
                         scale=scale, tau=tau, v_threshold=v_threshold,
                         attn_threshold=attn_threshold)


@register_attention("channel_group")
class ChannelGroupSSA(SpikingSelfAttention):
    """Spiking self-attention in ``groups`` independent channel groups (default 2; see
    `SpikingSelfAttention` for exactly what is grouped), global over the tokens unless a
    ``window`` is given. Baseline built from an unreliable summary (seed 001), not a claim about
    Ge^2mS-T."""

    def __init__(self, dim: int, num_heads: int, *, groups: int = 2,
                 window: int | tuple[int, int] | None = None, shift: bool = False,
                 grid: int | tuple[int, int] | None = None, scale: float | None = None,
                 tau: float = 2.0, v_threshold: float = 1.0, attn_threshold: float = 0.5) -> None:
        super().__init__(dim, num_heads, window=window, shift=shift, groups=groups, grid=grid,
                         scale=scale, tau=tau, v_threshold=v_threshold,
                         attn_threshold=attn_threshold)
