"""PASCAL-Context multi-task data (PASCAL_MT / PASCALContext archives) -> the processed layout.

Both published archives share one layout (``docs/datasets.md``); only the top folder
differs: ``atrc`` = ``PASCALContext/`` (ATRC / InvPT), ``survey`` = ``PASCAL_MT/`` (ASTMT / MTL survey).
The labels are decoded the way the public MTL loaders decode them at load time, once, so training reads
plain PNGs:

* semseg: ``semseg/VOC12/<id>.png`` if present, else ``semseg/pascal-context/<id>.png``; 21 classes
  (0 = background), 255 = ignore, stored as is.
* edges: the 4-neighbour Laplacian of the 459-class Context ``LabelMap`` (OpenCV's default 3x3 aperture,
  reflect-101 border), ``!= 0``, then morphological thinning (Guo-Hall two-subiteration algorithm,
  identical to ``skimage.morphology.thin``; see :func:`mtl3d.geometry.thin`).
* human_parts: PASCAL-Part person parts grouped into 6 parts + background. Images without a person of
  non-empty object mask, without any person-part pixel, or without a parts file are entirely ignore
  (255), as the MTL loaders' ignore step makes them; on person images every other pixel is background 0.
* normals: the distilled PNG, kept only on pixels whose Context class also exists in NYU
  (``pascal_normals_classes.json``, 170 classes); elsewhere (0, 0, 0), which readers treat as invalid.
* saliency: the distilled PNG, ``v / 255 > 0.5``.

PASCAL has no calibration and no depth: every view gets :func:`~mtl3d.geometry.default_intrinsics`
(60 degree horizontal field of view, stored as float32 values), and ``near``/``far`` are only the
regularizer's rendering range in arbitrary units.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from mtl3d.data.encode import png_bytes
from mtl3d.data.pascal_labels import (
    _FIX,
    HUMAN_PARTS,
    PART_GROUPS,
    _normals_lut,
    edges_from_labelmap,
    human_parts_from_mat,
    normals_valid_classes,
)
from mtl3d.data.prepare import FORMAT_VERSIONS, existing, write_atomically
from mtl3d.errors import UserError, unknown_name
from mtl3d.geometry import default_intrinsics
from mtl3d.workers import WorkerPool, worker_count

__all__ = [
    "CLASSES",
    "HUMAN_PARTS",
    "PART_GROUPS",
    "TOP_DIRS",
    "VARIANTS",
    "convert",
    "edges_from_labelmap",
    "human_parts_from_mat",
    "normals_valid_classes",
    "prepare",
]

VARIANTS = ("atrc", "survey")
TOP_DIRS = {"atrc": "PASCALContext", "survey": "PASCAL_MT"}
FORMAT_VERSION = FORMAT_VERSIONS["pascal"]
IGNORE = 255
# the 20 VOC classes and background, in label order
CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
TASKS = ("semseg", "human_parts", "saliency", "normals", "edges")
NEAR, FAR = 1.0, 10.0
CAMERA = "default_intrinsics fov 60 deg (PASCAL has no calibration)"
DEPTH_RANGE = "near/far: the regularizer's rendering range in arbitrary units (PASCAL has no metric depth)"
_DATA_DIRS = ("images", "semseg", "human_parts", "edges", "normals", "saliency", "splits")
_LABEL_DIRS = ("semseg", "human_parts", "edges", "normals", "saliency")
# Ids become file names: refuse anything that could escape the output folders.
_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


# ------------------------------------------------------------------------------------------ per-image work
def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                raise ValueError(f"not a PNG ({im.format})")
            return np.asarray(im)
    except FileNotFoundError:
        raise UserError(f"missing file {path}; {_FIX}") from None
    except Exception as e:  # PIL raises many types for truncated or garbage files
        raise UserError(f"corrupt image file {path} ({type(e).__name__}); {_FIX}") from None


def _read_labelmap(path: Path) -> np.ndarray:
    try:
        mat = scipy.io.loadmat(path, variable_names=["LabelMap"])
    except FileNotFoundError:
        raise UserError(f"missing file {path}; {_FIX}") from None
    except Exception as e:
        raise UserError(f"corrupt .mat file {path} ({type(e).__name__}); {_FIX}") from None
    if "LabelMap" not in mat:
        raise UserError(f"corrupt PASCAL-Context file {path}: no 'LabelMap'; {_FIX}")
    lab = np.asarray(mat["LabelMap"])
    if lab.ndim != 2 or lab.dtype.kind not in "iuf" or lab.size == 0:
        raise UserError(f"corrupt PASCAL-Context file {path}: LabelMap is not a 2-D numeric array; {_FIX}")
    if lab.dtype.kind == "f" and not np.array_equal(lab, np.round(lab)):
        raise UserError(f"corrupt PASCAL-Context file {path}: LabelMap has non-integer values; {_FIX}")
    if lab.min() < 0 or lab.max() > 0xFFFF:
        raise UserError(f"corrupt PASCAL-Context file {path}: LabelMap values outside 0..65535; {_FIX}")
    return lab.astype(np.uint16)


def _semseg_path(src: Path, vid: str) -> Path | None:
    for sub in ("VOC12", "pascal-context"):
        path = src / "semseg" / sub / f"{vid}.png"
        if path.is_file():
            return path
    return None


def _check_size(path: Path, arr: np.ndarray, size: tuple[int, int]) -> None:
    if arr.shape[:2] != size:
        raise UserError(
            f"label file {path} is {arr.shape[0]}x{arr.shape[1]} but its image is {size[0]}x{size[1]}; {_FIX}"
        )


@dataclass(frozen=True)
class _Converter:
    """Converts one id (picklable, so a process pool can run it)."""

    src: Path
    out: Path

    def __call__(self, vid: str) -> tuple[str, dict[str, Any]]:
        src, out = self.src, self.out
        # image: copied byte for byte; decoded (at 1/8 scale: the entropy-coded data is still read in
        # full, so truncation is caught) only to validate it and read its size
        img_path = src / "JPEGImages" / f"{vid}.jpg"
        try:
            data = img_path.read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "JPEG":
                    raise ValueError(f"not a JPEG ({im.format})")
                w, h = im.size
                im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
                im.load()
        except FileNotFoundError:
            raise UserError(f"missing file {img_path}; {_FIX}") from None
        except Exception as e:
            raise UserError(f"corrupt image file {img_path} ({type(e).__name__}); {_FIX}") from None
        size = (h, w)

        seg_path = _semseg_path(src, vid)
        if seg_path is None:
            raise UserError(
                f"missing file {src / 'semseg' / 'VOC12' / (vid + '.png')} (nor in "
                f"semseg/pascal-context); {_FIX}"
            )
        semseg = _read_png(seg_path)
        if semseg.ndim != 2:
            raise UserError(f"corrupt label file {seg_path}: not a single-channel PNG; {_FIX}")
        _check_size(seg_path, semseg, size)
        bad = (semseg >= len(CLASSES)) & (semseg != IGNORE)  # before the cast, which would wrap 16-bit values
        if bad.any():
            raise UserError(
                f"corrupt label file {seg_path}: value {int(semseg[bad][0])} is not a class "
                f"(0..{len(CLASSES) - 1}) or ignore ({IGNORE}); {_FIX}"
            )
        semseg = semseg.astype(np.uint8)

        lm_path = src / "pascal-context" / "trainval" / f"{vid}.mat"
        label_map = _read_labelmap(lm_path)
        _check_size(lm_path, label_map, size)
        edges = edges_from_labelmap(label_map)

        parts_path = src / "human_parts" / f"{vid}.mat"
        parts = human_parts_from_mat(parts_path) if parts_path.is_file() else None
        if parts is None:
            parts = np.full(size, IGNORE, np.uint8)
            has_person = False
        else:
            _check_size(parts_path, parts, size)
            has_person = True

        nrm_path = src / "normals_distill" / f"{vid}.png"
        normals = _read_png(nrm_path)
        if normals.ndim != 3 or normals.shape[2] != 3 or normals.dtype != np.uint8:
            raise UserError(f"corrupt normals file {nrm_path}: not an 8-bit RGB PNG; {_FIX}")
        _check_size(nrm_path, normals, size)
        normals = np.where(_normals_lut()[label_map][..., None], normals, np.uint8(0))

        sal_path = src / "sal_distill" / f"{vid}.png"
        sal = _read_png(sal_path)
        if sal.ndim != 2:
            raise UserError(f"corrupt saliency file {sal_path}: not a single-channel PNG; {_FIX}")
        _check_size(sal_path, sal, size)
        saliency = sal.astype(np.float32) / 255.0 > 0.5  # the loaders' threshold, on their float scale

        files = {
            f"images/{vid}.jpg": data,
            f"semseg/{vid}.png": png_bytes(semseg),
            f"human_parts/{vid}.png": png_bytes(parts),
            f"edges/{vid}.png": png_bytes(edges.astype(np.uint8) * np.uint8(255)),
            f"normals/{vid}.png": png_bytes(normals),
            f"saliency/{vid}.png": png_bytes(saliency.astype(np.uint8) * np.uint8(255)),
        }
        sums = {}
        for rel, blob in files.items():
            (out / rel).write_bytes(blob)
            sums[rel] = hashlib.sha256(blob).hexdigest()
        return vid, {"size": [h, w], "has_person": has_person, "checksums": sums}


# ------------------------------------------------------------------------------------------ dataset I/O
def _resolve_source(src: Path, variant: str) -> Path:
    """The archive's top folder: ``src`` itself, or ``src/<top dir of the variant>``."""
    if (src / "JPEGImages").is_dir():
        return src
    top = src / TOP_DIRS[variant]
    if (top / "JPEGImages").is_dir():
        return top
    if not src.exists():
        raise UserError(
            f"PASCAL source folder {src} does not exist; download and extract the archive "
            f"(mtl3d data download pascal)"
        )
    raise UserError(
        f"{src} is not an extracted PASCAL '{variant}' archive (no JPEGImages/ there or in "
        f"{TOP_DIRS[variant]}/); point to the folder that holds JPEGImages/"
    )


