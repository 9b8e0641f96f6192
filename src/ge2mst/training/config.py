"""The settings of a training run (`TrainConfig`) and its schedules: the learning rate (linear
warm-up, then cosine or linear decay to 0) and the mixing fraction p of the progressive
ClipReLU -> ExpG ramp."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._checks import in_unit_interval, one_of, whole_number
from ..data.transforms import AUTO_AUGMENTS as TRANSFORM_AUGMENTS
from ..errors import ConfigError

#: learning-rate decays after the warm-up, both to 0 at the last step
SCHEDULES = ("cosine", "linear")
#: per-image automatic augmentation of streamed images (`ge2mst.data.TrainTransform`), or none
AUTO_AUGMENTS = ("none", *TRANSFORM_AUGMENTS)


@dataclass
class TrainConfig:
    """Every setting that changes the trained weights (a resumed run must repeat them).

    ``crop_padding``, ``hflip`` and ``alternate_flip`` are the in-memory augmentation (random
    crops of the padded image, flips); streamed images are random-resized-cropped (area fraction
    in ``[min_crop_scale, 1]``), flipped with ``hflip``, and augmented per image with
    ``auto_augment`` and random erasing (probability ``random_erase``). ``cutout`` (pixels, 0:
    off) zeroes a square of that side at a random place of every training image, in memory or
    streamed, before mixup/cutmix.
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float = 5.0
    ramp_end: float = 0.7  # fraction of training at which p reaches 1
    crop_padding: int = 1
    hflip: bool = False
    alternate_flip: bool = False  # with hflip: each image flipped in every other epoch
    schedule: str = "cosine"  # decay after the warm-up: "cosine" or "linear", to 0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: float = 0.0  # 0: no moving average
    amp: bool = False
    seed: int = 0
    auto_augment: str = "none"  # streamed images: "none", "trivial" or "rand"
    random_erase: float = 0.0  # streamed images: probability of random erasing
    min_crop_scale: float = 0.08  # streamed images: smallest area fraction of a random crop
    cutout: int = 0  # side of the zeroed square of every training image (0: off)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            whole_number(name, getattr(self, name))
        for name in ("lr", "weight_decay", "warmup_epochs", "label_smoothing", "grad_clip",
                     "mixup_alpha", "cutmix_alpha", "ema_decay", "random_erase", "min_crop_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        for name in ("ramp_end", "min_crop_scale"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{name} must lie in (0, 1], got {getattr(self, name)}")
        in_unit_interval("random_erase", self.random_erase)
        for name in ("crop_padding", "cutout"):
            whole_number(name, getattr(self, name), minimum=0)
        if self.ema_decay >= 1:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        one_of("schedule", self.schedule, SCHEDULES)
        one_of("auto_augment", self.auto_augment, AUTO_AUGMENTS)
        if self.alternate_flip and not self.hflip:
            raise ConfigError("alternate_flip needs hflip")

    def check_in_memory(self) -> None:
        """ConfigError when the per-image augmentation of streamed images is asked of images in
        memory (which are cropped from padding and flipped on the device instead)."""
        asked = [name for name, on in (("auto_augment", self.auto_augment != "none"),
                                       ("random_erase", self.random_erase > 0),
                                       ("min_crop_scale", self.min_crop_scale != 0.08)) if on]
        if asked:
            raise ConfigError(f"{', '.join(asked)} apply to streamed images only (--data-mode "
                              "stream); images in memory are augmented with crop_padding and hflip")


def mixing_fraction(step: int, total_steps: int, ramp_end: float) -> float:
    """p of the progressive schedule after ``step`` of ``total_steps`` (1 from ``ramp_end`` on)."""
    return min(1.0, step / max(1.0, ramp_end * total_steps))


def learning_rate(step: int, total_steps: int, warmup_steps: int, base: float,
                  schedule: str = "cosine") -> float:
    """Linear warm-up over ``warmup_steps``, then ``schedule`` (cosine or linear) down to 0."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return base * (1.0 - progress)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


__all__ = ["AUTO_AUGMENTS", "SCHEDULES", "TrainConfig", "learning_rate", "mixing_fraction"]
