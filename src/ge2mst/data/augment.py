"""Data augmentation written in torch, on the batch's own device (no torchvision)."""

from __future__ import annotations

import math

import torch

from .._checks import in_unit_interval, non_negative, whole_number
from ..errors import ConfigError


def augment(x: torch.Tensor, gen: torch.Generator, padding: int = 0, hflip: bool = False,
            flips: torch.Tensor | None = None) -> torch.Tensor:
    """Random crop after zero padding by ``padding`` pixels, and horizontal flips: random ones
    with ``hflip``, or those of the boolean mask ``flips`` (B) when it is given."""
    if padding > 0:
        b, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen)
        rows = (dy.view(b, 1) + torch.arange(h).view(1, h)).to(x.device)
        cols = (dx.view(b, 1) + torch.arange(w).view(1, w)).to(x.device)
        bidx = torch.arange(b, device=x.device).view(b, 1, 1)
        x = padded.permute(0, 2, 3, 1)[bidx, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2)
    if flips is not None or hflip:
        if flips is None:
            flips = torch.rand(x.shape[0], generator=gen) < 0.5
        x = torch.where(flips.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
    return x.contiguous()


def cutout(x: torch.Tensor, gen: torch.Generator, size: int) -> torch.Tensor:
    """``x`` (B x C x H x W) with a ``size`` x ``size`` square of every image set to 0 (the
    mean pixel of normalised images), in every channel: its centre drawn uniformly over the image,
    the square clipped at the border (so near a border less is erased). ``size`` 0: ``x`` itself.
    The draws come from ``gen`` (a CPU generator); the mask is made on ``x.device``."""
    size = whole_number("cutout: size", size, minimum=0)
    if size == 0:
        return x
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"cutout: x must be a B x C x H x W tensor, got {shape}")
    b, _, h, w = x.shape
    if size > min(h, w):
        raise ConfigError(f"cutout: a {size}-pixel square does not fit {h} x {w} images")
    top = torch.randint(0, h, (b,), generator=gen).to(x.device).view(b, 1) - size // 2
    left = torch.randint(0, w, (b,), generator=gen).to(x.device).view(b, 1) - size // 2
    rows = torch.arange(h, device=x.device).view(1, h) - top
    cols = torch.arange(w, device=x.device).view(1, w) - left
    inside = (((rows >= 0) & (rows < size)).view(b, 1, h, 1)
              & ((cols >= 0) & (cols < size)).view(b, 1, 1, w))
    return x.masked_fill(inside, 0.0)


