"""Paired bootstrap comparisons on planted per_image.npz files (no training)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mtl3d.cli import app
from mtl3d.errors import UserError
from mtl3d.metrics import BoundaryMetric, DepthMetric, NormalsMetric, SaliencyMetric, SegmentationMetric
from mtl3d.reporting.compare import compare
from mtl3d.reporting.figures import forest_figure
from mtl3d.tasks import TASKS

N_IMG, N_CLS, T_EDGE = 40, 4, 9
STUDY, DATASET = "s", "nyud"


def _stats(rng: np.random.Generator, tp_shift: int = 0, noise: float = 1.0) -> dict[str, np.ndarray]:
    """Per-image statistics of one run; every (image, class) has union 100, so ``tp_shift`` more TP
    (taken from FN) adds exactly ``tp_shift`` mIoU points."""
    tp = (50 + np.round(rng.normal(0, 5 * noise, (N_IMG, N_CLS)))).astype(np.int32) + tp_shift
    fp = np.full((N_IMG, N_CLS), 20, np.int32)
    fn = 100 - tp - fp
    n = np.full(N_IMG, 500.0)
    depth = np.zeros((N_IMG, 8))
    depth[:, 0] = n
    depth[:, 1] = n * (0.5 + 0.05 * noise * rng.random(N_IMG))  # squared error sums
    hist = np.zeros((N_IMG, 360), np.uint32)
    hist[:, 40] = 500
    normals = {
        "n": n.astype(np.int64),
        "sum": n * (20.0 + noise * rng.random(N_IMG)),
        "sum_sq": n * 500.0,
        "within": np.zeros((N_IMG, 3), np.int64),
        "hist": hist,
    }
    counts = np.zeros((N_IMG, T_EDGE, 4), np.int32)
    counts[..., 1] = 100
    counts[..., 3] = 100
    counts[..., 0] = rng.integers(40, 60, (N_IMG, T_EDGE))
    counts[..., 2] = counts[..., 0]
    out = {"semseg/tp": tp, "semseg/fp": fp, "semseg/fn": fn, "depth/sums": depth, "edges/counts": counts}
    out.update({f"normals/{k}": v for k, v in normals.items()})
    t_sal = 15  # the survey protocol's thresholds
    n_pos = rng.integers(0, 60, N_IMG)
    sal_tp = np.minimum(n_pos[:, None], rng.integers(0, 60, (N_IMG, t_sal))).astype(np.int32)
    out["saliency/valid"] = np.arange(N_IMG) != 3  # one image without a valid pixel
    out["saliency/n_pos"] = n_pos
    out["saliency/mtl/tp"] = sal_tp
    out["saliency/mtl/pp"] = sal_tp + rng.integers(0, 30, (N_IMG, t_sal)).astype(np.int32)
    out["image_ids"] = np.array([f"img{i:03d}" for i in range(N_IMG)])
    return out


def _write(root: Path, variant: str, seed: int, stats: dict[str, np.ndarray] | None) -> None:
    d = root / STUDY / DATASET / variant / f"seed{seed}"
    d.mkdir(parents=True)
    metrics = {"run": {"variant": variant, "seed": seed}, "metrics": {}, "per_image": "per_image.npz"}
    (d / "metrics.json").write_text(json.dumps(metrics))
    if stats is not None:
        np.savez_compressed(d / "per_image.npz", **stats)


def _study(tmp_path: Path, shift: int = 0, seeds_b: tuple[int, ...] = (0, 1, 2), same: bool = False) -> Path:
    rng = np.random.default_rng(1)
    for s in (0, 1, 2):
        _write(tmp_path, "stl", s, _stats(rng))
        a = _stats(rng)
        _write(tmp_path, "mtl", s, a)
        if s in seeds_b:
            b = dict(a) if same else _stats(rng, tp_shift=shift)
            _write(tmp_path, "mtl+3d", s, b)
    return tmp_path


def _row(df, task: str) -> dict:
    return df[df["task"] == task].iloc[0].to_dict()


def test_identical_runs(tmp_path: Path) -> None:
    df = compare(_study(tmp_path, same=True), STUDY, "mtl", "mtl+3d", resamples=300)
    assert set(df["task"]) == {"semseg", "depth", "normals", "edges", "saliency", "all"}
    for r in df.to_dict("records"):
        assert r["diff"] == 0.0 and r["ci_low"] <= 0.0 <= r["ci_high"]
        assert r["p"] == pytest.approx(1.0)
        assert r["seeds"] == 3 and r["images"] == N_IMG


def test_planted_miou_shift(tmp_path: Path) -> None:
    df = compare(_study(tmp_path, shift=2), STUDY, "mtl", "mtl+3d", resamples=500)
    r = _row(df, "semseg")
    assert r["metric"] == "mIoU"
    assert r["diff"] == pytest.approx(2.0, abs=0.5)
    assert 0.0 < r["ci_low"] < 2.0 < r["ci_high"] < 4.0
    assert r["p"] < 0.01
    assert _row(df, "all")["diff"] > 0  # +2 mIoU on a ~50 mIoU reference: Δm up by about 1/4 · 4 %


def _task_stats(stats: dict[str, np.ndarray], task: str) -> dict[str, np.ndarray]:
    return {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith(task + "/")}


def test_observed_values_match_metric_classes(tmp_path: Path) -> None:
    """The vectorised bootstrap pools exactly like the metric classes (row 0 = the observed data)."""
    _study(tmp_path)
    df = compare(tmp_path, STUDY, "stl", "mtl", resamples=10)
    means = {}
    for s in (0, 1, 2):
        with np.load(tmp_path / STUDY / DATASET / "mtl" / f"seed{s}" / "per_image.npz") as z:
            st = {k: z[k] for k in z.files}
        vals = {
            "semseg": SegmentationMetric.from_per_image(_task_stats(st, "semseg"))["mIoU"],
            "depth": DepthMetric.from_per_image(_task_stats(st, "depth"))["rmse"],
            "normals": NormalsMetric.from_per_image(_task_stats(st, "normals"))["mean"],
            "edges": BoundaryMetric.from_per_image(_task_stats(st, "edges"))["odsF"],
            "saliency": SaliencyMetric.from_per_image(_task_stats(st, "saliency"))[
                TASKS["saliency"].delta_metric
            ],
        }
        for t, v in vals.items():
            means.setdefault(t, []).append(v)
    for t, v in means.items():
        assert _row(df, t)["mean_b"] == pytest.approx(float(np.mean(v)), rel=1e-12)
    assert _row(df, "all")["mean_a"] == pytest.approx(0.0, abs=1e-9)  # A is the reference itself


def test_only_paired_seeds(tmp_path: Path) -> None:
    df = compare(_study(tmp_path, shift=2, seeds_b=(0, 2)), STUDY, "mtl", "mtl+3d", resamples=100)
    assert set(df["seeds"]) == {2}


def test_one_seed_is_never_significant(tmp_path: Path) -> None:
    """With one paired seed the interval resamples images only: a planted +2 mIoU shift gives an interval
    that excludes 0, yet it is not marked (it says nothing about the training variance)."""
    from mtl3d.reporting.compare import seed_warning, significant

    df = compare(_study(tmp_path, shift=2, seeds_b=(1,)), STUDY, "mtl", "mtl+3d", resamples=300)
    r = _row(df, "semseg")
    assert r["seeds"] == 1 and r["ci_low"] > 0
    assert not significant(r)
    assert significant({**r, "seeds": 2})
    assert "mtl vs mtl+3d" in seed_warning(df) and "image sampling only" in seed_warning(df)
    full = compare(_study(tmp_path / "3", shift=2), STUDY, "mtl", "mtl+3d", resamples=100)
    assert seed_warning(full) is None and significant(_row(full, "semseg"))


def test_no_reference_skips_delta_m(tmp_path: Path) -> None:
    df = compare(_study(tmp_path), STUDY, "mtl", "mtl+3d", reference="nope", resamples=50)
    assert "all" not in set(df["task"])


def test_errors(tmp_path: Path) -> None:
    _study(tmp_path)
    with pytest.raises(UserError, match="unknown variant.*valid: mtl, mtl\\+3d, stl"):
        compare(tmp_path, STUDY, "mtl", "nope")
    _write(tmp_path, "old", 0, None)
    with pytest.raises(UserError, match="re-run `mtl3d evaluate"):
        compare(tmp_path, STUDY, "mtl", "old")
    with pytest.raises(UserError, match="study folder not found"):
        compare(tmp_path, "other", "mtl", "stl")


def test_speed_3_seeds_654_images(tmp_path: Path) -> None:
    global N_IMG
    old, N_IMG = N_IMG, 654
    try:
        _study(tmp_path, shift=1)
    finally:
        N_IMG = old
    t0 = time.perf_counter()
    df = compare(tmp_path, STUDY, "mtl", "mtl+3d", resamples=2000)
    assert time.perf_counter() - t0 < 30.0
    assert len(df) == 6 and df["images"].iloc[0] == 654


def test_forest_figure(tmp_path: Path) -> None:
    df = compare(_study(tmp_path, shift=2), STUDY, "mtl", "mtl+3d", resamples=100)
    fig = forest_figure(df)
    # one panel per task metric (units differ), one line per host
    assert len(fig.axes) == len(df) and len(fig.axes[0].get_yticklabels()) == 1
    assert [a.get_title() for a in fig.axes][-1] == "Δm (%)"
    two = pd.concat([df.assign(host="mtl"), df.assign(host="other")])
    assert len(forest_figure(two).axes[0].get_yticklabels()) == 2


def test_cli_end_to_end(tmp_path: Path) -> None:
    _study(tmp_path, shift=2)
    out = tmp_path / "cmp.csv"
    runner = CliRunner()
    args = ["report", "compare", "mtl", "mtl+3d", "--study", STUDY, "--runs-root", str(tmp_path)]
    res = runner.invoke(app, [*args, "--resamples", "200", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "semseg" in res.output and "delta_m" in res.output
    import pandas as pd

    df = pd.read_csv(out)
    assert list(df.columns[:11]) == [
        "task",
        "metric",
        "mean_a",
        "mean_b",
        "diff",
        "ci_low",
        "ci_high",
        "p",
        "seeds",
        "images",
        "method",
    ]
    assert not math.isnan(df["ci_low"].iloc[0])
    res = runner.invoke(
        app, ["report", "compare", "mtl", "zzz", "--study", STUDY, "--runs-root", str(tmp_path)]
    )
    assert res.exit_code != 0
    assert "unknown variant" in res.output and len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("metric", ["maxF", "mIoU"])
def test_saliency_both_delta_metrics(metric: str) -> None:
    from mtl3d.reporting.compare import Run, _metric_values

    st = _stats(np.random.default_rng(3))
    sal = _task_stats(st, "saliency")
    run = Run(Path("."), 0, st["image_ids"], {"saliency": sal})
    weights = np.ones((1, N_IMG))
    got = _metric_values(run, "saliency", metric, weights)[0]
    assert got == pytest.approx(SaliencyMetric.from_per_image(sal)[metric], rel=1e-12)


def test_compare_hosts_pairs_every_host_with_its_twin(tmp_path: Path) -> None:
    from mtl3d.reporting.compare import compare_hosts, read_comparisons, regularizer_pairs

    assert regularizer_pairs(["stl", "mtl", "mtl+3d", "pad+3d", "x"]) == [("mtl", "mtl+3d")]
    root = _study(tmp_path, shift=2)
    _write(root, "lonely+3d", 0, None)  # no host, and no per_image.npz: never paired
    _write(root, "broken", 0, None)  # a host whose runs lack per_image.npz: skipped with a warning
    _write(root, "broken+3d", 0, None)
    df, warnings = compare_hosts(root, STUDY, resamples=200)
    assert set(df["host"]) == {"mtl"} and len(warnings) == 1 and "broken" in warnings[0]
    one = compare(root, STUDY, "mtl", "mtl+3d", resamples=200)
    pd.testing.assert_frame_equal(df.drop(columns="host"), one)
    df.to_csv(tmp_path / "c.csv", index=False)
    back = read_comparisons(tmp_path / "c.csv")
    assert back is not None and len(back) == len(df)
    assert read_comparisons(tmp_path / "missing.csv") is None
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a comparisons.csv"):
        read_comparisons(tmp_path / "bad.csv")


def test_paired_t_power_matches_known_sample_sizes() -> None:
    from mtl3d.reporting.power import paired_t_power, seeds_needed

    # one-sample/paired t-test, two-sided α = 0.05, 80 % power: d = 1 needs 10 pairs, d = 0.5 needs 34
    # (Cohen 1988, table 2.4.1; G*Power gives the same)
    assert seeds_needed(1.0, 1.0) == 10 and seeds_needed(0.5, 1.0) == 34
    assert paired_t_power(10, 1.0, 1.0) == pytest.approx(0.8031, abs=2e-3)
    assert paired_t_power(9, 1.0, 1.0) < 0.8
    # far in the tails scipy's noncentral t gives NaN: power is monotone in the spread all the same
    needed = [seeds_needed(1.0, sd) for sd in np.linspace(0.05, 0.6, 56)]
    assert all(math.isfinite(x) for x in needed) and needed == sorted(needed)
    assert all(0.0 <= paired_t_power(n, 1.0, 0.1) <= 1.0 for n in range(2, 40))
    # no spread measured (one seed, or identical runs): unknown, not zero seeds
    assert math.isnan(seeds_needed(1.0, 0.0)) and math.isnan(seeds_needed(1.0, math.nan))


def test_seed_power_table_from_paired_seed_differences() -> None:
    from mtl3d.reporting.power import seed_power_table

    rows = []
    for seed, (a, b) in enumerate([(40.0, 41.0), (42.0, 42.0), (41.0, 43.0)]):  # d = 1, 0, 2: sd 1
        for variant, v in (("mtl", a), ("mtl+3d", b)):
            rows.append(
                {
                    "dataset": "d",
                    "variant": variant,
                    "seed": seed,
                    "task": "semseg",
                    "metric": "mIoU",
                    "value": v,
                }
            )
    t = seed_power_table(pd.DataFrame(rows), "d", effect=1.0)
    r = t.iloc[0]
    assert (r["host"], r["seeds"]) == ("mtl", 3)
    assert r["mean_diff"] == pytest.approx(1.0) and r["sd_diff"] == pytest.approx(1.0)
    assert r["seeds_needed"] == 10 and r["seeds_needed_sd80"] > 10


def test_ablations_are_compared_with_their_default_and_tabled(tmp_path: Path) -> None:
    from mtl3d.reporting import tables as T
    from mtl3d.reporting.compare import compare_hosts, comparison_pairs

    assert comparison_pairs(["mtl", "mtl+3d", "mtl+3d@sum", "x@y"]) == [
        ("mtl", "mtl+3d", "mtl"),
        ("mtl+3d", "mtl+3d@sum", "mtl+3d@sum"),
    ]
    root = _study(tmp_path, shift=0)
    rng = np.random.default_rng(7)
    for s in (0, 1, 2):  # the ablation: +4 mIoU over the default, on the same images
        _write(root, "mtl+3d@sum", s, _stats(rng, tp_shift=4))
    df, warnings = compare_hosts(root, STUDY, resamples=300)
    assert not warnings and set(df["host"]) == {"mtl", "mtl+3d@sum"}
    rows = []  # a summary with the three variants' semseg means (ablation_table's first row)
    for v in ("mtl", "mtl+3d", "mtl+3d@sum"):
        for s in (0, 1, 2):
            rows.append(
                {
                    "study": STUDY,
                    "dataset": DATASET,
                    "model": "mtl",
                    "variant": v,
                    "regularizer": "+3d" in v,
                    "backbone": "r",
                    "seed": s,
                    "task": "semseg",
                    "metric": "mIoU",
                    "value": 40.0 + s,
                }
            )
    t = T.ablation_table(pd.DataFrame(rows), DATASET, df)
    assert t is not None and [r[0] for r in t.rows] == ["mtl+3d (default)", "no regularizer (mtl)", "@sum"]
    col = t.columns.index("SemSeg mIoU ↑")
    assert t.rows[0][col] == "41.00 ± 1.00"
    abl = df[(df["b"] == "mtl+3d@sum") & (df["task"] == "semseg")].iloc[0]
    assert abl["ci_low"] > 2.0 and abl["ci_high"] < 6.0  # the planted +4 (independent noise around it)
    assert t.rows[2][col].startswith(f"{abl['diff']:+.2f} [") and t.rows[2][col].endswith("]*")
    off = df[(df["b"] == "mtl+3d") & (df["task"] == "semseg")].iloc[0]
    assert t.rows[1][col].startswith(f"{-off['diff']:+.2f} [")  # mtl − mtl+3d: the sign flips
    assert T.ablation_table(pd.DataFrame(rows), DATASET, df[df["host"] == "mtl"]) is None


def test_forest_figure_arrows_follow_each_metric() -> None:
    """The direction is the metric's, not the task's Δm metric's: depth δ1 and normals "within 11.25°"
    are higher-is-better although depth rmse and normals mean are lower-is-better."""
    rows = [
        {"task": t, "metric": m, "diff": 0.5, "ci_low": 0.1, "ci_high": 0.9, "seeds": 3, "a": "x", "b": "y"}
        for t, m in [
            ("depth", "rmse"),
            ("depth", "delta1"),
            ("normals", "within_11.25"),
            ("edges", "ods_threshold"),
        ]
    ]
    titles = [a.get_title() for a in forest_figure(rows).axes]
    assert titles == [
        "depth rmse (↓ better)",
        "depth delta1 (↑ better)",
        "normals within_11.25 (↑ better)",
        "edges ods_threshold",
    ]
