"""SynthRooms: a procedural multi-view indoor benchmark with exact labels and no download.

Every scene is a box-shaped room (floor, ceiling, four walls) furnished with 4-12 objects built from
boxes (optionally yawed), spheres and vertical cylinders. A vectorised numpy ray caster renders each
camera view once and derives every label from the same hits, so RGB, semantic labels, metric z-depth,
surface normals and boundaries agree exactly, and several views of one scene share one geometry (what a
3D-aware method needs).

World frame: metres, **y up**; the room spans ``[0, sx] x [0, sy] x [0, sz]`` (``sy`` = room height),
the floor is ``y = 0``. Cameras: OpenCV pinhole (x right, y down, z forward); ``pose`` is camera-to-world.
See ``docs/synthrooms.md`` for the classes, the camera model and the file layout.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mtl3d.data.encode import npy_bytes, png_bytes
from mtl3d.data.prepare import FORMAT_VERSIONS, damaged_files, existing, write_atomically
from mtl3d.errors import UserError

__all__ = [
    "CLASSES",
    "FAR",
    "IGNORE",
    "NEAR",
    "Material",
    "Primitive",
    "Scene",
    "camera_poses",
    "edges_from_labels",
    "intrinsics",
    "look_at",
    "prepare",
    "render",
    "sample_scene",
    "scene_for",
    "verify",
]

CLASSES: tuple[str, ...] = (
    "wall",
    "floor",
    "ceiling",
    "table",
    "cabinet",
    "bed",
    "box",
    "ball",
    "pillar",
    "lamp",
    "shelf",
    "bin",
)
IGNORE = 255
FORMAT_VERSION = FORMAT_VERSIONS["synthrooms"]
TASKS = ("semseg", "depth", "normals", "edges")
ROOM_X = (4.0, 8.0)
ROOM_Z = (3.0, 6.0)
ROOM_H = (2.4, 3.2)
NEAR = 0.1
# Larger than the longest room diagonal, sqrt(8^2 + 6^2 + 3.2^2) = 10.49, so every depth lies in [NEAR, FAR].
FAR = 10.5
# NYUv2 Kinect intrinsics at 640x480 (fx, fy); scaled with the image size.
_NYU_FX, _NYU_FY = 518.8579, 519.4696

BOX, SPHERE, CYLINDER = 0, 1, 2
PLAIN, STRIPES, CHECKER, NOISE = 0, 1, 2, 3
_C = {name: i for i, name in enumerate(CLASSES)}
# Instances 0..5 are the room faces, in this order.
_FACE_LABELS = (_C["floor"], _C["ceiling"], _C["wall"], _C["wall"], _C["wall"], _C["wall"])
_FACE_NORMALS = np.array(  # world normals pointing into the room (towards any camera inside it)
    [[0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64
)
_DATA_DIRS = ("images", "depth", "normals", "semseg", "edges", "splits")

# Colours are shared between classes on purpose: class must be inferred from shape and context,
# not read off the colour.
_WHITE, _CREAM, _GREY, _DARK = (0.86, 0.86, 0.83), (0.87, 0.80, 0.66), (0.56, 0.57, 0.59), (0.22, 0.22, 0.25)
_WOOD, _LWOOD = (0.55, 0.37, 0.21), (0.75, 0.60, 0.42)
_RED, _BLUE, _GREEN = (0.72, 0.20, 0.18), (0.22, 0.35, 0.66), (0.30, 0.55, 0.30)
_YELLOW, _TEAL, _PINK = (0.86, 0.72, 0.25), (0.40, 0.62, 0.62), (0.86, 0.62, 0.64)
_PALETTES: dict[str, tuple[tuple[float, float, float], ...]] = {
    "wall": (_WHITE, _CREAM, _GREY, _PINK, _TEAL),
    "floor": (_WOOD, _LWOOD, _GREY, _DARK, _CREAM),
    "ceiling": (_WHITE, _CREAM, _GREY),
    "table": (_WOOD, _LWOOD, _WHITE, _DARK),
    "cabinet": (_WOOD, _WHITE, _GREY, _BLUE, _LWOOD),
    "bed": (_BLUE, _WHITE, _RED, _GREEN, _CREAM),
    "box": (_LWOOD, _RED, _BLUE, _GREY, _CREAM),
    "ball": (_RED, _BLUE, _YELLOW, _GREEN, _WHITE),
    "pillar": (_WHITE, _GREY, _CREAM),
    "lamp": (_DARK, _WHITE, _YELLOW, _GREY),
    "shelf": (_WOOD, _LWOOD, _WHITE, _DARK),
    "bin": (_GREY, _GREEN, _BLUE, _DARK, _RED),
}
# Pattern probabilities (plain, stripes, checker, noise) per class.
_PATTERNS: dict[str, tuple[float, float, float, float]] = {
    "wall": (0.45, 0.2, 0.1, 0.25),
    "floor": (0.2, 0.3, 0.3, 0.2),
    "ceiling": (0.6, 0.1, 0.05, 0.25),
    "table": (0.35, 0.2, 0.1, 0.35),
    "cabinet": (0.4, 0.25, 0.1, 0.25),
    "bed": (0.25, 0.35, 0.25, 0.15),
    "box": (0.4, 0.2, 0.2, 0.2),
    "ball": (0.3, 0.35, 0.2, 0.15),
    "pillar": (0.4, 0.2, 0.15, 0.25),
    "lamp": (0.5, 0.2, 0.1, 0.2),
    "shelf": (0.35, 0.25, 0.1, 0.3),
    "bin": (0.35, 0.3, 0.15, 0.2),
}
# Pattern frequencies (cycles per metre), low enough not to alias badly at the default 96x128.
_FREQ = {STRIPES: (1.5, 5.0), CHECKER: (1.0, 3.5), NOISE: (0.5, 2.5), PLAIN: (1.0, 1.0)}
# Top-level object classes and their sampling weights (objects on tables are added separately).
_OBJECT_WEIGHTS = {
    "table": 0.14,
    "cabinet": 0.11,
    "bed": 0.14,
    "box": 0.12,
    "ball": 0.12,
    "pillar": 0.06,
    "lamp": 0.1,
    "shelf": 0.1,
    "bin": 0.11,
}


# ----------------------------------------------------------------------------------------------- scene
@dataclass(frozen=True)
class Primitive:
    """One solid. ``half``: box half extents (local x, y, z); sphere (r, r, r); vertical cylinder
    (r, half height, r). ``yaw`` rotates a box about the world y axis (local = Ry(yaw)^T (world - centre))."""

    kind: int
    instance: int
    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float = 0.0


@dataclass(frozen=True)
class Material:
    """Appearance of one instance: ``albedo = a + (b - a) * pattern(world point)``."""

    label: int
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    pattern: int = PLAIN
    freq: float = 1.0
    dirs: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # three unit vectors
    phases: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Scene:
    """A room ``[0, sx] x [0, sy] x [0, sz]`` (``size = (sx, sy, sz)``, y up) with furnishing.

    ``materials[i]`` is instance i's appearance and label; instances 0..5 are floor, ceiling and the walls
    x=0, x=sx, z=0, z=sz. ``eye``/``target`` is the anchor camera around which views are sampled.
    """

    size: tuple[float, float, float]
    materials: tuple[Material, ...]
    primitives: tuple[Primitive, ...] = ()
    light: tuple[float, float, float] = (0.0, 0.0, 0.0)
    light_power: float = 0.9
    ambient: float = 0.35
    eye: tuple[float, float, float] = (0.0, 0.0, 0.0)
    target: tuple[float, float, float] = (0.0, 0.0, 1.0)

    @cached_property
    def _arrays(self) -> dict[str, Any]:
        """Primitive parameters as Python floats (scalar maths per primitive) and per-primitive/instance
        float32 tables (gathered per pixel); built once per scene."""
        p, m = self.primitives, self.materials
        f32 = np.float32
        center = np.array([q.center for q in p], np.float64).reshape(-1, 3)
        half = np.array([q.half for q in p], np.float64).reshape(-1, 3)
        yaw = np.array([q.yaw for q in p], np.float64)
        cos, sin = np.cos(yaw), np.sin(yaw)
        kind = np.array([q.kind for q in p], np.int64)
        inst = np.array([q.instance for q in p], np.int64)
        signs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], np.float64)
        loc = signs[None] * half[:, None, :]
        c_, s_ = cos[:, None], sin[:, None]
        lx, ly, lz = loc[..., 0], loc[..., 1], loc[..., 2]
        corners = np.stack([c_ * lx + s_ * lz, ly, c_ * lz - s_ * lx], -1) + center[:, None, :]
        # Bounding sphere per instance, used to cull shadow rays.
        groups, gcenter, gradius = [], [], []
        for i in np.unique(inst):
            ks = np.flatnonzero(inst == i)
            pts = corners[ks].reshape(-1, 3)
            c = (pts.min(0) + pts.max(0)) / 2
            groups.append(ks.tolist())
            gcenter.append(c)
            gradius.append(float(np.sqrt(((pts - c) ** 2).sum(1).max())))
        ca = np.array([q.color_a for q in m], np.float64).reshape(-1, 3)
        cb = np.array([q.color_b for q in m], np.float64).reshape(-1, 3)
        return {
            "prim": [
                (int(kind[k]), *center[k].tolist(), *half[k].tolist(), float(cos[k]), float(sin[k]))
                for k in range(len(p))
            ],
            "kind": kind,
            "inst": inst,
            "corners": corners,
            "center": center.astype(f32),
            "half": half.astype(f32),
            "cos": cos.astype(f32),
            "sin": sin.astype(f32),
            "groups": groups,
            "gcenter": np.array(gcenter).reshape(-1, 3),
            "gradius": np.array(gradius),
            "label": np.array([q.label for q in m], dtype=np.uint8),
            "ca": ca.astype(f32),
            "cd": (cb - ca).astype(f32),
            "pattern": np.array([q.pattern for q in m], dtype=np.int64),
            "freq": np.array([q.freq for q in m], dtype=f32),
            "dirs": np.array([q.dirs for q in m], dtype=f32).reshape(-1, 9),
            "phases": np.array([q.phases for q in m], dtype=f32).reshape(-1, 3),
        }


def _as_rng(rng_or_seed: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(int(rng_or_seed))


def _pick(u: float, weights: Sequence[float]) -> int:
    """Index drawn from unnormalised ``weights`` with the uniform number ``u`` in [0, 1)."""
    r, acc = u * sum(weights), 0.0
    for i, w in enumerate(weights):
        acc += w
        if r < acc:
            return i
    return len(weights) - 1


def _material(rng: np.random.Generator, cls: str) -> Material:
    # Plain Python floats: a scene samples ~20 materials, and numpy's per-call overhead dominated here.
    pal = _PALETTES[cls]
    j = rng.random(12).tolist()
    shift = (j[0] - 0.5) * 0.16  # per-instance brightness jitter
    first, second = pal[int(j[4] * len(pal))], pal[int(j[9] * len(pal))]
    a = [min(0.97, max(0.03, c + (j[1 + i] - 0.5) * 0.12 + shift)) for i, c in enumerate(first)]
    if j[5] < 0.5:  # second colour from the palette, or a darker shade of the first
        b = [min(0.97, max(0.03, c + (j[6 + i] - 0.5) * 0.12)) for i, c in enumerate(second)]
    else:
        b = [c * (0.55 + 0.3 * j[6]) for c in a]
    pattern = _pick(j[10], _PATTERNS[cls])
    lo, hi = _FREQ[pattern]
    dirs = rng.normal(size=(3, 3))
    dirs /= np.sqrt((dirs * dirs).sum(1, keepdims=True))
    return Material(
        _C[cls],
        tuple(a),
        tuple(b),
        pattern,
        lo + (hi - lo) * j[11],
        tuple(dirs.ravel().tolist()),
        tuple((rng.random(3) * (2 * np.pi)).tolist()),
    )


# Object builders: (bounding radius in the floor plane, [(kind, local centre, half, extra_yaw)]) with the
# object standing on y = 0 around the local origin.
_Part = tuple[int, tuple[float, float, float], tuple[float, float, float]]


def _build(rng: np.random.Generator, cls: str, room_h: float) -> tuple[float, list[_Part], float]:
    """Returns (footprint radius, parts, top height)."""
    u = rng.uniform
    if cls == "table":
        w, d, h = u(0.8, 1.6), u(0.6, 1.0), u(0.68, 0.8)
        parts: list[_Part] = [(BOX, (0.0, h - 0.02, 0.0), (w / 2, 0.02, d / 2))]
        leg = (h - 0.04) / 2
        for sx in (-1, 1):
            for sz in (-1, 1):
                parts.append((BOX, (sx * (w / 2 - 0.06), leg, sz * (d / 2 - 0.06)), (0.03, leg, 0.03)))
        return float(np.hypot(w, d) / 2), parts, h
    if cls == "cabinet":
        w, d, h = u(0.5, 1.2), u(0.4, 0.6), u(0.8, 2.0)
        return float(np.hypot(w, d) / 2), [(BOX, (0.0, h / 2, 0.0), (w / 2, h / 2, d / 2))], h
    if cls == "bed":
        length, w, h, hb = u(1.9, 2.1), u(0.9, 1.6), u(0.4, 0.6), u(0.8, 1.1)
        parts = [
            (BOX, (0.0, h / 2, 0.0), (w / 2, h / 2, length / 2)),
            (BOX, (0.0, hb / 2, -length / 2 - 0.04), (w / 2, hb / 2, 0.04)),
            (BOX, (0.0, h + 0.06, -length / 2 + 0.25), (0.4 * w, 0.06, 0.18)),
        ]
        return float(np.hypot(w, length + 0.16) / 2), parts, hb
    if cls == "box":
        w, d, h = u(0.2, 0.6), u(0.2, 0.6), u(0.2, 0.6)
        return float(np.hypot(w, d) / 2), [(BOX, (0.0, h / 2, 0.0), (w / 2, h / 2, d / 2))], h
    if cls == "ball":
        r = u(0.1, 0.35)
        return r, [(SPHERE, (0.0, r, 0.0), (r, r, r))], 2 * r
    if cls == "pillar":
        r = u(0.12, 0.3)
        return r, [(CYLINDER, (0.0, room_h / 2, 0.0), (r, room_h / 2, r))], room_h
    if cls == "lamp":
        hp, rb = u(1.1, 1.6), u(0.12, 0.18)
        parts = [
            (CYLINDER, (0.0, 0.015, 0.0), (rb, 0.015, rb)),
            (CYLINDER, (0.0, hp / 2, 0.0), (0.02, hp / 2, 0.02)),
        ]
        if rng.random() < 0.5:
            r = u(0.14, 0.22)
            parts.append((SPHERE, (0.0, hp + 0.8 * r, 0.0), (r, r, r)))
            top = hp + 1.8 * r
        else:
            r, hh = u(0.15, 0.25), u(0.1, 0.18)
            parts.append((CYLINDER, (0.0, hp + hh - 0.05, 0.0), (r, hh, r)))
            top = hp + 2 * hh - 0.05
        return max(r, rb), parts, top
    if cls == "shelf":
        w, d, h, n = u(0.6, 1.2), u(0.25, 0.4), u(1.0, 2.0), int(rng.integers(3, 6))
        parts = [(BOX, (sx * (w / 2 - 0.01), h / 2, 0.0), (0.01, h / 2, d / 2)) for sx in (-1, 1)]
        parts.append((BOX, (0.0, h / 2, -d / 2 + 0.01), (w / 2, h / 2, 0.01)))
        for i in range(n):
            y = 0.01 + i * (h - 0.02) / (n - 1)
            parts.append((BOX, (0.0, y, 0.01), (w / 2 - 0.02, 0.01, d / 2 - 0.01)))
        return float(np.hypot(w, d) / 2), parts, h
    if cls == "bin":
        r, h = u(0.12, 0.3), u(0.3, 0.8)
        return r, [(CYLINDER, (0.0, h / 2, 0.0), (r, h / 2, r))], h
    raise ValueError(cls)


def _place(parts: list[_Part], x: float, y: float, z: float, yaw: float, inst: int) -> list[Primitive]:
    quarter = yaw / (np.pi / 2)
    if abs(quarter - round(quarter)) < 1e-9:
        # Quarter turns become axis-aligned boxes (yaw 0, x/z half extents swapped on odd turns): exact
        # corners and the ray caster's cheaper unrotated slab test.
        q = round(quarter) % 4
        c, s = (1.0, 0.0, -1.0, 0.0)[q], (0.0, 1.0, 0.0, -1.0)[q]
    else:
        q, c, s = -1, float(np.cos(yaw)), float(np.sin(yaw))
    out = []
    for kind, (lx, ly, lz), half in parts:
        center = (float(x + c * lx + s * lz), float(y + ly), float(z - s * lx + c * lz))
        h = (half[2], half[1], half[0]) if q in (1, 3) else half
        box_yaw = float(yaw) if kind == BOX and q < 0 else 0.0
        out.append(Primitive(kind, inst, center, tuple(map(float, h)), box_yaw))
    return out


def sample_scene(
    rng_or_seed: np.random.Generator | int, min_objects: int = 4, max_objects: int = 12
) -> Scene:
    """Samples a furnished room (deterministic given the generator state or seed)."""
    rng = _as_rng(rng_or_seed)
    sx, sz, sy = rng.uniform(*ROOM_X), rng.uniform(*ROOM_Z), rng.uniform(*ROOM_H)
    materials = [_material(rng, CLASSES[lab]) for lab in _FACE_LABELS]
    # Anchor camera: 0.6-0.9 m from a random wall, 1.3-1.7 m high, looking across the room.
    side = int(rng.integers(4))
    off, lat, eye_h = rng.uniform(0.6, 0.9), rng.uniform(0.35, 0.65), rng.uniform(1.3, 1.7)
    eye = {0: (off, lat * sz), 1: (sx - off, lat * sz), 2: (lat * sx, off), 3: (lat * sx, sz - off)}[side]
    # Heading towards a point near the room centre, tilted 5-25 deg down (NYUv2-like, never at the floor).
    aim = np.array([sx / 2 + rng.uniform(-0.5, 0.5) - eye[0], sz / 2 + rng.uniform(-0.5, 0.5) - eye[1]])
    aim *= 2.0 / np.linalg.norm(aim)
    drop = 2.0 * np.tan(np.deg2rad(rng.uniform(5.0, 25.0)))
    target = (eye[0] + aim[0], eye_h - drop, eye[1] + aim[1])
    light = (rng.uniform(0.3, 0.7) * sx, sy - rng.uniform(0.2, 0.4), rng.uniform(0.3, 0.7) * sz)

    # Objects on the floor, footprints as discs: inside the room, disjoint, >= 1 m from the anchor camera
    # (views move <= 0.25 m from it) and away from the light.
    discs: list[tuple[float, float, float]] = [(eye[0], eye[1], 1.0), (light[0], light[2], 0.3)]
    prims: list[Primitive] = []
    n_target = int(rng.integers(min_objects, max_objects + 1))
    names, weights = list(_OBJECT_WEIGHTS), list(_OBJECT_WEIGHTS.values())
    counts = dict.fromkeys(names, 0)
    n_obj, tries = 0, 0
    while n_obj < n_target and tries < 40 * max_objects:
        tries += 1
        # After many failures only small objects are tried, so crowded small rooms still get min_objects.
        cls = names[_pick(rng.random(), weights)] if tries < 20 * max_objects else "ball"
        if (cls == "bed" and counts[cls] >= 1) or (cls == "pillar" and counts[cls] >= 2):
            continue
        radius, parts, top = _build(rng, cls, sy)
        lo_x, hi_x, lo_z, hi_z = radius + 0.05, sx - radius - 0.05, radius + 0.05, sz - radius - 0.05
        if lo_x >= hi_x or lo_z >= hi_z:
            continue
        x, z = rng.uniform(lo_x, hi_x), rng.uniform(lo_z, hi_z)
        if any(np.hypot(x - a, z - b) < radius + r + 0.05 for a, b, r in discs):
            continue
        yaw = rng.uniform(0, 2 * np.pi) if rng.random() < 0.5 else rng.integers(4) * np.pi / 2
        discs.append((x, z, radius))
        counts[cls] += 1
        inst = len(materials)
        materials.append(_material(rng, cls))
        prims += _place(parts, x, 0.0, z, yaw, inst)
        n_obj += 1
        if cls == "table" and n_obj < n_target and rng.random() < 0.6:
            # Something standing on the table top: a second instance resting on another object.
            small = "ball" if rng.random() < 0.4 else "box"
            w_top, d_top = parts[0][2][0] * 0.5, parts[0][2][2] * 0.5  # local half size of the top
            if small == "ball":
                r = rng.uniform(0.06, 0.14)
                sparts: list[_Part] = [(SPHERE, (0.0, r, 0.0), (r, r, r))]
            else:
                e = rng.uniform(0.08, 0.2, 3)
                sparts = [(BOX, (0.0, e[1], 0.0), (e[0], e[1], e[2]))]
            ox, oz = rng.uniform(-w_top, w_top), rng.uniform(-d_top, d_top)
            c, s = np.cos(yaw), np.sin(yaw)
            sinst = len(materials)
            materials.append(_material(rng, small))
            prims += _place(
                sparts, x + c * ox + s * oz, top, z - s * ox + c * oz, yaw + rng.uniform(-1, 1), sinst
            )
            n_obj += 1
    return Scene(
        size=(float(sx), float(sy), float(sz)),
        materials=tuple(materials),
        primitives=tuple(prims),
        light=tuple(map(float, light)),
        light_power=float(rng.uniform(0.7, 1.0)),
        ambient=float(rng.uniform(0.25, 0.4)),
        eye=(float(eye[0]), float(eye_h), float(eye[1])),
        target=tuple(map(float, target)),
    )


def scene_for(seed: int, index: int) -> Scene:
    """Scene ``index`` of the dataset generated with ``seed`` (what ``prepare`` renders); its views' poses
    are ``camera_poses(scene, views, np.random.default_rng([seed, 1, index]))``."""
    return sample_scene(np.random.default_rng([seed, 0, index]))


# ---------------------------------------------------------------------------------------------- camera
def intrinsics(height: int, width: int) -> np.ndarray:
    """NYUv2-like pinhole intrinsics for an image of ``height x width`` (principal point at the centre)."""
    return np.array(
        [
            [_NYU_FX * width / 640.0, 0.0, (width - 1) / 2.0],
            [0.0, _NYU_FY * height / 480.0, (height - 1) / 2.0],
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


# ------------------------------------------------------------------------------------------- ray casting
# Ray casting runs in float32 (numpy's float32 transcendentals are ~10x faster than float64 ones); the
# per-primitive parameters stay Python floats so that they never upcast the pixel arrays.
# Intersection routines take ray origins/directions as x, y, z components (Python floats or arrays that
# broadcast), optional precomputed per-ray terms ``pre`` = (1/dx, 1/dy, 1/dz, |d|^2, dx^2 + dz^2), and
# return the entry distance t in units of the direction's length (inf on a miss).
_Pre = tuple[Any, Any, Any, Any, Any] | None


def _hit_box(
    prm: tuple, ox: Any, oy: Any, oz: Any, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, pre: _Pre = None
) -> np.ndarray:
    _, cx, cy, cz, hx, hy, hz, c, s = prm
    qx, qy, qz = ox - cx, oy - cy, oz - cz
    if s != 0.0 or c != 1.0:
        qx, qz, dx, dz = c * qx - s * qz, s * qx + c * qz, c * dx - s * dz, s * dx + c * dz
        pre = None
    inv = (1.0 / dx, 1.0 / dy, 1.0 / dz) if pre is None else pre[:3]
    tn = tf = None
    for q, i, h in ((qx, inv[0], hx), (qy, inv[1], hy), (qz, inv[2], hz)):
        t1, t2 = (-h - q) * i, (h - q) * i
        lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
        tn = lo if tn is None else np.maximum(tn, lo)
        tf = hi if tf is None else np.minimum(tf, hi)
    return np.where((tn <= tf) & (tn > 0.0), tn, np.inf)


def _hit_sphere(
    prm: tuple, ox: Any, oy: Any, oz: Any, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, pre: _Pre = None
) -> np.ndarray:
    _, cx, cy, cz, r = prm[:5]
    qx, qy, qz = ox - cx, oy - cy, oz - cz
    a = dx * dx + dy * dy + dz * dz if pre is None else pre[3]
    b = qx * dx + qy * dy + qz * dz
    cc = qx * qx + qy * qy + qz * qz - r * r
    t = (-b - np.sqrt(b * b - a * cc)) / a  # nan where the ray misses
    return np.where(t > 0.0, t, np.inf)


def _hit_cylinder(
    prm: tuple, ox: Any, oy: Any, oz: Any, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, pre: _Pre = None
) -> np.ndarray:
    _, cx, cy, cz, r, hh = prm[:6]
    qx, qz = ox - cx, oz - cz
    a = dx * dx + dz * dz if pre is None else pre[4]
    b = qx * dx + qz * dz
    cc = qx * qx + qz * qz - r * r
    ts = (-b - np.sqrt(b * b - a * cc)) / a
    side = (ts > 0.0) & (np.abs(oy + ts * dy - cy) <= hh)
    # A ray enters through the top cap when going down, through the bottom cap when going up.
    if isinstance(oy, float):
        if cy - hh <= oy <= cy + hh:  # between the cap planes: only the side can be entered
            return np.where(side, ts, np.inf)
        tc = ((cy + hh if oy > cy else cy - hh) - oy) * (1.0 / dy if pre is None else pre[1])
    else:
        tc = np.where(dy < 0, cy + hh - oy, cy - hh - oy) / dy
    ex, ez = qx + tc * dx, qz + tc * dz
    cap = (tc > 0.0) & (ex * ex + ez * ez <= r * r)
    return np.minimum(np.where(side, ts, np.inf), np.where(cap, tc, np.inf))


_HIT = {BOX: _hit_box, SPHERE: _hit_sphere, CYLINDER: _hit_cylinder}


def _screen_rects(
    corners: np.ndarray, R: np.ndarray, o: np.ndarray, K: np.ndarray, height: int, width: int
) -> list[tuple[slice, slice] | None]:
    """Per primitive, the pixel block containing the projection of its bounding box (None: off-screen)."""
    cam = (corners - o) @ R
    z = cam[..., 2]
    with np.errstate(all="ignore"):
        x, y = cam[..., 0] / z, cam[..., 1] / z
        u, v = K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]
    u0 = np.clip(np.floor(u.min(1)), 0, width).astype(int).tolist()
    u1 = np.clip(np.ceil(u.max(1)) + 1, 0, width).astype(int).tolist()
    v0 = np.clip(np.floor(v.min(1)), 0, height).astype(int).tolist()
    v1 = np.clip(np.ceil(v.max(1)) + 1, 0, height).astype(int).tolist()
    behind, straddle = (z.max(1) <= 0).tolist(), (z.min(1) <= 1e-6).tolist()
    out: list[tuple[slice, slice] | None] = []
    for k in range(len(corners)):
        if behind[k]:
            out.append(None)
        elif straddle[k]:  # no finite bound on the image plane: test every pixel
            out.append((slice(0, height), slice(0, width)))
        elif u0[k] >= u1[k] or v0[k] >= v1[k]:
            out.append(None)
        else:
            out.append((slice(v0[k], v1[k]), slice(u0[k], u1[k])))
    return out


def _object_normals(
    ar: dict[str, Any], pid: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outward world normals at surface points ``p`` of primitives ``pid``."""
    c, h = ar["center"][pid], ar["half"][pid]
    cs, sn, kind = ar["cos"][pid], ar["sin"][pid], ar["kind"][pid]
    qx, qy, qz = px - c[:, 0], py - c[:, 1], pz - c[:, 2]
    lx, lz = cs * qx - sn * qz, sn * qx + cs * qz
    # Box: the face is the slab the point sits on, i.e. the largest |local coordinate| / half extent.
    rx, ry, rz = np.abs(lx) / h[:, 0], np.abs(qy) / h[:, 1], np.abs(lz) / h[:, 2]
    on_x = (rx >= ry) & (rx >= rz)
    on_y = ~on_x & (ry >= rz)
    on_z = ~on_x & ~on_y
    nx = np.where(on_x, np.sign(lx), np.float32(0))
    ny = np.where(on_y, np.sign(qy), np.float32(0))
    nz = np.where(on_z, np.sign(lz), np.float32(0))
    cyl = kind == CYLINDER
    if cyl.any():  # a cap where |y| / half height beats radial distance / r, else radial
        rad = np.sqrt(lx * lx + lz * lz)
        cap = ry >= rad / h[:, 0]
        inv = np.float32(1) / np.maximum(rad, np.float32(1e-12))
        nx = np.where(cyl, np.where(cap, np.float32(0), lx * inv), nx)
        nz = np.where(cyl, np.where(cap, np.float32(0), lz * inv), nz)
        ny = np.where(cyl, np.where(cap, np.sign(qy), np.float32(0)), ny)
    sph = kind == SPHERE
    if sph.any():
        inv = np.float32(1) / np.sqrt(lx * lx + qy * qy + lz * lz)
        nx, ny, nz = np.where(sph, lx * inv, nx), np.where(sph, qy * inv, ny), np.where(sph, lz * inv, nz)
    return cs * nx + sn * nz, ny, cs * nz - sn * nx


