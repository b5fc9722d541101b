"""NYUD-v2 multi-task archives -> the processed layout read by :class:`mtl3d.data.folder.FolderDataset`.

Two published archives hold different data and are kept apart as *variants* (``docs/datasets.md``,
"Variants"):

- ``atrc``: ATRC/InvPT ``NYUDv2/`` at 425x560 (Gupta et al.'s crop of the 640x480 frames): PNG images,
  normals PNG (``2v/255-1``), edges PNG (``v/255``).
- ``survey``: the MTL survey's ``NYUD_MT/`` at the full 480x640: JPEG images, normals and edges as float
  ``.npy``.

Both share ``segmentation/<id>.png`` (0 = unlabelled, 1..40 = NYU-40), ``depth/<id>.npy`` (metres, 0 =
invalid) and ``gt_sets/{train,val}.txt``. Output (see ``convert``)::

    ROOT/manifest.json
    ROOT/splits/{train,val}.txt     ids in the order of gt_sets
    ROOT/images/<id>.png|.jpg       source bytes, verbatim
    ROOT/semseg/<id>.png            uint8 0..39, 255 = ignore
    ROOT/depth/<id>.npy             float32 metres, 0 = invalid
    ROOT/normals/<id>.png|.npy      atrc: source PNG verbatim; survey: float32 HxWx3 (zero vector = invalid)
    ROOT/edges/<id>.png             uint8 {0, 255}
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from concurrent.futures import FIRST_EXCEPTION, wait
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from mtl3d.data.encode import npy_bytes, png_bytes
from mtl3d.data.prepare import FORMAT_VERSIONS, existing, write_atomically
from mtl3d.errors import UserError, unknown_name
from mtl3d.geometry import NYU_CX, NYU_CY, NYU_FX, NYU_FY, NYU_SIZE
from mtl3d.workers import WorkerPool, worker_count

__all__ = ["CLASSES", "FAR", "IGNORE", "NEAR", "SIZES", "VARIANTS", "convert", "intrinsics", "prepare"]

VARIANTS = ("atrc", "survey")
FORMAT_VERSION = FORMAT_VERSIONS["nyud"]
TASKS = ("semseg", "depth", "normals", "edges")
IGNORE = 255
# Rendering range of the regularizer (metres); the Kinect's useful range is about 0.5..10 m.
NEAR, FAR = 0.1, 10.0
# fmt: off
CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat", "clothes",
    "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)
# fmt: on
SIZES: dict[str, tuple[int, int]] = {"atrc": (425, 560), "survey": (480, 640)}
# Archive top folder per variant (what the tarball extracts to); only used in messages.
TOP_DIRS = {"atrc": "NYUDv2", "survey": "NYUD_MT"}
# Source file extensions per variant: (image, normals, edge).
_SRC_EXT = {"atrc": (".png", ".png", ".png"), "survey": (".jpg", ".npy", ".npy")}
_DATA_DIRS = ("images", "semseg", "depth", "normals", "edges", "splits")
_SPLITS = ("train", "val")
# A split line becomes a file name: refuse anything that could leave the folder.
_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Depth above this is not metres (the archives store metres, max ~10 m); millimetres would pass silently.
_MAX_DEPTH = 100.0

# Gupta et al.'s crop I(46:470, 41:600), 1-based inclusive, gives the atrc 425x560 frames; its first
# pixel is 0-based (row 45, col 40), so the principal point moves by (-40, -45).
_CROP = {"atrc": {"rows": [46, 470], "cols": [41, 600]}, "survey": None}


def _offset(variant: str) -> tuple[int, int]:
    """(dx, dy) subtracted from (cx, cy) for the variant's crop."""
    crop = _CROP[variant]
    return (0, 0) if crop is None else (crop["cols"][0] - 1, crop["rows"][0] - 1)


def intrinsics(variant: str) -> np.ndarray:
    """The 3x3 K of every view of ``variant`` (pixel units, 0-based pixel centres)."""
    if variant not in VARIANTS:
        raise unknown_name("NYUD variant", variant, VARIANTS)
    dx, dy = _offset(variant)
    return np.array([[NYU_FX, 0.0, NYU_CX - dx], [0.0, NYU_FY, NYU_CY - dy], [0.0, 0.0, 1.0]])


def _camera(variant: str) -> dict[str, Any]:
    dx, dy = _offset(variant)
    return {
        "source": "NYU Depth v2 toolbox camera_params.m, RGB camera at 640x480",
        "convention": "0-based pixel coordinates (Bouguet calibration toolbox), OpenCV pinhole",
        "full_size": list(NYU_SIZE),
        "fx": NYU_FX,
        "fy": NYU_FY,
        "cx": NYU_CX,
        "cy": NYU_CY,
        "crop": _CROP[variant],
        "offset": {"dx": dx, "dy": dy},
        "distortion": "not modelled (labelled frames assumed undistorted)",
    }


