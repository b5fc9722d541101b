"""Dataset registry: name -> how to prepare it and how to read it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl3d.data.folder import FolderDataset, read_manifest
from mtl3d.data.transforms import build_transform
from mtl3d.errors import unknown_name


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
) -> FolderDataset:
    info = get_dataset_info(name)
    transform = build_transform(size, train=train, flip=hflip)
    return FolderDataset(root, split, tasks, transform=transform, multiview=multiview, dataset=info.name)


def prepare_dataset(name: str, root: str | Path, **options: Any) -> dict[str, Any]:
    info = get_dataset_info(name)
    return importlib.import_module(info.module).prepare(root, **options)


def near_far(name: str, root: str | Path) -> tuple[float, float]:
    """Depth range for rendering: the manifest's if it has one, else the dataset default."""
    info = get_dataset_info(name)
    man = read_manifest(root, name)
    return float(man.get("near", info.default_near)), float(man.get("far", info.default_far))
