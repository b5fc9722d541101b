"""Δm (survey Eq. 10) on hand examples."""

from __future__ import annotations

import pytest

from mtl3d.errors import UserError
from mtl3d.metrics import delta_m, per_task_gain, select_delta_metrics
from mtl3d.tasks import TASKS


def test_hand_example_both_worse() -> None:
    # semseg 40 vs 50 (higher better): -20 %; depth 0.6 vs 0.5 (lower better): -20 % -> Δm = -20 %
    mt = {"semseg": 40.0, "depth": 0.6}
    st = {"semseg": 50.0, "depth": 0.5}
    gains = per_task_gain(mt, st, {"semseg": False, "depth": True})
    assert gains == pytest.approx({"semseg": -20.0, "depth": -20.0})
    assert delta_m(mt, st, {"semseg": False, "depth": True}) == pytest.approx(-20.0)
    assert delta_m(mt, st) == pytest.approx(-20.0)  # directions from TASKS


def test_mixed_signs_and_all_tasks() -> None:
    # semseg +10 %, depth rmse 0.45 vs 0.5 -> +10 %, normals mean 22 vs 20 -> -10 %, edges 77 vs 70 -> +10 %
    mt = {"semseg": 55.0, "depth": 0.45, "normals": 22.0, "edges": 77.0}
    st = {"semseg": 50.0, "depth": 0.5, "normals": 20.0, "edges": 70.0}
    gains = per_task_gain(mt, st)
    assert gains == pytest.approx({"semseg": 10.0, "depth": 10.0, "normals": -10.0, "edges": 10.0})
    assert delta_m(mt, st) == pytest.approx(5.0)


def test_tasks_directions() -> None:
    expected = {
        "semseg": ("mIoU", False),
        "depth": ("rmse", True),
        "normals": ("mean", True),
        "edges": ("odsF", False),
        "human_parts": ("mIoU", False),
        "saliency": ("mIoU", False),  # the survey's Δm (the only published Δm code)
    }
    assert {t: (s.delta_metric, s.lower_is_better) for t, s in TASKS.items()} == expected


def test_missing_or_bad_stl_reference() -> None:
    missing = r"missing single-task \(STL\) result for task 'depth' \(metric 'rmse'\)"
    with pytest.raises(UserError, match=missing):
        delta_m({"semseg": 40.0, "depth": 0.6}, {"semseg": 50.0})
    with pytest.raises(UserError, match="non-zero"):
        delta_m({"semseg": 40.0}, {"semseg": 0.0})
    with pytest.raises(UserError, match="direction"):
        delta_m({"mystery": 1.0}, {"mystery": 2.0})
    with pytest.raises(UserError):
        delta_m({}, {})


def test_select_delta_metrics() -> None:
    metrics = {"semseg": {"mIoU": 41.0, "pixel_acc": 70.0}, "depth": {"rmse": 0.55, "abs_rel": 0.1}}
    assert select_delta_metrics(metrics) == {"semseg": 41.0, "depth": 0.55}
    with pytest.raises(UserError, match="stl/edges: task 'edges' has no 'odsF'"):
        select_delta_metrics({"edges": {"AP": 70.0}}, what="stl/edges")


def test_runs_vs_constants_compares_in_each_metrics_direction() -> None:
    import pandas as pd

    from mtl3d.metrics.baselines import runs_vs_constants

    rows = [
        {"dataset": "d", "variant": "mtl", "seed": 0, "task": "semseg", "metric": "mIoU", "value": 20.0},
        {"dataset": "d", "variant": "mtl", "seed": 1, "task": "semseg", "metric": "mIoU", "value": 3.0},
        {"dataset": "d", "variant": "mtl", "seed": 0, "task": "depth", "metric": "rmse", "value": 0.9},
        {"dataset": "d", "variant": "mtl", "seed": 0, "task": "depth", "metric": "abs_rel", "value": 9.0},
        {"dataset": "e", "variant": "mtl", "seed": 0, "task": "depth", "metric": "rmse", "value": 9.0},
    ]
    const = {"semseg": {"mIoU": 4.0}, "depth": {"rmse": 1.1, "abs_rel": 0.3}}
    t = runs_vs_constants(pd.DataFrame(rows), "d", const)
    assert list(t["beats"]) == [True, False, True]  # mIoU higher is better, rmse lower; other metrics ignored
    assert list(t["constant"]) == [4.0, 4.0, 1.1]


def test_floor_cli_scores_the_constant_predictors_of_the_prepared_data(tmp_path) -> None:
    """`mtl3d report floor` opens the splits and hands them to constant_baselines (the metrics layer
    does not open datasets): the fake data's constant semseg predictor scores below a perfect run."""
    import pandas as pd
    from typer.testing import CliRunner

    from mtl3d.cli import app
    from mtl3d.data.registry import create_dataset
    from mtl3d.metrics.baselines import constant_baselines
    from tests.fakedata import make_fake_dataset

    root = make_fake_dataset(tmp_path / "data", n=6)
    splits = [
        create_dataset("synthrooms", root, s, ["semseg", "depth"], train=False) for s in ("train", "val")
    ]
    const = constant_baselines(*splits, ["semseg", "depth"])
    assert 0.0 < const["semseg"]["mIoU"] < 100.0 and const["depth"]["rmse"] > 0.0
    rows = [
        {
            "study": "s",
            "dataset": "synthrooms",
            "model": "mtl",
            "variant": "mtl",
            "regularizer": False,
            "backbone": "r",
            "seed": 0,
            "task": "semseg",
            "metric": "mIoU",
            "value": 100.0,
        },
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
    res = CliRunner().invoke(
        app, ["report", "floor", "--summary", str(tmp_path / "summary.csv"), "--data-root", str(root)]
    )
    assert res.exit_code == 0, res.output
    assert "1/1 beat it" in res.output and f"constant {const['semseg']['mIoU']:.4g}" in res.output


def test_metrics_take_only_the_context_their_constructor_names():
    """The evaluator offers every metric the same context (no per-task switch); each takes its own part,
    and an explicit option still wins over the context."""
    from mtl3d.metrics.registry import create_metric

    context = {"max_dist": 0.0075, "workers": 0, "progress": False}
    assert create_metric("edges", context=context).max_dist == 0.0075
    assert create_metric("edges", context=context, max_dist=0.011).max_dist == 0.011
    assert create_metric("depth", context=context) is not None
    assert create_metric("semseg", num_classes=3, context=context) is not None
