"""Reader for the standard processed layout shared by every dataset.

```
ROOT/manifest.json           classes, splits, per-view K / pose / neighbours, checksums
ROOT/splits/<split>.txt      one view id per line
ROOT/images/<id>.png         RGB uint8
ROOT/semseg/<id>.png         uint8 class ids, 255 = ignore
ROOT/depth/<id>.npy          float32 metres (z-depth), 0 = invalid
ROOT/normals/<id>.npy        float32 HxWx3, camera frame (OpenCV), zero vector = invalid
ROOT/edges/<id>.png          uint8 {0, 255}
ROOT/human_parts/<id>.png    uint8 part ids, 255 = ignore (PASCAL: all 255 on images without a person)
ROOT/saliency/<id>.png       uint8 {0, 255}
```

Real datasets keep their source encodings where re-encoding would cost disk or exactness; the manifest's
``formats`` says which (defaults above): ``image`` ``.png`` | ``.jpg`` (the source JPEG bytes, never
re-compressed) and ``normals`` ``.npy`` | ``.png`` (uint8 RGB decoded ``2v/255 - 1`` as the published
loaders do; an all-zero pixel is invalid, since no unit normal encodes to it). Classification tasks other
than ``semseg`` name their classes in ``task_classes`` (PASCAL ``human_parts``).
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

from mtl3d.data.prepare import check_format, mark_damaged, read_existing_manifest
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
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        why = f"{e.msg} (line {e.lineno})" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise UserError(f"corrupt file {path}: {why}; prepare the data again") from None
    if not isinstance(manifest, dict):
        raise UserError(f"corrupt file {path}: not a JSON object; prepare the data again")
    check_format(manifest, root)
    return manifest


def _damaged(path: Path, what: str, why: str) -> UserError:
    """The error for a file that does not read; notes it so that the next `prepare` verifies and repairs."""
    root = path.parent.parent  # ROOT/<folder>/<id>.<ext>
    mark_damaged(root, f"{path.parent.name}/{path.name}")
    name = read_existing_manifest(root).get("dataset", "DATASET")
    return UserError(
        f"{what} {path} ({why}); repair it: mtl3d data prepare {name} --root {root} --verify (same options)"
    )


def _load_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except FileNotFoundError:
        raise _damaged(path, "missing file", "not there") from None
    except Exception as e:  # PIL raises many types for truncated or garbage files
        raise _damaged(path, "corrupt image file", type(e).__name__) from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise _damaged(path, "missing file", "not there") from None
    except Exception as e:
        raise _damaged(path, "corrupt array file", type(e).__name__) from None


def manifest_class_names(manifest: dict[str, Any], task: str) -> list[str] | None:
    """A classification task's class names as a processed dataset's manifest holds them: semseg's under
    ``classes`` (every dataset has them), any other task's under ``task_classes``; None where absent."""
    names = manifest.get("classes") if task == "semseg" else manifest.get("task_classes", {}).get(task)
    return list(names) if names is not None else None


