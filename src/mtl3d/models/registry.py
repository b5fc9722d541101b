"""Model registry, in the manner of timm's ``create_model``.

A new model is one file with a class decorated by ``register_model`` and one line in ``_MODEL_MODULES``.
Its constructor's keyword arguments (after ``out_channels, backbone, pretrained``) are its options:
``--set model.options.NAME=VALUE`` on the command line, checked against the signature and the type
hints, so a typo or a wrong type is a one-line error naming the valid options.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable
from typing import Any

from mtl3d.errors import UserError, unknown_name
from mtl3d.typecheck import check_value

_MODELS: dict[str, Callable[..., Any]] = {}
# Modules that register models on import; a new model adds its module here.
_MODEL_MODULES = (
    "mtl3d.models.mtl",
    "mtl3d.models.stl",
    "mtl3d.models.padnet",
    "mtl3d.models.mtinet",
    "mtl3d.models.padnet3way",
    "mtl3d.models.densemtl",
    "mtl3d.models.invpt",
    "mtl3d.models.atrc",
)
_FIXED_ARGS = ("self", "out_channels", "backbone", "pretrained")


def register_model(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.model_name = name
        _MODELS[name] = cls
        return cls

    return deco


def _import_all() -> None:
    for m in _MODEL_MODULES:
        importlib.import_module(m)


def list_models() -> list[str]:
    _import_all()
    return sorted(_MODELS)


def model_summary(name: str) -> str:
    """The first line of the model's docstring (``mtl3d models`` prints it)."""
    _import_all()
    doc = inspect.getdoc(_MODELS[name]) or ""
    return doc.splitlines()[0] if doc else ""


def default_backbone(name: str) -> str:
    """The backbone a model is built with when none is given (its class's ``default_backbone``)."""
    _import_all()
    if name not in _MODELS:
        raise unknown_name("model", name, list(_MODELS))
    return _MODELS[name].default_backbone


def model_options(name: str) -> dict[str, inspect.Parameter]:
    """The options (constructor keyword arguments) a model accepts, with their defaults."""
    _import_all()
    if name not in _MODELS:
        raise unknown_name("model", name, list(_MODELS))
    sig = inspect.signature(_MODELS[name].__init__)
    return {k: p for k, p in sig.parameters.items() if k not in _FIXED_ARGS}


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``options`` against the model's constructor: names and types (ints promoted to float)."""
    valid = model_options(name)
    hints = typing.get_type_hints(_MODELS[name].__init__)
    out = {}
    for k, v in options.items():
        if k not in valid:
            raise UserError(
                f"model {name!r} has no option {k!r}; valid: {', '.join(sorted(valid)) or '(none)'}"
            )
        out[k] = check_value(f"model.options.{k}", hints[k], v) if k in hints else v
    return out


def create_model(
    name: str,
    tasks: list[str],
    num_classes: int | dict[str, int] | None = None,
    backbone: str | None = None,
    pretrained: bool = False,
    **kwargs: Any,
):
    """Build a registered model for ``tasks``; classification tasks get ``num_classes`` outputs
    (one number for all, or per task, e.g. PASCAL ``{"semseg": 21, "human_parts": 7}``)."""
    from mtl3d.tasks import classes_for, get_task

    valid = list_models()
    if name not in _MODELS:
        raise unknown_name("model", name, valid)
    kwargs = check_options(name, kwargs)

    out_channels = {t: get_task(t).out_channels(classes_for(num_classes, t)) for t in tasks}
    backbone = backbone or _MODELS[name].default_backbone
    return _MODELS[name](out_channels, backbone=backbone, pretrained=pretrained, **kwargs)


def build_model(cfg: Any, tasks: list[str], num_classes: int | None, pretrained: bool | None = None):
    """The model of a run's ``model`` config section (options, loss-scheme overrides applied)."""
    kwargs = dict(cfg.options)
    if cfg.head_channels is not None:
        kwargs["head_channels"] = cfg.head_channels
    if cfg.genotype is not None:
        if "genotype" in kwargs:
            raise UserError("give the genotype once: model.genotype or model.options.genotype")
        kwargs["genotype"] = cfg.genotype
    model = create_model(
        cfg.name,
        tasks,
        num_classes,
        cfg.backbone,
        cfg.pretrained if pretrained is None else pretrained,
        **kwargs,
    )
    if cfg.final_weight is not None:
        model.final_weight = cfg.final_weight
    if cfg.aux_weight is not None:
        model.aux_weight = cfg.aux_weight
    return model
