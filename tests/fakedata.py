"""A tiny random dataset in the processed layout (for engine tests that must not depend on SynthRooms)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def make_fake_dataset(
    root: Path, n: int = 6, h: int = 24, w: int = 32, classes: int = 3, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    for d in ("images", "semseg", "depth", "normals", "edges", "splits"):
        (root / d).mkdir(parents=True, exist_ok=True)
    ids = [f"v{i:03d}" for i in range(n)]
    K = [[w * 0.8, 0, (w - 1) / 2], [0, w * 0.8, (h - 1) / 2], [0, 0, 1]]
    views = {}
    for i, vid in enumerate(ids):
        sem = rng.integers(0, classes, (h, w), dtype=np.uint8)
        # the image carries the label, so a network can learn something in a few steps
        img = (
            np.stack([sem * 80, 255 - sem * 60, (sem % 2) * 200], -1) + rng.integers(0, 30, (h, w, 3))
        ).clip(0, 255)
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"{vid}.png")
        Image.fromarray(sem).save(root / "semseg" / f"{vid}.png")
        np.save(root / "depth" / f"{vid}.npy", (1.0 + sem).astype(np.float32))
        nrm = np.zeros((h, w, 3), np.float32)
        nrm[..., 2] = -1.0
        np.save(root / "normals" / f"{vid}.npy", nrm)
        edges = np.zeros((h, w), np.uint8)
        edges[:, 1:][sem[:, 1:] != sem[:, :-1]] = 255
        Image.fromarray(edges).save(root / "edges" / f"{vid}.png")
        nb = ids[i + 1] if i % 2 == 0 else ids[i - 1]
        views[vid] = {"scene": f"s{i // 2}", "K": K, "pose": np.eye(4).tolist(), "neighbors": [nb]}
    half = n // 2 if n > 2 else 1
    (root / "splits" / "train.txt").write_text("\n".join(ids[: max(half, n - 2)]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(ids[max(half, n - 2) :]) + "\n")
    manifest = {
        "dataset": "synthrooms",
        "classes": [f"c{i}" for i in range(classes)],
        "num_classes": classes,
        "tasks": ["semseg", "depth", "normals", "edges"],
        "height": h,
        "width": w,
        "near": 0.5,
        "far": 5.0,
        "views": views,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root