def _beta_sample(alpha: float, gen: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha) that uses only ``gen`` (so a seeded generator repeats it).

    With scipy: one uniform draw ``u`` and the Beta quantile ``betaincinv(alpha, alpha, u)``.
    Without scipy: two Gamma(alpha) draws (Marsaglia & Tsang) and ``g1 / (g1 + g2)``.
    """
    u = float(torch.rand((), generator=gen, dtype=torch.float64))
    try:
        from scipy.special import betaincinv
    except ImportError:
        g1, g2 = _gamma_sample(alpha, gen), _gamma_sample(alpha, gen)
        total = g1 + g2
        return 0.5 if total <= 0 else g1 / total
    return float(betaincinv(alpha, alpha, u))


def _gamma_sample(alpha: float, gen: torch.Generator) -> float:
    """Gamma(alpha, 1) by Marsaglia & Tsang's squeeze, boosted for alpha < 1, from ``gen`` only."""
    boost = 1.0
    if alpha < 1.0:
        boost = float(torch.rand((), generator=gen, dtype=torch.float64)) ** (1.0 / alpha)
        alpha += 1.0
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        z = float(torch.randn((), generator=gen, dtype=torch.float64))
        v = (1.0 + c * z) ** 3
        if v <= 0:
            continue
        u = float(torch.rand((), generator=gen, dtype=torch.float64))
        if u <= 0:
            continue
        if math.log(u) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v * boost


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, gen: torch.Generator,
              mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, switch_prob: float = 0.5,
              label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-level mixup or cutmix with soft, label-smoothed targets.

    One mixing weight ``lam`` per batch; every image is mixed with its partner in the batch
    flipped along dimension 0 (image ``i`` with image ``B - 1 - i``).

    - mixup: ``lam ~ Beta(mixup_alpha, mixup_alpha)`` and ``x' = lam * x + (1 - lam) * x.flip(0)``;
    - cutmix: ``lam ~ Beta(cutmix_alpha, cutmix_alpha)``; a box of area about ``(1 - lam) * H * W``
      (sides ``sqrt(1 - lam)`` times H and W) at a uniform random centre, clipped to the image, is
      pasted from the partner; ``lam`` is then set to the true kept fraction ``1 - box / (H W)``.

    With both alphas > 0, cutmix is chosen with probability ``switch_prob``, else mixup. With both
    0 the images come back unchanged. Targets: one-hot rows smoothed to ``smoothing / K`` off and
    ``1 - smoothing + smoothing / K`` on, then ``lam * t + (1 - lam) * t.flip(0)``; each row sums
    to 1. All random draws come from ``gen`` (a CPU generator); the work runs on ``x.device``.

    Args:
        x: B x C x H x W floating-point images.
        y: B int labels in ``0 .. num_classes - 1``.
        num_classes: K >= 1.
        gen: the generator of every random draw.
        mixup_alpha, cutmix_alpha: Beta parameters (finite, >= 0; 0 switches a method off).
        switch_prob: probability of cutmix when both methods are on (in [0, 1]).
        label_smoothing: in [0, 1).

    Returns:
        (mixed images, B x K float targets), both on ``x.device``.

    Raises:
        ConfigError: a bad argument, named in the message.
    """
    mixup_alpha, cutmix_alpha, switch_prob, smoothing = _check_mixing(
        x, y, num_classes, mixup_alpha, cutmix_alpha, switch_prob, label_smoothing)
    off = smoothing / num_classes
    target = torch.full((y.shape[0], num_classes), off, dtype=torch.float32, device=x.device)
    target.scatter_(1, y.to(x.device, torch.int64).view(-1, 1), 1.0 - smoothing + off)
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return x, target
    use_cutmix = cutmix_alpha > 0
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = float(torch.rand((), generator=gen, dtype=torch.float64)) < switch_prob
    if use_cutmix:
        mixed, lam = _cutmix(x, _beta_sample(cutmix_alpha, gen), gen)
    else:
        lam = _beta_sample(mixup_alpha, gen)
        mixed = x * lam + x.flip(0) * (1.0 - lam)
    return mixed, target * lam + target.flip(0) * (1.0 - lam)


def _check_mixing(x, y, num_classes, mixup_alpha, cutmix_alpha, switch_prob,
                  label_smoothing) -> tuple[float, float, float, float]:
    """The arguments of `mix_batch` checked; the four numbers as floats."""
    mixup_alpha = non_negative("mix_batch: mixup_alpha", mixup_alpha)
    cutmix_alpha = non_negative("mix_batch: cutmix_alpha", cutmix_alpha)
    switch_prob = in_unit_interval("mix_batch: switch_prob", switch_prob)
    smoothing = non_negative("mix_batch: label_smoothing", label_smoothing)
    if smoothing >= 1:
        raise ConfigError(f"mix_batch: label_smoothing must lie in [0, 1), got {label_smoothing!r}")
    whole_number("mix_batch: num_classes", num_classes)
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"mix_batch: x must be a B x C x H x W floating-point tensor, got {shape}")
    if (not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]
            or y.is_floating_point() or y.is_complex()):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ConfigError(f"mix_batch: y must be {x.shape[0]} integer labels (one per image), "
                          f"got {shape}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ConfigError(f"mix_batch: labels must lie in 0 .. {num_classes - 1}, got "
                          f"{int(y.min())} .. {int(y.max())}")
    return mixup_alpha, cutmix_alpha, switch_prob, smoothing


def _cutmix(x: torch.Tensor, lam: float, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """``x`` with a box of about ``(1 - lam)`` of its area pasted from its partner, and the kept
    fraction of the area (the box clipped to the image)."""
    h, w = x.shape[2], x.shape[3]
    cut = math.sqrt(max(0.0, 1.0 - lam))
    ch, cw = int(h * cut), int(w * cut)
    cy = int(torch.randint(0, h, (), generator=gen))
    cx = int(torch.randint(0, w, (), generator=gen))
    y0, y1 = max(0, cy - ch // 2), min(h, cy + ch // 2)
    x0, x1 = max(0, cx - cw // 2), min(w, cx + cw // 2)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
    return mixed, 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