def _pattern(
    ar: dict[str, Any], inst: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray
) -> np.ndarray:
    """Pattern value in [0, 1] per pixel, from world coordinates (so texture is the same in every view)."""
    pat = ar["pattern"][inst]
    f = np.zeros(inst.shape, np.float32)
    for kind in (STRIPES, CHECKER, NOISE):
        idx = np.flatnonzero(pat == kind)
        if idx.size == 0:
            continue
        ii = inst[idx]
        x, y, z = px[idx], py[idx], pz[idx]
        g, dr, ph = ar["freq"][ii], ar["dirs"][ii], ar["phases"][ii]
        w = g * np.float32(2 * np.pi)
        if kind == STRIPES:
            f[idx] = np.sin((x * dr[:, 0] + y * dr[:, 1] + z * dr[:, 2]) * w + ph[:, 0]) > 0
        elif kind == CHECKER:
            # The phase offsets keep cell borders off the room planes (the floor is exactly y = 0).
            cells = np.floor(g * x + ph[:, 0]) + np.floor(g * y + ph[:, 1]) + np.floor(g * z + ph[:, 2])
            f[idx] = cells - 2 * np.floor(cells * np.float32(0.5))
        else:
            acc = np.zeros(idx.size, np.float32)
            for j, scale in enumerate((1.0, 2.3)):
                d = dr[:, 3 * j : 3 * j + 3]
                wave = (x * d[:, 0] + y * d[:, 1] + z * d[:, 2]) * (w * np.float32(scale)) + ph[:, j]
                acc += np.sin(wave) * np.float32(1 / scale)
            f[idx] = 0.5 + acc * np.float32(1 / 2.9)
    return f


