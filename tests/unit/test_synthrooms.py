"""SynthRooms: analytic checks of the ray caster and the dataset writer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl3d.data import synthrooms as sr
from mtl3d.data.synthrooms.scene import _place
from mtl3d.data.synthrooms.writer import _DATA_DIRS
from mtl3d.errors import UserError

H, W = 24, 32


def _plain(label: int) -> sr.Material:
    return sr.Material(label, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _room(size=(4.0, 3.0, 5.0), prims=(), extra_labels=()) -> sr.Scene:
    faces = [sr.CLASSES.index(n) for n in ("floor", "ceiling", "wall", "wall", "wall", "wall")]
    mats = tuple(_plain(lab) for lab in [*faces, *extra_labels])
    return sr.Scene(size=size, materials=mats, primitives=tuple(prims), light=(2.0, 2.8, 2.5))


# Camera at (2, 1.5, 1) looking along world +z; OpenCV camera (x right, y down) = world (-x, -y).
_R_PLUS_Z = np.diag([-1.0, -1.0, 1.0])


def _pose(R: np.ndarray, t) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = R, t
    return pose


def _backproject(depth: np.ndarray, K: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """World points from z-depth: X_cam = depth * K^-1 [u, v, 1], X = R X_cam + t (float64)."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T
    cam = rays * depth[..., None].astype(np.float64)
    return cam @ pose[:3, :3].T + pose[:3, 3]


# Signed distance functions, written independently of the ray caster.
def _sdf(prim: sr.Primitive, X: np.ndarray) -> np.ndarray:
    q = X - np.asarray(prim.center)
    h = np.asarray(prim.half)
    if prim.kind == sr.SPHERE:
        return np.linalg.norm(q, axis=-1) - h[0]
    if prim.kind == sr.CYLINDER:
        d = np.stack([np.hypot(q[..., 0], q[..., 2]) - h[0], np.abs(q[..., 1]) - h[1]], -1)
    else:
        c, s = np.cos(prim.yaw), np.sin(prim.yaw)
        local = np.stack([c * q[..., 0] - s * q[..., 2], q[..., 1], s * q[..., 0] + c * q[..., 2]], -1)
        d = np.abs(local) - h
    return np.linalg.norm(np.maximum(d, 0), axis=-1) + np.minimum(d.max(-1), 0)


def test_intrinsics_nyu_like():
    K = sr.intrinsics(480, 640)
    np.testing.assert_allclose(K, [[518.8579, 0, 319.5], [0, 519.4696, 239.5], [0, 0, 1]])
    K = sr.intrinsics(96, 128)
    assert K[0, 0] == pytest.approx(518.8579 / 5) and K[1, 1] == pytest.approx(519.4696 / 5)
    assert (K[0, 2], K[1, 2]) == (63.5, 47.5)


def test_wall_at_known_distance():
    scene = _room()
    K = sr.intrinsics(H, W)
    out = sr.render(scene, K, _pose(_R_PLUS_Z, (2.0, 1.5, 1.0)), H, W)
    # Back wall z = 5 is 4 m ahead; it fills |x_cam| <= 2 m and |y_cam| <= 1.5 m at that depth.
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    xs, ys = (u - K[0, 2]) / K[0, 0] * 4.0, (v - K[1, 2]) / K[1, 1] * 4.0
    expect = (np.abs(xs) < 2.0) & (np.abs(ys) < 1.5)
    back = out["instance"] == 5
    assert expect.sum() > 0.6 * H * W
    np.testing.assert_array_equal(back, expect)
    np.testing.assert_allclose(out["depth"][back], 4.0, rtol=1e-6)
    np.testing.assert_allclose(out["normals"][back], np.tile([0.0, 0.0, -1.0], (back.sum(), 1)), atol=1e-6)
    assert (out["semseg"][back] == sr.CLASSES.index("wall")).all()
    # Wall x = 0 lies 2 m to the camera's right (+x_cam): depth = 2 fx / (u - cx), normal (-1, 0, 0).
    right = out["instance"] == 2
    assert right.any() and (u[right] > K[0, 2]).all()
    np.testing.assert_allclose(out["depth"][right], 2.0 * K[0, 0] / (u[right] - K[0, 2]), rtol=1e-5)
    np.testing.assert_allclose(out["normals"][right], np.tile([-1.0, 0, 0], (right.sum(), 1)), atol=1e-6)
    # Floor (y = 0, 1.5 m below) at the bottom rows: depth = 1.5 fy / (v - cy).
    floor = out["instance"] == 0
    assert floor.any()
    np.testing.assert_allclose(out["depth"][floor], 1.5 * K[1, 1] / (v[floor] - K[1, 2]), rtol=1e-5)
    assert (out["semseg"][floor] == sr.CLASSES.index("floor")).all()


