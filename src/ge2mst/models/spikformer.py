"""Spikformer, the STBP baseline: LIF neurons, surrogate gradients, backpropagation through time.

Our own implementation of the architecture of Spikformer (Zhou et al., ICLR 2023) for CIFAR,
built from the paper's description, so that Ge2mS-T is compared with its best-known peer by the
same harness (same data, training loop, energy counter):

    SPS (spiking patch splitting)   4 x [Conv 3x3 + BN + LIF], widths D/8, D/4, D/2, D, max-pool
                                    3x3/2 after the last two (more for larger images), then a
                                    relative position embedding x + LIF(BN(Conv 3x3(x)))
    depth x Block                   x + Attention(x); x + MLP(x)     (Attention: SSA by default)
    MLP                             LIF(BN(Linear D -> rD)), LIF(BN(Linear rD -> D))
    head                            Linear(mean over time and tokens)

All tensors inside are time-first, T x B x ... . `spikformer_4_384` (D = 384, 4 blocks, 12 heads,
MLP ratio 4) has 9.32 M parameters on CIFAR-10, the paper's count.

Encoding: ``"repeat"`` feeds the (normalised) image at every step, the direct encoding of the
paper; ``"frames"`` reads event data whose channels hold T frames (frame-major: channel
``t * c + j``), e.g. CIFAR10-DVS framed into 2T channels by `ge2mst.data.dvs`.

``temporal_group = k`` (a baseline from the ideas of seed 001, the unreliable summary; not a claim
about Ge2mS-T): the network runs T / k steps, and step s sees the k frames sk .. sk + k - 1 side by
side as channels (the first convolution takes k times the channels). It cuts the time steps the
LIF layers run by k; it is not the paper's method, whose training does not unroll time at all.

``attention`` picks the token mixer from `ge2mst.baselines.attention` (``"ssa"``, ``"a2os2a"``,
``"window"``, ``"channel_group"``), with ``attention_options`` passed on.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import whole_number
from ..baselines.attention import build_attention
from ..baselines.lif import LIF
from ..errors import ConfigError, InputError
from .registry import register_model


class ConvBNLIF(nn.Module):
    """Conv 3x3 (no bias) + BatchNorm + LIF on T x B x C x H x W, with an optional max-pool."""

    def __init__(self, cin: int, cout: int, pool: bool, neuron: dict) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.lif = LIF(**neuron)
        self.pool = nn.MaxPool2d(3, 2, 1) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        y = self.bn(self.conv(x.flatten(0, 1)))
        s = self.lif(y.unflatten(0, (T, B)))
        if self.pool is not None:
            s = self.pool(s.flatten(0, 1)).unflatten(0, (T, B))
        return s


class SPS(nn.Module):
    """Spiking patch splitting: T x B x C x H x W -> T x B x N x D tokens (N = (H / 2^pools)^2)."""

    def __init__(self, in_chans: int, dim: int, img_size: int, neuron: dict) -> None:
        super().__init__()
        pools = 2
        side = img_size // 4
        while side > 8 and pools < 4:
            pools += 1
            side //= 2
        if img_size % 2 ** pools:
            raise ConfigError(f"img_size = {img_size} must be divisible by {2 ** pools}")
        widths = [in_chans, dim // 8, dim // 4, dim // 2, dim]
        self.convs = nn.ModuleList(
            ConvBNLIF(widths[i], widths[i + 1], pool=i >= 4 - pools, neuron=neuron) for i in range(4))
        self.rpe = ConvBNLIF(dim, dim, pool=False, neuron=neuron)
        self.grid = img_size // 2 ** pools

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        x = x + self.rpe(x)  # sums of two spike maps: {0, 1, 2}
        return x.flatten(3).transpose(2, 3)  # T x B x N x D


class LinearBNLIF(nn.Module):
    """Per-token Linear + BatchNorm over channels + LIF, T x B x N x Cin -> T x B x N x Cout."""

    def __init__(self, cin: int, cout: int, neuron: dict) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, cout)
        self.bn = nn.BatchNorm1d(cout)
        self.lif = LIF(**neuron)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        y = self.bn(y.flatten(0, -2)).view_as(y)
        return self.lif(y)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, attention: str, options: dict,
                 neuron: dict) -> None:
        super().__init__()
        self.attn = build_attention(attention, dim, heads, **options)
        self.fc1 = LinearBNLIF(dim, dim * mlp_ratio, neuron)
        self.fc2 = LinearBNLIF(dim * mlp_ratio, dim, neuron)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.fc2(self.fc1(x))


class Spikformer(nn.Module):
    """Spikformer (STBP) for B x C x H x W images; returns B x num_classes logits (time mean).

    Args:
        num_classes, in_chans, img_size: the data (``in_chans`` = T x frame channels for
            ``encoding="frames"``).
        embed_dim, depth, num_heads, mlp_ratio: D, blocks, heads, MLP ratio.
        T: time steps. temporal_group: time steps per group (divides T; see the module docstring).
        encoding: ``"repeat"`` or ``"frames"``.
        attention, attention_options: the token mixer and its options.
        tau, v_threshold, backend: the LIF neurons (`ge2mst.baselines.lif.LIF`).
    """

    #: `encode` checks its input itself (shape, side and dtype, with the size it was built for)
    checks_own_input = True

    training_method = "stbp"

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32,
                 embed_dim: int = 384, depth: int = 4, num_heads: int = 12, mlp_ratio: int = 4,
                 T: int = 4, temporal_group: int = 1, encoding: str = "repeat",
                 attention: str = "ssa", attention_options: dict | None = None, tau: float = 2.0,
                 v_threshold: float = 1.0, backend: str = "torch") -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_chans", in_chans),
                            ("img_size", img_size), ("embed_dim", embed_dim), ("depth", depth),
                            ("num_heads", num_heads), ("mlp_ratio", mlp_ratio), ("T", T),
                            ("temporal_group", temporal_group)):
            whole_number(name, value)
        if embed_dim % 8 or embed_dim % num_heads:
            raise ConfigError(f"embed_dim = {embed_dim} must be divisible by 8 and by num_heads = "
                              f"{num_heads}")
        if T % temporal_group:
            raise ConfigError(f"temporal_group = {temporal_group} must divide T = {T}")
        if encoding not in ("repeat", "frames"):
            raise ConfigError(f"encoding must be 'repeat' or 'frames', got {encoding!r}")
        if encoding == "frames" and in_chans % T:
            raise ConfigError(f"encoding='frames' needs in_chans = T x frame channels: {in_chans} is "
                              f"not a multiple of T = {T}")
        self.num_classes, self.in_chans, self.img_size = num_classes, in_chans, img_size
        self.T, self.temporal_group, self.encoding = T, temporal_group, encoding
        self.steps = T // temporal_group
        self.attention = attention
        frame_chans = in_chans // T if encoding == "frames" else in_chans
        neuron = {"tau": tau, "v_threshold": v_threshold, "backend": backend}
        options = {"tau": tau, "v_threshold": v_threshold, **(attention_options or {})}
        self.sps = SPS(frame_chans * temporal_group, embed_dim, img_size, neuron)
        if attention in ("window", "channel_group", "ssa") and "grid" not in options:
            options["grid"] = self.sps.grid
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, attention, options, neuron)
                                    for _ in range(depth))
        self.head = nn.Linear(embed_dim, num_classes)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> steps x B x (k c) x H x W, the input of every step."""
        if x.dim() != 4 or x.shape[1] != self.in_chans or tuple(x.shape[2:]) != (self.img_size,) * 2:
            raise InputError(f"{type(self).__name__} expects B x {self.in_chans} x {self.img_size} x "
                             f"{self.img_size} images, got shape {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise InputError(f"expected a floating-point image tensor, got {x.dtype}")
        if self.encoding == "repeat":
            frames = x.unsqueeze(0).expand(self.T, *x.shape)
        else:
            frames = x.unflatten(1, (self.T, -1)).transpose(0, 1)  # T x B x c x H x W
        k = self.temporal_group
        if k > 1:  # group k consecutive steps as channels
            frames = frames.unflatten(0, (self.steps, k)).transpose(1, 2).flatten(2, 3)
        return frames.contiguous()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block, steps x B x N x D."""
        tokens = self.sps(self.encode(x))
        for block in self.blocks:
            tokens = block(tokens)
        return tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the head is linear: its mean over steps equals the head of the mean, computed once
        return self.head(self.features(x).mean(dim=(0, 2)))


def _spikformer(embed_dim: int, depth: int, num_heads: int, kwargs: dict) -> Spikformer:
    """The named defaults, each of which ``kwargs`` may override."""
    return Spikformer(**{"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads,
                         "mlp_ratio": 4, **kwargs})


@register_model(method="stbp", img_size=32)
def spikformer_4_384(**kwargs) -> Spikformer:
    """Spikformer-4-384 for CIFAR (9.32 M parameters with 10 classes), STBP."""
    return _spikformer(384, 4, 12, kwargs)


@register_model(method="stbp", img_size=32)
def spikformer_tiny(**kwargs) -> Spikformer:
    """A small Spikformer (D = 64, 2 blocks, 4 heads) for tests and CPU runs, STBP."""
    return _spikformer(64, 2, 4, kwargs)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
