"""Writing a SynthRooms dataset: splits by scene, each scene's files (a pure function of the seed and the
scene index, so a damaged file is rewritten byte for byte), the manifest, verification."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mtl3d.data.encode import npy_bytes, png_bytes
from mtl3d.data.prepare import FORMAT_VERSIONS, damaged_files, existing, write_atomically
from mtl3d.data.synthrooms.camera import camera_poses, intrinsics
from mtl3d.data.synthrooms.render import render
from mtl3d.data.synthrooms.scene import CLASSES, FAR, NEAR, scene_for
from mtl3d.data.synthrooms.sensor import _degrade
from mtl3d.errors import UserError

FORMAT_VERSION = FORMAT_VERSIONS["synthrooms"]
TASKS = ("semseg", "depth", "normals", "edges")
_DATA_DIRS = ("images", "depth", "normals", "semseg", "edges", "splits")


def _split_scenes(scenes: int, seed: int, val_fraction: float, test_fraction: float) -> dict[str, list[int]]:
    def count(frac: float) -> int:
        n = int(round(scenes * frac))
        return max(n, 1) if frac > 0 and scenes >= 2 else n

    n_test, n_val = count(test_fraction), count(val_fraction)
    if scenes - n_test - n_val < 1:
        raise UserError(
            f"synthrooms: {scenes} scenes leave no training scene with "
            f"val_fraction={val_fraction} and test_fraction={test_fraction}"
        )
    perm = np.random.default_rng([seed, 3, 0]).permutation(scenes)
    out = {
        "train": sorted(perm[n_test + n_val :].tolist()),
        "val": sorted(perm[n_test : n_test + n_val].tolist()),
    }
    if test_fraction > 0:
        out["test"] = sorted(perm[:n_test].tolist())
    return out


def _check_args(
    scenes: int,
    views: int,
    height: int,
    width: int,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    depth_holes: float,
    depth_noise: float,
    image_noise: float,
) -> None:
    if scenes < 1 or views < 1:
        raise UserError(f"synthrooms: scenes and views must be >= 1 (got {scenes}, {views})")
    if height < 4 or width < 4:
        raise UserError(f"synthrooms: image size must be at least 4x4 (got {height}x{width})")
    if seed < 0:
        raise UserError(f"synthrooms: seed must be >= 0 (got {seed})")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(
            f"synthrooms: need 0 <= val_fraction, test_fraction and val + test < 1 "
            f"(got {val_fraction}, {test_fraction})"
        )
    if not 0 <= depth_holes < 1 or depth_noise < 0 or image_noise < 0:
        raise UserError("synthrooms: need 0 <= depth_holes < 1, depth_noise >= 0 and image_noise >= 0")


def _scene_files(
    seed: int,
    i: int,
    views: int,
    height: int,
    width: int,
    shadows: bool,
    depth_holes: float,
    depth_noise: float,
    image_noise: float,
) -> Iterator[tuple[str, list[tuple[str, bytes]], np.ndarray]]:
    """Scene ``i``'s views in order: (view id, [(relative path, bytes)], pose); a pure function of its
    arguments, so `prepare` can rewrite one damaged file byte for byte."""
    K = intrinsics(height, width)
    scene = scene_for(seed, i)
    poses = camera_poses(scene, views, np.random.default_rng([seed, 1, i]))
    noise_rng = np.random.default_rng([seed, 2, i])
    for j, pose in enumerate(poses):
        vid = f"s{i:05d}_v{j}"
        out = render(scene, K, pose, height, width, shadows=shadows)
        depth, rgb = _degrade(out, K, noise_rng, depth_holes, depth_noise, image_noise)
        files = [
            (f"images/{vid}.png", png_bytes(rgb)),
            (f"depth/{vid}.npy", npy_bytes(depth)),
            (f"normals/{vid}.npy", npy_bytes(out["normals"])),
            (f"semseg/{vid}.png", png_bytes(out["semseg"])),
            (f"edges/{vid}.png", png_bytes(out["edges"])),
        ]
        yield vid, files, pose


def _split_files(splits: dict[str, list[int]], views: int) -> dict[str, bytes]:
    return {
        f"splits/{split}.txt": "".join(f"s{i:05d}_v{j}\n" for i in members for j in range(views)).encode()
        for split, members in splits.items()
    }


def _regenerate(params: dict[str, Any]) -> Callable[[Path, list[str]], None]:
    """Writes the files ``rels`` (and the other views of their scenes) under a folder."""
    gen = {
        k: params[k]
        for k in ("views", "height", "width", "shadows", "depth_holes", "depth_noise", "image_noise")
    }

    def write(tmp: Path, rels: list[str]) -> None:
        splits = _split_files(
            _split_scenes(params["scenes"], params["seed"], params["val_fraction"], params["test_fraction"]),
            params["views"],
        )
        scenes = sorted({int(m.group(1)) for rel in rels if (m := re.search(r"/s(\d+)_v\d+\.", rel))})
        for i in scenes:
            for _, files, _ in _scene_files(params["seed"], i, **gen):
                for rel, data in files:
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / rel).write_bytes(data)
        for rel, data in splits.items():
            if rel in rels:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(data)

    return write


def prepare(
    root: str | Path,
    scenes: int = 200,
    views: int = 3,
    height: int = 96,
    width: int = 128,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    shadows: bool = True,
    depth_holes: float = 0.0,
    depth_noise: float = 0.0,
    progress: bool = True,
    image_noise: float = 0.0,
    overwrite: bool = False,
    verify: bool = False,
) -> dict[str, Any]:
    """Generates the dataset into ``root`` and returns its manifest.

    Output depends only on the parameters (scene i only on ``(seed, i)``), so equal parameters give
    byte-identical files. An existing dataset with the same parameters is returned as is; a different
    one (or a non-empty directory without a manifest) is only replaced with ``overwrite=True``. Files
    are written into ``root/.tmp-*`` and moved into place at the end, manifest last. Missing files of
    an existing dataset (``verify``: also files whose checksum differs) are written again, only them.
    """
    _check_args(
        scenes, views, height, width, seed, val_fraction, test_fraction, depth_holes, depth_noise, image_noise
    )
    root = Path(root)
    params = {
        "scenes": int(scenes),
        "views": int(views),
        "height": int(height),
        "width": int(width),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "shadows": bool(shadows),
        "depth_holes": float(depth_holes),
        "depth_noise": float(depth_noise),
        "image_noise": float(image_noise),
    }
    found = existing(
        "synthrooms",
        root,
        same=lambda old: old.get("dataset") == "synthrooms" and old.get("generator") == params,
        overwrite=overwrite,
        verify=verify,
        regenerate=_regenerate(params),
    )
    if found is not None:
        return found
    splits = _split_scenes(scenes, seed, val_fraction, test_fraction)

    def write(tmp: Path) -> dict[str, Any]:
        K = intrinsics(height, width)
        checksums: dict[str, str] = {}
        view_meta: dict[str, Any] = {}

        def put(rel: str, data: bytes) -> None:
            (tmp / rel).write_bytes(data)
            checksums[rel] = hashlib.sha256(data).hexdigest()

        for i in tqdm(range(scenes), disable=not progress, desc="synthrooms", unit="scene"):
            ids = [f"s{i:05d}_v{j}" for j in range(views)]
            for vid, files, pose in _scene_files(
                seed, i, views, height, width, shadows, depth_holes, depth_noise, image_noise
            ):
                for rel, data in files:
                    put(rel, data)
                view_meta[vid] = {
                    "scene": f"s{i:05d}",
                    "K": K.tolist(),
                    "pose": pose.tolist(),
                    "neighbors": [n for n in ids if n != vid],
                }
        for rel, data in _split_files(splits, views).items():
            put(rel, data)
        counts = {split: len(members) * views for split, members in splits.items()}
        return {
            "dataset": "synthrooms",
            "format_version": FORMAT_VERSION,
            "classes": list(CLASSES),
            "num_classes": len(CLASSES),
            "tasks": list(TASKS),
            "height": int(height),
            "width": int(width),
            "near": NEAR,
            "far": FAR,
            "splits": counts,
            "generator": params,
            "views": view_meta,
            "checksums": checksums,
        }

    return write_atomically(root, _DATA_DIRS, write)


def verify(root: str | Path) -> list[str]:
    """Relative paths whose SHA-256 differs from the manifest (or that are missing); empty if intact."""
    root = Path(root)
    return damaged_files(root, json.loads((root / "manifest.json").read_text()), [], verify=True)