def test_solids_behind_the_camera_are_not_seen():
    # One box straddles the camera plane (to the side), one lies wholly behind the camera.
    side = sr.Primitive(sr.BOX, 6, (2.6, 1.5, 1.6), (0.3, 0.6, 1.4))
    back = sr.Primitive(sr.BOX, 7, (2.0, 1.5, 0.4), (0.5, 0.5, 0.2))
    labels = [sr.CLASSES.index("cabinet")] * 2
    K, pose = sr.intrinsics(H, W), _pose(_R_PLUS_Z, (2.0, 1.5, 1.0))
    with_boxes = sr.render(_room(prims=[side, back], extra_labels=labels), K, pose, H, W)
    empty = sr.render(_room(), K, pose, H, W)
    seen = with_boxes["instance"] == 6
    assert seen.any() and not (with_boxes["instance"] == 7).any()
    np.testing.assert_array_equal(with_boxes["depth"][~seen], empty["depth"][~seen])
    X = _backproject(with_boxes["depth"], K, pose)[seen]
    assert (with_boxes["depth"][seen] > 0).all()
    np.testing.assert_allclose(_sdf(side, X), 0.0, atol=1e-5)


def test_sphere_hits_and_normals():
    c, r = np.array([2.3, 1.3, 3.0]), 0.5
    sphere = sr.Primitive(sr.SPHERE, 6, tuple(c), (r, r, r))
    scene = _room(prims=[sphere], extra_labels=[sr.CLASSES.index("ball")])
    K, pose = sr.intrinsics(H, W), _pose(_R_PLUS_Z, (2.0, 1.5, 1.0))
    out = sr.render(scene, K, pose, H, W)
    X = _backproject(out["depth"], K, pose)
    # Analytic coverage: the pixel ray passes within r of the centre (ignore rays grazing the rim).
    rays = X - pose[:3, 3]
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    oc = c - pose[:3, 3]
    miss = np.linalg.norm(oc - (rays @ oc)[..., None] * rays, axis=-1)
    hit = out["instance"] == 6
    sure = np.abs(miss - r) > 1e-3
    np.testing.assert_array_equal(hit[sure], (miss < r)[sure])
    assert hit.sum() > 20 and (out["semseg"][hit] == sr.CLASSES.index("ball")).all()
    np.testing.assert_allclose(np.linalg.norm(X[hit] - c, axis=-1), r, atol=1e-5)
    n_cam = ((X[hit] - c) / r) @ pose[:3, :3]  # world -> camera: R^T n
    np.testing.assert_allclose(out["normals"][hit], n_cam, atol=1e-4)


def test_yawed_box_and_cylinder_surfaces():
    box = sr.Primitive(sr.BOX, 6, (1.5, 0.4, 3.5), (0.5, 0.4, 0.3), yaw=0.6)
    cyl = sr.Primitive(sr.CYLINDER, 7, (2.8, 0.5, 3.0), (0.25, 0.5, 0.25))
    scene = _room(prims=[box, cyl], extra_labels=[sr.CLASSES.index("box"), sr.CLASSES.index("bin")])
    K = sr.intrinsics(H, W)
    pose = sr.look_at((2.0, 1.6, 1.0), (2.0, 0.5, 3.2))
    out = sr.render(scene, K, pose, H, W)
    X = _backproject(out["depth"], K, pose)
    for prim in (box, cyl):
        m = out["instance"] == prim.instance
        assert m.sum() > 5
        np.testing.assert_allclose(_sdf(prim, X[m]), 0.0, atol=1e-4)
    # Cylinder top cap seen from above: normal = world +y.
    top = (out["instance"] == 7) & (np.abs(X[..., 1] - 1.0) < 1e-4)
    assert top.any()
    np.testing.assert_allclose(out["normals"][top], np.broadcast_to(pose[1, :3], (top.sum(), 3)), atol=1e-5)


