"""The Ge2mS-T family: one definition for ImageNet (224 / 288) and CIFAR (32), ANN and SNN.

Stage layout (METHOD.md section 5, the paper's Table 2):

    stem      Conv 7x7 stride 2 + BN (CIFAR: 3x3 stride 1)            224 -> 112
    stage 1   ExpG, strided conv + BN; [SConv, SFFN] x d1             112 -> 56
    stage 2   ExpG, strided conv + BN; [GW-SSA, Conv-SFFN] x d2        28
    stage 3   ExpG, strided conv + BN; [GW-SSA, Conv-SFFN] x d3        14
    stage 4   ExpG, strided conv + BN; [SSA, SFFN] x d4                 7
    head      ExpG, global average pool, linear

The paper's dimensions are lost; ours (docs/ARCHITECTURE.md gives the parameter arithmetic):
stage widths (w, 2w, 4w, 8w) with w = 48 / 64 / 80 for Small / Base / Large, depths (2, 2, 6, 1),
MLP ratio 3, SConv ratio 2, heads (4, 8, 16) in stages 2-4 (head dims 24 / 32 / 40), half of the
GW-SSA heads global. GW-SSA groups have a fixed side (``windows``, 4 tokens in stage 2, 2 in
stage 3 at ImageNet scale), so k = map side / window (7 at 224, 9 at 288) and the attention cost
grows linearly with the number of tokens.
"""

from __future__ import annotations

from torch import nn

from .._checks import whole_number
from ..core.coding import check_time_groups
from ..core.quantizers import ExpGQuant
from ..errors import ConfigError
from ..nn.blocks import SFFN, ConvSFFN, Downsample, Residual, SConv, TokenMixer
from ..nn.layers import ConvBN
from .registry import register_model