class FolderDataset(Dataset):
    """One split of a processed dataset. An item is a sample: a dict of ``image``, one label per task,
    ``K`` (3×3 intrinsics, which every transform keeps consistent with the pixels) and, for
    multi-view data, ``pose`` and a ``neighbor`` view with its own labels, ``K`` and ``pose``.

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

    @cached_property
    def formats(self) -> dict[str, str]:
        return {"image": ".png", **self.manifest.get("formats", {})}

    def class_names(self, task: str) -> list[str]:
        """Class names of a classification task (see :func:`manifest_class_names`)."""
        names = manifest_class_names(self.manifest, task)
        if names is None:
            raise UserError(f"dataset {self.name} names no classes for task {task!r} (manifest task_classes)")
        return names

    @property
    def task_num_classes(self) -> dict[str, int]:
        """Class count per classification task of the dataset (what ``create_model`` takes)."""
        from mtl3d.tasks import get_task

        tasks = self.manifest.get("tasks", ["semseg"])
        return {t: len(self.class_names(t)) for t in tasks if get_task(t).kind == "classification"}

    def subset(self, fraction: float) -> None:
        """Keep a fraction of the split (data-size ablations): a fixed random subset of the ids, drawn
        from a generator seeded by the split's size so that every run of a study sees the same images."""
        if not 0.0 < fraction <= 1.0:
            raise UserError(f"config key 'data.train_fraction': {fraction} is not in (0, 1]")
        if fraction == 1.0:
            return
        n = max(1, round(fraction * len(self.ids)))
        keep = np.sort(np.random.default_rng(len(self.ids)).permutation(len(self.ids))[:n])
        self.ids = [self.ids[i] for i in keep]

    def __len__(self) -> int:
        return len(self.ids)

    def load_arrays(self, view_id: str) -> dict[str, np.ndarray]:
        """One view as decoded arrays: ``image`` uint8 HxWx3, each task's label at the original size
        (semseg/human_parts uint8 ids, depth HxW metres, normals HxWx3, edges/saliency HxW in {0, 1}),
        and ``K``/``pose`` where the manifest has them. Figures and notebooks read data through this."""
        image_path = self.root / "images" / f"{view_id}{self.formats['image']}"
        image = _load_image(image_path)
        if image.ndim != 3 or image.shape[2] != 3:
            raise UserError(f"corrupt image file {image_path} (not RGB)")
        out: dict[str, np.ndarray] = {"image": image}
        for task in self.tasks:
            folder, ext = _FILES[task]
            ext = self.formats.get(task, ext)
            path = self.root / folder / f"{view_id}{ext}"
            arr = _load_image(path) if ext in (".png", ".jpg") else _load_npy(path)
            if task == "normals" and arr.dtype == np.uint8:
                arr = _decode_normals_png(arr, path)
            if arr.shape[:2] != image.shape[:2]:
                raise UserError(f"corrupt label file {path}: size {arr.shape[:2]} != image {image.shape[:2]}")
            if task in ("edges", "saliency"):
                arr = (arr > 127).astype(np.float32)  # 0/255 on disk
            out[task] = arr
        view = self.manifest.get("views", {}).get(view_id, {})
        for key in ("K", "pose"):
            if key in view:
                out[key] = np.asarray(view[key], dtype=np.float64)
        return out

    def load_view(self, view_id: str) -> dict[str, Any]:
        """The untransformed sample of one view as tensors (image CxHxW in [0, 1])."""
        arrays = self.load_arrays(view_id)
        sample: dict[str, Any] = {}
        for key, arr in arrays.items():
            t = torch.from_numpy(np.array(arr, copy=True))
            if key == "image":
                sample[key] = t.permute(2, 0, 1).float() / 255.0
            elif key in ("semseg", "human_parts"):
                sample[key] = t.long()
            elif key == "normals":
                sample[key] = t.float().permute(2, 0, 1)
            elif key in ("K", "pose"):
                sample[key] = t.float()
            else:
                sample[key] = t.float()[None]
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


def _decode_normals_png(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise UserError(f"corrupt normals file {path} (not an RGB image)")
    # The loaders' order of operations in float32 (v * (2/255) differs in the last bit for 111 codes).
    n = 2 * arr.astype(np.float32) / 255 - 1
    n[(arr == 0).all(axis=2)] = 0.0  # the invalid marker, see the module docstring
    return n


def open_dataset(root: str | Path, split: str, tasks: list[str] | None = None) -> FolderDataset:
    """A prepared dataset's split with every task it has (or ``tasks``), untransformed: what figures,
    notebooks and statistics read, whatever the dataset (SynthRooms, NYUD, PASCAL)."""
    man = read_manifest(root, Path(root).name)
    return FolderDataset(
        root, split, list(tasks or man.get("tasks", [])), dataset=man.get("dataset", "dataset")
    )


def split_names(root: str | Path) -> list[str]:
    return sorted(p.stem for p in (Path(root) / "splits").glob("*.txt"))


def index_seed(index: int) -> int:
    return 1_000_003 * (index + 1)