def test_cast_shadows():
    # Light above a ball: floor points whose segment to the light crosses the ball get ambient light only.
    # A slab above the light must not shadow anything (it lies beyond the light on every shadow ray).
    c, r = np.array([2.0, 1.0, 3.0]), 0.3
    ball = sr.Primitive(sr.SPHERE, 6, tuple(c), (r, r, r))
    slab = sr.Primitive(sr.BOX, 7, (2.0, 2.92, 3.0), (0.3, 0.05, 0.3))
    scene = _room(prims=[ball, slab], extra_labels=[sr.CLASSES.index("ball"), sr.CLASSES.index("box")])
    light = np.array(scene.light)
    K, pose = sr.intrinsics(48, 64), sr.look_at((2.0, 2.0, 0.5), (2.0, 0.0, 3.3))
    out = sr.render(scene, K, pose, 48, 64)
    floor = out["instance"] == 0
    X = out["points"][floor].astype(np.float64)
    seg = light - X
    s = np.clip(((c - X) * seg).sum(1) / (seg * seg).sum(1), 0, 1)
    miss = np.linalg.norm(X + s[:, None] * seg - c, axis=1)
    cos = seg[:, 1] / np.linalg.norm(seg, axis=1)
    lit = 0.5 * 255 * (scene.ambient + (miss > r) * cos * scene.light_power / (1 + 0.06 * (seg * seg).sum(1)))
    sure = np.abs(miss - r) > 2e-3
    assert (miss[sure] < r).sum() > 20 and (miss[sure] > r).sum() > 20
    np.testing.assert_allclose(out["rgb"][floor][sure], np.repeat(lit[sure, None], 3, 1), atol=1.0)
    off = sr.render(scene, K, pose, 48, 64, shadows=False)["rgb"][floor]
    assert (off.astype(int) - out["rgb"][floor] >= 0).all() and (off[sure][miss[sure] < r] > 60).all()


def test_quarter_turn_boxes_are_axis_aligned():
    # A part offset by (0.3, 0.2, 0) with half extents (0.5, 0.2, 0.1), turned by +90 deg about y.
    (p,) = _place([(sr.BOX, (0.3, 0.2, 0.0), (0.5, 0.2, 0.1))], 2.0, 0.0, 3.0, np.pi / 2, 6)
    assert p.yaw == 0.0 and p.center == (2.0, 0.2, 2.7) and p.half == (0.1, 0.2, 0.5)
    (q,) = _place([(sr.BOX, (0.3, 0.2, 0.0), (0.5, 0.2, 0.1))], 2.0, 0.0, 3.0, np.pi / 2 + 1e-6, 6)
    assert q.yaw == pytest.approx(np.pi / 2 + 1e-6)
    np.testing.assert_allclose(q.center, p.center, atol=1e-6)


def _scene_view(seed=3, views=2, h=H, w=W):
    scene = sr.scene_for(seed, 0)
    poses = sr.camera_poses(scene, views, np.random.default_rng([seed, 1, 0]))
    return scene, poses, sr.intrinsics(h, w)


@pytest.mark.parametrize("seed", [3, 6])
def test_backprojection_lands_on_labelled_surface(seed):
    scene, poses, K = _scene_view(seed, h=36, w=48)
    out = sr.render(scene, K, poses[0], 36, 48)
    X = _backproject(out["depth"], K, poses[0])
    np.testing.assert_allclose(X, out["points"], atol=1e-4)
    inst = out["instance"]
    labels = np.array([m.label for m in scene.materials])
    np.testing.assert_array_equal(out["semseg"], labels[inst])
    sx, sy, sz = scene.size
    planes = {0: (1, 0.0), 1: (1, sy), 2: (0, 0.0), 3: (0, sx), 4: (2, 0.0), 5: (2, sz)}
    for i, (axis, value) in planes.items():
        np.testing.assert_allclose(X[inst == i][:, axis], value, atol=1e-4)
    sdf_all = np.stack([_sdf(p, X) for p in scene.primitives])
    assert (sdf_all > -1e-4).all()  # no visible point lies inside any solid
    for i in np.unique(inst[inst >= 6]):
        own = np.stack([_sdf(p, X[inst == i]) for p in scene.primitives if p.instance == i])
        np.testing.assert_allclose(own.min(0), 0.0, atol=1e-4)
    # Object normals = gradient of the nearest primitive's SDF (central differences; skip solid edges,
    # where the gradient is undefined).
    obj = inst >= 6
    near = np.argmin(np.abs(sdf_all[:, obj]), 0)
    grad = np.zeros((obj.sum(), 3))
    for a in range(3):
        step = np.zeros(3)
        step[a] = 1e-4
        for k in np.unique(near):
            m = near == k
            p = scene.primitives[k]
            grad[m, a] = (_sdf(p, X[obj][m] + step) - _sdf(p, X[obj][m] - step)) / 2e-4
    smooth = np.abs(np.linalg.norm(grad, axis=1) - 1) < 1e-3
    assert smooth.mean() > 0.9
    n_cam = grad[smooth] @ poses[0][:3, :3]
    np.testing.assert_allclose(out["normals"][obj][smooth], n_cam, atol=2e-3)
    n = out["normals"]
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    pix = np.stack([*np.meshgrid(np.arange(48.0), np.arange(36.0)), np.ones((36, 48))], -1)
    assert ((n * (pix @ np.linalg.inv(K).T)).sum(-1) < 0).all()
    assert out["depth"].min() > sr.NEAR and out["depth"].max() < sr.FAR