class Ge2msT(nn.Module):
    """Ge2mS-T backbone and classifier (ANN mode; `ge2mst.convert` makes it spiking)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, img_size: int = 224,
                 width: int = 48, depths=(2, 2, 6, 1), heads=(4, 8, 16), mlp_ratio: int = 3,
                 sconv_ratio: int = 2, windows=(4, 2), global_ratio: float = 0.5,
                 stem_kernel: int = 7, stem_stride: int = 2, stage1_stride: int = 2,
                 T: int = 4, G: int = 2, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        T, G = check_time_groups(T, G)
        for name, value in (("num_classes", num_classes), ("in_chans", in_chans),
                            ("img_size", img_size), ("width", width)):
            whole_number(name, value)
        if len(depths) != 4 or len(heads) != 3 or len(windows) != 2:
            raise ConfigError("depths has 4 entries (stages 1-4), heads 3 (stages 2-4), windows 2 "
                              "(GW-SSA stages 2-3)")
        self.T, self.G, self.img_size = T, G, img_size
        dims = [width * 2 ** i for i in range(4)]
        self.dims = dims
        strides = [stage1_stride, 2, 2, 2]
        size = img_size // stem_stride
        self.stage_sizes = []
        for s in strides:
            size //= s
            self.stage_sizes.append(size)
        for stage, window in ((1, windows[0]), (2, windows[1])):
            side = self.stage_sizes[stage]
            if side % window:
                raise ConfigError(f"stage {stage + 1} has a {side}x{side} token map at img_size "
                                  f"{img_size}: not divisible by its GW-SSA window {window}")
        rates = _drop_rates(drop_path_rate, 2 * sum(depths))
        stem_dim = width // 2
        self.stem = ConvBN(in_chans, stem_dim, stem_kernel, stride=stem_stride)
        stages = []
        prev = stem_dim
        for i, (dim, depth) in enumerate(zip(dims, depths, strict=True)):
            blocks: list[nn.Module] = [Downsample(prev, dim, strides[i], T, G)]
            for _ in range(depth):
                if i == 0:
                    pair = [SConv(dim, sconv_ratio, T, G), SFFN(dim, mlp_ratio, T, G)]
                elif i < 3:
                    pair = [TokenMixer(dim, heads[i - 1], window=windows[i - 1],
                                       global_ratio=global_ratio, T=T, G=G),
                            ConvSFFN(dim, mlp_ratio, T, G)]
                else:
                    pair = [TokenMixer(dim, heads[i - 1], T=T, G=G), SFFN(dim, mlp_ratio, T, G)]
                blocks += [Residual(fn, rates.pop(0)) for fn in pair]
            stages.append(nn.Sequential(*blocks))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(ExpGQuant(T, G), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                                  nn.Linear(prev, num_classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def _drop_rates(rate: float, blocks: int) -> list[float]:
    """Stochastic-depth probabilities rising linearly from 0 to ``rate`` over the ``blocks``
    residual blocks (the first block is never dropped)."""
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate < 1:
        raise ConfigError(f"drop_path_rate must lie in [0, 1), got {rate!r}")
    return [rate * i / max(1, blocks - 1) for i in range(blocks)]


_IMAGENET = dict(depths=(2, 2, 6, 1), heads=(4, 8, 16), mlp_ratio=3, windows=(4, 2))
_CIFAR = dict(_IMAGENET, windows=(4, 4), stem_kernel=3, stem_stride=1, stage1_stride=1)


def _build(defaults: dict, width: int, kwargs: dict, **fixed) -> Ge2msT:
    cfg = {**defaults, **fixed, "width": width, **kwargs}
    return Ge2msT(**cfg)


@register_model(img_size=224)
def ge2mst_small(**kwargs) -> Ge2msT:
    """Ge2mS-T Small for 224x224 ImageNet (5.35 M parameters in the paper)."""
    return _build(_IMAGENET, 48, kwargs)


@register_model(img_size=224)
def ge2mst_base(**kwargs) -> Ge2msT:
    """Ge2mS-T Base for 224x224 ImageNet (9.36 M parameters in the paper)."""
    return _build(_IMAGENET, 64, kwargs)


@register_model(img_size=224)
def ge2mst_large(**kwargs) -> Ge2msT:
    """Ge2mS-T Large for 224x224 ImageNet (14.48 M parameters in the paper)."""
    return _build(_IMAGENET, 80, kwargs)


@register_model(img_size=32)
def ge2mst_cifar_small(**kwargs) -> Ge2msT:
    """Small for 32x32 inputs: 3x3 stem, stages at 32, 16, 8, 4."""
    return _build(_CIFAR, 48, kwargs, num_classes=10, img_size=32)


@register_model(img_size=32)
def ge2mst_cifar_base(**kwargs) -> Ge2msT:
    return _build(_CIFAR, 64, kwargs, num_classes=10, img_size=32)


@register_model(img_size=32)
def ge2mst_cifar_large(**kwargs) -> Ge2msT:
    return _build(_CIFAR, 80, kwargs, num_classes=10, img_size=32)


_CIFAR_TINY = dict(_CIFAR, depths=(1, 1, 1, 1), heads=(2, 4, 8), mlp_ratio=2)


@register_model(img_size=32)
def ge2mst_cifar_tiny(**kwargs) -> Ge2msT:
    """A CPU-sized Ge2mS-T for demos and tests (0.29 M parameters)."""
    return _build(_CIFAR_TINY, 16, kwargs, num_classes=10, img_size=32)


@register_model(img_size=32)
def ge2mst_cifar_mini(**kwargs) -> Ge2msT:
    """Tiny's layout at width 24 (0.64 M parameters): sized for a 3-hour training run on 2 CPU
    cores (about 0.65x tiny's images per second)."""
    return _build(_CIFAR_TINY, 24, kwargs, num_classes=10, img_size=32)


@register_model(img_size=32)
def ge2mst_cifar_medium(**kwargs) -> Ge2msT:
    """Tiny's layout at width 32 (1.14 M parameters): the model of the 8-CPU-hour CIFAR-10 run
    (about 0.7x mini's images per second on 2 CPU cores)."""
    return _build(_CIFAR_TINY, 32, kwargs, num_classes=10, img_size=32)


@register_model(img_size=32)
def ge2mst_cifar_deep(**kwargs) -> Ge2msT:
    """Medium with three GW-SSA blocks in stage 3 (1.41 M parameters): more depth where the token
    map is 8x8, about 1.05x medium's time per epoch in its 2-CPU-core run."""
    return _build(dict(_CIFAR_TINY, depths=(1, 1, 3, 1)), 32, kwargs, num_classes=10, img_size=32)
