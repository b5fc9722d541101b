"""Model registry, in the manner of timm's ``create_model``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mtl3d.errors import unknown_name

_MODELS: dict[str, Callable[..., Any]] = {}
# Modules that register models on import; a new model adds its module here.
_MODEL_MODULES = ("mtl3d.models.mtl", "mtl3d.models.stl")


def register_model(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        _MODELS[name] = cls
        return cls

    return deco


def list_models() -> list[str]:
    for m in _MODEL_MODULES:
        importlib.import_module(m)
    return sorted(_MODELS)


def create_model(
    name: str,
    tasks: list[str],
    num_classes: int | None = None,
    backbone: str = "resnet18",
    pretrained: bool = False,
    **kwargs: Any,
):
    """Build a registered model for ``tasks``; classification tasks get ``num_classes`` outputs."""
    from mtl3d.tasks import get_task

    valid = list_models()
    if name not in _MODELS:
        raise unknown_name("model", name, valid)
    out_channels = {t: get_task(t).out_channels(num_classes) for t in tasks}
    return _MODELS[name](out_channels, backbone=backbone, pretrained=pretrained, **kwargs)