def test_two_views_agree_on_shared_points():
    scene, (pose1, pose2), K = _scene_view()
    out1 = sr.render(scene, K, pose1, H, W)
    rng = np.random.default_rng(0)
    vis = 0
    for _ in range(60):
        v, u = int(rng.integers(H)), int(rng.integers(W))
        X = out1["points"][v, u].astype(np.float64)
        cam = pose2[:3, :3].T @ (X - pose2[:3, 3])
        u2, v2 = (K @ cam / cam[2])[:2]
        if cam[2] < 0.1 or not (-0.5 <= u2 < W - 0.5 and -0.5 <= v2 < H - 0.5):
            continue
        # A one-pixel image whose only ray passes exactly through the projection of X in view 2.
        K1 = K.copy()
        K1[0, 2], K1[1, 2] = K[0, 2] - u2, K[1, 2] - v2
        out2 = sr.render(scene, K1, pose2, 1, 1)
        d2 = float(out2["depth"][0, 0])
        assert d2 < cam[2] * (1 + 1e-4)  # never sees through a surface
        if d2 > cam[2] * (1 - 1e-4):
            vis += 1
            np.testing.assert_allclose(out2["points"][0, 0], X, atol=2e-4)
            assert out2["instance"][0, 0] == out1["instance"][v, u]
    assert vis >= 30  # nearby views overlap


def test_edges_exactly_where_labels_change():
    scene, poses, K = _scene_view()
    out = sr.render(scene, K, poses[0], H, W)
    sem, inst, edges = out["semseg"], out["instance"], out["edges"]
    assert set(np.unique(edges)) <= {0, 255}
    expect = np.zeros((H, W), bool)
    for v in range(H):
        for u in range(W):
            for dv, du in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                vv, uu = v + dv, u + du
                if 0 <= vv < H and 0 <= uu < W and (sem[vv, uu] != sem[v, u] or inst[vv, uu] != inst[v, u]):
                    expect[v, u] = True
    assert expect.any()
    np.testing.assert_array_equal(edges == 255, expect)
    # Thickness scales with resolution: 2 px per side at 960 rows.
    lab = np.zeros((960, 20), np.uint8)
    lab[:, 10:] = 1
    thick = sr.edges_from_labels(lab, np.zeros((960, 20), np.int32))
    np.testing.assert_array_equal(np.flatnonzero(thick[500]), [8, 9, 10, 11])


