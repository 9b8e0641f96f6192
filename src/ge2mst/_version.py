"""The package version, a leaf that anything may import (the package root re-exports it)."""

__version__ = "0.2.0"