# --------------------------------------------------------------------------------------------------------
# Per-view conversion (runs in worker processes; everything it needs travels as plain strings)


def _src_paths(src: Path, variant: str, vid: str) -> dict[str, Path]:
    img, nrm, edge = _SRC_EXT[variant]
    return {
        "image": src / "images" / f"{vid}{img}",
        "semseg": src / "segmentation" / f"{vid}.png",
        "depth": src / "depth" / f"{vid}.npy",
        "normals": src / "normals" / f"{vid}{nrm}",
        "edges": src / "edge" / f"{vid}{edge}",
    }


def _size_hint(path: Path, hw: tuple[int, int], variant: str) -> str:
    got = f"{hw[0]}x{hw[1]}"
    for other, size in SIZES.items():
        if other != variant and tuple(hw) == size:
            return (
                f"nyud: {path}: {got} images: this is the {other} archive "
                f"({TOP_DIRS[other]}/), use --variant {other}"
            )
    want = "x".join(map(str, SIZES[variant]))
    return f"nyud: {path} is {got}, but the {variant} archive has {want} images; use the original archive"


def _decode_image(path: Path, data: bytes) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data))
        im.load()  # Image.open reads only the header; a truncated file fails here
    except Exception as e:  # PIL raises many types for garbage or truncated files
        raise UserError(
            f"nyud: corrupt image file {path} ({type(e).__name__}); extract the archive again"
        ) from None
    return im


def _read_png(path: Path) -> np.ndarray:
    return np.asarray(_decode_image(path, path.read_bytes()))


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(
            f"nyud: corrupt array file {path} ({type(e).__name__}); extract the archive again"
        ) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":  # float, int, unsigned int
        raise UserError(f"nyud: corrupt array file {path} (not a numeric array); extract the archive again")
    return arr


def _check_shape(path: Path, arr: np.ndarray, hw: tuple[int, int], channels: int | None) -> np.ndarray:
    """``arr`` as HxW (channels None) or HxWxC; a trailing singleton channel is dropped."""
    if channels is None and arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    want = hw if channels is None else (*hw, channels)
    if arr.shape != want:
        raise UserError(
            f"nyud: label file {path} has shape {arr.shape}, but its image is {hw[0]}x{hw[1]} "
            f"(expected {want}); extract the archive again"
        )
    return arr


def _semseg(path: Path, hw: tuple[int, int]) -> np.ndarray:
    raw = _check_shape(path, _read_png(path), hw, None)
    if raw.dtype == bool or raw.min(initial=0) < 0 or raw.max(initial=0) > len(CLASSES):
        raise UserError(
            f"nyud: label file {path} has values outside 0..{len(CLASSES)} "
            "(expected NYU-40 ids, 0 = unlabelled); extract the archive again"
        )
    # 0 (unlabelled) wraps to 255 = ignore; 1..40 -> 0..39 (no background class)
    return (raw.astype(np.int64) - 1).astype(np.uint8)


def _depth(path: Path, hw: tuple[int, int]) -> np.ndarray:
    depth = _check_shape(path, _read_npy(path), hw, None).astype(np.float32)
    # NaN/inf and negative values are holes, like the 0s the archive already marks as invalid
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    if depth.max(initial=0.0) > _MAX_DEPTH:
        raise UserError(
            f"nyud: depth file {path} has values up to {depth.max():.0f}, not metres "
            "(expected <= 10 m); use the original archive"
        )
    return depth


def _normals_npy(path: Path, hw: tuple[int, int]) -> np.ndarray:
    normals = _check_shape(path, _read_npy(path), hw, 3).astype(np.float32, copy=False)
    bad = ~np.isfinite(normals)
    if bad.any():  # rare: only then pay for the copy and the per-pixel reduction
        normals = normals.copy()
        normals[bad.any(axis=-1)] = 0.0  # any non-finite component invalidates the pixel (zero vector)
    return normals


def _edges(path: Path, hw: tuple[int, int], variant: str) -> np.ndarray:
    if variant == "atrc":
        raw = _check_shape(path, _read_png(path), hw, None)
        # v/255 >= 0.5 <=> v >= 127.5 <=> 2v >= 255 (exact in integers); 1-bit PNGs read as bool
        on = raw if raw.dtype == bool else 2 * raw.astype(np.int64) >= 255
    else:
        on = _check_shape(path, _read_npy(path), hw, None) >= 0.5  # NaN compares False: no edge
    return np.where(on, np.uint8(255), np.uint8(0))