def _read_split(src: Path, split: str, limit: int | None) -> list[str]:
    path = src / "ImageSets" / "Context" / f"{split}.txt"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"missing split file {path}; {_FIX}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"unreadable split file {path} ({type(e).__name__}); {_FIX}") from None
    ids = [line.strip() for line in lines if line.strip()]
    for vid in ids:
        if not _ID_RE.match(vid):
            raise UserError(f"split file {path} has an invalid image id {vid!r}; {_FIX}")
    if not ids:
        raise UserError(f"split file {path} is empty; {_FIX}")
    return ids[:limit] if limit is not None else ids


def _check_files(src: Path, ids: Iterable[str]) -> None:
    """Fails before anything is written if a required per-id file is missing (parts files may be absent)."""
    for vid in ids:
        for rel in (
            f"JPEGImages/{vid}.jpg",
            f"pascal-context/trainval/{vid}.mat",
            f"normals_distill/{vid}.png",
            f"sal_distill/{vid}.png",
        ):
            if not (src / rel).is_file():
                raise UserError(f"missing file {src / rel}; {_FIX}")
        if _semseg_path(src, vid) is None:
            raise UserError(
                f"missing file {src / 'semseg' / 'VOC12' / (vid + '.png')} (nor in "
                f"semseg/pascal-context); {_FIX}"
            )


