"""Per-image transforms of PIL images, deterministic given a NumPy ``Generator`` (no torchvision).

`TrainTransform` is the ImageNet training recipe: a random resized crop, a horizontal flip, an
optional automatic augmentation (TrivialAugment-Wide or RandAugment) and random erasing.
`EvalTransform` resizes the shorter side to ``round(size / crop_ratio)`` and crops the centre.
Both take any Pillow mode (``L``, ``RGBA``, ``P``, ``CMYK`` ...), convert it to RGB first and
return ``size x size x 3`` uint8 arrays. Every random draw of `TrainTransform` comes from the
generator it is given; `sample_rng` makes that generator from ``(seed, epoch, index)`` alone, so
any process or DataLoader worker draws the same for the same image, and a resumed run repeats an
uninterrupted one.

The automatic augmentations draw from 14 operations: identity, auto-contrast, equalize, rotate,
solarize, color (saturation), posterize, contrast, brightness, sharpness, shear x / y and
translate x / y. A magnitude is one of 31 bins ``0 .. 30``, read as the fraction ``bin / 30`` of
the operation's largest strength, and signed (+ or - with equal odds) for the operations that
have a direction. Largest strengths (RandAugment / TrivialAugment-Wide):

- rotate: 30 / 135 degrees; shear: 0.3 / 0.99 (the tangent of the angle, about the centre);
- translate: 0.45 / 1/7 of the image side (1/7 is 32 pixels at 224);
- color, contrast, brightness, sharpness: enhancement factor ``1 +- 0.9`` / ``1 +- 0.99``;
- posterize: 4 / 6 bits dropped of 8; solarize: threshold from 256 (nothing) down to 0 (all).

"trivial" (TrivialAugment-Wide) applies one operation drawn uniformly with a bin drawn
uniformly; "rand" (RandAugment) applies ``rand_ops`` operations drawn uniformly (with
replacement), all at bin ``rand_magnitude``. Geometric operations resample bilinearly and fill
uncovered pixels with mid-grey (128, 128, 128).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .._checks import in_unit_interval, one_of, positive_number, whole_number
from ..errors import ConfigError

AUTO_AUGMENTS = ("trivial", "rand")  # the values of TrainTransform.auto_augment besides None
MAGNITUDE_BINS = 31  # magnitudes are bins 0 .. 30
AUGMENT_OPS = ("identity", "auto_contrast", "equalize", "rotate", "solarize", "color", "posterize",
               "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
               "translate_y")

_SEED_MODULUS = 2**63  # seeds are taken modulo this, so that negative ones are valid too
_TRIES = 10  # attempts of a random crop or erasing box before falling back
_ERASE_AREA = (0.02, 1.0 / 3.0)  # the erased fraction of the image
_ERASE_RATIO = (0.3, 3.3)  # aspect range (height / width) of the erased box, log-uniform
_WIDE_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})  # 16-bit grey modes
_FILL = (128, 128, 128)  # pixels that geometric operations uncover
#: each operation's largest strength: (RandAugment, TrivialAugment-Wide)
_LIMITS = {"rotate": (30.0, 135.0), "shear": (0.3, 0.99), "translate": (0.45, 1.0 / 7.0),
           "enhance": (0.9, 0.99), "posterize": (4.0, 6.0)}
_ENHANCERS = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
              "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of every random draw of image ``index`` in ``epoch``.

    ``np.random.default_rng([seed % 2**63, epoch, index])``: the same in any process, so
    DataLoader workers and resumed runs draw what one uninterrupted process would. A negative
    ``seed`` (the command line allows them) is taken modulo ``2**63``; ``epoch`` and ``index``
    must be whole numbers >= 0 (ConfigError otherwise).
    """
    seed = whole_number("sample_rng: seed", seed, minimum=-(2**63))
    epoch = whole_number("sample_rng: epoch", epoch, minimum=0)
    index = whole_number("sample_rng: index", index, minimum=0)
    return np.random.default_rng([seed % _SEED_MODULUS, epoch, index])


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` in RGB mode (itself when it already is).

    Alpha and palette transparency are dropped; 16-bit grey (``I;16*`` and ``I``, as Pillow
    opens 16-bit PNGs) is scaled to 8 bits (``round(v / 257)``) rather than clipped at 255.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _WIDE_GREY:
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return Image.fromarray(((wide + 128) // 257).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def _pixels(img: Image.Image) -> np.ndarray:
    """A writable, C-contiguous H x W x 3 uint8 copy of the pixels of an RGB image."""
    return np.array(img, dtype=np.uint8)


def _range(owner: str, name: str, value: object, upper: float | None) -> tuple[float, float]:
    """``value`` as a pair ``0 < low <= high`` (``<= upper`` when given), else ConfigError."""
    try:
        low, high = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: {name} must be a pair (low, high), got {value!r}") from None
    low = positive_number(f"{owner}: {name}[0]", low)
    high = positive_number(f"{owner}: {name}[1]", high)
    if low > high or (upper is not None and high > upper):
        bound = "" if upper is None else f" <= {upper:g}"
        raise ConfigError(f"{owner}: {name} must satisfy 0 < low <= high{bound}, got {value!r}")
    return low, high


@dataclass(frozen=True)
class TrainTransform:
    """The training transform of one image: random resized crop, flip, auto-augment, erasing.

    Attributes:
        size: side of the square output.
        scale: range of the crop's area, as a fraction of the image's (``0 < low <= high <= 1``).
        ratio: range of the crop's aspect ratio (width / height), drawn log-uniformly.
        hflip: probability of a horizontal flip.
        auto_augment: None, ``"trivial"`` (TrivialAugment-Wide) or ``"rand"`` (RandAugment);
            see the module docstring for the operations and their strengths.
        rand_ops: operations per image of RandAugment (>= 1).
        rand_magnitude: the magnitude bin of RandAugment, ``0 .. 30``.
        erase_prob: probability of erasing one box (2 % to 1/3 of the area, aspect log-uniform in
            [0.3, 3.3], up to 10 tries) with uniform random uint8 noise.

    Every field is checked at construction (ConfigError naming it); sequences become tuples.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    auto_augment: str | None = None
    rand_ops: int = 2
    rand_magnitude: int = 9
    erase_prob: float = 0.0

    def __post_init__(self) -> None:
        owner = "TrainTransform"
        fields = {
            "size": whole_number(f"{owner}: size", self.size),
            "scale": _range(owner, "scale", self.scale, 1.0),
            "ratio": _range(owner, "ratio", self.ratio, None),
            "hflip": in_unit_interval(f"{owner}: hflip", self.hflip),
            "auto_augment": one_of(f"{owner}: auto_augment", self.auto_augment,
                                   (None, *AUTO_AUGMENTS)),
            "rand_ops": whole_number(f"{owner}: rand_ops", self.rand_ops),
            "rand_magnitude": whole_number(f"{owner}: rand_magnitude", self.rand_magnitude, 0),
            "erase_prob": in_unit_interval(f"{owner}: erase_prob", self.erase_prob),
        }
        if fields["rand_magnitude"] >= MAGNITUDE_BINS:
            raise ConfigError(f"{owner}: rand_magnitude must lie in 0 .. {MAGNITUDE_BINS - 1}, "
                              f"got {self.rand_magnitude!r}")
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> np.ndarray:
        """``size x size x 3`` uint8 RGB pixels of ``img`` transformed with draws from ``rng``."""
        img = to_rgb(img)
        left, top, width, height = _crop_box(img.width, img.height, self.scale, self.ratio, rng)
        img = img.resize((self.size, self.size), Image.Resampling.BILINEAR,
                         box=(left, top, left + width, top + height))
        if rng.random() < self.hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = self._auto_augment(img, rng)
        pixels = _pixels(img)
        if self.erase_prob > 0 and rng.random() < self.erase_prob:
            _erase(pixels, rng)
        return pixels

    def _auto_augment(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """``img`` through the configured automatic augmentation (itself without one)."""
        if self.auto_augment is None:
            return img
        wide = self.auto_augment == "trivial"
        for _ in range(1 if wide else self.rand_ops):
            op = AUGMENT_OPS[int(rng.integers(len(AUGMENT_OPS)))]
            level = int(rng.integers(MAGNITUDE_BINS)) if wide else self.rand_magnitude
            sign = 1.0 if rng.random() < 0.5 else -1.0
            img = apply_op(img, op, sign * level / (MAGNITUDE_BINS - 1), wide)
        return img


def _random_box(width: int, height: int, area: tuple[float, float], ratio: tuple[float, float],
                rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """(left, top, width, height) of a box inside a ``width x height`` image whose area fraction
    is uniform in ``area`` and whose aspect (width / height) is log-uniform in ``ratio``, at a
    uniform position; None after 10 draws that do not fit."""
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(_TRIES):
        target = width * height * rng.uniform(area[0], area[1])
        aspect = math.exp(rng.uniform(log_low, log_high))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(width - w + 1)), int(rng.integers(height - h + 1)), w, h
    return None


def _crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
              rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a random crop (`_random_box`); after 10 misses, the centre
    crop of the whole image clamped to ``ratio``."""
    box = _random_box(width, height, scale, ratio, rng)
    if box is not None:
        return box
    w, h = width, height
    if width / height < ratio[0]:
        h = max(1, min(height, round(width / ratio[0])))
    elif width / height > ratio[1]:
        w = max(1, min(width, round(height * ratio[1])))
    return (width - w) // 2, (height - h) // 2, w, h


def _erase(pixels: np.ndarray, rng: np.random.Generator) -> None:
    """Fill one random box of ``pixels`` (H x W x 3, in place; height / width log-uniform in
    `_ERASE_RATIO`) with uniform uint8 noise; no box after 10 misses leaves them as they are."""
    rows, cols = pixels.shape[:2]
    box = _random_box(cols, rows, _ERASE_AREA, (1 / _ERASE_RATIO[1], 1 / _ERASE_RATIO[0]), rng)
    if box is not None:
        left, top, w, h = box
        pixels[top:top + h, left:left + w] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def apply_op(img: Image.Image, op: str, level: float, wide: bool = False) -> Image.Image:
    """One automatic-augmentation operation ``op`` (of `AUGMENT_OPS`) on an RGB image.

    ``level`` in [-1, 1] is the signed fraction of the operation's largest strength (that of
    TrivialAugment-Wide with ``wide``, else of RandAugment); operations without a direction use
    its absolute value, and identity, auto-contrast and equalize ignore it.
    """
    kind = op.split("_")[0]
    strength = level * _LIMITS[kind][wide] if kind in _LIMITS else level
    if op in _ENHANCERS:
        return _ENHANCERS[op](img).enhance(1.0 + level * _LIMITS["enhance"][wide])
    if op in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        return _geometric(img, op, strength)
    if op == "auto_contrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "solarize":
        return ImageOps.solarize(img, round(256 * (1.0 - abs(level))))
    if op == "posterize":
        return ImageOps.posterize(img, 8 - round(abs(strength)))
    if op == "identity":
        return img
    raise ConfigError(f"apply_op: op must be one of {', '.join(map(repr, AUGMENT_OPS))}, got {op!r}")


def _geometric(img: Image.Image, op: str, strength: float) -> Image.Image:
    """Rotate by ``strength`` degrees, shear by ``strength`` about the centre, or translate by
    ``strength`` of the side; uncovered pixels are mid-grey."""
    resample = Image.Resampling.BILINEAR
    if op == "rotate":
        return img.rotate(strength, resample=resample, fillcolor=_FILL)
    w, h = img.size
    # the affine map takes an output pixel (x, y) to the input (a x + b y + c, d x + e y + f)
    coefficients = {
        "shear_x": (1.0, strength, -strength * h / 2.0, 0.0, 1.0, 0.0),
        "shear_y": (1.0, 0.0, 0.0, strength, 1.0, -strength * w / 2.0),
        "translate_x": (1.0, 0.0, -strength * w, 0.0, 1.0, 0.0),
        "translate_y": (1.0, 0.0, 0.0, 0.0, 1.0, -strength * h),
    }[op]
    return img.transform(img.size, Image.Transform.AFFINE, coefficients, resample=resample,
                         fillcolor=_FILL)


CROP_RATIO = 0.875  # the share of the resized shorter side an evaluation crop keeps (ImageNet's)


@dataclass(frozen=True)
class EvalTransform:
    """The evaluation transform of one image: resize, then crop the centre (deterministic).

    The shorter side is resized (bilinear, aspect kept) to ``round(size / crop_ratio)`` and the
    longer one to ``round(side * that / shorter)``; the ``size x size`` crop starts at
    ``((new_width - size) // 2, (new_height - size) // 2)``.

    Attributes:
        size: side of the square output.
        crop_ratio: the share of the resized shorter side that is kept, in (0, 1].
    """

    size: int
    crop_ratio: float = CROP_RATIO

    def __post_init__(self) -> None:
        size = whole_number("EvalTransform: size", self.size)
        ratio = positive_number("EvalTransform: crop_ratio", self.crop_ratio)
        if ratio > 1:
            raise ConfigError(f"EvalTransform: crop_ratio must lie in (0, 1], got {self.crop_ratio!r}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "crop_ratio", ratio)

    @property
    def resize_to(self) -> int:
        """The side the shorter side of an image is resized to, ``round(size / crop_ratio)``."""
        return round(self.size / self.crop_ratio)

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> np.ndarray:
        """``size x size x 3`` uint8 RGB pixels of ``img`` (``rng`` is not used)."""
        img = to_rgb(img)
        short = self.resize_to
        w, h = img.size
        new = (short, round(h * short / w)) if w <= h else (round(w * short / h), short)
        if new != (w, h):
            img = img.resize(new, Image.Resampling.BILINEAR)
        left, top = (new[0] - self.size) // 2, (new[1] - self.size) // 2
        return _pixels(img.crop((left, top, left + self.size, top + self.size)))


__all__ = ["AUGMENT_OPS", "AUTO_AUGMENTS", "CROP_RATIO", "MAGNITUDE_BINS", "EvalTransform", "TrainTransform",
           "apply_op", "sample_rng", "to_rgb"]
