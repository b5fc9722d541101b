"""PAD-Net and MTI-Net (survey-code hosts): deep supervision, odd sizes, FPM softmax, published sizes."""

import pytest
import torch

from mtl3d.errors import UserError
from mtl3d.models import AUX_KEY, create_model
from mtl3d.models.mtinet import FeaturePropagation, MTINet, fpm_attention
from mtl3d.models.padnet import PADNet
from mtl3d.tasks import get_task

NYUD = ["semseg", "depth", "normals", "edges"]
SMALL = {"backbone": "resnet18", "widths": [8, 8, 8, 16]}  # CPU-sized decoder on a wide backbone


def _sizes(maps):
    return [tuple(f.shape[-2:]) for f in maps]


def test_mtinet_initial_predictions_at_four_scales_in_training_only():
    m = create_model("mtinet", NYUD, 5, backbone="hrnet_w18_small_v2").train()
    x = torch.randn(2, 3, 64, 96)
    out = m(x)
    levels = _sizes(m.encode(x))
    assert levels == [(16, 24), (8, 12), (4, 6), (2, 3)]
    aux = out[AUX_KEY]
    assert list(aux) == ["scale0", "scale1", "scale2", "scale3"]
    for s, name in enumerate(aux):
        assert {t: tuple(p.shape) for t, p in aux[name].items()} == {
            t: (2, m.out_channels[t], *levels[s]) for t in NYUD
        }
    m.eval()
    with torch.no_grad():
        out = m(x)
    assert AUX_KEY not in out and {t: tuple(v.shape[-2:]) for t, v in out.items()} == dict.fromkeys(
        NYUD, (64, 96)
    )


def test_padnet_initial_predictions_in_training_only():
    m = create_model("padnet", NYUD, 5, backbone="hrnet_w18_small_v2", head_channels=8).train()
    x = torch.randn(2, 3, 64, 96)
    out = m(x)
    assert list(out[AUX_KEY]) == ["initial"]
    assert {t: tuple(p.shape) for t, p in out[AUX_KEY]["initial"].items()} == {
        t: (2, m.out_channels[t], 16, 24) for t in NYUD
    }
    assert tuple(out["semseg"].shape) == (2, 5, 64, 96)
    m.eval()
    with torch.no_grad():
        assert AUX_KEY not in m(x)


@pytest.mark.parametrize("name", ["mtinet", "padnet"])
def test_odd_branch_sizes(name):
    # 106×140 gives branches 27×35, 14×18, 7×9, 4×5 (as 425×560 gives 107×140 … 14×18): a finer branch
    # is not twice the next one, which the survey's scale_factor=2 upsampling cannot handle.
    extra = {"head_channels": 4} if name == "padnet" else {}
    m = create_model(name, NYUD, 5, **SMALL, **extra).train()
    x = torch.randn(2, 3, 106, 140)
    assert _sizes(m.encode(x)) == [(27, 35), (14, 18), (7, 9), (4, 5)]
    out = m(x)
    assert all(tuple(out[t].shape[-2:]) == (106, 140) for t in NYUD)
    if name == "mtinet":
        assert [tuple(out[AUX_KEY][f"scale{s}"]["depth"].shape[-2:]) for s in range(4)] == [
            (27, 35),
            (14, 18),
            (7, 9),
            (4, 5),
        ]


@pytest.mark.parametrize("name", ["mtinet", "padnet"])
def test_every_parameter_is_trained_and_features_are_the_encoders(name):
    m = create_model(name, ["depth", "edges"], **SMALL).train()
    # encode() gives the encoder's maps, not the adapter's: that is what the 3D-aware regularizer reads.
    assert m.feature_channels == [64, 128, 256, 512] and m.feature_strides == [4, 8, 16, 32]
    x = torch.randn(2, 3, 64, 64)
    assert [f.shape[1] for f in m.encode(x)] == [64, 128, 256, 512]
    out = m(x)
    loss = sum(v.mean() for k, v in out.items() if k != AUX_KEY)
    loss = loss + sum(p.mean() for preds in out[AUX_KEY].values() for p in preds.values())
    loss.backward()
    unused = [n for n, p in m.named_parameters() if p.grad is None]
    assert not unused  # no dead weight (DDP would need find_unused_parameters)


def test_widths_must_match_the_encoder_levels():
    with pytest.raises(UserError, match="widths must be 4 positive integers"):
        create_model("mtinet", ["depth"], backbone="resnet18", widths=[8, 8])


@pytest.mark.parametrize("mode", ["channel_groups", "tasks"])
def test_fpm_softmax_variants_run(mode):
    m = create_model("mtinet", ["depth", "normals"], fpm_softmax=mode, **SMALL).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64))["normals"].shape == (1, 3, 64, 64)


def test_fpm_softmax_unknown_value_names_the_valid_ones():
    with pytest.raises(UserError, match="unknown fpm_softmax 'task'; valid: channel_groups, tasks"):
        create_model("mtinet", ["depth"], fpm_softmax="task", **SMALL)
    with pytest.raises(UserError, match="valid: channel_groups, tasks"):
        fpm_attention(torch.zeros(1, 4, 1, 1), 2, "softmax")


