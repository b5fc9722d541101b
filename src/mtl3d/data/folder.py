"""Reader for the standard processed layout shared by every dataset.

```
ROOT/manifest.json           classes, splits, per-view K / pose / neighbours, checksums
ROOT/splits/<split>.txt      one view id per line
ROOT/images/<id>.png         RGB uint8
ROOT/semseg/<id>.png         uint8 class ids, 255 = ignore
ROOT/depth/<id>.npy          float32 metres (z-depth), 0 = invalid
ROOT/normals/<id>.npy        float32 HxWx3, camera frame (OpenCV), zero vector = invalid
ROOT/edges/<id>.png          uint8 {0, 255}
```
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mtl3d.errors import UserError

_FILES = {
    "semseg": ("semseg", ".png"),
    "depth": ("depth", ".npy"),
    "normals": ("normals", ".npy"),
    "edges": ("edges", ".png"),
    "human_parts": ("human_parts", ".png"),
    "saliency": ("saliency", ".png"),
}


def read_manifest(root: str | Path, dataset: str) -> dict[str, Any]:
    root = Path(root)
    path = root / "manifest.json"
    if not path.is_file():
        raise UserError(
            f"no prepared {dataset} data at {root} (missing manifest.json); "
            f"run: mtl3d data prepare {dataset} --root {root}"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"corrupt file {path}: {e.msg} (line {e.lineno}); prepare the data again") from None


def _load_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except FileNotFoundError:
        raise UserError(f"missing file {path}; prepare the data again") from None
    except Exception as e:  # PIL raises many types for truncated or garbage files
        raise UserError(f"corrupt image file {path} ({type(e).__name__}); prepare the data again") from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"missing file {path}; prepare the data again") from None
    except Exception as e:
        raise UserError(f"corrupt array file {path} ({type(e).__name__}); prepare the data again") from None


class FolderDataset(Dataset):
    """One split of a processed dataset; items are samples (see DESIGN.md).

    Index with an int, or with ``(index, seed)`` so that augmentation is a pure function of the
    seed the trainer draws for that sample (exact resume, identical results with any worker count).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        tasks: list[str],
        transform: Callable[..., dict[str, Any]] | None = None,
        multiview: bool = False,
        dataset: str = "dataset",
    ) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root, dataset)
        self.name = self.manifest.get("dataset", dataset)
        missing = [t for t in tasks if t not in self.manifest.get("tasks", [])]
        if missing:
            raise UserError(
                f"dataset {self.name} has no labels for task(s) {', '.join(missing)}; "
                f"it has: {', '.join(self.manifest.get('tasks', []))}"
            )
        split_file = self.root / "splits" / f"{split}.txt"
        if not split_file.is_file():
            have = sorted(p.stem for p in (self.root / "splits").glob("*.txt"))
            raise UserError(f"dataset {self.name} has no split {split!r}; it has: {', '.join(have)}")
        self.ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise UserError(f"split file {split_file} is empty; prepare the data with more scenes")
        self.split = split
        self.tasks = list(tasks)
        self.transform = transform
        self.multiview = multiview

    @cached_property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.ids)

    def load_view(self, view_id: str) -> dict[str, Any]:
        """The untransformed sample of one view (image in [0, 1])."""
        image = _load_png(self.root / "images" / f"{view_id}.png")
        if image.ndim != 3 or image.shape[2] != 3:
            raise UserError(f"corrupt image file {self.root / 'images' / (view_id + '.png')} (not RGB)")
        sample: dict[str, Any] = {"image": torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0}
        for task in self.tasks:
            folder, ext = _FILES[task]
            path = self.root / folder / f"{view_id}{ext}"
            arr = _load_png(path) if ext == ".png" else _load_npy(path)
            if arr.shape[:2] != image.shape[:2]:
                raise UserError(f"corrupt label file {path}: size {arr.shape[:2]} != image {image.shape[:2]}")
            t = torch.from_numpy(np.array(arr, copy=True))
            if task in ("semseg", "human_parts"):
                sample[task] = t.long()
            elif task == "normals":
                sample[task] = t.float().permute(2, 0, 1)
            elif task in ("edges", "saliency"):
                # 0/255 on disk; keep 255 only where a dataset marks ignore with a separate value
                sample[task] = (t.float() > 127).float()[None]
            else:
                sample[task] = t.float()[None]
        view = self.manifest.get("views", {}).get(view_id, {})
        if "K" in view:
            sample["K"] = torch.tensor(view["K"], dtype=torch.float32)
        if "pose" in view:
            sample["pose"] = torch.tensor(view["pose"], dtype=torch.float32)
        return sample

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = item if isinstance(item, tuple) else (item, index_seed(item))
        view_id = self.ids[index]
        sample = self.load_view(view_id)
        sample["index"] = index
        if self.multiview:
            neighbors = self.manifest["views"][view_id].get("neighbors", [])
            if not neighbors:
                raise UserError(f"view {view_id} of {self.name} has no neighbour view (multi-view training)")
            sample["neighbor"] = self.load_view(neighbors[seed % len(neighbors)])
        if self.transform is not None:
            gen = torch.Generator().manual_seed(seed)
            sample = self.transform(sample, gen)
        return sample


def index_seed(index: int) -> int:
    return 1_000_003 * (index + 1)
