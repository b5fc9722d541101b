"""Every transform keeps K consistent with the pixels: a 3D point projects to the same content."""

import pytest
import torch

from mtl3d.data.transforms import build_transform, crop, hflip, resize, scale_intrinsics
from mtl3d.errors import UserError


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


# ---------------------------------------------------------------------------------------------------------
# pad mode (ATRC / InvPT): pad, random scale, random crop


def _ramp_sample(h=20, w=30, depth=2.0, pose=None):
    """Image channels 0/1 hold the pixel's own column/row (/100): bilinear resampling keeps that linear
    function exactly inside the image, so the output tells which original coordinate each pixel shows."""
    s = _sample(h, w)
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    s["image"] = torch.stack([u / 100, v / 100, torch.full_like(u, 0.5)])
    s["depth"] = torch.full((1, h, w), depth)
    s["human_parts"] = torch.randint(0, 7, (h, w))
    s["saliency"] = (torch.rand(1, h, w) > 0.5).float()
    if pose is not None:
        s["pose"] = pose
    return s


def _check_ray_consistency(src, out, margin=2):
    """Every interior output pixel's ray (through the output K) projects, through the input K, onto the
    original pixel coordinate that the output pixel shows."""
    from mtl3d.data.transforms import denormalize_image

    top, left, h, w = (
        (int(v) for v in out["valid_box"]) if "valid_box" in out else (0, 0, *out["image"].shape[-2:])
    )
    img = denormalize_image(out["image"][None])[0]
    rows = torch.arange(top + margin, top + h - margin)
    cols = torch.arange(left + margin, left + w - margin)
    assert rows.numel() > 0 and cols.numel() > 0
    r, c = torch.meshgrid(rows.float(), cols.float(), indexing="ij")
    pix = torch.stack([c.flatten(), r.flatten(), torch.ones(r.numel())])
    rays = torch.linalg.inv(out["K"]) @ pix
    if img[0, rows[0], cols[1]] < img[0, rows[0], cols[0]]:
        rays[0] = -rays[0]  # a flipped output sees the mirrored world (see hflip)
    u0 = _project(src["K"], rays)
    shown = torch.stack([img[0][r.long(), c.long()].flatten(), img[1][r.long(), c.long()].flatten()]) * 100
    assert torch.allclose(u0, shown, atol=2e-3)


def test_pad_centres_fills_and_shifts_principal_point():
    from mtl3d.data.transforms import pad

    s = _ramp_sample(5, 6)
    p = pad(s, (10, 9))
    top, left = (10 - 5) // 2, (9 - 6) // 2
    assert p["valid_box"].tolist() == [top, left, 5, 6]
    X = torch.tensor([0.2, -0.1, 1.7])
    assert torch.allclose(_project(p["K"], X), _project(s["K"], X) + torch.tensor([left, top]), atol=1e-5)
    for key, fill in (("image", 0), ("semseg", 255), ("human_parts", 255), ("edges", 255), ("saliency", 255)):
        out = p[key]
        assert out.shape[-2:] == (10, 9) and out.dtype == s[key].dtype
        assert torch.equal(out[..., top : top + 5, left : left + 6], s[key])
        mask = torch.ones(10, 9, dtype=torch.bool)
        mask[top : top + 5, left : left + 6] = False
        assert (out[..., mask] == fill).all(), key
    assert (p["depth"][..., 0, :] == 0).all() and (p["normals"][..., :, 0] == 0).all()
    # a second pad composes the valid box; a smaller pad size is an error, not a silent crop
    assert pad(p, (12, 11))["valid_box"].tolist() == [top + 1, left + 1, 5, 6]
    with pytest.raises(UserError, match="larger than the pad size"):
        pad(s, (4, 6))


