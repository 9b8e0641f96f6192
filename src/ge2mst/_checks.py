"""Argument checks shared by every layer, one wording each (a leaf: imports only `errors`).

Each check returns the value in its plain Python type, or raises ``error`` (a `Ge2msError`
subclass, `ConfigError` unless the caller's layer has its own, e.g. `DataError` for data). A bool
is never a number here, though Python says ``True == 1``.
"""

from __future__ import annotations

import math
import operator

import torch

from .errors import ConfigError, Ge2msError


def whole_number(name: str, value: object, minimum: int = 1,
                 error: type[Ge2msError] = ConfigError) -> int:
    """``value`` as an int >= ``minimum`` (Python or NumPy integers), else ``error``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise error(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return number


def _real(value: object) -> float:
    """``value`` as a float, NaN for what is not a real number (bools included)."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def positive_number(name: str, value: object, error: type[Ge2msError] = ConfigError) -> float:
    """``value`` as a finite float > 0, else ``error``."""
    number = _real(value)
    if not math.isfinite(number) or number <= 0:
        raise error(f"{name} must be a positive finite number, got {value!r}")
    return number


def non_negative(name: str, value: object, error: type[Ge2msError] = ConfigError) -> float:
    """``value`` as a finite float >= 0, else ``error``."""
    number = _real(value)
    if not math.isfinite(number) or number < 0:
        raise error(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def in_unit_interval(name: str, value: object, error: type[Ge2msError] = ConfigError) -> float:
    """``value`` as a float in [0, 1], else ``error``."""
    number = _real(value)
    if not 0 <= number <= 1:
        raise error(f"{name} must lie in [0, 1], got {value!r}")
    return number


#: the arithmetic a network may run in, by name
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def dtype_named(name: object) -> torch.dtype:
    """The torch dtype called ``name`` in `DTYPES`, else ConfigError."""
    return DTYPES[one_of("dtype", name, tuple(DTYPES))]


def one_of(name: str, value: object, choices, error: type[Ge2msError] = ConfigError):
    """``value`` if it is one of ``choices``, else ``error`` naming them."""
    if value not in choices:
        raise error(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


__all__ = ["DTYPES", "dtype_named", "in_unit_interval", "non_negative", "one_of", "positive_number",
           "whole_number"]
