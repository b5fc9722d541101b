"""Models: ``create_model(name, tasks=..., num_classes=..., backbone=...)``."""

from mtl3d.models.base import AUX_KEY, DenseModel, decode_inputs, split_outputs, valid_mask
from mtl3d.models.registry import build_model, create_model, list_models, model_summary, register_model

__all__ = [
    "AUX_KEY",
    "DenseModel",
    "build_model",
    "create_model",
    "list_models",
    "model_summary",
    "decode_inputs",
    "register_model",
    "split_outputs",
    "valid_mask",
]
