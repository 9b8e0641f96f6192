"""Exceptions raised by ge2mst for bad user input.

Every error a user can trigger with a wrong argument, a wrong tensor or a bad file is one of
these, with a one-line message that says what was wrong and what to do. The command line prints
the message alone (no traceback) and exits with status 2.
"""

from __future__ import annotations


class Ge2msError(Exception):
    """Base class of every ge2mst user-facing error."""


class ConfigError(Ge2msError, ValueError):
    """Impossible hyper-parameters: G not dividing T, T < 1, lambda <= 0, unknown model name..."""


class InputError(Ge2msError, ValueError):
    """A tensor of the wrong rank, shape, dtype, or with NaN / inf values."""


class DataError(Ge2msError, ValueError):
    """Missing, empty or corrupt data sets."""


class CheckpointError(Ge2msError, ValueError):
    """Missing, truncated, corrupt or mismatched checkpoints."""


class ConversionError(Ge2msError, ValueError):
    """A model that cannot be converted to an exactly equivalent spiking network."""
