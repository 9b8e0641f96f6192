"""Registered models. Importing this package registers every builder."""

from . import cnn, ge2mst_t, spikformer  # noqa: F401  (importing them registers the models)
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
