"""Registered models. Importing this package registers every builder."""

from . import cnn, ge2mst  # noqa: F401  (registers the models)
from .registry import (
    ModelSpec,
    create_model,
    list_models,
    model_kwargs_for,
    model_spec,
    register_model,
)

__all__ = ["ModelSpec", "create_model", "list_models", "model_kwargs_for", "model_spec",
           "register_model"]

# the STBP baselines register themselves in the same registry (after it exists)
from ..baselines import spikformer as _spikformer  # noqa: E402, F401
