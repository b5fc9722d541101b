"""SynthRooms ray casting: ray-primitive intersections, the screen block each primitive can cover, surface
normals and shadow rays."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtl3d.data.synthrooms.scene import BOX, CYLINDER, SPHERE

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
