import pytest

from mtl3d import config as C
from mtl3d.errors import UserError


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: stl\noptim:\n  lr: 1\ntasks: [semseg, depth]\n")
    cfg = C.load(p, {"optim": {"name": "sgd"}, "seed": 3})
    assert cfg.model.name == "stl" and cfg.model.backbone == "resnet18"
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.optim.name == "sgd"
    assert cfg.tasks == ["semseg", "depth"] and cfg.seed == 3


def test_yaml11_exponent_without_dot_is_a_number():
    # `--set optim.lr=2e-3`: PyYAML (YAML 1.1) reads it as the string '2e-3'
    assert C.load(None, {"optim": {"lr": "2e-3"}}).optim.lr == 0.002


def test_comma_strings_are_lists():
    cfg = C.load(None, {"regularizer": {"plane_res": "12, 16", "render_tasks": "semseg,depth"}})
    assert cfg.regularizer.plane_res == [12, 16] and cfg.regularizer.render_tasks == ["semseg", "depth"]
    with pytest.raises(UserError, match="plane_res"):
        C.load(None, {"regularizer": {"plane_res": "12,x"}})


def test_roundtrip(tmp_path):
    cfg = C.load(None, {"regularizer": {"enabled": True, "task_alpha": {"depth": 2.0}}, "tasks": ["depth"]})
    C.save(cfg, tmp_path / "r.yaml")
    assert C.load(tmp_path / "r.yaml") == cfg


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"optim": {"lrr": 1}}, "'optim.lrr'"),
        ({"iters": "many"}, "'iters' must be an integer"),
        ({"regularizer": {"enabled": "yes"}}, "'regularizer.enabled'"),
        ({"tasks": ["semseg", "dpeth"]}, "unknown task 'dpeth'"),
        ({"task_weights": {"edges": 2.0}, "tasks": ["depth"]}, "task 'edges'"),
        ({"regularizer": {"plane_agg": "max"}}, "plane_agg"),
        ({"optim": {"lr": "fast"}}, "'optim.lr' must be a number"),
    ],
)
def test_bad_config_names_the_key(data, needle):
    with pytest.raises(UserError, match=".*") as e:
        C.from_dict(data)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        C.load(p)
    with pytest.raises(UserError, match="not found"):
        C.load(tmp_path / "nope.yaml")


def test_grad_accum_and_sync_bn_validate():
    from mtl3d import config as C
    from mtl3d.errors import UserError

    cfg = C.from_dict({"grad_accum": 4, "sync_bn": True})
    C.validate(cfg)
    assert cfg.grad_accum == 4 and cfg.sync_bn is True
    with pytest.raises(UserError, match="'grad_accum' must be >= 1, got 0"):
        C.validate(C.from_dict({"grad_accum": 0}))


def test_set_mapping_merges_with_earlier_options():
    from mtl3d.cli import _load_config

    cfg = _load_config(
        None, ["regularizer={cross_view: true, cross_view_alpha: 0.3}"], {"regularizer.enabled": True}
    )
    assert cfg.regularizer.enabled and cfg.regularizer.cross_view and cfg.regularizer.cross_view_alpha == 0.3


def test_one_set_value_may_hold_several_overrides():
    """A study file's variant has one `set` key; 'a=1; b=2' applies both, in order."""
    from mtl3d.cli import _load_config

    cfg = _load_config(None, ["data.train_fraction=0.1; regularizer.mode=flat", "eval_every=5;"], {})
    assert (cfg.data.train_fraction, cfg.regularizer.mode, cfg.eval_every) == (0.1, "flat", 5)
    cfg = _load_config(None, ["eval_every=5; eval_every=7"], {})
    assert cfg.eval_every == 7
