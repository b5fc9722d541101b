"""`mtl3d train --model NAME` with nothing else works for every registered model (its own defaults)."""

import pytest
from typer.testing import CliRunner

from mtl3d import config as C
from mtl3d.cli import app
from mtl3d.data.synthrooms import prepare
from mtl3d.models import list_models
from mtl3d.models.registry import default_backbone


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    root = tmp_path_factory.mktemp("rooms")
    prepare(root, scenes=4, views=2, height=64, width=96, seed=2, progress=False)
    return root


@pytest.mark.parametrize("name", list_models())
def test_train_with_only_the_model_name(tmp_path, rooms, name):
    # only what makes it tiny (data location, one step of two images); model, backbone, genotype: defaults
    args = ["train", "--model", name, "--out", str(tmp_path / "run"), "--data-root", str(rooms)]
    res = CliRunner().invoke(app, [*args, "--iters", "1", "--batch-size", "2", "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    cfg = C.load(tmp_path / "run" / "config.yaml")
    assert cfg.model.backbone == default_backbone(name)  # resolved into the run's config
    assert (tmp_path / "run" / "done").is_file()


def test_models_command_lists_each_default():
    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0
    assert "[default backbone: vit_tiny_patch16_224]" in res.output.split("invpt", 1)[1].splitlines()[0]
    assert default_backbone("padnet") == default_backbone("mtinet") == "hrnet_w18_small_v2"