def _convert_one(src: str, tmp: str, variant: str, vid: str) -> dict[str, str]:
    """Converts one view into ``tmp`` and returns ``{relative path: sha256}`` of the files it wrote."""
    paths = _src_paths(Path(src), variant, vid)
    img_ext, nrm_ext, _ = _SRC_EXT[variant]
    out: dict[str, bytes] = {}

    image_bytes = paths["image"].read_bytes()
    im = _decode_image(paths["image"], image_bytes)
    hw = (im.height, im.width)
    if hw != SIZES[variant]:
        raise UserError(_size_hint(paths["image"], hw, variant))
    if im.mode != "RGB":
        raise UserError(f"nyud: image {paths['image']} is {im.mode}, not RGB; extract the archive again")
    out[f"images/{vid}{img_ext}"] = image_bytes

    out[f"semseg/{vid}.png"] = png_bytes(_semseg(paths["semseg"], hw))
    out[f"depth/{vid}.npy"] = npy_bytes(_depth(paths["depth"], hw))
    if variant == "atrc":
        normal_bytes = paths["normals"].read_bytes()
        arr = np.asarray(_decode_image(paths["normals"], normal_bytes))
        _check_shape(paths["normals"], arr, hw, 3)
        if arr.dtype != np.uint8:
            raise UserError(
                f"nyud: normals file {paths['normals']} is not 8-bit RGB; extract the archive again"
            )
        out[f"normals/{vid}{nrm_ext}"] = normal_bytes  # the reader decodes 2v/255-1 itself
    else:
        out[f"normals/{vid}{nrm_ext}"] = npy_bytes(_normals_npy(paths["normals"], hw))
    out[f"edges/{vid}.png"] = png_bytes(_edges(paths["edges"], hw, variant))

    sums = {}
    for rel, data in out.items():
        (Path(tmp) / rel).write_bytes(data)
        sums[rel] = hashlib.sha256(data).hexdigest()
    return sums


# --------------------------------------------------------------------------------------------------------
# Validation of the extracted source folder (cheap checks before any conversion work)


def _read_splits(src: Path, limit: int | None) -> dict[str, list[str]]:
    splits = {}
    for split in _SPLITS:
        path = src / "gt_sets" / f"{split}.txt"
        if not path.is_file():
            raise UserError(f"nyud: missing split file {path}; is {src} the extracted archive folder?")
        ids = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            vid = line.strip()
            if not vid:
                continue
            if not _ID.fullmatch(vid):
                raise UserError(
                    f"nyud: {path} line {n}: {vid!r} is not an image id; extract the archive again"
                )
            ids.append(vid)
        if not ids:
            raise UserError(f"nyud: split file {path} is empty; extract the archive again")
        splits[split] = ids[:limit] if limit is not None else ids
    return splits