def _shadow(
    ar: dict[str, Any],
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    lx: np.ndarray,
    ly: np.ndarray,
    lz: np.ndarray,
    dist2: np.ndarray,
    inv_len: np.ndarray,
    light: np.ndarray,
) -> np.ndarray:
    """True where the segment from the surface point ``p`` to the light (``p + l``) hits an object."""
    shadow = np.zeros(px.size, bool)
    ux, uy, uz = lx * inv_len, ly * inv_len, lz * inv_len  # unit direction from the point to the light
    for group, gc, gr in zip(ar["groups"], ar["gcenter"], ar["gradius"], strict=True):
        cx, cy, cz = (gc - light).tolist()
        dist = float(np.sqrt(cx * cx + cy * cy + cz * cz))
        if dist > gr:
            # Only rays inside the bounding sphere's cone (seen from the light), from points beyond its
            # near side, can be blocked by this instance.
            cone = -(ux * cx + uy * cy + uz * cz) >= float(np.sqrt(dist * dist - gr * gr))
            sel = np.flatnonzero(cone & (dist2 >= (dist - gr) ** 2) & ~shadow)
        else:
            sel = np.flatnonzero(~shadow)
        if sel.size == 0:
            continue
        ox, oy, oz, dx, dy, dz = px[sel], py[sel], pz[sel], lx[sel], ly[sel], lz[sel]
        hit = np.zeros(sel.size, bool)
        for k in group:
            prm = ar["prim"][k]
            t = _HIT[prm[0]](prm, ox, oy, oz, dx, dy, dz)
            hit |= (t > 1e-5) & (t < 1.0)
        shadow[sel] = hit
    return shadow


