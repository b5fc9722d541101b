import pytest
import torch

from mtl3d.errors import UserError
from mtl3d.models import create_model, list_models

TASKS = ["semseg", "depth", "normals", "edges"]


def test_registry_lists_and_rejects_unknown():
    assert {"mtl", "stl"} <= set(list_models())
    with pytest.raises(UserError, match=r"unknown model 'mtll'; valid: .*mtl.*stl"):
        create_model("mtll", TASKS, 5)
    with pytest.raises(UserError, match="unknown backbone 'resnet17'.*did you mean"):
        create_model("mtl", TASKS, 5, backbone="resnet17")
    with pytest.raises(UserError, match="unknown task"):
        create_model("mtl", ["sem"], 5)


@pytest.mark.parametrize("name", ["mtl", "stl"])
def test_encode_decode_contract(name):
    m = create_model(name, TASKS, 7).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = m(x)
        again = m.decode(m.encode(x), (64, 96))
    shapes = {t: tuple(v.shape) for t, v in out.items()}
    assert shapes == {
        "semseg": (2, 7, 64, 96),
        "depth": (2, 1, 64, 96),
        "normals": (2, 3, 64, 96),
        "edges": (2, 1, 64, 96),
    }
    assert all(torch.equal(out[t], again[t]) for t in TASKS)
    assert m.feature_strides == [4, 8, 16, 32] and m.feature_channels == [64, 128, 256, 512]


def test_stl_is_one_network_per_task():
    mtl = create_model("mtl", TASKS, 7)
    stl = create_model("stl", TASKS, 7)
    enc = sum(p.numel() for p in mtl.encoder.parameters())
    n_mtl = sum(p.numel() for p in mtl.parameters())
    n_stl = sum(p.numel() for p in stl.parameters())
    assert n_stl == n_mtl + 3 * enc  # four encoders instead of one, same heads
    # a task's output does not depend on other tasks' parameters
    x = torch.randn(1, 3, 32, 32)
    stl.eval()
    before = stl(x)["depth"]
    with torch.no_grad():
        for p in stl.nets["semseg"].parameters():
            p.add_(1.0)
    assert torch.equal(stl(x)["depth"], before)


@pytest.mark.parametrize(
    "backbone, channels",
    [("hrnet_w18_small_v2", [18, 36, 72, 144]), ("convnext_tiny", [96, 192, 384, 768])],
)
def test_other_timm_backbones(backbone, channels):
    m = create_model("mtl", ["depth"], backbone=backbone).eval()
    assert m.feature_channels == channels and m.feature_strides == [4, 8, 16, 32]
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64))["depth"].shape == (1, 1, 64, 64)


def test_models_command_lists_every_model_with_one_line():
    from typer.testing import CliRunner

    from mtl3d.cli import app

    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == list_models()
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # every model has its summary
    res = CliRunner().invoke(app, ["models", "--options", "mtinet"])
    assert res.exit_code == 0 and "fpm_softmax = 'channel_groups'" in res.output


def test_mtl_aspp_head_is_libmtls_network():
    """LibMTL's NYUv2 network as mtl options: ResNet-50 at output stride 8, a DeepLab ASPP head per task."""
    m = create_model(
        "mtl", ["semseg", "depth", "normals"], 13, "resnet50", head="aspp", output_stride=8, head_channels=256
    ).eval()  # ASPP's image-pooling BN needs batch > 1 in training
    feats = m.encode(torch.zeros(1, 3, 72, 96))
    assert feats[-1].shape[-2:] == (9, 12)  # stride 8: the last stages are dilated, not downsampled
    out = m(torch.zeros(1, 3, 72, 96))
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "semseg": (13, 72, 96),
        "depth": (1, 72, 96),
        "normals": (3, 72, 96),
    }
    # encoder 23.51 M + 3 heads of 16.13 M (ASPP 2048->256 with rates 12/24/36, 3x3 256, classifier)
    assert sum(p.numel() for p in m.parameters()) == pytest.approx(71.89e6, rel=1e-3)
