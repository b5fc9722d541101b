"""Models: ``create_model(name, tasks=..., num_classes=..., backbone=...)``."""

from mtl3d.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
