"""SynthRooms cameras: NYUv2-like intrinsics and the poses of a scene's views (OpenCV: x right, y down,
z forward; ``pose`` is camera-to-world)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtl3d.data.synthrooms.scene import Scene, _as_rng
from mtl3d.geometry import NYU_FX, NYU_FY


def intrinsics(height: int, width: int) -> np.ndarray:
    """NYUv2-like pinhole intrinsics for an image of ``height x width``: the NYUv2 Kinect focal lengths at
    640x480 scaled with the image size, principal point at the centre."""
    return np.array(
        [
            [NYU_FX * width / 640.0, 0.0, (width - 1) / 2.0],
            [0.0, NYU_FY * height / 480.0, (height - 1) / 2.0],
            [0.0, 0.0, 1.0],
        ]
    )


def look_at(
    eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 1.0, 0.0)
) -> np.ndarray:
    """Camera-to-world pose (OpenCV camera: x right, y down, z forward) at ``eye`` looking at ``target``."""
    eye_, z = np.asarray(eye, np.float64), np.asarray(target, np.float64) - np.asarray(eye, np.float64)
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, np.float64))
    x = x / np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, np.cross(z, x), z, eye_
    return pose


def _rot(axis: int, a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def camera_poses(scene: Scene, views: int, rng: np.random.Generator | int) -> list[np.ndarray]:
    """``views`` camera-to-world poses near the scene's anchor camera, all looking into the room.

    Each view moves <= 0.25 m from the anchor (so two views are <= 0.5 m apart) and turns by a yaw in
    +-8 deg, a pitch in +-6 deg and a roll in +-2 deg on top of looking at the anchor target.
    """
    rng = _as_rng(rng)
    out = []
    for _ in range(views):
        direction = rng.normal(size=3)
        offset = direction / np.linalg.norm(direction) * 0.25 * rng.random() ** (1 / 3)
        pose = look_at(np.asarray(scene.eye) + offset, scene.target)
        yaw, pitch, roll = np.deg2rad(rng.uniform((-8, -6, -2), (8, 6, 2)))
        pose[:3, :3] = pose[:3, :3] @ _rot(1, yaw) @ _rot(0, pitch) @ _rot(2, roll)
        out.append(pose)
    return out
