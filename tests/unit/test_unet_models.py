"""3-ways PAD-Net and DenseMTL (shared U-Net decoder): shapes, deep supervision, xTAM, sizes."""

import pytest
import torch

from mtl3d.errors import UserError
from mtl3d.models import AUX_KEY, create_model
from mtl3d.models.densemtl import MTEB, DirectionalXTAM
from mtl3d.models.padnet3way import ThreeWayPADNet

TASKS = ["semseg", "depth", "normals", "edges"]
SMALL = {"decoder_channels": [8, 16, 16, 32, 32], "aspp_channels": 16}
MODELS = ["padnet3way", "densemtl"]


def small(name, tasks=TASKS, **options):
    torch.manual_seed(0)
    return create_model(name, tasks, 5, "resnet18", **{**SMALL, **options})


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size", [(50, 70), (53, 75)])
def test_full_size_outputs_and_side_output_in_training_only(name, size):
    m = small(name)
    x = torch.randn(2, 3, *size)
    expected = {"semseg": 5, "depth": 1, "normals": 3, "edges": 1}
    out = m(x)  # training mode
    assert set(out) == {*TASKS, AUX_KEY} and list(out[AUX_KEY]) == ["side_1/2"]
    for preds in (out, out[AUX_KEY]["side_1/2"]):
        assert {t: tuple(preds[t].shape) for t in TASKS} == {t: (2, k, *size) for t, k in expected.items()}
    m.eval()
    with torch.no_grad():
        out = m(x)
        again = m.decode(m.encode(x), size)
    assert set(out) == set(TASKS)
    assert all(torch.equal(out[t], again[t]) for t in TASKS)


@pytest.mark.parametrize("name", MODELS)
def test_encoder_contract(name):
    m = small(name, ["depth"])
    assert m.feature_channels == [64, 64, 128, 256, 512] and m.feature_strides == [2, 4, 8, 16, 16]
    feats = m.encode(torch.randn(1, 3, 53, 75))
    assert [tuple(f.shape[-2:]) for f in feats] == [(27, 38), (14, 19), (7, 10), (4, 5), (4, 5)]
    enc = {id(p) for p in m.encoder.parameters()}
    assert enc == {id(p) for n, p in m.named_parameters() if n.startswith("encoder.")}
    assert (m.final_weight, m.aux_weight) == (0.5, 0.5)  # released loss: mean over scales {0, 1}


def _xtams(model):
    return [x for x in model.modules() if isinstance(x, DirectionalXTAM)]


@pytest.mark.parametrize("replacement", ["zeros", "random"])
def test_densemtl_at_init_equals_its_self_attention_path(replacement):
    """α = 0 at initialisation: the correlation-guided branch contributes exactly nothing."""
    m = small("densemtl").eval()
    x = torch.randn(2, 3, 53, 75)
    xtams = _xtams(m)
    assert len(xtams) == 12 and all(torch.count_nonzero(a.alpha) == 0 for a in xtams)
    with torch.no_grad():
        ref = m(x)
        for a in xtams:
            make = torch.zeros_like if replacement == "zeros" else torch.randn_like
            a.xtask = lambda target, source, make=make: make(target)  # instance attribute shadows the method
        cut = m(x)
        assert all(torch.equal(ref[t], cut[t]) for t in TASKS)
        for a in xtams:  # not vacuous: with α ≠ 0 the real branch changes the outputs
            del a.xtask
            a.alpha.fill_(0.5)
        assert not torch.equal(m(x)["depth"], ref["depth"])


def test_alpha_learns_from_the_first_step():
    m = small("densemtl", ["semseg", "depth"])
    out = m(torch.randn(2, 3, 50, 70))
    (out["semseg"].mean() + out["depth"].mean()).backward()
    assert all(a.alpha.grad is not None and a.alpha.grad.abs().sum() > 0 for a in _xtams(m))


def test_xtam_attention_rows_sum_to_one():
    m = small("densemtl").eval()
    seen = []
    for a in _xtams(m):
        original = a.correlation

        def record(t, s, original=original):
            corr = original(t, s)
            seen.append((corr, t.shape[-2:], s.shape[-2:]))
            return corr

        a.correlation = record
    with torch.no_grad():
        m(torch.randn(2, 3, 53, 75))
    assert len(seen) == 12
    for corr, tsize, ssize in seen:
        # scale-1 map 27×38, s = 4: nearest keeps 6×9 target tokens, max-pooling 6×9 source tokens
        assert tuple(tsize) == tuple(ssize) == (6, 9) and corr.shape == (2, 54, 54)
        torch.testing.assert_close(corr.sum(-1), torch.ones(2, 54))