def test_random_scale_keeps_rays_and_divides_depth_and_translation():
    from mtl3d.data.transforms import random_scale

    pose = torch.eye(4)
    pose[:3, 3] = torch.tensor([1.0, -2.0, 0.5])
    s = _ramp_sample(pose=pose)
    gen = torch.Generator().manual_seed(4)
    o = random_scale(s, 0.5, 2.0, gen)
    again = random_scale(s, 0.5, 2.0, torch.Generator().manual_seed(4))
    assert torch.equal(o["image"], again["image"]) and torch.equal(o["K"], again["K"])
    factor = 2.0 / float(o["depth"][0, 0, 0])
    assert 0.5 <= factor <= 2.0 and factor != 1.0
    assert o["image"].shape[-2:] == (round(20 * factor), round(30 * factor))
    assert torch.allclose(o["pose"][:3, 3], pose[:3, 3] / factor) and torch.equal(
        o["pose"][:3, :3], pose[:3, :3]
    )
    assert torch.allclose(o["normals"].norm(dim=0), torch.ones(o["normals"].shape[-2:]), atol=1e-5)
    assert set(o["semseg"].unique().tolist()) <= set(s["semseg"].unique().tolist())
    from mtl3d.data.transforms import normalize_image

    _check_ray_consistency(s, normalize_image(o))
    # the flag off: metric depth and pose untouched, pixels identical
    keep = random_scale(s, 0.5, 2.0, torch.Generator().manual_seed(4), depth_scale=False)
    assert torch.equal(keep["depth"], torch.full_like(keep["depth"], 2.0)) and torch.equal(keep["pose"], pose)
    assert torch.equal(keep["image"], o["image"])


def test_random_crop_shifts_k_and_keeps_what_exists():
    from mtl3d.data.transforms import random_crop

    s = _ramp_sample(20, 30)
    seen = set()
    for k in range(6):
        c = random_crop(s, (8, 12), torch.Generator().manual_seed(k))
        assert c["image"].shape[-2:] == (8, 12)
        left, top = int(round(float(c["image"][0, 0, 0]) * 100)), int(round(float(c["image"][1, 0, 0]) * 100))
        seen.add((top, left))
        assert torch.equal(c["semseg"], s["semseg"][top : top + 8, left : left + 12])
        X = torch.tensor([0.1, 0.05, 1.5])
        assert torch.allclose(_project(c["K"], X), _project(s["K"], X) - torch.tensor([left, top]), atol=1e-5)
    assert len(seen) > 1
    # taller than the image: the whole height is kept, the width is cropped
    c = random_crop(s, (40, 12), torch.Generator().manual_seed(0))
    assert c["image"].shape[-2:] == (20, 12)


def test_pad_mode_train_outputs_size_keeps_rays_and_batches_pascal_like_sizes():
    from torch.utils.data import default_collate

    t = build_transform((24, 24), train=True, mode="pad", scale_range=[0.5, 2.0])
    sizes = [(15, 20), (20, 13), (11, 20), (20, 20)]  # PASCAL-like aspect ratios, shrunk
    outs = []
    for k, (h, w) in enumerate(sizes):
        s = _ramp_sample(h, w)
        o = t(s, torch.Generator().manual_seed(k))
        for key in ("image", "semseg", "human_parts", "depth", "normals", "edges", "saliency"):
            assert o[key].shape[-2:] == (24, 24), key
        _check_ray_consistency(s, o, margin=3)
        outs.append(o)
    batch = default_collate(outs)
    assert batch["image"].shape == (4, 3, 24, 24) and batch["valid_box"].shape == (4, 4)
    # pure function of the generator
    s = _ramp_sample(15, 20)
    a, b = t(s, torch.Generator().manual_seed(7)), t(s, torch.Generator().manual_seed(7))
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    assert not torch.equal(a["image"], t(s, torch.Generator().manual_seed(8))["image"])


