"""Cameras, rays, samples and frustum coordinates against analytic geometry (and SynthRooms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl3d.errors import UserError
from mtl3d.regularizer.rays import (
    default_intrinsics,
    inside_box,
    make_rays,
    normalized_depth,
    project,
    relative_pose,
    render_pixel_centers,
    render_size,
    rigid_inverse,
    sample_depths,
    to_box,
)

D = torch.float64


def rot(axis_angle) -> torch.Tensor:
    a = torch.as_tensor(axis_angle, dtype=D)
    k = torch.zeros(3, 3, dtype=D)
    k[0, 1], k[0, 2], k[1, 2] = -a[2], a[1], -a[0]
    return torch.linalg.matrix_exp(k - k.T)


def pose(axis_angle, t) -> torch.Tensor:
    P = torch.eye(4, dtype=D)
    P[:3, :3] = rot(axis_angle)
    P[:3, 3] = torch.as_tensor(t, dtype=D)
    return P


def test_default_intrinsics_sixty_degrees():
    K = default_intrinsics(48, 64, dtype=D)
    f = 32 / math.tan(math.radians(30))
    assert torch.allclose(K, torch.tensor([[f, 0, 31.5], [0, f, 23.5], [0, 0, 1]], dtype=D))
    assert default_intrinsics(48, 64).dtype == torch.float32
    # The left edge of the image (u = -0.5) is 30 degrees off axis.
    d = torch.linalg.inv(K) @ torch.tensor([-0.5, 23.5, 1.0], dtype=D)
    assert math.isclose(math.degrees(math.atan2(-d[0], d[2])), 30.0, rel_tol=1e-9)
    with pytest.raises(UserError):
        default_intrinsics(4, 4, fov_deg=180)


def test_render_pixel_centres_follow_the_resize_rule():
    u, v = render_pixel_centers((8, 12), (2, 3), dtype=D)
    assert torch.equal(u[0], torch.tensor([1.5, 5.5, 9.5], dtype=D))  # centres of 4-pixel blocks
    assert torch.equal(v[:, 0], torch.tensor([1.5, 5.5], dtype=D))
    u, v = render_pixel_centers((5, 7), (5, 7), dtype=D)  # same size: the pixels themselves
    assert torch.equal(u[0], torch.arange(7, dtype=D)) and torch.equal(v[:, 0], torch.arange(5, dtype=D))
    assert render_size((448, 576), 8) == (56, 72) and render_size((5, 7), 8) == (1, 1)


def test_ray_through_principal_point_is_the_optical_axis():
    K = torch.tensor([[[80.0, 0, 31.5], [0, 70.0, 20.0], [0, 0, 1]]], dtype=D)
    # 64 wide, w = 9: render column 4 has its centre at (4.5)·64/9 − 0.5 = 31.5 = cx; 41 high, h = 41: row 20.
    rays = make_rays(K, (41, 64), (41, 9), near=1.0, far=3.0, n_samples=4)
    i = 20 * 9 + 4
    assert torch.allclose(rays.dirs[0, i], torch.tensor([0.0, 0.0, 1.0], dtype=D), atol=1e-12)
    pts = rays.points()[0, i]
    assert torch.allclose(pts[:, :2], torch.zeros(4, 2, dtype=D), atol=1e-12)
    assert torch.allclose(pts[:, 2], torch.tensor([1.25, 1.75, 2.25, 2.75], dtype=D))


def test_samples_project_back_to_their_pixel_at_their_depth():
    K = torch.tensor([[[55.0, 0, 20.3], [0, 61.0, 13.9], [0, 0, 1]]], dtype=D).repeat(2, 1, 1)
    K[1, 0, 0] = 40.0
    H, W, h, w = 30, 44, 5, 11
    rays = make_rays(K, (H, W), (h, w), near=0.5, far=6.0, n_samples=7, stratified=True)
    u, v, Z = project(rays.points(), K)
    uu, vv = render_pixel_centers((H, W), (h, w), dtype=D)
    assert torch.allclose(u, uu.reshape(1, -1, 1).expand_as(u), atol=1e-9)
    assert torch.allclose(v, vv.reshape(1, -1, 1).expand_as(v), atol=1e-9)
    assert torch.allclose(Z, rays.z, atol=1e-12)  # sample depth = z-depth
    # Frustum coordinates: render-pixel centres in grid_sample's convention, depth normalised.
    box = to_box(rays.points(), K, (H, W), 0.5, 6.0)
    gx = (2 * torch.arange(w, dtype=D) + 1) / w - 1
    assert torch.allclose(box[0, :w, 0, 0], gx, atol=1e-9)
    assert torch.allclose(box[..., 2], 2 * (rays.z - 0.5) / 5.5 - 1, atol=1e-12)
    assert inside_box(box).all()
    # δ is the bin width times |d|: the metric length along the ray.
    assert torch.allclose(rays.delta, (5.5 / 7) * rays.dirs.norm(dim=-1, keepdim=True).expand_as(rays.delta))


def test_linear_and_inverse_sample_spacing():
    z, d = sample_depths(1.0, 5.0, 4, (1,), dtype=D)
    assert torch.allclose(z[0], torch.tensor([1.5, 2.5, 3.5, 4.5], dtype=D))
    assert torch.allclose(d[0], torch.ones(4, dtype=D))
    z, d = sample_depths(1.0, 5.0, 4, (1,), spacing="inverse", dtype=D)
    edges_disp = torch.linspace(1.0, 0.2, 5, dtype=D)  # uniform in 1/z
    assert torch.allclose(1 / z[0], (edges_disp[:-1] + edges_disp[1:]) / 2)
    assert torch.allclose(d[0], 1 / edges_disp[1:] - 1 / edges_disp[:-1])
    assert math.isclose(float(d.sum()), 4.0, rel_tol=1e-12)
    # z' is linear in 1/z for inverse spacing: the disparity midpoint maps to 0.
    assert math.isclose(
        float(normalized_depth(torch.tensor(1 / 0.6, dtype=D), 1.0, 5.0, "inverse")), 0.0, abs_tol=1e-12
    )
    g = torch.Generator().manual_seed(0)
    z, _ = sample_depths(1.0, 5.0, 8, (50,), stratified=True, generator=g, dtype=D)
    lo = torch.arange(8, dtype=D) * 0.5 + 1.0
    assert ((z >= lo) & (z <= lo + 0.5)).all()  # one jittered sample per bin
    assert z.std(dim=0).min() > 0.05
    with pytest.raises(UserError):
        sample_depths(0.0, 5.0, 4, (1,), spacing="inverse")
    with pytest.raises(UserError):
        sample_depths(3.0, 2.0, 4, (1,))


def test_ortho_rays_are_parallel_and_share_the_frustum_coordinates():
    K = default_intrinsics(24, 32, dtype=D)[None]
    ortho = make_rays(K, (24, 32), (3, 4), near=1.0, far=4.0, n_samples=5, camera="ortho")
    pin = make_rays(K, (24, 32), (3, 4), near=1.0, far=4.0, n_samples=5)
    assert torch.equal(ortho.dirs, torch.tensor([0.0, 0.0, 1.0], dtype=D).expand(1, 12, 3))
    b_o = to_box(ortho.points(), K, (24, 32), 1.0, 4.0, camera="ortho")
    b_p = to_box(pin.points(), K, (24, 32), 1.0, 4.0, camera="pinhole")
    assert torch.allclose(b_o, b_p, atol=1e-9)
    assert torch.allclose(ortho.delta, torch.full_like(ortho.delta, 0.6))
    with pytest.raises(UserError, match="ortho"):
        make_rays(
            K, (24, 32), (3, 4), near=1.0, far=4.0, n_samples=5, camera="ortho", transform=torch.eye(4)[None]
        )


def test_points_behind_the_reference_camera_are_outside():
    K = default_intrinsics(8, 8, dtype=D)[None]
    box = to_box(torch.tensor([[[0.0, 0.0, -1.0], [0.1, 0.0, 2.0]]], dtype=D), K, (8, 8), 0.5, 4.0)
    assert inside_box(box).tolist() == [[False, True]]


def test_relative_pose_and_rigid_inverse():
    A, B = pose([0.1, -0.4, 0.2], [1.0, 2.0, -0.5]), pose([-0.3, 0.2, 0.05], [0.2, 1.5, 0.4])
    assert torch.allclose(rigid_inverse(A) @ A, torch.eye(4, dtype=D), atol=1e-12)
    assert torch.allclose(relative_pose(A, B), torch.linalg.inv(A) @ B, atol=1e-12)


def test_neighbour_rays_hit_the_same_world_points_on_a_plane():
    """World plane n·X = c seen by two cameras: neighbour rays, expressed in view 1, at the neighbour's
    z-depth, are on the plane, equal the neighbour's world hits, and have view 1's depth there."""
    n = torch.tensor([0.2, -0.1, -1.0], dtype=D)
    n = n / n.norm()
    c = -6.0
    P1 = pose([0.05, 0.3, -0.02], [0.3, -0.2, 0.1])
    P2 = P1 @ pose([0.02, -0.12, 0.03], [0.25, 0.05, -0.1])  # small motion, like video frames
    K = torch.tensor([[60.0, 0, 23.5], [0, 60.0, 17.5], [0, 0, 1]], dtype=D)
    H, W = 36, 48
    T = relative_pose(P1[None], P2[None])
    rays = make_rays(K[None], (H, W), (H, W), near=0.5, far=20.0, n_samples=2, transform=T)
    # Analytic z-depth of the plane along each neighbour pixel (camera-frame direction has z = 1).
    u, v = render_pixel_centers((H, W), (H, W), dtype=D)
    d2 = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3) @ torch.linalg.inv(K).T
    dw = d2 @ P2[:3, :3].T
    s = (c - n @ P2[:3, 3]) / (dw @ n)
    assert (s > 0).all()
    p_ref = rays.origins[0] + s[:, None] * rays.dirs[0]  # neighbour rays at their label depth, view-1 frame
    p_world = p_ref @ P1[:3, :3].T + P1[:3, 3]
    assert torch.allclose(p_world, P2[:3, 3] + s[:, None] * dw, atol=1e-9)
    assert torch.allclose(p_world @ n, torch.full_like(s, c), atol=1e-9)
    # View 1's own z-depth of the plane at the pixel p_ref projects to equals p_ref's z.
    uu, vv, Z = project(p_ref[None], K[None])
    d1 = torch.stack([uu[0], vv[0], torch.ones_like(uu[0])], -1) @ torch.linalg.inv(K).T
    n1 = P1[:3, :3].T @ n
    z1 = (c - n @ P1[:3, 3]) / (d1 @ n1)
    assert torch.allclose(Z[0], z1, atol=1e-9)


def _view_depth_agreement(K, P1, P2, z1map, z2map):
    """Share of neighbour pixels that, moved into view 1 at their label depth, land inside view 1 (first)
    and match view 1's depth there within 3 % (second)."""
    H, W = z1map.shape
    rays = make_rays(
        K[None], (H, W), (H, W), near=0.1, far=10.5, n_samples=2, transform=relative_pose(P1[None], P2[None])
    )
    p_ref = rays.origins[0] + z2map.reshape(-1)[:, None] * rays.dirs[0]
    u, v, Z = (x[0] for x in project(p_ref[None], K[None]))
    ui, vi = u.round().long(), v.round().long()
    ok = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H) & (Z > 0)
    z1 = z1map[vi[ok], ui[ok]]
    return ok.float().mean(), ((z1 - Z[ok]).abs() < 0.03 * Z[ok]).float().mean()