def edges_from_labels(
    semseg: np.ndarray, instance: np.ndarray, half_thickness: int | None = None
) -> np.ndarray:
    """Boundary map (uint8, 0 or 255): pixels with a 4-neighbour of another class or instance, on both sides
    of the boundary, grown to ``half_thickness`` pixels per side (default: 1 px per 480 rows, at least 1)."""
    h = max(1, round(semseg.shape[0] / 480)) if half_thickness is None else int(half_thickness)
    dh = (semseg[:, 1:] != semseg[:, :-1]) | (instance[:, 1:] != instance[:, :-1])
    dv = (semseg[1:] != semseg[:-1]) | (instance[1:] != instance[:-1])
    e = np.zeros(semseg.shape, bool)
    e[:, 1:] |= dh
    e[:, :-1] |= dh
    e[1:] |= dv
    e[:-1] |= dv
    for _ in range(h - 1):  # 3x3 dilation per extra pixel of thickness
        g = e.copy()
        g[1:] |= e[:-1]
        g[:-1] |= e[1:]
        e = g.copy()
        e[:, 1:] |= g[:, :-1]
        e[:, :-1] |= g[:, 1:]
    return e.view(np.uint8) * np.uint8(255)


_FACE_N32 = [np.ascontiguousarray(_FACE_NORMALS[:, i], dtype=np.float32) for i in range(3)]