def test_scenes_and_cameras():
    a, b = sr.sample_scene(7), sr.sample_scene(7)
    assert a == b and a != sr.sample_scene(8)
    assert len(sr.CLASSES) >= 10
    for seed in range(6):
        scene = sr.scene_for(0, seed)
        n_obj = len(scene.materials) - 6
        assert 4 <= n_obj <= 12
        sx, sy, sz = scene.size
        assert 4 <= sx <= 8 and 3 <= sz <= 6 and 2.4 <= sy <= 3.2
        poses = sr.camera_poses(scene, 4, np.random.default_rng(seed))
        for p in poses:
            np.testing.assert_allclose(p[:3, :3] @ p[:3, :3].T, np.eye(3), atol=1e-12)
            assert np.linalg.det(p[:3, :3]) == pytest.approx(1.0)
            assert (p[:3, 3] > 0.3).all() and (p[:3, 3] < np.array(scene.size) - 0.3).all()
        for p, q in zip(poses, poses[1:], strict=False):
            assert np.linalg.norm(p[:3, 3] - q[:3, 3]) <= 0.5
            angle = np.degrees(np.arccos(np.clip(p[:3, 2] @ q[:3, 2], -1, 1)))
            assert angle <= 30.0


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_layout_and_determinism(tmp_path):
    kw = dict(
        scenes=3, views=2, height=H, width=W, seed=5, val_fraction=0.34, test_fraction=0.34, progress=False
    )
    man = sr.prepare(tmp_path / "a", **kw)
    sr.prepare(tmp_path / "b", **kw)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)  # byte-identical
    assert not list((tmp_path / "a").glob(".tmp-*"))
    assert man == json.loads(fa["manifest.json"])
    assert man["num_classes"] == len(man["classes"]) == len(sr.CLASSES)
    assert man["tasks"] == ["semseg", "depth", "normals", "edges"] and man["generator"]["seed"] == 5
    assert man["splits"] == {"train": 2, "val": 2, "test": 2} and len(man["views"]) == 6
    split_scenes = {}
    for split in ("train", "val", "test"):
        ids = fa[f"splits/{split}.txt"].decode().split()
        assert len(ids) == man["splits"][split]
        split_scenes[split] = {man["views"][i]["scene"] for i in ids}
    assert sum(len(s) for s in split_scenes.values()) == 3 == len(set.union(*split_scenes.values()))
    for rel, digest in man["checksums"].items():
        assert hashlib.sha256(fa[rel]).hexdigest() == digest
    assert sr.verify(tmp_path / "a") == []
    # Every file equals a fresh render of the view recorded in the manifest.
    for vid, meta in man["views"].items():
        assert meta["neighbors"] == [n for n in man["views"] if n != vid and n.startswith(meta["scene"])]
        np.testing.assert_allclose(meta["K"], sr.intrinsics(H, W))
        scene = sr.scene_for(5, int(meta["scene"][1:]))
        out = sr.render(scene, np.array(meta["K"]), np.array(meta["pose"]), H, W)
        root = tmp_path / "a"
        img = np.asarray(Image.open(root / f"images/{vid}.png"))
        assert img.dtype == np.uint8 and img.shape == (H, W, 3)
        np.testing.assert_array_equal(img, out["rgb"])
        np.testing.assert_array_equal(np.asarray(Image.open(root / f"semseg/{vid}.png")), out["semseg"])
        np.testing.assert_array_equal(np.asarray(Image.open(root / f"edges/{vid}.png")), out["edges"])
        depth, normals = np.load(root / f"depth/{vid}.npy"), np.load(root / f"normals/{vid}.npy")
        assert depth.dtype == normals.dtype == np.float32 and normals.shape == (H, W, 3)
        np.testing.assert_array_equal(depth, out["depth"])
        np.testing.assert_array_equal(normals, out["normals"])
        assert (out["semseg"] < man["num_classes"]).all()
        assert man["near"] <= depth.min() and depth.max() <= man["far"]


def test_prepare_existing_dataset_rules(tmp_path):
    kw = dict(scenes=2, views=1, height=8, width=12, progress=False)
    root = tmp_path / "ds"
    first = sr.prepare(root, seed=1, **kw)
    stamp = (root / "manifest.json").stat().st_mtime_ns
    assert sr.prepare(root, seed=1, **kw) == first  # same parameters: reused, not rewritten
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="overwrite"):
        sr.prepare(root, seed=2, **kw)
    second = sr.prepare(root, seed=2, overwrite=True, **kw)
    assert second["generator"]["seed"] == 2 and second["checksums"] != first["checksums"]
    assert sorted(p.name for p in root.iterdir()) == sorted([*_DATA_DIRS, "manifest.json"])
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        sr.prepare(other, **kw)
    with pytest.raises(UserError, match="val_fraction"):
        sr.prepare(tmp_path / "bad", val_fraction=1.0, **kw)
    with pytest.raises(UserError, match="no training scene"):
        sr.prepare(tmp_path / "bad", val_fraction=0.5, test_fraction=0.4, **kw)


def test_realism_flags(tmp_path):
    man = sr.prepare(
        tmp_path / "n",
        scenes=1,
        views=2,
        height=H,
        width=W,
        val_fraction=0.0,
        depth_holes=0.1,
        depth_noise=0.02,
        image_noise=0.02,
        progress=False,
    )
    assert man["splits"] == {"train": 2, "val": 0}
    for vid in man["views"]:
        depth = np.load(tmp_path / "n" / f"depth/{vid}.npy")
        meta = man["views"][vid]
        clean = sr.render(sr.scene_for(0, 0), np.array(meta["K"]), np.array(meta["pose"]), H, W)
        holes = depth == 0
        assert 0.1 <= holes.mean() < 0.6
        ratio = depth[~holes] / clean["depth"][~holes]
        assert 0.005 < ratio.std() < 0.05 and abs(ratio.mean() - 1) < 0.01