def test_neighbour_rays_after_flipping_both_views():
    """The data pipeline flips both views together (K: cx mirrors, pose -> S·pose·S); the rays must
    still connect the flipped pixels of the two views."""
    sr = pytest.importorskip("mtl3d.data.synthrooms")
    tf = pytest.importorskip("mtl3d.data.transforms")
    H, W = 48, 64
    scene = sr.sample_scene(4)
    K = torch.as_tensor(sr.intrinsics(H, W), dtype=D)
    K[0, 2] += 3.0  # off-centre principal point, so that a wrong cx mirror would show
    views = []
    for P in sr.camera_poses(scene, 2, np.random.default_rng(1)):
        v = sr.render(scene, K.numpy(), P, H, W)
        s = {
            "image": torch.zeros(3, H, W),
            "depth": torch.as_tensor(v["depth"], dtype=D),
            "K": K,
            "pose": torch.as_tensor(P, dtype=D),
        }
        views.append((s, tf.hflip(s)))
    (a, fa), (b, fb) = views
    inside, agree = _view_depth_agreement(a["K"], a["pose"], b["pose"], a["depth"], b["depth"])
    f_inside, f_agree = _view_depth_agreement(fa["K"], fa["pose"], fb["pose"], fa["depth"], fb["depth"])
    assert agree > 0.85 and f_agree > 0.85
    assert abs(float(inside - f_inside)) < 0.02  # the mirror image of the same overlap