def render(
    scene: Scene, K: np.ndarray, pose: np.ndarray, height: int, width: int, shadows: bool = True
) -> dict[str, np.ndarray]:
    """Ray casts one view. Returns numpy arrays: ``rgb`` uint8 [H,W,3]; ``depth`` float32 [H,W] (z-depth,
    metres); ``normals`` float32 [H,W,3] (camera frame, unit, facing the camera); ``semseg`` uint8 [H,W];
    ``instance`` int32 [H,W]; ``points`` float32 [H,W,3] (world hit points); ``edges`` uint8 [H,W] {0,255}.

    ``K`` must have last row (0, 0, 1); ``pose`` is camera-to-world (OpenCV camera)."""
    K = np.asarray(K, np.float64)
    pose = np.asarray(pose, np.float64)
    if not np.array_equal(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"K must have last row (0, 0, 1), got {K[2].tolist()}")
    R, o = pose[:3, :3], pose[:3, 3]
    ox, oy, oz = (float(c) for c in o)
    ar = scene._arrays
    f32 = np.float32
    with np.errstate(all="ignore"):
        # World ray direction of pixel (u, v) is A (u, v, 1): camera-frame z = 1, so t equals z-depth.
        A = R @ np.linalg.inv(K)
        u, v = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
        dx, dy, dz = (
            (A[i, 0] * u + A[i, 2]).astype(f32)[None, :] + (A[i, 1] * v).astype(f32)[:, None]
            for i in range(3)
        )
        ix, iy, iz = f32(1) / dx, f32(1) / dy, f32(1) / dz

        # Room: the ray leaves the box [0, size] through the nearest of its three exit planes.
        sx, sy, sz = scene.size
        tx = np.maximum((sx - ox) * ix, -ox * ix)
        ty = np.maximum((sy - oy) * iy, -oy * iy)
        tz = np.maximum((sz - oz) * iz, -oz * iz)
        tyz = np.minimum(ty, tz)
        t = np.minimum(tx, tyz)
        on_x, on_y = tx <= tyz, ty <= tz
        face = np.where(on_x, (dx > 0) + 2, np.where(on_y, (dy > 0) + 0, (dz > 0) + 4))

        pid = np.full((height, width), -1, np.int32)
        prims = ar["prim"]
        if prims:
            kinds = {q[0] for q in prims}
            dd = dx * dx + dy * dy + dz * dz if SPHERE in kinds else None
            dxz = dx * dx + dz * dz if CYLINDER in kinds else None
            for k, blk in enumerate(_screen_rects(ar["corners"], R, o, K, height, width)):
                if blk is None:
                    continue
                pre = (
                    ix[blk],
                    iy[blk],
                    iz[blk],
                    None if dd is None else dd[blk],
                    None if dxz is None else dxz[blk],
                )
                tk = _HIT[prims[k][0]](prims[k], ox, oy, oz, dx[blk], dy[blk], dz[blk], pre)
                tb = t[blk]
                closer = tk < tb
                np.copyto(tb, tk, where=closer)
                np.copyto(pid[blk], k, where=closer)

        t, pid, face = t.ravel(), pid.ravel(), face.ravel()
        dx, dy, dz = dx.ravel(), dy.ravel(), dz.ravel()
        px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
        nx, ny, nz = (n[face] for n in _FACE_N32)
        inst = face.astype(np.int32)
        obj = np.flatnonzero(pid >= 0)
        if obj.size:
            po = pid[obj]
            inst[obj] = ar["inst"][po]
            onx, ony, onz = _object_normals(ar, po, px[obj], py[obj], pz[obj])
            # Normals face the camera (guards edge pixels where the slab choice is ambiguous).
            flip = np.where(onx * dx[obj] + ony * dy[obj] + onz * dz[obj] > 0, f32(-1), f32(1))
            nx[obj], ny[obj], nz[obj] = onx * flip, ony * flip, onz * flip

        # Shading: Lambertian point light with distance falloff plus ambient; optional hard shadows.
        light = np.asarray(scene.light, np.float64)
        lx, ly, lz = float(light[0]) - px, float(light[1]) - py, float(light[2]) - pz
        dist2 = lx * lx + ly * ly + lz * lz
        inv_len = f32(1) / np.sqrt(dist2)
        cos = (nx * lx + ny * ly + nz * lz) * inv_len
        lit = np.flatnonzero(cos > 0)
        diffuse = np.zeros(t.size, f32)
        diffuse[lit] = cos[lit] * (f32(scene.light_power) / (f32(1) + f32(0.06) * dist2[lit]))
        if shadows and lit.size and prims:
            eps = f32(1e-4)  # lifts the shadow ray off its own surface (float32 positions)
            blocked = _shadow(
                ar,
                px[lit] + eps * nx[lit],
                py[lit] + eps * ny[lit],
                pz[lit] + eps * nz[lit],
                lx[lit],
                ly[lit],
                lz[lit],
                dist2[lit],
                inv_len[lit],
                light,
            )
            diffuse[lit[blocked]] = 0.0
        shade = (diffuse + f32(scene.ambient)) * f32(255)
        f = _pattern(ar, inst, px, py, pz)
        rgb = (ar["ca"][inst] + ar["cd"][inst] * f[:, None]) * shade[:, None] + f32(0.5)
        rgb = np.minimum(rgb, f32(255), out=rgb).astype(np.uint8).reshape(height, width, 3)

        semseg = ar["label"][inst].reshape(height, width)
        instance = inst.reshape(height, width)
        normals = np.stack([nx, ny, nz], 1) @ R.astype(f32)  # rows: n_cam^T = n_world^T R
    return {
        "rgb": rgb,
        "depth": t.reshape(height, width),
        "normals": normals.reshape(height, width, 3),
        "semseg": semseg,
        "instance": instance,
        "points": np.stack([px, py, pz], 1).reshape(height, width, 3),
        "edges": edges_from_labels(semseg, instance),
    }


# ---------------------------------------------------------------------------------------- realism flags
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


# ------------------------------------------------------------------------------------------ dataset I/O
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
