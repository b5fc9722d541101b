"""The regularizer branch: shapes, losses, gradients, cross-view, and plugging into a host model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mtl3d.config import RegularizerConfig
from mtl3d.errors import UserError
from mtl3d.losses import task_loss
from mtl3d.regularizer import RegularizerBranch, default_intrinsics, downsample_depth, expected_depth_loss

TASKS = {"semseg": 5, "depth": 1, "normals": 3, "edges": 1}
CHANNELS = [8, 16, 32]
B, H, W = 2, 32, 48


def features(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, c, H // 4 // 2**i, W // 4 // 2**i, generator=g) for i, c in enumerate(CHANNELS)]


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = {
        "semseg": torch.randint(0, 5, (B, H, W), generator=g),
        "depth": 1.0 + 3.0 * torch.rand(B, 1, H, W, generator=g),
        "normals": F.normalize(torch.randn(B, 3, H, W, generator=g), dim=1),
        "edges": (torch.rand(B, 1, H, W, generator=g) > 0.8).float(),
        "K": default_intrinsics(H, W).expand(B, 3, 3).clone(),
        "pose": torch.eye(4).expand(B, 4, 4).clone(),
    }
    b["depth"][:, :, :3] = 0.0  # invalid pixels
    return b


def branch(**kw) -> RegularizerBranch:
    torch.manual_seed(0)
    cfg = replace(RegularizerConfig(enabled=True), **kw)
    return RegularizerBranch(cfg, CHANNELS, TASKS, near=0.5, far=6.0)


def test_output_shapes():
    br = branch(render_stride=4)
    out = br(features(), batch()["K"], (H, W))
    assert set(out) == {"tasks", "depth", "opacity"}
    for t, c in TASKS.items():
        assert out["tasks"][t].shape == (B, c, H, W)
    assert out["depth"].shape == (B, 1, 8, 12) and out["opacity"].shape == (B, 1, 8, 12)
    assert ((out["depth"] >= 0.5) & (out["depth"] <= 6.0)).all()  # residual transmittance ends at far
    assert ((out["opacity"] >= 0) & (out["opacity"] <= 1)).all()


def test_loss_terms_and_gradients_reach_the_plane_encoder():
    br = branch(depth_supervision=0.5, task_alpha={"normals": 2.0}, alpha=0.7)
    b = batch()
    out = br(features(), b["K"], (H, W))
    weights = {"semseg": 1.0, "depth": 3.0, "normals": 10.0}  # edges missing -> 1.0
    res = br.loss(out, b, weights, losses={"depth": "berhu"}, edge_pos_weight=0.8)
    assert set(res) == {"reg/semseg", "reg/depth", "reg/normals", "reg/edges", "reg/depth_exp", "total"}
    # Each term equals the shared task loss on the rendered logits; total is the documented weighted sum.
    want_depth = task_loss("depth", out["tasks"]["depth"], b["depth"], loss="berhu")
    assert torch.allclose(res["reg/depth"], want_depth)
    assert torch.allclose(
        res["reg/edges"], task_loss("edges", out["tasks"]["edges"], b["edges"], edge_pos_weight=0.8)
    )
    want = (
        0.7 * res["reg/semseg"]
        + 3.0 * 0.7 * res["reg/depth"]
        + 10.0 * 2.0 * res["reg/normals"]
        + 0.7 * res["reg/edges"]
        + 0.5 * res["reg/depth_exp"]
    )
    assert torch.allclose(res["total"], want)
    res["total"].backward()
    for p in (
        br.encoder.net[0].weight,
        br.first.weight,
        br.density_out.weight,
        br.task_out["depth"].weight,
        br.decoders["semseg"][0].weight,
    ):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_gradients_reach_the_host_features():
    br = branch()
    feats = [f.requires_grad_() for f in features()]
    b = batch()
    br.loss(br(feats, b["K"], (H, W)), b, {})["total"].backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_downsample_depth_is_a_masked_block_average():
    d = torch.tensor([[1.0, 3.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0], [2.0, 2.0, 4.0, 8.0], [2.0, 2.0, 4.0, 0.0]])
    got = downsample_depth(d[None, None], (2, 2))[0, 0]
    assert torch.allclose(got, torch.tensor([[3.0, 0.0], [2.0, 16 / 3]]))
    rendered = torch.tensor([[[[2.0, 9.0], [2.5, 16 / 3]]]])
    assert torch.allclose(expected_depth_loss(rendered, d[None, None]), torch.tensor((1.0 + 0.5 + 0.0) / 3))


def test_eval_is_deterministic_and_training_jitters():
    br = branch()
    K = batch()["K"]
    br.eval()
    with torch.no_grad():
        a, b2 = br(features(), K, (H, W)), br(features(), K, (H, W))
    assert torch.equal(a["depth"], b2["depth"])
    br.train()
    with torch.no_grad():
        c, d = br(features(), K, (H, W)), br(features(), K, (H, W))
    assert not torch.equal(c["depth"], d["depth"])


def test_chunking_does_not_change_the_result():
    torch.manual_seed(0)
    big = branch(chunk_rays=100_000).eval()
    small = branch(chunk_rays=7).eval()
    small.load_state_dict(big.state_dict())
    K = batch()["K"]
    feats1 = [f.requires_grad_() for f in features()]
    feats2 = [f.detach().clone().requires_grad_() for f in features()]
    o1, o2 = big(feats1, K, (H, W)), small(feats2, K, (H, W))
    for t in TASKS:
        assert torch.allclose(o1["tasks"][t], o2["tasks"][t], atol=1e-5)
    assert torch.allclose(o1["depth"], o2["depth"], atol=1e-5)
    (o1["depth"].sum() + o1["tasks"]["semseg"].sum()).backward()
    (o2["depth"].sum() + o2["tasks"]["semseg"].sum()).backward()  # checkpointed chunks
    assert torch.allclose(feats1[0].grad, feats2[0].grad, atol=1e-5)


def test_cross_view_identity_neighbour_renders_the_reference_view():
    br = branch(cross_view=True, depth_supervision=1.0, cross_view_tasks=["depth", "semseg"]).eval()
    b = batch()
    b["neighbor"] = {k: b[k].clone() for k in ("depth", "semseg", "K", "pose")}
    out = br(features(), b["K"], (H, W), neighbor=br.neighbor_input(b))
    nb = out["neighbor"]
    assert set(nb["tasks"]) == {"depth", "semseg"}
    assert torch.allclose(nb["depth"], out["depth"], atol=1e-4)  # same camera: same rays
    assert torch.allclose(nb["tasks"]["semseg"], out["tasks"]["semseg"], atol=1e-4)
    res = br.loss(out, b, {})
    assert {"reg/xview/depth", "reg/xview/semseg", "reg/xview/depth_exp"} <= set(res)
    assert torch.allclose(res["reg/xview/depth"], res["reg/depth"], atol=1e-4)


def test_cross_view_moved_neighbour_is_finite_and_differentiable():
    br = branch(cross_view=True, cross_view_alpha=0.3)
    b = batch()
    nb_pose = b["pose"].clone()
    c, s = torch.cos(torch.tensor(0.2)), torch.sin(torch.tensor(0.2))
    nb_pose[:, 0, 0], nb_pose[:, 0, 2], nb_pose[:, 2, 0], nb_pose[:, 2, 2] = c, s, -s, c
    nb_pose[:, :3, 3] = torch.tensor([0.4, -0.1, 0.2])
    b["neighbor"] = {"depth": b["depth"].flip(-1), "K": b["K"], "pose": nb_pose}
    out = br(features(), b["K"], (H, W), neighbor=br.neighbor_input(b))
    assert out["neighbor"]["depth"].shape == (B, 1, 4, 6)
    # Some neighbour rays leave the reference frustum: there the density is zero.
    assert (out["neighbor"]["opacity"] < out["opacity"].min()).any()
    res = br.loss(out, b, {"depth": 2.0})
    assert torch.isfinite(res["total"]) and torch.isfinite(res["reg/xview/depth"])
    without = (
        sum(v for k, v in res.items() if k.startswith("reg/") and "xview" not in k and k != "reg/depth")
        + 2.0 * res["reg/depth"]
    )
    assert torch.allclose(res["total"], without + 2.0 * 0.3 * res["reg/xview/depth"])
    res["total"].backward()
    assert br.encoder.net[0].weight.grad.abs().sum() > 0
    # Without cross_view (or without a neighbour) nothing extra is rendered.
    assert "neighbor" not in branch()(features(), b["K"], (H, W), neighbor=br.neighbor_input(b))
    assert br.neighbor_input({"pose": b["pose"]}) is None


@pytest.mark.parametrize(
    "kw",
    [
        dict(plane_agg="max"),
        dict(camera="fisheye"),
        dict(spacing="log"),
        dict(n_samples=0),
        dict(cross_view=True, camera="ortho"),
        dict(cross_view=True, cross_view_tasks=["saliency"]),
        dict(feat_source="middle"),
        dict(plane_res=[4]),
    ],
)
def test_bad_config_is_a_user_error(kw):
    with pytest.raises(UserError):
        branch(**kw)


def test_bad_bounds_are_a_user_error():
    with pytest.raises(UserError):
        RegularizerBranch(RegularizerConfig(), CHANNELS, TASKS, near=2.0, far=1.0)
    with pytest.raises(UserError):
        RegularizerBranch(RegularizerConfig(spacing="inverse"), CHANNELS, TASKS, near=0.0, far=1.0)


@pytest.mark.parametrize(
    "kw",
    [
        dict(camera="ortho"),
        dict(plane_agg="sum", spacing="inverse"),
        dict(plane_agg="concat", plane_res=[5, 7], feat_source="last"),
    ],
)
def test_variants_run(kw):
    br = branch(**kw)
    b = batch()
    res = br.loss(br(features(), b["K"], (H, W)), b, {})
    assert torch.isfinite(res["total"])
    res["total"].backward()


# ---------------------------------------------------------------------------------- with a host model
def synthrooms_depth(H: int, W: int, scenes: int = 4, views: int = 2):
    sr = pytest.importorskip("mtl3d.data.synthrooms")
    import numpy as np

    imgs, deps = [], []
    for s in range(scenes):
        scene = sr.sample_scene(s)
        for P in sr.camera_poses(scene, views, np.random.default_rng(s)):
            v = sr.render(scene, sr.intrinsics(H, W), P, H, W)
            imgs.append(torch.as_tensor(v["rgb"]).permute(2, 0, 1).float() / 255.0)
            deps.append(torch.as_tensor(v["depth"])[None])
    n = len(imgs)
    K = torch.as_tensor(sr.intrinsics(H, W), dtype=torch.float32).expand(n, 3, 3).clone()
    return (torch.stack(imgs) - 0.45) / 0.25, torch.stack(deps), K, sr.NEAR, sr.FAR


def test_host_params_and_inference_are_unchanged_by_the_branch():
    models = pytest.importorskip("mtl3d.models")
    x = torch.randn(2, 3, 32, 48)
    torch.manual_seed(0)
    plain = models.create_model("mtl", tasks=list(TASKS), num_classes=5, backbone="resnet18").eval()
    torch.manual_seed(0)
    host = models.create_model("mtl", tasks=list(TASKS), num_classes=5, backbone="resnet18")
    n_params = sum(p.numel() for p in host.parameters())
    cfg = RegularizerConfig(enabled=True)
    br = RegularizerBranch(cfg, host.feature_channels, host.out_channels, 0.5, 6.0)
    # A training forward of host + branch (gradients into the host) leaves the host's structure alone ...
    feats = host.encode(x)
    br.loss(br(feats, batch()["K"], (32, 48)), batch(), {})["total"].backward()
    assert sum(p.numel() for p in host.parameters()) == n_params
    assert set(host.state_dict()) == set(plain.state_dict())
    assert not any(isinstance(m, RegularizerBranch) for m in host.modules())
    # ... and inference needs nothing from the branch: same outputs as a model that never saw one.
    host.load_state_dict(plain.state_dict())
    host.eval()
    with torch.no_grad():
        a, b2 = plain(x), host(x)
    for t in TASKS:
        assert torch.equal(a[t], b2[t])


def test_branch_learns_geometry_from_fixed_features():
    """Fast: on fixed random features, expected-depth supervision drives the density to the GT depth."""
    H, W = 32, 48
    _, dep, K, near, far = synthrooms_depth(H, W)
    g = torch.Generator().manual_seed(0)
    n = len(dep)
    feats = [torch.randn(n, 16, H // 4, W // 4, generator=g), torch.randn(n, 32, H // 8, W // 8, generator=g)]
    torch.manual_seed(0)
    cfg = RegularizerConfig(enabled=True, render_stride=4, depth_supervision=1.0)
    br = RegularizerBranch(cfg, [16, 32], {"depth": 1}, near, far)
    opt = torch.optim.Adam(br.parameters(), lr=3e-3)
    b = {"depth": dep, "K": K}
    errs = []
    for _ in range(15):
        res = br.loss(br(feats, K, (H, W)), b, {})
        errs.append(res["reg/depth_exp"].item())
        res["total"].backward()
        opt.step()
        opt.zero_grad()
    print("expected-depth L1 per step:", [round(e, 3) for e in errs])
    assert errs[0] > 1.0  # metres: initial density is uniform, termination is near the camera
    assert errs[-1] < 0.4 * errs[0]


@pytest.mark.slow
def test_host_plus_branch_training_run_reduces_rendered_depth_error():
    """Host (mtl/resnet18) + branch trained jointly on a few SynthRooms views: the branch's rendered depth
    (decoded task and expected termination) gets much closer to the GT depth."""
    models = pytest.importorskip("mtl3d.models")
    from mtl3d.losses import multitask_loss

    H, W = 32, 48
    img, dep, K, near, far = synthrooms_depth(H, W)
    torch.manual_seed(0)
    host = models.create_model("mtl", tasks=["depth"], backbone="resnet18")
    cfg = RegularizerConfig(enabled=True, render_stride=4, depth_supervision=1.0)
    br = RegularizerBranch(cfg, host.feature_channels, host.out_channels, near, far)
    opt = torch.optim.Adam([*host.parameters(), *br.parameters()], lr=1e-3)
    b = {"depth": dep, "K": K}
    first = last = None
    for _ in range(40):
        feats = host.encode(img)
        loss = multitask_loss(host.decode(feats, (H, W)), b, {"depth": 1.0})["total"]
        res = br.loss(br(feats, K, (H, W)), b, {"depth": 1.0})
        vals = (res["reg/depth"].item(), res["reg/depth_exp"].item())
        first = first or vals
        last = vals
        (loss + res["total"]).backward()
        opt.step()
        opt.zero_grad()
    print("rendered depth L1 (decoded, expected) first/last:", first, last)
    assert last[0] < 0.6 * first[0]
    assert last[1] < 0.4 * first[1]


def test_flat_control_has_the_same_parameters_and_no_geometry():
    """The capacity control (mode=flat): same parameter count, same outputs, but no rendering: opacity
    is 1, the depth is the constant mid-depth sample, and the density head gets no gradient."""
    render, flat = branch(render_stride=4), branch(render_stride=4, mode="flat", stratified=False)
    assert sum(p.numel() for p in render.parameters()) == sum(p.numel() for p in flat.parameters())
    b = batch()
    feats = [f.requires_grad_() for f in features()]
    out = flat(feats, b["K"], (H, W))
    for t, c in TASKS.items():
        assert out["tasks"][t].shape == (B, c, H, W)
    assert torch.equal(out["opacity"], torch.ones_like(out["opacity"]))
    assert out["depth"].unique().numel() == 1  # one z for every ray: no depth estimate at all
    flat.loss(out, b, {})["total"].backward()
    no_grad = {n for n, p in flat.named_parameters() if p.grad is None or not p.grad.abs().sum()}
    assert no_grad == {"density_out.weight", "density_out.bias"}
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_render_tasks_renders_and_supervises_only_those(tmp_path):
    from mtl3d import config as C
    from mtl3d.engine.trainer import build_branch
    from mtl3d.models import create_model
    from tests.fakedata import make_fake_dataset

    cfg = C.from_dict({"regularizer": {"enabled": True, "render_tasks": ["depth"]}})
    C.validate(cfg)
    model = create_model("mtl", cfg.tasks, 5, "resnet18")
    cfg.data.root = str(make_fake_dataset(tmp_path))
    br = build_branch(cfg, model, 5)
    assert br.tasks == ["depth"] and list(br.decoders) == ["depth"]
    with pytest.raises(UserError, match="render_tasks names 'parts'"):
        C.validate(C.from_dict({"regularizer": {"render_tasks": ["parts"]}}))
