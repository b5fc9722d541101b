"""Sensor-like corruption of a rendered view (the realism flags of ``prepare``): depth holes and noise,
image noise; labels stay exact."""

from __future__ import annotations

import numpy as np


def _degrade(
    view: dict[str, np.ndarray],
    K: np.ndarray,
    rng: np.random.Generator,
    depth_holes: float,
    depth_noise: float,
    image_noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Sensor-like corruption of depth and image (labels stay exact)."""
    depth, rgb = view["depth"], view["rgb"]
    h, w = depth.shape
    if depth_noise > 0:
        depth = depth * (1.0 + depth_noise * rng.standard_normal((h, w))).clip(0.5, 1.5).astype(np.float32)
    if depth_holes > 0:
        depth = depth.copy()
        # Grazing surfaces return no depth on a Kinect: |cos(normal, view ray)| < 0.1 (normals point at us).
        nrm = view["normals"]
        uu, vv = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        ray = np.stack([uu, vv, np.ones_like(uu)], -1) @ np.linalg.inv(K).T
        hole = -(nrm * ray).sum(-1) / np.linalg.norm(ray, axis=-1) < 0.1
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(100):  # random elliptical blobs until the requested fraction is missing
            if hole.mean() >= depth_holes:
                break
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.02, 0.12) * h, rng.uniform(0.02, 0.12) * w
            hole |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        depth[hole] = 0.0
    if image_noise > 0:
        noisy = rgb.astype(np.float64) + rng.normal(0.0, 255.0 * image_noise, rgb.shape)
        rgb = (np.clip(noisy, 0, 255) + 0.5).astype(np.uint8)
    return depth, rgb
