"""Every transform keeps K consistent with the pixels: a 3D point projects to the same content."""

import torch

from mtl3d.data.transforms import build_transform, crop, hflip, resize, scale_intrinsics


def _sample(h=12, w=16):
    K = torch.tensor([[20.0, 0, (w - 1) / 2 + 1.3], [0, 21.0, (h - 1) / 2 - 0.7], [0, 0, 1]])
    image = torch.rand(3, h, w)
    return {
        "image": image,
        "semseg": torch.randint(0, 5, (h, w)),
        "depth": torch.rand(1, h, w) + 1,
        "normals": torch.nn.functional.normalize(torch.randn(3, h, w), dim=0),
        "edges": (torch.rand(1, h, w) > 0.5).float(),
        "K": K,
        "pose": torch.eye(4),
    }


def _project(K, X):
    p = K @ X
    return p[:2] / p[2]


def test_scale_intrinsics_maps_pixel_centres_and_borders():
    K = torch.tensor([[10.0, 0, 3.5], [0, 10.0, 1.5], [0, 0, 1]])
    K2 = scale_intrinsics(K, 2.0, 2.0)
    # the image border u=-0.5 stays the border; the centre of an 8-wide image (3.5) -> 7.5 of 16
    assert torch.allclose(K2, torch.tensor([[20.0, 0, 7.5], [0, 20.0, 3.5], [0, 0, 1]]))


def test_resize_keeps_projection_in_continuous_coordinates():
    s = _sample()
    r = resize(s, (24, 32))
    X = torch.tensor([0.3, -0.2, 2.0])
    u0 = _project(s["K"], X)
    u1 = _project(r["K"], X)
    # continuous pixel coordinates scale about the image corner (-0.5, -0.5)
    assert torch.allclose((u0 + 0.5) * 2 - 0.5, u1, atol=1e-5)
    assert r["semseg"].dtype == torch.int64 and r["semseg"].shape == (24, 32)
    assert set(r["semseg"].unique().tolist()) <= set(s["semseg"].unique().tolist())
    assert torch.allclose(r["normals"].norm(dim=0), torch.ones(24, 32), atol=1e-5)


def test_nearest_resize_by_two_repeats_pixels():
    s = _sample(4, 4)
    r = resize(s, (8, 8))
    assert torch.equal(r["depth"][0, ::2, ::2], s["depth"][0])
    assert torch.equal(r["depth"][0, 1::2, 1::2], s["depth"][0])


def test_crop_shifts_principal_point_and_content():
    s = _sample()
    c = crop(s, 2, 3, 8, 10)
    X = torch.tensor([0.1, 0.05, 1.5])
    u0, u1 = _project(s["K"], X), _project(c["K"], X)
    assert torch.allclose(u0 - torch.tensor([3.0, 2.0]), u1, atol=1e-5)
    assert torch.equal(c["image"], s["image"][:, 2:10, 3:13])


def test_hflip_mirrors_projection_normals_and_keeps_relative_pose():
    s = _sample()
    f = hflip(s)
    w = s["image"].shape[-1]
    X = torch.tensor([0.4, 0.1, 2.0])
    Xm = X * torch.tensor([-1.0, 1, 1])  # the mirrored point, seen by the flipped camera
    u0, u1 = _project(s["K"], X), _project(f["K"], Xm)
    assert torch.allclose(u1[0], (w - 1) - u0[0], atol=1e-5) and torch.allclose(u1[1], u0[1], atol=1e-5)
    assert torch.equal(f["normals"][0], -s["normals"][0].flip(-1))
    assert torch.equal(f["normals"][1:], s["normals"][1:].flip(-1))
    # pixel (r, c) of the flipped image is pixel (r, w-1-c) of the original
    assert torch.equal(f["image"][:, :, 0], s["image"][:, :, w - 1])
    # two views flipped together keep a consistent relative pose: S T S, a proper rotation
    a = torch.eye(4)
    b = torch.eye(4)
    b[:3, :3] = torch.linalg.matrix_exp(torch.tensor([[0, -0.3, 0.1], [0.3, 0, -0.2], [-0.1, 0.2, 0]]))
    b[:3, 3] = torch.tensor([0.5, 0.1, -0.2])
    fa, fb = hflip({**s, "pose": a})["pose"], hflip({**s, "pose": b})["pose"]
    S = torch.diag(torch.tensor([-1.0, 1, 1, 1]))
    T = torch.linalg.inv(a) @ b
    assert torch.allclose(torch.linalg.inv(fa) @ fb, S @ T @ S, atol=1e-6)
    assert torch.allclose(torch.det(fb[:3, :3]), torch.tensor(1.0), atol=1e-5)


def test_build_transform_flips_both_views_together_and_is_seeded():
    s = _sample()
    s["neighbor"] = _sample()
    t = build_transform((12, 16), train=True)
    outs = [t(s, torch.Generator().manual_seed(k)) for k in range(8)]
    flips = [bool(o["K"][0, 2] != s["K"][0, 2]) for o in outs]
    assert any(flips) and not all(flips)
    for o, fl in zip(outs, flips, strict=False):
        assert bool(o["neighbor"]["K"][0, 2] != s["neighbor"]["K"][0, 2]) == fl
    again = t(s, torch.Generator().manual_seed(3))
    assert torch.equal(again["image"], outs[3]["image"])
