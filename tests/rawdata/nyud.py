"""Tiny copies of the two extracted NYUD-v2 multi-task archives (``NYUDv2/`` and ``NYUD_MT/``).

Layouts and decodings follow the real archives as docs/datasets.md describes them (its variants and
prepare tables): same folders, same file names, the variant's real image size. Values are synthetic,
with planted corner cases in row 0/1 of every view (see ``PLANTED``) so that tests can check the
conversion pixel by pixel. Stored dtypes of the real ``.npy`` files are not documented; the fixture
uses float32 for atrc and float64 for survey depth/edges so that both paths are exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZES = {"atrc": (425, 560), "survey": (480, 640)}
TOP_DIRS = {"atrc": "NYUDv2", "survey": "NYUD_MT"}

# Edge source values: PNG bytes (atrc, decoded v/255) and floats (survey), either side of 0.5.
EDGE_PNG_VALUES = (0, 77, 127, 128, 178, 255)  # /255: 0, 0.302, 0.498, 0.502, 0.698, 1.0
EDGE_NPY_VALUES = (0.0, 0.3, 0.4999, 0.5, 0.7, 1.0)

# Planted pixels (row, col) of every view.
PLANTED = {
    "semseg_all_values": (0, slice(0, 41)),  # row 0, cols 0..40 hold 0..40 (0 = unlabelled)
    "depth_zero": (1, slice(0, 8)),
    "depth_nan": (1, 8),
    "depth_inf": (1, 9),
    "depth_negative": (1, 10),
    "normals_invalid": (0, 0),  # atrc RGB (0, 0, 0); survey zero vector
    "normals_known": (0, 1),  # atrc RGB (255, 128, 0); survey (1, 0, 0)
    "edges": (2, slice(0, 6)),  # the six EDGE_*_VALUES in order
}


def _unit_normals(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    n = rng.normal(size=(h, w, 3))
    n[..., 2] = -np.abs(n[..., 2]) - 0.1  # facing the camera, as real normals do
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def _blocky(rng: np.random.Generator, h: int, w: int, high: int, block: int = 16) -> np.ndarray:
    """Piecewise-constant integer map (label-like, compresses like real label maps)."""
    small = rng.integers(0, high, size=(-(-h // block), -(-w // block)))
    return np.kron(small, np.ones((block, block), dtype=small.dtype))[:h, :w]


def _view(rng: np.random.Generator, variant: str, h: int, w: int) -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    # smooth colours plus mild noise: compresses and decodes like a photo, not like white noise
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    image = np.clip(base + rng.integers(0, 24, size=(h, w, 3)), 0, 255).astype(np.uint8)

    semseg = _blocky(rng, h, w, 41).astype(np.uint8)
    semseg[0, :41] = np.arange(41)

    depth = (0.5 + 9.0 * (yy / h) * 0.7 + rng.uniform(0, 0.3, size=(h, w))).astype(np.float64)
    depth[1, :8] = 0.0
    depth[1, 8], depth[1, 9], depth[1, 10] = np.nan, np.inf, -1.0

    normals = _unit_normals(rng, h, w)
    normals[0, 0] = 0.0
    normals[0, 1] = (1.0, 0.0, 0.0)

    values = EDGE_PNG_VALUES if variant == "atrc" else EDGE_NPY_VALUES
    edge_idx = rng.integers(0, len(values), size=(h, w))
    edge_idx[2, :6] = np.arange(6)
    edges = np.asarray(values)[edge_idx]
    return {"image": image, "semseg": semseg, "depth": depth, "normals": normals, "edges": edges}


def write_nyud_source(
    parent: Path,
    variant: str,
    n_train: int = 3,
    n_val: int = 2,
    seed: int = 0,
    size: tuple[int, int] | None = None,
) -> Path:
    """Writes ``parent/NYUDv2`` (atrc) or ``parent/NYUD_MT`` (survey) and returns it.

    ``size`` overrides the variant's real (H, W) (to test the wrong-size error). Ids are 4-digit strings
    in an unsorted order, so split order is checked too.
    """
    h, w = size or SIZES[variant]
    top = Path(parent) / TOP_DIRS[variant]
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (top / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"{i:04d}" for i in rng.choice(np.arange(1, 1450), size=n_train + n_val, replace=False)]
    (top / "gt_sets" / "train.txt").write_text("".join(f"{i}\n" for i in ids[:n_train]))
    (top / "gt_sets" / "val.txt").write_text("".join(f"{i}\n" for i in ids[n_train:]))
    for vid in ids:
        v = _view(rng, variant, h, w)
        Image.fromarray(v["semseg"]).save(top / "segmentation" / f"{vid}.png", compress_level=1)
        if variant == "atrc":
            Image.fromarray(v["image"]).save(top / "images" / f"{vid}.png", compress_level=1)
            np.save(top / "depth" / f"{vid}.npy", v["depth"].astype(np.float32))
            rgb = np.round((v["normals"] + 1) * 127.5).astype(np.uint8)
            rgb[0, 0], rgb[0, 1] = (0, 0, 0), (255, 128, 0)
            Image.fromarray(rgb).save(top / "normals" / f"{vid}.png", compress_level=1)
            Image.fromarray(v["edges"].astype(np.uint8)).save(top / "edge" / f"{vid}.png", compress_level=1)
        else:
            Image.fromarray(v["image"]).save(top / "images" / f"{vid}.jpg", quality=90)
            np.save(top / "depth" / f"{vid}.npy", v["depth"])
            np.save(top / "normals" / f"{vid}.npy", v["normals"].astype(np.float32))
            np.save(top / "edge" / f"{vid}.npy", v["edges"].astype(np.float64))
    return top