def test_xtam_uniform_attention_averages_the_values():
    """Planted: a key projection that outputs zeros makes every attention row uniform."""
    torch.manual_seed(0)
    a = DirectionalXTAM(4, downscale=2).eval()
    with torch.no_grad():
        a.key[0].weight.zero_()
        a.value[0].weight.copy_(torch.eye(4)[:, :, None, None])  # V = relu(source) (BN is identity in eval)
        target, source = torch.randn(1, 4, 7, 9), torch.randn(1, 4, 7, 9)
        out = a.xtask(target, source)
    pooled = torch.nn.functional.max_pool2d(source, 2)  # 3×4 source tokens
    mean = pooled.relu().mean(dim=(2, 3), keepdim=True)
    assert out.shape == target.shape
    torch.testing.assert_close(out, mean.expand_as(out))


@pytest.mark.parametrize("fusion", ["add", "concat", "prod"])
def test_fusion_variants_train(fusion):
    m = small("densemtl", ["semseg", "depth", "normals"], fusion=fusion)
    out = m(torch.randn(2, 3, 53, 75))
    loss = sum(v.mean() for k, v in out.items() if k != AUX_KEY)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.block.parameters() if p.grad is not None)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="unknown fusion 'sum'; valid: add, concat, prod"):
        small("densemtl", fusion="sum")
    with pytest.raises(UserError, match="mteb_scale must be in 1..4"):
        small("densemtl", mteb_scale=0)
    with pytest.raises(UserError, match="one width per encoder level"):
        small("padnet3way", decoder_channels=[8, 16, 16, 32])
    with pytest.raises(UserError, match="xtam_downscale must be >= 1"):
        small("densemtl", xtam_downscale=0)


@pytest.mark.parametrize("scale, downscale, expected", [(2, None, 2), (3, None, 1), (1, 2, 2)])
def test_mteb_placement_and_downscale(scale, downscale, expected):
    m = small("densemtl", ["semseg", "depth"], mteb_scale=scale, xtam_downscale=downscale)
    assert m.block_scale == scale and all(a.downscale == expected for a in _xtams(m))
    out = m(torch.randn(2, 3, 53, 75))
    assert out["depth"].shape == (2, 1, 53, 75)


def test_single_task_runs_without_a_cross_task_block():
    for name in MODELS:
        m = small(name, ["depth"]).eval()
        with torch.no_grad():
            assert m(torch.randn(1, 3, 50, 70))["depth"].shape == (1, 1, 50, 70)


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_published_three_way_padnet_size():
    """ResNet-101 (OS16), NYUD S 40 / D / N / E as released: E is 2-class softmax (K = 2).

    Counted by hand from DenseMTL's released code ([CALC], docs/models.md): S-D 87.2M, S-D-N 110.5M,
    S-D-N-E 134.3M = encoder 42.50M + 22.06M per-task decoder (+ side convs) + 0.295M per ordered pair
    (PAD-Net SA with 128 channels).
    """
    m = ThreeWayPADNet({"semseg": 40, "depth": 1, "normals": 3, "edges": 2}, backbone="resnet101")
    assert _count(m.encoder) == 42_500_160
    decoder = 22_061_440  # ASPP 15_535_104 + ConvELU blocks 6_526_336
    sides = {t: 129 * k + 65 * k for t, k in m.out_channels.items()}  # Conv1×1 at 128 and 64 channels
    assert {t: _count(d) for t, d in m.decoders.items()} == {t: decoder + s for t, s in sides.items()}
    assert _count(m.block) == 12 * 294_912
    total = _count(m)
    assert total == 134_293_788
    assert abs(total - 134.3e6) < 0.05e6
    sdn = total - _count(m.decoders["edges"]) - 6 * 294_912
    sd = sdn - _count(m.decoders["normals"]) - 4 * 294_912
    assert abs(sdn - 110.5e6) < 0.05e6 and abs(sd - 87.2e6) < 0.05e6
    # our edges task is one logit: 194 parameters fewer than the published 2-class head
    ours = create_model("padnet3way", TASKS, 40, "resnet101")
    assert _count(ours) == total - 194


@pytest.mark.parametrize(
    "tasks, channels, downscale, millions",
    # DenseMTL Table 3 (#M added by one mTEB): c = 256 at scales 4/3, c = 128 at scales 2/1
    [(2, 128, 4, 0.77), (2, 256, 1, 3.09), (3, 128, 4, 2.32), (3, 256, 1, 9.26)],
)
def test_mteb_size_matches_the_paper(tasks, channels, downscale, millions):
    block = MTEB(TASKS[:tasks], channels, downscale)
    assert round(_count(block) / 1e6, 2) == millions
