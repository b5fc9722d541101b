"""Values checked against type annotations, with one-line errors naming the config key.

What the typed config (``config.py``) and the model registry's option check share: both read
``--set`` values and YAML against annotations (``int``, ``float``, ``bool``, ``str``, ``list[...]``,
``dict[str, ...]``, optionals and dataclasses), so the rules live here, below both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from typing import Any

import yaml

from mtl3d.errors import UserError


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def check_value(path: str, tp: Any, value: Any) -> Any:
    """Validate ``value`` against the annotation ``tp``; return it (ints promoted to float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return check_value(path, a, value)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"config key {path!r}: bad value {value!r}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise UserError(f"config key {path!r} must be a mapping, got {value!r}")
        return from_annotated_dict(tp, value, path + ".")
    if origin is list:
        if isinstance(value, str) and args and args[0] in (str, int, float):
            # `--set regularizer.render_tasks=semseg,depth`, `--set regularizer.plane_res=12,16`: a
            # comma-separated string is a list (keeps study files free of shell-special brackets)
            parts = [v.strip() for v in value.split(",") if v.strip()]
            value = parts if args[0] is str else [yaml.safe_load(v) for v in parts]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config key {path!r} must be a list, got {value!r}")
        return [check_value(f"{path}[{i}]", args[0], v) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {path!r} must be a mapping, got {value!r}")
        return {str(k): check_value(f"{path}.{k}", args[1], v) for k, v in value.items()}
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads `2e-3` (no dot) as a string; accept it as the number everyone means
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"config key {path!r} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config key {path!r} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"config key {path!r} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"config key {path!r} must be a string, got {value!r}")
        return value
    return value


def from_annotated_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """An instance of the dataclass ``cls`` from ``data``, every value checked against its field's
    annotation; an unknown key is an error naming the valid ones."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise UserError(
                f"unknown config key {prefix + str(key)!r}; valid keys here: {', '.join(sorted(names))}"
            )
    kwargs = {k: check_value(prefix + k, hints[k], v) for k, v in data.items()}
    return cls(**kwargs)