def test_fpm_attention_normalises_groups_of_adjacent_channels():
    n, c = 3, 4
    logits = torch.randn(2, n * c, 5, 6)
    mask = fpm_attention(logits, n, "channel_groups")
    # Survey code: channels (k·N … k·N+N-1) form a group, whatever task they come from.
    torch.testing.assert_close(mask.view(2, c, n, 5, 6).sum(2), torch.ones(2, c, 5, 6))
    assert not torch.allclose(mask.view(2, n, c, 5, 6).sum(1), torch.ones(2, c, 5, 6))
    mask = fpm_attention(logits, n, "tasks")  # channel i of every task block competes
    torch.testing.assert_close(mask.view(2, n, c, 5, 6).sum(1), torch.ones(2, c, 5, 6))


def test_feature_propagation_applies_the_grouped_softmax():
    # Planted: all-ones task features and attention logits that favour the first channel of every
    # group of N=2 adjacent channels; what reaches the reduction block is then the mask itself.
    tasks, c = ["depth", "normals"], 4
    fpm = FeaturePropagation(tasks, c).eval()
    planted = torch.zeros(1, 2 * c, 3, 3)
    planted[:, 0::2] = 10.0

    class Planted(torch.nn.Module):
        def forward(self, x):
            return planted.expand(x.shape[0], -1, -1, -1)

    fpm.attention_logits = Planted()
    seen = []
    fpm.reduce.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0]))
    with torch.no_grad():
        fpm({t: torch.ones(1, c, 3, 3) for t in tasks})
    x = seen[0]
    torch.testing.assert_close(x.view(1, c, 2, 3, 3).sum(2), torch.ones(1, c, 3, 3))
    assert (x[:, 0::2] > 0.99).all() and (x[:, 1::2] < 0.01).all()


def _out_channels(dataset):
    if dataset == "NYUD":
        return {t: get_task(t).out_channels(40) for t in NYUD}
    classes = {"semseg": 21, "human_parts": 7}
    pascal = ["semseg", "human_parts", "saliency", "normals", "edges"]
    return {t: get_task(t).out_channels(classes.get(t)) for t in pascal}


@pytest.mark.parametrize(
    "cls, backbone, dataset, millions",
    [
        (PADNet, "hrnet_w18_small_v2", "NYUD", 19.52),
        (PADNet, "hrnet_w18_small_v2", "PASCAL", 29.31),
        (MTINet, "hrnet_w18_small_v2", "NYUD", 17.96),
        (MTINet, "hrnet_w18_small_v2", "PASCAL", 24.49),
        (MTINet, "hrnet_w48", "NYUD", 165.4),
        (MTINet, "hrnet_w48", "PASCAL", 211.9),
    ],
)
def test_parameter_count_of_published_configurations(cls, backbone, dataset, millions):
    # Counts worked out by hand from the survey code's structure ([CALC], docs/models.md); the meta
    # device skips allocation and initialisation, so even W48 builds in well under a second.
    with torch.device("meta"):
        m = cls(_out_channels(dataset), backbone=backbone)
    # The references are rounded to the digits shown (29.305M is printed 29.31): compare to 0.1%.
    assert sum(p.numel() for p in m.parameters()) / 1e6 == pytest.approx(millions, rel=1e-3)
    assert round(sum(p.numel() for p in m.encoder.parameters()) / 1e6, 2) == (
        3.86 if backbone == "hrnet_w18_small_v2" else 65.33
    )


def test_hrnet_encoder_at_odd_sizes():
    """timm fuses HRNet branches by nearest Upsample(scale_factor=2**k); backbones.py resizes to the
    finer branch's size (survey / MMSeg HRNetV2), which 425×560 (107×140 above 54×70) needs."""
    enc = create_model("mtl", ["depth"], backbone="hrnet_w18_small_v2").encoder.eval()
    with torch.no_grad():
        assert _sizes(enc(torch.randn(1, 3, 106, 140))) == [(27, 35), (14, 18), (7, 9), (4, 5)]


@pytest.mark.parametrize(
    "cls, tasks, millions",
    [
        # The survey's NYUD configurations: S,D main; "+edges_normals" adds N,E as auxiliary-only tasks
        # (counted by hand from the survey code, [CALC]; docs/models.md).
        (PADNet, ["semseg", "depth"], 7.02),
        (PADNet, NYUD, 12.16),
        (MTINet, ["semseg", "depth"], 8.58),
        (MTINet, NYUD, 14.84),
    ],
)
def test_parameter_count_of_survey_nyud_configurations(cls, tasks, millions):
    with torch.device("meta"):
        m = cls(
            {t: get_task(t).out_channels(40) for t in tasks},
            backbone="hrnet_w18_small_v2",
            main_tasks=["semseg", "depth"],
        )
    assert sum(p.numel() for p in m.parameters()) / 1e6 == pytest.approx(millions, rel=2e-3)


@pytest.mark.parametrize("name", ["padnet", "mtinet"])
def test_auxiliary_only_tasks(name):
    """main_tasks=[S, D]: N, E are predicted only as deep supervision; inference returns S, D."""
    m = create_model(name, NYUD, 5, main_tasks=["semseg", "depth"], **SMALL).train()
    out = m(torch.randn(2, 3, 64, 96))
    assert set(out) == {"semseg", "depth", AUX_KEY}
    assert all(set(per_task) == set(NYUD) for per_task in out[AUX_KEY].values())
    m.eval()
    with torch.no_grad():
        assert set(m(torch.randn(1, 3, 64, 96))) == {"semseg", "depth"}
    assert m.main_tasks == ["semseg", "depth"] and m.tasks == NYUD
    with pytest.raises(UserError, match="main_tasks must be a non-empty subset"):
        create_model(name, NYUD, 5, main_tasks=["saliency"], **SMALL)