def _expected_files(manifest: dict[str, Any]) -> Iterable[str]:
    for split in manifest.get("splits", {}):
        yield f"splits/{split}.txt"
    for vid in manifest.get("views", {}):
        yield f"images/{vid}.jpg"
        for folder in _LABEL_DIRS:
            yield f"{folder}/{vid}.png"


def _split_bytes(members: list[str]) -> bytes:
    return "".join(vid + "\n" for vid in members).encode()


def _reconvert(src: Path, tmp: Path, limit: int | None, rels: list[str]) -> None:
    """Converts again, into ``tmp``, the views (and split files) that the paths ``rels`` belong to."""
    for name in _DATA_DIRS:
        (tmp / name).mkdir(exist_ok=True)
    for split in ("train", "val"):
        if f"splits/{split}.txt" in rels:
            (tmp / "splits" / f"{split}.txt").write_bytes(_split_bytes(_read_split(src, split, limit)))
    convert_one = _Converter(src, tmp)
    for vid in sorted({Path(rel).name.split(".", 1)[0] for rel in rels if not rel.startswith("splits/")}):
        convert_one(vid)


def _identity(manifest: dict[str, Any]) -> tuple[Any, ...]:
    """What decides whether an existing dataset is the one asked for (not the timing)."""
    return (
        manifest.get("dataset"),
        manifest.get("variant"),
        manifest.get("limit"),
        manifest.get("source"),
    )


