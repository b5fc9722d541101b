"""SynthRooms scenes: a furnished box-shaped room sampled from a seed.

World frame: metres, **y up**; the room spans ``[0, sx] x [0, sy] x [0, sz]`` (``sy`` = room height),
the floor is ``y = 0``. Objects are built from boxes (optionally yawed), spheres and vertical cylinders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

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

ROOM_X = (4.0, 8.0)
ROOM_Z = (3.0, 6.0)
ROOM_H = (2.4, 3.2)
NEAR = 0.1
# Larger than the longest room diagonal, sqrt(8^2 + 6^2 + 3.2^2) = 10.49, so every depth lies in [NEAR, FAR].
FAR = 10.5

BOX, SPHERE, CYLINDER = 0, 1, 2
PLAIN, STRIPES, CHECKER, NOISE = 0, 1, 2, 3
_C = {name: i for i, name in enumerate(CLASSES)}
# Instances 0..5 are the room faces, in this order.
_FACE_LABELS = (_C["floor"], _C["ceiling"], _C["wall"], _C["wall"], _C["wall"], _C["wall"])
_FACE_NORMALS = np.array(  # world normals pointing into the room (towards any camera inside it)
    [[0, 1, 0], [0, -1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64
)

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
