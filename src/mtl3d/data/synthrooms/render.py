"""Rendering one SynthRooms view: cast a ray per pixel, shade the hits (Lambertian point light, ambient,
optional hard shadows, procedural textures) and derive every label (semantic, depth, normals,
boundaries) from the same hits."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtl3d.data.synthrooms.raycast import _HIT, _object_normals, _screen_rects, _shadow
from mtl3d.data.synthrooms.scene import _FACE_NORMALS, CHECKER, CYLINDER, NOISE, SPHERE, STRIPES, Scene


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