def _run(
    convert_one: Callable[[str], tuple[str, dict[str, Any]]], ids: list[str], workers: int, progress: bool
) -> dict[str, dict[str, Any]]:
    views: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(ids), disable=not progress, desc="pascal", unit="img")
    try:
        if workers == 0:
            for vid in ids:
                key, meta = convert_one(vid)
                views[key] = meta
                bar.update()
            return views
        with WorkerPool(
            workers, "pascal conversion", "convert in this process with --workers 0", preload=[__name__]
        ) as pool:
            # chunks amortise the inter-process round trips (~50 ms of work per image)
            for key, meta in pool.map(convert_one, ids, chunksize=max(1, min(16, len(ids) // (4 * workers)))):
                views[key] = meta
                bar.update()
        return views
    finally:
        bar.close()


def convert(
    src: str | Path,
    root: str | Path,
    variant: str,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
    source: dict[str, Any] | None = None,
    limit: int | None = None,
    verify: bool = False,
) -> dict[str, Any]:
    """Converts an extracted PASCAL archive folder ``src`` into the processed layout at ``root``.

    ``src`` is the archive's top folder (``PASCALContext/`` or ``PASCAL_MT/``) or the folder holding it.
    ``source`` is the provenance recorded in the manifest (default: the source path). ``limit`` keeps the
    first N ids of each split. ``workers`` processes convert images in parallel (default
    ``min(4, cpu_count)``; 0 = in this process). An existing dataset converted the same way is returned
    once its missing files (``verify``: and those whose checksum differs) are converted again; a different
    one is only replaced with ``overwrite=True``. Files are written into
    ``root/.tmp-*`` and moved into place at the end, manifest last, so an interrupted run never leaves a
    dataset that looks complete. Returns the manifest.
    """
    if variant not in VARIANTS:
        raise unknown_name("PASCAL variant", variant, VARIANTS)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UserError(f"pascal: limit must be a positive integer or None (got {limit!r})")
    workers = worker_count(workers, "pascal")
    start = time.perf_counter()
    src = _resolve_source(Path(src), variant)
    root = Path(root)
    source = dict(source) if source is not None else {"path": str(src.resolve())}
    wanted = {
        "dataset": "pascal",
        "format_version": FORMAT_VERSION,
        "variant": variant,
        "limit": limit,
        "source": json.loads(json.dumps(source)),
    }

    found = existing(
        "pascal",
        root,
        # the same conversion: missing (with verify: damaged) files are converted again, only them
        same=lambda old: _identity(old) == _identity(wanted) and bool(old.get("views")),
        overwrite=overwrite,
        verify=verify,
        regenerate=lambda tmp, bad: _reconvert(src, tmp, limit, bad),
        expected=_expected_files,
    )
    if found is not None:
        return found

    splits = {split: _read_split(src, split, limit) for split in ("train", "val")}
    ids = list(dict.fromkeys(vid for members in splits.values() for vid in members))
    _check_files(src, ids)

    def write(tmp: Path) -> dict[str, Any]:
        meta = _run(_Converter(src, tmp), ids, workers, progress)
        views: dict[str, Any] = {}
        for vid in ids:
            h, w = meta[vid]["size"]
            views[vid] = {
                "size": [h, w],
                "K": default_intrinsics(h, w).astype(np.float32).tolist(),
                "has_person": meta[vid]["has_person"],
            }
        sums = {rel: digest for vid in ids for rel, digest in meta[vid]["checksums"].items()}
        for split, members in splits.items():
            data = _split_bytes(members)
            (tmp / "splits" / f"{split}.txt").write_bytes(data)
            sums[f"splits/{split}.txt"] = hashlib.sha256(data).hexdigest()
        return {
            **wanted,
            "classes": list(CLASSES),
            "num_classes": len(CLASSES),
            "task_classes": {"human_parts": list(HUMAN_PARTS)},
            "tasks": list(TASKS),
            "formats": {"image": ".jpg", "normals": ".png"},
            # sizes vary per image: see views[id].size
            "height": None,
            "width": None,
            "near": NEAR,
            "far": FAR,
            "depth_range": DEPTH_RANGE,
            "camera": CAMERA,
            "splits": {split: len(members) for split, members in splits.items()},
            "persons": {s: sum(views[v]["has_person"] for v in members) for s, members in splits.items()},
            "views": views,
            "checksums": dict(sorted(sums.items())),
            "prepare_seconds": round(time.perf_counter() - start, 2),
        }

    return write_atomically(root, _DATA_DIRS, write)


def prepare(
    root: str | Path,
    raw: str | Path = "data/raw/pascal",
    variant: str = "atrc",
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
    limit: int | None = None,
    verify: bool = False,
) -> dict[str, Any]:
    """Finds (extracting if needed) the downloaded ``variant`` archive under ``raw`` and converts it
    into ``root``; returns the manifest (see :func:`convert`)."""
    if variant not in VARIANTS:
        raise unknown_name("PASCAL variant", variant, VARIANTS)
    from mtl3d.data.download import source_dir

    src, source = source_dir("pascal", variant, Path(raw), progress=progress)
    return convert(
        src,
        root,
        variant,
        overwrite=overwrite,
        workers=workers,
        progress=progress,
        source=source,
        limit=limit,
        verify=verify,
    )
