"""PASCAL-Context label recipes: how the public MTL loaders decode the archive's labels, done once at
``prepare`` time (boundaries from the Context ``LabelMap``, person parts from PASCAL-Part, the classes on
which the distilled normals are kept). See :mod:`mtl3d.data.pascal` for the whole conversion.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from mtl3d.errors import UserError
from mtl3d.geometry import thin

PERSON = 15  # VOC / PASCAL-Part class index of 'person'
HUMAN_PARTS: tuple[str, ...] = (
    "background",
    "head",
    "torso",
    "upper arm",
    "lower arm",
    "upper leg",
    "lower leg",
)
# PASCAL-Part person part names -> group (the 6-part grouping of the MTL loaders).
PART_GROUPS: dict[str, tuple[str, ...]] = {
    "head": ("hair", "head", "lear", "rear", "leye", "reye", "lebrow", "rebrow", "mouth", "nose"),
    "torso": ("torso", "neck"),
    "upper arm": ("luarm", "ruarm"),
    "lower arm": ("llarm", "rlarm", "lhand", "rhand"),
    "upper leg": ("luleg", "ruleg"),
    "lower leg": ("llleg", "rlleg", "lfoot", "rfoot"),
}
_PART_ID = {name: HUMAN_PARTS.index(group) for group, names in PART_GROUPS.items() for name in names}
_FIX = "re-extract the archive (mtl3d data download pascal)"


def _boundary(label_map: np.ndarray) -> np.ndarray:
    """``Laplacian(label_map) != 0`` with the 4-neighbour kernel [[0,1,0],[1,-4,1],[0,1,0]] and the
    reflect-101 border (``dcb|abcd|cba``): OpenCV's ``Laplacian(ksize=1)`` default, which the MTL loaders use.
    """
    lab = np.asarray(label_map).astype(np.int64, copy=False)
    if lab.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {lab.shape}")
    # np.pad's 'reflect' does not repeat the edge pixel, i.e. it is OpenCV's BORDER_REFLECT_101; along a
    # 1-pixel axis both reflect onto the pixel itself ('edge')
    p = lab
    for axis in (0, 1):
        width = [(0, 0), (0, 0)]
        width[axis] = (1, 1)
        p = np.pad(p, width, mode="reflect" if lab.shape[axis] > 1 else "edge")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * lab
    return lap != 0


def edges_from_labelmap(label_map: np.ndarray) -> np.ndarray:
    """Boundary map (bool HxW) of a PASCAL-Context ``LabelMap``: Laplacian != 0, then thinned."""
    return thin(_boundary(label_map))


def _scalar(value: Any) -> Any:
    arr = np.asarray(value).ravel()
    if arr.size != 1:
        raise ValueError(f"expected one value, got {arr.size}")
    return arr[0].item() if hasattr(arr[0], "item") else arr[0]


def _field(record: Any, name: str, path: Path) -> Any:
    names = getattr(record, "dtype", None) is not None and record.dtype.names or ()
    if name not in names:
        have = ", ".join(names) or "none"
        raise UserError(f"corrupt PASCAL-Part file {path}: no field {name!r} (has {have}); {_FIX}")
    return record[name]


def _struct_items(value: Any) -> list[Any]:
    """The elements of a MATLAB struct array as loaded by scipy (empty, 0x0 or non-struct -> [])."""
    arr = np.asarray(value)
    if arr.size == 0 or arr.dtype.names is None:
        return []
    return list(arr.ravel())


def human_parts_from_mat(path: str | Path) -> np.ndarray | None:
    """Person-part labels (uint8 HxW, 0 = background, 1..6 = :data:`HUMAN_PARTS`) from a PASCAL-Part
    ``anno`` file, or ``None`` where the MTL loaders ignore the whole image.

    Read by field name: ``anno.objects(i).{class, class_ind, mask, parts}``,
    ``parts(j).{part_name, mask}``. As in the loaders: an image has a person only if some object with
    ``class_ind == 15`` has a non-empty object mask (their parts cache lists an empty-mask object as -1);
    then the parts of every person object with parts are painted, later parts overwriting earlier ones.
    A map without any part pixel (no person, no parts, or only empty part masks) is ``None``: the
    loaders' ignore step turns an all-background parts map into all-ignore.
    """
    path = Path(path)
    try:
        mat = scipy.io.loadmat(path, variable_names=["anno"])
    except FileNotFoundError:
        raise UserError(f"missing file {path}; {_FIX}") from None
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError, ... on garbage
        raise UserError(f"corrupt .mat file {path} ({type(e).__name__}); {_FIX}") from None
    if "anno" not in mat:
        raise UserError(f"corrupt PASCAL-Part file {path}: no 'anno' struct; {_FIX}")
    annos = _struct_items(mat["anno"])
    if len(annos) != 1:
        raise UserError(f"corrupt PASCAL-Part file {path}: 'anno' is not a 1x1 struct; {_FIX}")
    target: np.ndarray | None = None
    has_person = False
    try:
        for obj in _struct_items(_field(annos[0], "objects", path)):
            if int(_scalar(_field(obj, "class_ind", path))) != PERSON:
                continue
            has_person = has_person or bool(np.asarray(_field(obj, "mask", path)).any())
            parts = _struct_items(_field(obj, "parts", path))
            if not parts:
                continue
            for part in parts:
                name = str(_scalar(_field(part, "part_name", path)))
                mask = np.asarray(_field(part, "mask", path)).astype(bool)
                if target is None:
                    target = np.zeros(mask.shape, np.uint8)
                if mask.shape != target.shape:
                    raise UserError(
                        f"corrupt PASCAL-Part file {path}: part masks of sizes {mask.shape} and "
                        f"{target.shape}; {_FIX}"
                    )
                if name not in _PART_ID:
                    raise UserError(
                        f"unexpected person part {name!r} in {path} (known: "
                        f"{', '.join(sorted(_PART_ID))}); {_FIX}"
                    )
                target[mask] = _PART_ID[name]
    except UserError:
        raise
    except (ValueError, TypeError, IndexError) as e:
        raise UserError(f"corrupt PASCAL-Part file {path} ({type(e).__name__}: {e}); {_FIX}") from None
    if not has_person or target is None or not target.any():
        return None
    return target


@cache
def normals_valid_classes() -> tuple[int, ...]:
    """The 170 PASCAL-Context class ids on which the distilled normals are kept (see the JSON's 'source')."""
    text = resources.files("mtl3d.data").joinpath("pascal_normals_classes.json").read_text()
    return tuple(int(i) for i in json.loads(text)["ids"])


@cache
def _normals_lut() -> np.ndarray:
    """LabelMap value (uint16) -> normals kept there."""
    lut = np.zeros(1 << 16, dtype=bool)
    lut[list(normals_valid_classes())] = True
    return lut
