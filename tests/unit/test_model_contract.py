"""Invariants every registered multi-task model keeps (the encode/decode + deep-supervision contract).

Each model is built small (resnet18 with narrow decoders) so the whole file runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtl3d import config as C
from mtl3d.engine.emulate import TINY
from mtl3d.engine.inference import count_flops, count_params, inference_cost
from mtl3d.engine.optim import build_optimizer, is_backbone_param, lr_lambda
from mtl3d.errors import UserError
from mtl3d.losses import multitask_loss
from mtl3d.models import AUX_KEY, build_model, create_model, list_models, split_outputs
from mtl3d.models.registry import model_options

TASKS = ["semseg", "depth", "normals", "edges"]
NUM_CLASSES = 5
# Small options per registered model: the same tiny models the CUDA-path emulation builds (ATRC with
# its genotype among the options; the search supergraph is not a registered name).
SMALL: dict[str, dict] = {
    name: {**spec["options"], **({"genotype": spec["genotype"]} if "genotype" in spec else {})}
    for name, spec in TINY.items()
    if "name" not in spec
}
# Backbone per model where resnet18 does not fit (InvPT needs a ViT: 4 blocks of ViT-Ti via `taps`).
BACKBONE = {name: spec["backbone"] for name, spec in TINY.items() if "backbone" in spec}
NEW = ["padnet", "mtinet", "padnet3way", "densemtl", "atrc", "invpt"]


def small(name: str, tasks=TASKS) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, tasks, NUM_CLASSES, backbone=BACKBONE.get(name, "resnet18"), **SMALL[name])


def batch_for(size: tuple[int, int], b: int = 2) -> dict:
    g = torch.Generator().manual_seed(1)
    h, w = size
    n = torch.nn.functional.normalize(torch.randn(b, 3, h, w, generator=g), dim=1)
    K = torch.tensor([[w * 1.0, 0, w / 2], [0, w * 1.0, h / 2], [0, 0, 1]]).expand(b, 3, 3)
    return {
        "image": torch.randn(b, 3, h, w, generator=g),
        "semseg": torch.randint(0, NUM_CLASSES, (b, h, w), generator=g),
        "depth": torch.rand(b, 1, h, w, generator=g) * 4 + 0.5,
        "normals": n,
        "edges": (torch.rand(b, 1, h, w, generator=g) > 0.9).float(),
        "K": K.clone(),
    }


def test_every_model_is_registered_and_small_options_are_valid():
    assert set(SMALL) == set(list_models())
    for name, opts in SMALL.items():
        assert set(opts) <= set(model_options(name)), name


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("size", [(53, 75), (64, 96)])
def test_full_size_outputs_at_odd_sizes_and_no_aux_in_eval(name, size):
    m = small(name).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, *size))
    assert AUX_KEY not in out
    assert {t: tuple(v.shape) for t, v in out.items()} == {
        "semseg": (1, NUM_CLASSES, *size),
        "depth": (1, 1, *size),
        "normals": (1, 3, *size),
        "edges": (1, 1, *size),
    }


@pytest.mark.parametrize("name", sorted(SMALL))
def test_gradients_reach_every_parameter(name):
    """The full training loss (final + deep supervision) reaches every parameter of the model."""
    m = small(name).train()
    # Zero-initialised gates block the gradient of what they gate at step 0 (timm's zero_init_last
    # BN in residual blocks, DenseMTL's α): give every norm layer and every all-zero tensor random
    # values first, so that the test asks whether the graph reaches a parameter, not whether its
    # first gradient happens to vanish.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(mod.bias.shape, generator=g) - 0.5)
        for p in m.parameters():
            if not p.abs().sum() > 0:
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.1)
    batch = batch_for((53, 75))
    preds, aux = split_outputs(m(batch["image"]))
    loss = multitask_loss(
        preds,
        batch,
        dict.fromkeys(TASKS, 1.0),
        aux=aux,
        final_weight=m.final_weight,
        aux_weight=m.aux_weight,
        aux_loss=lambda *a: m.aux_loss(*a, 0.95),  # ATRC's label heads: their own label spaces
    )["total"]
    loss.backward()
    unreached = [n for n, p in m.named_parameters() if p.grad is None]
    assert not unreached, unreached
    # Squeeze-excitation gates of narrow layers have 1-2 hidden ReLU units (c // 16), which can be
    # dead at initialisation, exactly as in the published design; every other gradient is non-zero.
    zero = [n for n, p in m.named_parameters() if not p.grad.abs().sum() > 0 and ".se." not in n]
    assert not zero, zero


@pytest.mark.parametrize("name", NEW)
def test_deep_supervision_only_in_training(name):
    m = small(name).train()
    out = m(torch.randn(2, 3, 53, 75))
    preds, aux = split_outputs(out)
    assert set(preds) == set(TASKS) and aux, "these models are deeply supervised in training"
    for per_task in aux.values():
        assert set(per_task) <= set(TASKS)
    m.eval()
    with torch.no_grad():
        assert AUX_KEY not in m(torch.randn(1, 3, 53, 75))


@pytest.mark.parametrize("name", [n for n in sorted(SMALL) if n != "stl"])
def test_regularizer_leaves_inference_unchanged(name, tmp_path):
    """± regularizer: same weights -> identical eval outputs, params and FLOPs (the branch is separate)."""
    from mtl3d.regularizer.branch import RegularizerBranch

    cfg = C.load(
        None,
        {
            "model": {
                "name": name,
                "options": {k: v for k, v in SMALL[name].items() if k != "head_channels"},
            },
            "regularizer": {"enabled": True, "camera": "ortho", "near": 0.5, "far": 5.0},
        },
    )
    host = small(name)
    channels = {"semseg": NUM_CLASSES, "depth": 1, "normals": 3, "edges": 1}
    branch = RegularizerBranch(cfg.regularizer, list(host.feature_channels), channels, 0.5, 5.0)
    batch = batch_for((48, 64))
    # one training step of host + branch, so the weights are not at initialisation
    opt = torch.optim.SGD(list(host.parameters()) + list(branch.parameters()), lr=1e-3)
    host.train()
    feats = host.encode(batch["image"])
    preds, aux = split_outputs(host.decode(feats, (48, 64)))
    loss = multitask_loss(
        preds, batch, dict.fromkeys(TASKS, 1.0), aux=aux, aux_loss=lambda *a: host.aux_loss(*a, 0.95)
    )["total"]
    rendered = branch(feats, batch["K"], (48, 64))
    reg = branch.loss(rendered, batch, dict.fromkeys(TASKS, 1.0))["total"]
    (loss + reg).backward()
    assert any(p.grad is not None for p in branch.parameters())
    opt.step()
    plain = small(name)  # a fresh host that never saw a branch: the branch added nothing to the host
    plain.load_state_dict(host.state_dict(), strict=True)
    plain.eval()
    host.eval()
    with torch.no_grad():
        a, b = host(batch["image"]), plain(batch["image"])
    assert all(torch.equal(a[t], b[t]) for t in TASKS)
    assert count_params(host) == count_params(plain)
    assert count_flops(host, (48, 64), torch.device("cpu")) == count_flops(
        plain, (48, 64), torch.device("cpu")
    )
    assert branch.encoder is not None and list(host.feature_channels)  # what the branch reads


def test_flops_count_only_inference():
    """Deep-supervision heads that only training runs are not in the inference FLOPs."""
    m = small("mtinet")
    f_eval = count_flops(m, (64, 96), torch.device("cpu"))
    from torch.utils.flop_counter import FlopCounterMode

    m.train()
    with torch.no_grad(), FlopCounterMode(display=False) as c:
        m(torch.zeros(1, 3, 64, 96))
    assert c.get_total_flops() > f_eval  # training adds the initial-prediction classifiers
    n_inf, _ = inference_cost(m, (64, 96), torch.device("cpu"))
    classifiers = sum(
        p.numel() for head in m.propagation.initial for t in head for p in head[t].classifier.parameters()
    )
    assert n_inf == count_params(m) - classifiers  # they are not inference parameters either
    assert inference_cost(small("mtl"), (64, 96), torch.device("cpu"))[0] == count_params(small("mtl"))


def test_deep_supervision_loss_weights():
    """total = final_weight·Σ w_t L_t + aux_weight·Σ_aux Σ w_t L_t, and the log keys name each term."""
    batch = batch_for((8, 8), 1)
    preds = {"depth": torch.zeros(1, 1, 8, 8)}
    aux = {"s1": {"depth": torch.ones(1, 1, 4, 4)}, "s2": {"depth": torch.full((1, 1, 2, 2), 2.0)}}
    out = multitask_loss(preds, batch, {"depth": 3.0}, aux=aux, final_weight=0.5, aux_weight=0.25)
    d = batch["depth"]
    l0, l1, l2 = d.mean(), (d - 1).abs().mean(), (d - 2).abs().mean()
    assert torch.allclose(out["depth"], l0) and torch.allclose(out["ds/s1/depth"], l1)
    assert torch.allclose(out["total"], 3.0 * (0.5 * l0 + 0.25 * (l1 + l2)))


def test_model_options_are_checked():
    with pytest.raises(UserError, match=r"model 'mtinet' has no option 'widht'; valid: .*widths"):
        C.load(None, {"model": {"name": "mtinet", "options": {"widht": [1]}}})
    with pytest.raises(UserError, match=r"model.options.widths"):
        C.load(None, {"model": {"name": "mtinet", "options": {"widths": "wide"}}})
    with pytest.raises(UserError, match="unknown model 'mtinett'"):
        C.load(None, {"model": {"name": "mtinett"}})


def test_build_model_applies_loss_scheme_overrides():

    cfg = C.load(
        None,
        {
            "model": {
                "name": "padnet3way",
                "options": SMALL["padnet3way"],
                "final_weight": 1.0,
                "aux_weight": 1.0,
            }
        },
    )
    m = build_model(cfg.model, TASKS, NUM_CLASSES)
    assert (m.final_weight, m.aux_weight) == (1.0, 1.0)
    default = build_model(
        C.load(None, {"model": {"name": "padnet3way", "options": SMALL["padnet3way"]}}).model,
        TASKS,
        NUM_CLASSES,
    )
    assert (default.final_weight, default.aux_weight) == (0.5, 0.5)  # DenseMTL code: mean over 2 scales


def test_parameter_groups_backbone_and_heads():

    cfg = C.load(
        None,
        {
            "model": {"name": "mtinet", "options": SMALL["mtinet"]},
            "optim": {"name": "sgd", "lr": 0.01, "backbone_lr": 0.001},
        },
    )
    m = small("mtinet")
    opt = build_optimizer(cfg.optim, m, None)
    heads, backbone = opt.param_groups
    assert (heads["lr"], backbone["lr"]) == (0.01, 0.001)
    n_backbone = sum(p.numel() for n, p in m.named_parameters() if n.startswith("encoder."))
    assert sum(p.numel() for p in backbone["params"]) == n_backbone > 0
    assert sum(p.numel() for p in heads["params"]) == count_params(m) - n_backbone
    assert is_backbone_param("nets.depth.encoder.body.conv1.weight") and not is_backbone_param("heads.x")
    adam = build_optimizer(C.load(None, {"optim": {"betas": [0.9, 0.98]}}).optim, m, None)
    assert adam.param_groups[0]["betas"] == (0.9, 0.98) and adam.param_groups[1]["lr"] == 1e-3


def test_schedules():
    o = C.load(None, {"optim": {"schedule": "step", "milestones": [30, 40], "gamma": 0.1}}).optim
    f = lr_lambda(o, 50, 7)
    assert [f(0), f(29), f(30), f(39), f(40)] == [
        1.0,
        1.0,
        pytest.approx(0.1),
        pytest.approx(0.1),
        pytest.approx(0.01),
    ]
    o = C.load(None, {"optim": {"schedule": "poly", "poly_power": 1.0}}).optim
    f = lr_lambda(o, 100, 10)
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5) and f(100) == 0.0
    o = C.load(None, {"optim": {"schedule": "poly", "poly_power": 1.0, "schedule_unit": "epoch"}}).optim
    f = lr_lambda(o, 100, 10)  # 10 epochs of 10 steps: constant within an epoch
    assert f(0) == f(9) == 1.0 and f(10) == f(19) == pytest.approx(0.9) and f(95) == pytest.approx(0.1)
    assert lr_lambda(C.load(None, {"optim": {"schedule": "constant"}}).optim, 10, 1)(9) == 1.0
    for bad, msg in [
        ({"schedule": "cosine"}, "optim.schedule"),
        ({"schedule": "step"}, "milestones"),
        ({"betas": [0.9]}, "optim.betas"),
        ({"schedule_unit": "day"}, "schedule_unit"),
    ]:
        with pytest.raises(UserError, match=msg):
            C.load(None, {"optim": bad})


RECIPES = sorted((Path(__file__).resolve().parents[2] / "config" / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipes_load_and_name_a_registered_model(path):
    cfg = C.load(path)  # unknown keys, bad values and unknown model options are errors
    assert cfg.model.name in list_models()
    if path.parent.name == "synthrooms":  # the default study's recipes build at the study's setting
        m = build_model(cfg.model, TASKS, NUM_CLASSES)
        with torch.no_grad():
            assert m.eval()(torch.zeros(1, 3, 96, 128))["depth"].shape == (1, 1, 96, 128)


def test_study_recipes_exist():
    import yaml

    root = Path(__file__).resolve().parents[2]
    for study in ("params.yaml", "config/smoke.yaml"):
        for v in yaml.safe_load((root / study).read_text())["variants"]:
            if "config" in v["args"]:
                assert (root / v["args"]["config"]).is_file(), (study, v)