def test_pad_mode_eval_never_resizes():
    t = build_transform((24, 32), train=False, mode="pad")
    s = _ramp_sample(15, 20)
    o = t(s, torch.Generator().manual_seed(0))
    top, left, h, w = o["valid_box"].tolist()
    assert (h, w) == (15, 20) and (top, left) == ((24 - 15) // 2, (32 - 20) // 2)
    from mtl3d.data.transforms import normalize_image

    assert torch.equal(o["image"][:, top : top + h, left : left + w], normalize_image(s)["image"])
    assert torch.equal(o["semseg"][top : top + h, left : left + w], s["semseg"])
    _check_ray_consistency(s, o, margin=0)
    # no size: only normalised
    o = build_transform(None, train=False, mode="pad")(s)
    assert o["image"].shape[-2:] == (15, 20) and torch.equal(o["K"], s["K"])
    with pytest.raises(UserError, match="resize mode"):
        build_transform((24, 32), train=False, mode="stretch")
    with pytest.raises(UserError, match="scale range"):
        build_transform((24, 32), train=True, mode="pad", scale_range=[2.0, 1.0])


def test_pad_mode_neighbour_gets_the_same_scale_crop_and_flip():
    ref_pose = torch.eye(4)
    nb_pose = torch.eye(4)
    nb_pose[:3, :3] = torch.linalg.matrix_exp(torch.tensor([[0, -0.2, 0.1], [0.2, 0, -0.1], [-0.1, 0.1, 0]]))
    nb_pose[:3, 3] = torch.tensor([0.4, 0.1, -0.3])
    s = _ramp_sample(18, 26, depth=2.0, pose=ref_pose)
    nb = _ramp_sample(18, 26, depth=3.0, pose=nb_pose)
    nb["K"] = s["K"].clone()
    s["neighbor"] = nb
    t = build_transform((16, 16), train=True, mode="pad")
    flips = []
    for k in range(6):
        o = t(s, torch.Generator().manual_seed(k))
        n = o["neighbor"]
        # same decisions: identical pixels, K and valid box for identical input rays
        assert torch.equal(o["image"], n["image"]) and torch.equal(o["K"], n["K"])
        assert torch.equal(o["valid_box"], n["valid_box"])
        factor = 2.0 / float(o["depth"][0][o["depth"][0] > 0][0])
        assert float(n["depth"][0][n["depth"][0] > 0][0]) == pytest.approx(3.0 / factor)
        # relative pose: same rotation (up to the flip's mirroring), translation divided like depth
        rel0 = torch.linalg.inv(ref_pose) @ nb_pose
        rel1 = torch.linalg.inv(o["pose"]) @ n["pose"]
        flipped = bool(o["image"][0, 8, 9] < o["image"][0, 8, 7])
        flips.append(flipped)
        S = torch.diag(torch.tensor([-1.0, 1, 1, 1])) if flipped else torch.eye(4)
        expect = S @ rel0 @ S
        assert torch.allclose(rel1[:3, :3], expect[:3, :3], atol=1e-6)
        assert torch.allclose(rel1[:3, 3], expect[:3, 3] / factor, atol=1e-6)
    assert any(flips) and not all(flips)


def test_data_config_checks_the_resolution_options():
    from mtl3d import config as C

    cfg = C.load(
        None, {"data": {"resize_mode": "pad", "height": 16, "width": 16, "scale_range": [0.75, 1.25]}}
    )
    assert cfg.data.scale_range == [0.75, 1.25] and cfg.data.eval_resolution == "original"
    assert cfg.data.depth_scale_aug is True
    bad = [
        ({"resize_mode": "stretch"}, "valid: pad, resize"),
        ({"eval_resolution": "native"}, "valid: input, original"),
        ({"scale_range": [2.0, 1.0]}, "data.scale_range"),
        ({"scale_range": [0.5]}, "data.scale_range"),
        ({"resize_mode": "pad"}, "data.height"),
    ]
    for data, msg in bad:
        with pytest.raises(UserError, match=msg):
            C.load(None, {"data": data})