def test_neighbour_rays_hit_the_same_world_points_in_synthrooms():
    sr = pytest.importorskip("mtl3d.data.synthrooms")
    H, W = 48, 64
    scene = sr.sample_scene(3)
    P1, P2 = (torch.as_tensor(p, dtype=D) for p in sr.camera_poses(scene, 2, np.random.default_rng(7)))
    K = torch.as_tensor(sr.intrinsics(H, W), dtype=D)
    v1 = sr.render(scene, K.numpy(), P1.numpy(), H, W)
    v2 = sr.render(scene, K.numpy(), P2.numpy(), H, W)
    rays = make_rays(
        K[None],
        (H, W),
        (H, W),
        near=sr.NEAR,
        far=sr.FAR,
        n_samples=2,
        transform=relative_pose(P1[None], P2[None]),
    )
    z2 = torch.as_tensor(v2["depth"], dtype=D).reshape(-1)
    p_ref = rays.origins[0] + z2[:, None] * rays.dirs[0]
    p_world = p_ref @ P1[:3, :3].T + P1[:3, 3]
    hits2 = torch.as_tensor(v2["points"], dtype=D).reshape(-1, 3)
    assert torch.allclose(p_world, hits2, atol=1e-3)  # the renderer casts in float32
    # Where the point is visible in view 1, view 1 sees it at the same depth (occlusions and silhouette
    # pixels excepted: nearest-pixel lookup).
    u, v, Z = (x[0] for x in project(p_ref[None], K[None]))
    ui, vi = u.round().long(), v.round().long()
    ok = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H) & (Z > 0)
    assert ok.float().mean() > 0.7
    z1 = torch.as_tensor(v1["depth"], dtype=D)[vi[ok], ui[ok]]
    agree = ((z1 - Z[ok]).abs() < 0.03 * Z[ok]).float().mean()
    assert agree > 0.85
    # And the identity transform is the reference view itself: z-depth of view 1 along view 1's rays.
    rays1 = make_rays(K[None], (H, W), (H, W), near=sr.NEAR, far=sr.FAR, n_samples=2)
    z1all = torch.as_tensor(v1["depth"], dtype=D).reshape(-1)
    p1 = rays1.dirs[0] * z1all[:, None] @ P1[:3, :3].T + P1[:3, 3]
    assert torch.allclose(p1, torch.as_tensor(v1["points"], dtype=D).reshape(-1, 3), atol=1e-3)


def test_rays_and_box_ignore_autocast():
    # bf16 pixel coordinates at 576 px would be off by up to 2 px: geometry must stay in float32.
    K = torch.tensor([[[500.0, 0, 300.3], [0, 500.0, 200.2], [0, 0, 1]]])
    ref = make_rays(K, (448, 576), (56, 72), near=0.1, far=10.0, n_samples=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rays = make_rays(K, (448, 576), (56, 72), near=0.1, far=10.0, n_samples=8)
        box = to_box(rays.points(), K, (448, 576), 0.1, 10.0)
    assert rays.dirs.dtype == torch.float32 and box.dtype == torch.float32
    assert torch.equal(box, to_box(ref.points(), K, (448, 576), 0.1, 10.0))