def _check_source(src: Path, variant: str, ids: list[str]) -> None:
    other = next(v for v in VARIANTS if v != variant)
    first = _src_paths(src, variant, ids[0])["image"]
    if not first.is_file() and _src_paths(src, other, ids[0])["image"].is_file():
        raise UserError(
            f"nyud: {first} is missing but {first.with_suffix(_SRC_EXT[other][0]).name} exists: "
            f"this is the {other} archive ({TOP_DIRS[other]}/), use --variant {other}"
        )
    missing = [p for vid in ids for p in _src_paths(src, variant, vid).values() if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(
            f"nyud: missing file {missing[0]}{more}; the {variant} archive is incomplete, "
            "download and extract it again"
        )
    # Fail on the wrong variant before starting a pool (workers check every image again).
    try:
        with Image.open(first) as im:
            hw = (im.height, im.width)
    except Exception as e:
        raise UserError(
            f"nyud: corrupt image file {first} ({type(e).__name__}); extract the archive again"
        ) from None
    if hw != SIZES[variant]:
        raise UserError(_size_hint(first, hw, variant))


# --------------------------------------------------------------------------------------------------------
# Writing


def _reconvert(src: Path, tmp: Path, variant: str, limit: int | None, rels: list[str]) -> None:
    """Converts again, into ``tmp``, the views (and split files) that the paths ``rels`` belong to."""
    if not src.is_dir():
        raise UserError(
            f"nyud: cannot repair: source folder {src} does not exist; "
            f"run: mtl3d data download nyud --variant {variant}"
        )
    for name in _DATA_DIRS:
        (tmp / name).mkdir(exist_ok=True)
    splits = _read_splits(src, limit)
    for split in _SPLITS:
        (tmp / "splits" / f"{split}.txt").write_bytes("".join(vid + "\n" for vid in splits[split]).encode())
    views = sorted({Path(rel).name.split(".", 1)[0] for rel in rels if not rel.startswith("splits/")})
    known = {vid for ids in splits.values() for vid in ids}
    for vid in views:
        if vid in known:
            _convert_one(str(src), str(tmp), variant, vid)


def _run(src: Path, tmp: Path, variant: str, ids: list[str], workers: int, progress: bool) -> dict[str, str]:
    sums: dict[str, str] = {}
    bar = tqdm(total=len(ids), disable=not progress, desc=f"nyud {variant}", unit="img")
    try:
        if workers == 0:
            for vid in ids:
                sums.update(_convert_one(str(src), str(tmp), variant, vid))
                bar.update()
            return sums
        with WorkerPool(
            min(workers, len(ids)),
            "nyud conversion",
            "convert in this process with --workers 0",
            preload=[__name__],
        ) as pool:
            pending = {pool.submit(_convert_one, str(src), str(tmp), variant, vid) for vid in ids}
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    sums.update(pool.result(fut))  # re-raises a worker's UserError here
                    bar.update()
        return sums
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
    source: dict | None = None,
    limit: int | None = None,
    verify: bool = False,
) -> dict[str, Any]:
    """Converts the extracted archive folder ``src`` (``NYUDv2/`` or ``NYUD_MT/``) into ``root``.

    Returns the manifest. ``source`` is the provenance recorded in the manifest (default: the resolved
    ``src`` path); ``limit`` converts only the first N ids of each split. An existing conversion with the
    same variant, source and limit is returned as it is once its missing files (``verify``: and those whose
    checksum differs) are converted again; a different dataset in ``root`` is replaced only with
    ``overwrite=True``. Files go to ``root/.tmp-*`` and are moved into place at the end, manifest
    last, so an interrupted run never leaves a manifest. ``workers`` processes convert in parallel
    (default ``min(4, cpu_count)``; 0 = in this process).
    """
    t0 = time.perf_counter()
    if variant not in VARIANTS:
        raise unknown_name("NYUD variant", variant, VARIANTS)
    if limit is not None and int(limit) < 1:
        raise UserError(f"nyud: limit must be >= 1 (got {limit})")
    workers = worker_count(workers, "nyud")
    src, root = Path(src), Path(root)
    limit = None if limit is None else int(limit)
    # JSON round trip so that tuples etc. compare equal to what a manifest read back holds
    source = json.loads(json.dumps(source if source is not None else {"path": str(src.resolve())}))

    found = existing(
        "nyud",
        root,
        # the same conversion: missing (with verify: damaged) files are converted again, only them
        same=lambda old: (
            old.get("dataset") == "nyud"
            and old.get("variant") == variant
            and old.get("source") == source
            and old.get("limit") == limit
            and bool(old.get("checksums"))
        ),
        overwrite=overwrite,
        verify=verify,
        regenerate=lambda tmp, bad: _reconvert(src, tmp, variant, limit, bad),
    )
    if found is not None:
        return found

    if not src.is_dir():
        raise UserError(
            f"nyud: source folder {src} does not exist; run: mtl3d data download nyud --variant {variant}"
        )
    splits = _read_splits(src, limit)
    ids = list(dict.fromkeys(vid for split in _SPLITS for vid in splits[split]))  # unique, in order
    _check_source(src, variant, ids)

    def write(tmp: Path) -> dict[str, Any]:
        sums = _run(src, tmp, variant, ids, workers, progress)
        for split in _SPLITS:
            data = "".join(vid + "\n" for vid in splits[split]).encode()
            (tmp / "splits" / f"{split}.txt").write_bytes(data)
            sums[f"splits/{split}.txt"] = hashlib.sha256(data).hexdigest()
        h, w = SIZES[variant]
        K = intrinsics(variant).tolist()
        return {
            "dataset": "nyud",
            "variant": variant,
            "format_version": FORMAT_VERSION,
            "classes": list(CLASSES),
            "num_classes": len(CLASSES),
            "tasks": list(TASKS),
            "formats": {"image": _SRC_EXT[variant][0], "normals": _SRC_EXT[variant][1]},
            "height": h,
            "width": w,
            "near": NEAR,
            "far": FAR,
            "splits": {split: len(splits[split]) for split in _SPLITS},
            "views": {vid: {"K": K} for vid in ids},
            "camera": _camera(variant),
            "source": source,
            "limit": limit,
            "checksums": dict(sorted(sums.items())),
            "prepare_seconds": round(time.perf_counter() - t0, 3),
        }

    return write_atomically(root, _DATA_DIRS, write)


def prepare(
    root: str | Path,
    raw: str | Path = "data/raw/nyud",
    variant: str = "atrc",
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
    limit: int | None = None,
    verify: bool = False,
) -> dict[str, Any]:
    """Finds (verifying/extracting as needed) the ``variant`` archive under ``raw`` and converts it."""
    if variant not in VARIANTS:  # before touching any archive
        raise unknown_name("NYUD variant", variant, VARIANTS)
    from mtl3d.data.download import source_dir  # imported late: only preparing needs the downloader

    src, source = source_dir("nyud", variant, Path(raw), progress=progress)
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
