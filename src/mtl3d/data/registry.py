"""Dataset registry: name -> how to prepare it and how to read it."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl3d.data.folder import FolderDataset, read_manifest
from mtl3d.data.transforms import build_transform
from mtl3d.data.transforms import keep_original as keep_original_labels
from mtl3d.errors import UserError, unknown_name


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    tasks: tuple[str, ...]
    multiview: bool  # has neighbour views with poses (cross-view consistency)
    default_near: float
    default_far: float
    edge_max_dist: float  # boundary-matching tolerance, fraction of the image diagonal
    description: str
    module: str  # holds ``prepare(root, **options) -> manifest``; imported only when preparing


DATASETS: dict[str, DatasetInfo] = {
    "synthrooms": DatasetInfo(
        "synthrooms",
        ("semseg", "depth", "normals", "edges"),
        True,
        0.1,
        12.0,
        0.011,  # NYUD protocol: SynthRooms mimics NYUv2's camera and label style
        "procedural multi-view indoor rooms (no download)",
        "mtl3d.data.synthrooms",
    ),
    # The real datasets: `mtl3d data download NAME` fetches the archive into data/raw/NAME, `prepare`
    # converts it (variants: docs/datasets.md). No neighbour views: the regularizer renders each
    # image from its own camera only (cross-view consistency needs multi-view data).
    "nyud": DatasetInfo(
        "nyud",
        ("semseg", "depth", "normals", "edges"),
        False,
        0.1,
        10.0,  # metres; the Kinect's range (NYU toolbox maxDepth)
        0.011,  # SEISM maxDist for NYUD (ATRC/InvPT/survey)
        "NYUD-v2 multi-task (795 train / 654 val); variants atrc (425x560) and survey (480x640)",
        "mtl3d.data.nyud",
    ),
    "pascal": DatasetInfo(
        "pascal",
        ("semseg", "human_parts", "saliency", "normals", "edges"),
        False,
        1.0,
        10.0,  # no metric depth: the rendering range in the units of the default camera
        0.0075,  # SEISM maxDist for PASCAL-Context
        "PASCAL-Context multi-task (4,998 train / 5,105 val); variants atrc and survey (same layout)",
        "mtl3d.data.pascal",
    ),
}


def get_dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise unknown_name("dataset", name, list(DATASETS)) from None


def create_dataset(
    name: str,
    root: str | Path,
    split: str,
    tasks: list[str],
    train: bool,
    size: tuple[int, int] | None = None,
    hflip: bool = True,
    multiview: bool = False,
    resize_mode: str = "resize",
    scale_range: list[float] | None = None,
    depth_scale: bool = True,
    keep_original: bool = False,
) -> FolderDataset:
    """One split of a prepared dataset with the transform of ``resize_mode`` (see
    :func:`mtl3d.data.transforms.build_transform`). ``keep_original``: samples also carry the untransformed
    labels of ``tasks`` (``sample["original"]``) for evaluation at original resolution."""
    info = get_dataset_info(name)
    transform = build_transform(
        size, train=train, flip=hflip, mode=resize_mode, scale_range=scale_range, depth_scale=depth_scale
    )
    if keep_original:
        transform = keep_original_labels(transform, tasks)
    return FolderDataset(root, split, tasks, transform=transform, multiview=multiview, dataset=info.name)


def prepare_dataset(name: str, root: str | Path, **options: Any) -> dict[str, Any]:
    """Run the dataset module's ``prepare(root, **options)``; an option it does not take is an error
    naming the ones it does (e.g. ``--scenes`` for nyud)."""
    info = get_dataset_info(name)
    prepare = importlib.import_module(info.module).prepare
    valid = [p for p in inspect.signature(prepare).parameters if p not in ("root", "progress")]
    bad = sorted(k for k in options if k not in valid)
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in bad)
        takes = ", ".join("--" + v.replace("_", "-") for v in valid)
        raise UserError(f"{name} does not take {flags}; its options: {takes}")
    return prepare(root, **options)


def near_far(name: str, root: str | Path) -> tuple[float, float]:
    """Depth range for rendering: the manifest's if it has one, else the dataset default."""
    info = get_dataset_info(name)
    man = read_manifest(root, name)
    return float(man.get("near", info.default_near)), float(man.get("far", info.default_far))
