"""mtl3d.reporting: summary.csv from fabricated metrics.json, Δm by hand, tables, figures, study files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from mtl3d.errors import UserError
from mtl3d.regularizer.rays import warp_to_reference
from mtl3d.reporting import collect as C
from mtl3d.reporting import figures as F
from mtl3d.reporting import tables as T
from mtl3d.reporting.reported import SOURCES, load_reported, matching
from mtl3d.reporting.study import expand_runs, load_study, project_path, to_cli_options, validate_study

REPO = Path(__file__).resolve().parents[2]

# (variant, seed) -> (semseg mIoU, depth rmse). Reference stl: mean mIoU 42, mean rmse 0.6.
VALUES = {
    ("stl", 0): (40.0, 0.5),
    ("stl", 1): (44.0, 0.7),
    ("mtl", 0): (42.0, 0.54),
    ("mtl", 1): (46.2, 0.66),
    ("mtl+3d", 0): (50.4, 0.48),
    ("mtl+3d", 1): (46.2, 0.54),
}


def write_run(
    root: Path, dataset: str, variant: str, seed: int, miou: float, rmse: float, log: bool = True
) -> Path:
    model = variant.removesuffix("+3d")
    run = root / dataset / variant / f"seed{seed}"
    run.mkdir(parents=True)
    metrics = {
        "run": {
            "dataset": dataset,
            "model": model,
            "backbone": "resnet18",
            "regularizer": variant.endswith("+3d"),
            "seed": seed,
            "tasks": ["semseg", "depth"],
            "iters": 10,
            "variant": variant,
        },
        "split": "val",
        "n_images": 4,
        "metrics": {
            "semseg": {"mIoU": miou, "pixel_acc": 70.0, "per_class": [1.0, 2.0]},
            "depth": {"rmse": rmse, "abs_rel": None},
        },
        "protocols": {"semseg": "x", "depth": "y"},
        "params": 2_000_000 if model == "stl" else 1_000_000,
        "flops": 3_000_000_000,
        "timing": {"train_s": 12.5, "ms_per_image": 4.0, "device": "cpu"},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    if log:
        steps = np.arange(1, 6)
        df = pd.DataFrame(
            {
                "step": steps,
                "lr": 0.001,
                "time_s": steps * 0.1,
                "loss/semseg": 2.0 / steps,
                "loss/depth": 1.0 / steps,
                "loss/total": 3.0 / steps,
            }
        )
        if variant.endswith("+3d"):
            df["loss/reg/depth"] = 0.5 / steps
        df.to_csv(run / "train_log.csv", index=False)
    return run


@pytest.fixture()
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "results" / "runs" / "toy"
    for (variant, seed), (miou, rmse) in VALUES.items():
        write_run(root, "synthrooms", variant, seed, miou, rmse)
    return root


@pytest.fixture()
def summary(runs_root: Path) -> pd.DataFrame:
    df, warnings = C.collect(runs_root, "toy")
    assert warnings == []
    return df


def _value(df: pd.DataFrame, variant: str, seed: int, task: str, metric: str) -> float:
    sel = df[(df.variant == variant) & (df.seed == seed) & (df.task == task) & (df.metric == metric)]
    assert len(sel) == 1, (variant, seed, task, metric, len(sel))
    return float(sel["value"].iloc[0])


def test_summary_rows_and_columns(summary: pd.DataFrame) -> None:
    assert list(summary.columns) == C.COLUMNS
    # per run: semseg mIoU + pixel_acc, depth rmse + abs_rel (null -> NaN), params, flops, n_images,
    # train_s, ms_per_image (the string 'device' and the per-class list are skipped), delta_m, 2 gains
    assert len(summary) == 6 * (4 + 5 + 3)
    assert _value(summary, "mtl", 1, "semseg", "mIoU") == pytest.approx(46.2)
    assert math.isnan(_value(summary, "mtl", 1, "depth", "abs_rel"))
    assert _value(summary, "stl", 0, C.RUN_TASK, "params") == 2_000_000
    row = summary[(summary.variant == "mtl+3d") & (summary.seed == 0)].iloc[0]
    assert (row.study, row.dataset, row.model, bool(row.regularizer), row.backbone) == (
        "toy",
        "synthrooms",
        "mtl",
        True,
        "resnet18",
    )


def test_delta_m_by_hand(summary: pd.DataFrame) -> None:
    # reference = stl mean over seeds: mIoU 42, rmse 0.6
    # mtl seed0: semseg (42-42)/42 = 0; depth -(0.54-0.6)/0.6 = +10%  -> Δm = 5
    # mtl seed1: semseg (46.2-42)/42 = +10%; depth -(0.66-0.6)/0.6 = -10% -> Δm = 0
    # mtl+3d seed0: +20%, +20% -> 20; seed1: +10%, +10% -> 10
    # stl seed0: -4.7619%, +16.667% -> 5.9524; seed1: the negatives -> -5.9524
    expect = {
        ("mtl", 0): 5.0,
        ("mtl", 1): 0.0,
        ("mtl+3d", 0): 20.0,
        ("mtl+3d", 1): 10.0,
        ("stl", 0): (-2 / 42 + 1 / 6) * 50,
        ("stl", 1): (2 / 42 - 1 / 6) * 50,
    }
    for (v, s), d in expect.items():
        assert _value(summary, v, s, C.ALL_TASKS, C.DELTA) == pytest.approx(d, abs=1e-9)
    assert _value(summary, "mtl", 0, "depth", C.GAIN) == pytest.approx(10.0)
    assert _value(summary, "mtl", 1, "semseg", C.GAIN) == pytest.approx(10.0)
    assert _value(summary, "mtl", 1, "depth", C.GAIN) == pytest.approx(-10.0)
    agg = C.aggregate(summary)
    d = agg[(agg.variant == "mtl") & (agg.task == C.ALL_TASKS)].iloc[0]
    assert (d["mean"], d["std"], d["n"]) == (pytest.approx(2.5), pytest.approx(math.sqrt(12.5)), 2)


def test_missing_reference_warns(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_run(root, "synthrooms", "mtl", 0, 40.0, 0.5)
    df, warnings = C.collect(root, "toy")
    assert not (df.metric == C.DELTA).any()
    assert len(warnings) == 1 and "no 'stl' runs" in warnings[0]
    with pytest.raises(UserError, match="no metrics.json"):
        C.collect(tmp_path / "runs" / "synthrooms", "toy")


def test_zero_reference_is_left_out(tmp_path: Path) -> None:
    """A reference of 0 (e.g. odsF after a few iterations) has no relative gain: that task is skipped."""
    root = tmp_path / "runs"
    for v, miou in (("stl", 40.0), ("mtl", 44.0)):
        run = write_run(root, "synthrooms", v, 0, miou, 0.5, log=False)
        data = json.loads((run / "metrics.json").read_text())
        data["metrics"]["edges"] = {"odsF": 0.0 if v == "stl" else 10.0}
        (run / "metrics.json").write_text(json.dumps(data))
    df, warnings = C.collect(root, "toy")
    assert _value(df, "mtl", 0, C.ALL_TASKS, C.DELTA) == pytest.approx(5.0)  # (10% + 0%) / 2
    assert not ((df.task == "edges") & (df.metric == C.GAIN)).any()
    assert any("edges left out" in w for w in warnings)


def test_run_folder_must_match_seed(tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs", "synthrooms", "stl", 0, 40.0, 0.5)
    data = json.loads((run / "metrics.json").read_text())
    data["run"]["seed"] = 3
    (run / "metrics.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="does not match"):
        C.collect(tmp_path / "runs", "toy")


def test_write_outputs_roundtrip(summary: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "out"
    C.write_outputs(summary, out / "summary.csv", out / "summary.json", out / "delta.csv")
    back = C.read_summary(out / "summary.csv")
    assert len(back) == len(summary)
    assert _value(back, "mtl+3d", 0, C.ALL_TASKS, C.DELTA) == pytest.approx(20.0)
    js = json.loads((out / "summary.json").read_text())
    assert js["synthrooms"]["mtl+3d"]["all"]["delta_m"] == pytest.approx(15.0)
    assert js["synthrooms"]["mtl+3d"]["all"]["delta_m_std"] == pytest.approx(math.sqrt(50.0), rel=1e-5)
    delta = pd.read_csv(out / "delta.csv")
    assert delta.set_index("variant").loc["mtl", "delta_m"] == pytest.approx(2.5)


def test_main_table_layout_and_values(summary: pd.DataFrame) -> None:
    t = T.main_table(summary, "synthrooms", "stl")
    assert [r[0] + ("+3d" if r[1] == "✓" else "") for r in t.rows] == ["stl", "mtl", "mtl+3d"]
    col = {c: j for j, c in enumerate(t.columns)}
    assert t.columns[:2] == ["Model", "3D reg."]
    assert "SemSeg mIoU ↑" in col and "Depth rmse ↓" in col and "Δm (%) ↑" in col
    mtl = t.rows[1]
    assert mtl[col["SemSeg mIoU ↑"]] == "44.10 ± 2.97"  # mean 44.1, std |46.2-42|/sqrt(2)
    assert mtl[col["Depth rmse ↓"]] == "0.6000 ± 0.0849"
    assert mtl[col["Δm (%) ↑"]] == "2.50 ± 3.54"
    assert t.rows[0][col["Params (M)"]] == "2.00 ± 0.00"
    assert t.rows[2][col["GFLOPs"]] == "3.00 ± 0.00"
    # best non-reference mean in bold: mtl+3d has the higher mIoU (48.3), lower rmse (0.51), higher Δm (15)
    for c in ("SemSeg mIoU ↑", "Depth rmse ↓", "Δm (%) ↑"):
        assert (2, col[c]) in t.bold and (1, col[c]) not in t.bold and (0, col[c]) not in t.bold
    md = T.to_markdown(t)
    assert "| stl | – |" in md and "**15.00 ± 7.07**" in md
    tex = T.to_latex(t, label="tab:x")
    assert r"\toprule" in tex and r"$\pm$" in tex and r"\textbf{15.00 $\pm$ 7.07}" in tex
    assert r"\label{tab:x}" in tex and "↑" not in tex


def test_main_table_names_variants_that_are_not_model_or_model_plus_3d(summary: pd.DataFrame) -> None:
    abl = summary[summary["variant"] == "mtl+3d"].copy()
    abl["variant"] = "mtl+3d@sum"
    t = T.main_table(pd.concat([summary, abl]), "synthrooms", "stl")
    assert [r[0] for r in t.rows] == ["stl", "mtl", "mtl", "mtl+3d@sum"]


def test_full_and_regularizer_tables(summary: pd.DataFrame) -> None:
    full = T.main_table(summary, "synthrooms", "stl", full=True)
    assert "SemSeg pixel_acc ↑" in full.columns and "Depth abs_rel ↓" in full.columns
    reg = T.regularizer_table(summary, "synthrooms")
    assert len(reg.rows) == 1 and reg.rows[0][0] == "mtl → mtl+3d"
    col = {c: j for j, c in enumerate(reg.columns)}
    assert reg.rows[0][col["SemSeg mIoU ↑"]] == "+4.20"  # 48.3 - 44.1
    assert reg.rows[0][col["Depth rmse ↓"]] == "-0.0900"  # 0.51 - 0.60
    assert reg.rows[0][col["Δm (%) ↑"]] == "+12.50"


def test_tables_mark_significant_differences(summary: pd.DataFrame) -> None:
    # comparisons as `mtl3d report collect --comparisons` writes them: semseg's interval excludes 0,
    # depth's does not
    base = {"host": "mtl", "dataset": "synthrooms", "a": "mtl", "b": "mtl+3d", "seeds": 2, "images": 10}
    comp = pd.DataFrame(
        [
            {**base, "task": "semseg", "metric": "mIoU", "diff": 4.2, "ci_low": 1.0, "ci_high": 7.5},
            {**base, "task": "depth", "metric": "rmse", "diff": -0.09, "ci_low": -0.2, "ci_high": 0.01},
        ]
    )
    reg = T.regularizer_table(summary, "synthrooms", comp)
    col = {c: j for j, c in enumerate(reg.columns)}
    assert reg.rows[0][col["SemSeg mIoU ↑"]] == "+4.20 [+1.00, +7.50]*"
    assert reg.rows[0][col["Depth rmse ↓"]] == "-0.0900 [-0.2000, +0.0100]"
    assert reg.rows[0][col["Δm (%) ↑"]] == "+12.50"  # no comparison row: the plain difference
    assert "excludes 0" in reg.caption
    main = T.main_table(summary, "synthrooms", "stl", comparisons=comp)
    col = {c: j for j, c in enumerate(main.columns)}
    rows = {r[0] + r[1]: r for r in main.rows}
    assert rows["mtl✓"][col["SemSeg mIoU ↑"]].endswith("*") and not rows["mtl–"][
        col["SemSeg mIoU ↑"]
    ].endswith("*")
    assert not rows["mtl✓"][col["Depth rmse ↓"]].endswith("*")
    assert "*" not in "".join(T.main_table(summary, "synthrooms", "stl").rows[2])


def test_single_seed_shows_mean_only(tmp_path: Path) -> None:
    write_run(tmp_path / "r", "synthrooms", "stl", 0, 40.0, 0.5)
    write_run(tmp_path / "r", "synthrooms", "mtl", 0, 44.0, 0.45)
    df, _ = C.collect(tmp_path / "r", "one")
    t = T.main_table(df, "synthrooms")
    col = {c: j for j, c in enumerate(t.columns)}
    assert t.rows[1][col["SemSeg mIoU ↑"]] == "44.00"
    assert t.rows[1][col["Δm (%) ↑"]] == "10.00"  # (10% + 10%) / 2


def test_write_all_tables(summary: pd.DataFrame, tmp_path: Path) -> None:
    written = T.write_all_tables(summary, tmp_path / "tables", "stl")
    names = {p.name for p in written}
    assert {
        "synthrooms.md",
        "synthrooms.tex",
        "synthrooms_full.md",
        "synthrooms_regularizer.tex",
        "reported.md",
        "reported.tex",
    } <= names
    assert all(p.stat().st_size > 100 for p in written)
    rep = (tmp_path / "tables" / "reported.md").read_text()
    assert "No run of this study" in rep and "reported: invpt-readme README" in rep


def test_latex_escape() -> None:
    assert T.latex_escape("a_b & 50% #1 ± Δm") == r"a\_b \& 50\% \#1 $\pm$ $\Delta$m"
    assert T.latex_escape(r"x\y") == r"x\textbackslash{}y"


def test_reported_numbers_file() -> None:
    rep = load_reported()
    assert set(rep["source"]) == set(SOURCES)
    assert set(rep["status"]) <= {"primary", "secondary", "derived"}
    inv = matching(rep, "nyud", "invpt", False, ["semseg", "depth", "normals", "edges"])
    got = inv.set_index(["source", "task"])["value"]
    assert got[("invpt-readme", "semseg")] == 53.56 and got[("invpt-readme", "depth")] == 0.5183
    reg = matching(rep, "nyud", "invpt", True)
    assert reg.set_index("task")["value"]["semseg"] == 54.87
    atrc = rep[(rep.source == "atrc-iccv21") & (rep.table == "T1") & (rep.model == "atrc")].set_index(
        "metric"
    )
    assert atrc.loc["mIoU", "value"] == 38.90 and atrc.loc["mIoU", "std"] == 0.43
    assert atrc.loc["params_M", "value"] == 5.06
    dm = rep[
        (rep.source == "densemtl") & (rep.model == "densemtl") & (rep.tasks == "semseg,depth,normals,edges")
    ]
    assert dm.set_index("metric").loc["delta_m", "value"] == 8.47
    # the task direction is the paper's: reported Δm of ATRC T2 equals the survey formula on its own STL row
    t2 = rep[(rep.source == "atrc-iccv21") & (rep.table == "T2") & (rep.setting == "")]
    st = t2[t2.model == "stl"].set_index("task")["value"]
    mt = t2[t2.model == "mtinet"].set_index("task")["value"]
    lower = {"semseg": False, "depth": True, "normals": True, "edges": False}
    delta = 100 * np.mean([(-1 if lower[t] else 1) * (mt[t] - st[t]) / st[t] for t in lower])
    assert delta == pytest.approx(mt["all"], abs=0.01)


def test_reported_comparison(tmp_path: Path) -> None:
    for v, seed, miou, rmse in [("stl", 0, 40.0, 0.6), ("invpt", 0, 50.0, 0.52), ("invpt+3d", 0, 51.0, 0.5)]:
        run = write_run(tmp_path / "r", "nyud", v, seed, miou, rmse, log=False)
        data = json.loads((run / "metrics.json").read_text())
        data["metrics"]["normals"] = {"mean": 20.0}
        data["metrics"]["edges"] = {"odsF": 70.0}
        (run / "metrics.json").write_text(json.dumps(data))
    df, _ = C.collect(tmp_path / "r", "nyud")
    t = T.reported_comparison(df, load_reported())
    sources = [r[3] for r in t.rows]
    assert "ours (1 seed)" in sources
    assert "reported: invpt-readme README" in sources
    assert "reported: 3daware-iclr24 T1 (secondary)" in sources
    ours = {(r[1], r[2]): r for r in t.rows if r[3] == "ours (1 seed)"}
    assert set(ours) == {("stl", "–"), ("invpt", "–"), ("invpt", "✓")}  # reported STL rows exist too (ATRC)
    assert "50.00" in ours[("invpt", "–")] and "0.5000" in ours[("invpt", "✓")]
    reported_reg = [r for r in t.rows if r[2] == "✓" and r[3].startswith("reported")]
    assert reported_reg and all(r[1] == "invpt" for r in reported_reg)


def test_paper_table_layout(tmp_path: Path) -> None:
    """Table 1 layout: our rows where runs exist, the reported numbers beside them, blanks elsewhere."""
    runs = [("stl", 40.0, 0.6), ("invpt", 50.0, 0.52), ("invpt+3d", 51.0, 0.5), ("invpt-25", 45.0, 0.6)]
    for v, miou, rmse in runs:
        for seed, shift in ((0, 0.0), (1, 1.0)):
            run = write_run(tmp_path / "r", "nyud", v, seed, miou + shift, rmse, log=False)
            data = json.loads((run / "metrics.json").read_text())
            data["run"]["model"] = v.split("-")[0].removesuffix("+3d")
            data["metrics"]["normals"] = {"mean": 20.0}
            data["metrics"]["edges"] = {"odsF": 70.0}
            (run / "metrics.json").write_text(json.dumps(data))
    df, _ = C.collect(tmp_path / "r", "nyud")
    t = T.paper_table(df, load_reported(), "nyud")
    assert t is not None and T.paper_table(df, load_reported(), "synthrooms") is None
    assert t.columns[:3] == ["Model", "Numbers", "SemSeg mIoU ↑"] and t.columns[-1] == "Δm (%) ↑"
    rows = {(r[0], r[1]): r for r in t.rows}
    # ours: mean ± std over the two seeds; reported: the paper's numbers, labelled as such
    assert rows[("InvPT", "ours (2 seeds)")][2] == "50.50 ± 0.71"
    assert rows[("InvPT", "reported: 3daware-iclr24 T1")][2:6] == ["53.56", "0.5183", "19.04", "78.10"]
    assert rows[("InvPT + 3D-aware", "reported: 3daware-iclr24 T1")][2:6] == ["54.87", "0.5006", "", ""]
    assert rows[("InvPT, 25 % train (T6)", "reported: 3daware-iclr24 T6")][2] == "43.83"
    assert rows[("InvPT, 25 % train (T6)", "ours (2 seeds)")][2] == "45.50 ± 0.71"
    # no MTI-Net run: our row is there, empty; the reported baseline mIoU is still shown
    assert rows[("MTI-Net", "ours")][2:] == [""] * 5
    assert rows[("MTI-Net", "reported: 3daware-iclr24 T1")][2] == "45.97"
    # render-one-task rows have no reported numbers and no run here: left out
    assert not any("only" in r[0] for r in t.rows)
    assert rows[("InvPT + 3D-aware", "ours (2 seeds)")][-1] != ""  # Δm against our STL


def test_figures_written(summary: pd.DataFrame, runs_root: Path, tmp_path: Path) -> None:
    written = F.write_study_figures(summary, runs_root, tmp_path / "fig", "stl")
    names = sorted(p.name for p in written)
    assert names == sorted(
        f"{s}_synthrooms.{e}" for s in ("delta_m", "task_gains", "training_curves") for e in ("png", "pdf")
    )
    for p in written:
        assert p.stat().st_size > 2000
        if p.suffix == ".png":
            w, h = Image.open(p).size
            assert w > 200 and h > 150
    logs = F.read_training_logs(runs_root)
    assert set(logs["series"]) == {"loss/semseg", "loss/depth", "loss/total", "loss/reg/depth"}
    assert len(logs[(logs.variant == "stl") & (logs.seed == 1)]) == 15


def _fake_predictions(run: Path, reg: bool, n: int = 2) -> None:
    rng = np.random.default_rng(0)
    (run / "predictions").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arrays = {
            "image": rng.integers(0, 255, (8, 12, 3), dtype=np.uint8),
            "gt_semseg": rng.integers(0, 4, (8, 12)).astype(np.int64),
            "pred_semseg": np.zeros((8, 12), np.uint8),
            "gt_depth": rng.uniform(1, 3, (1, 8, 12)).astype(np.float32),
            "pred_depth": rng.uniform(1, 3, (1, 8, 12)).astype(np.float32),
            "gt_normals": np.tile(np.array([0, 0, -1.0], np.float32)[:, None, None], (1, 8, 12)),
            "pred_normals": np.tile(np.array([0, 0, -1.0], np.float16)[:, None, None], (1, 8, 12)),
        }
        if reg:
            arrays["reg_depth"] = rng.uniform(1, 3, (1, 4, 6)).astype(np.float32)
            arrays["reg_semseg"] = np.ones((4, 6), np.uint8)
        np.savez_compressed(run / "predictions" / f"s{i:05d}_v0.npz", **arrays)


def test_qualitative_figures(runs_root: Path, tmp_path: Path) -> None:
    for v in ("stl", "mtl", "mtl+3d"):
        _fake_predictions(runs_root / "synthrooms" / v / "seed0", reg=v.endswith("+3d"))
    written = F.write_qualitative(runs_root, tmp_path / "q", max_images=1)
    names = {p.name for p in written}
    assert {
        "compare_synthrooms_s00000_v0.png",
        "grid_synthrooms_mtl_plus_3d.pdf",
        "grid_synthrooms_stl.png",
    } <= names
    assert all(p.stat().st_size > 1000 for p in written)
    # the +3d grid adds the rendered columns: image + 3 tasks x (gt, pred) + reg_semseg + reg_depth
    fig = F.qualitative_figure(
        sorted((runs_root / "synthrooms" / "mtl+3d" / "seed0" / "predictions").glob("*.npz"))
    )
    assert len(fig.axes) == 2 * (1 + 6 + 2)
    assert [a.get_title() for a in fig.axes[:4]] == ["image", "SemSeg gt", "SemSeg pred.", "SemSeg rendered"]


def test_colorize() -> None:
    lab = np.array([[0, 1], [255, 1]])
    rgb = F.colorize("semseg", lab, num_classes=2)
    assert rgb.shape == (2, 2, 3) and np.all(rgb[1, 0] == 0) and np.allclose(rgb[0, 1], rgb[1, 1])
    n = F.colorize("normals", np.array([[[0, 0, -1.0], [0, 0, 0]]]))  # HWC
    assert np.allclose(n[0, 0], [0.5, 0.5, 0.0]) and np.all(n[0, 1] == 0)
    d = F.colorize("depth", np.array([[[0.0, 1.0, 2.0, 5.0]]]), depth_range=(1.0, 2.0))  # CHW, 1 channel
    assert d.shape == (1, 4, 3) and np.all(d[0, 0] == 0) and not np.allclose(d[0, 1], d[0, 2])
    assert np.allclose(d[0, 2], d[0, 3])  # clipped at the top of the range


def test_warp_to_reference_translation() -> None:
    """Camera b is 0.5 m to the right of a; a fronto-parallel plane at z = 2 m moves by fx*0.5/2 = 5 px."""
    h, w, f = 6, 16, 20.0
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    pose_a, pose_b = np.eye(4), np.eye(4)
    pose_b[0, 3] = 0.5
    depth = np.full((h, w), 2.0)
    image_b = np.tile(np.arange(w, dtype=np.float32)[None, :, None], (h, 1, 3))  # value = column index
    warped, valid = warp_to_reference(depth, K, pose_a, image_b, K, pose_b, depth)
    assert valid[:, 5:].all() and not valid[:, :5].any()
    assert np.allclose(warped[:, 5:, 0], np.arange(w - 5)[None, :])


def _fake_dataset(root: Path) -> None:
    h, w = 6, 8
    K = [[8.0, 0, 3.5], [0, 8.0, 2.5], [0, 0, 1]]
    views = {}
    for d in ("images", "semseg", "depth", "normals", "edges", "splits"):
        (root / d).mkdir(parents=True)
    for i, vid in enumerate(["s0_v0", "s0_v1"]):
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(root / "images" / f"{vid}.png")
        Image.fromarray(np.tile(np.array([0, 1, 255, 2], np.uint8), (h, 2))).save(
            root / "semseg" / f"{vid}.png"
        )
        np.save(root / "depth" / f"{vid}.npy", np.full((h, w), 2.0 + i, np.float32))
        np.save(root / "normals" / f"{vid}.npy", np.tile(np.array([0, 0, -1], np.float32), (h, w, 1)))
        Image.fromarray(np.where(np.arange(w)[None].repeat(h, 0) == 3, 255, 0).astype(np.uint8)).save(
            root / "edges" / f"{vid}.png"
        )
        pose = np.eye(4)
        pose[0, 3] = 0.1 * i
        views[vid] = {"K": K, "pose": pose.tolist(), "neighbors": ["s0_v1" if i == 0 else "s0_v0"]}
    (root / "splits" / "train.txt").write_text("s0_v0\ns0_v1\n")
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "dataset": "synthrooms",
                "classes": ["floor", "wall", "table"],
                "num_classes": 3,
                "tasks": ["semseg", "depth", "normals", "edges"],
                "height": h,
                "width": w,
                "views": views,
            }
        )
    )


def test_dataset_figures_and_stats(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _fake_dataset(root)
    stats = F.dataset_stats(root)
    # semseg row pattern 0,1,255,2,0,1,255,2: 2/8 ignore; classes 0,1,2 each 1/3 of the valid pixels
    assert stats["semseg_ignore_fraction"] == pytest.approx(0.25)
    assert stats["class_pixel_fraction"] == pytest.approx({"floor": 1 / 3, "wall": 1 / 3, "table": 1 / 3})
    assert stats["edge_pixel_fraction"] == pytest.approx(1 / 8)
    assert stats["depth_m"] == {"min": 2.0, "median": 2.5, "max": 3.0}
    assert stats["splits"] == {"train": 2}
    written = F.write_dataset_figures(root, tmp_path / "out", n=2)
    assert {p.name for p in written} == {
        "samples.png",
        "samples.pdf",
        "label_stats.png",
        "label_stats.pdf",
        "multiview_pairs.png",
        "multiview_pairs.pdf",
        "stats.json",
    }
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["views_used"] == 2


# ----------------------------------------------------------------------------------------------- studies
# every study file of the project (config/*.yaml but the schema), and params.yaml
STUDY_FILES = ["params.yaml"] + sorted(
    f"config/{p.name}" for p in (REPO / "config").glob("*.yaml") if p.name != "schema.yaml"
)


@pytest.mark.parametrize("name", STUDY_FILES)
def test_study_files_valid_and_explicit(name: str) -> None:
    """Valid, and explicit: schema defaults add nothing (DVC never applies them)."""
    path = REPO / name
    study = load_study(path)
    assert study == yaml.safe_load(path.read_text())
    variants = study["variants"] + study["searched_variants"]
    assert len(expand_runs(study)) == len(study["datasets"]) * len(variants) * len(study["seeds"])


def test_params_yaml_is_the_default_study() -> None:
    assert (REPO / "params.yaml").read_bytes() == (REPO / "config" / "default.yaml").read_bytes()


def _schema() -> dict:
    return yaml.safe_load((REPO / "config" / "schema.yaml").read_text())


def _smoke() -> dict:
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("seeds"), "'seeds' is a required property"),
        (
            lambda s: s["variants"][2]["args"].update(regularizer=False),
            "exactly the runs with the regularizer",
        ),
        (
            lambda s: s["variants"][1]["args"].update(regularizer=True),
            "exactly the runs with the regularizer",
        ),
        (lambda s: s.update(reference="nope"), "reference variant 'nope'"),
        (lambda s: s["variants"].append(dict(s["variants"][0])), "repeated: stl"),
        (lambda s: s["datasets"][0]["train"].update({"batch_size": 2}), "does not match"),
        (lambda s: s["datasets"][0]["train"].update({"tasks": ["semseg"]}), "is not of type"),
        (lambda s: s.update(extra=1), "Additional properties"),
    ],
)
def test_invalid_studies(edit, message: str) -> None:
    s = _smoke()
    edit(s)
    with pytest.raises(UserError, match=message):
        validate_study(s, _schema())


def test_schema_defaults_fill_in() -> None:
    s = _smoke()
    del s["datasets"][0]["prepare"]
    del s["variants"][0]["args"]["regularizer"]
    out = validate_study(s, _schema())
    assert out["datasets"][0]["prepare"] == {} and out["variants"][0]["args"]["regularizer"] is False
    assert "prepare" not in s["datasets"][0]  # the input is not modified


def test_cli_options_match_dvc_unpacking() -> None:
    opts = {
        "backbone": "resnet18",
        "tasks": "semseg,depth",
        "batch-size": 8,
        "lr": 1e-05,
        "regularizer": True,
        "amp": False,
        "note": "two words",
    }
    assert to_cli_options(opts) == (
        "--backbone resnet18 --tasks semseg,depth --batch-size 8 --lr 1e-05 --regularizer --note 'two words'"
    )
    interpolate = pytest.importorskip("dvc.parsing.interpolate")
    assert interpolate.to_str(opts) == to_cli_options(opts)
    smk = (REPO / "workflow" / "rules" / "common.smk").read_text()
    ns: dict = {}
    exec(
        smk[smk.index("def cli_options") : smk.index("def data_path")],
        {"quote": __import__("shlex").quote},
        ns,
    )
    assert ns["cli_options"](opts) == to_cli_options(opts)


def test_project_path(tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text("")
    (tmp_path / "dvc.yaml").write_text("")
    (tmp_path / "notebooks").mkdir()
    assert project_path("results/x.csv", tmp_path / "notebooks") == tmp_path / "results" / "x.csv"
    assert project_path("/abs/x", tmp_path) == Path("/abs/x")
    assert project_path("x", tmp_path.parent) == Path("x")


def test_notebooks_are_clean_and_parameterised() -> None:
    import nbformat

    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        # every cell has a stable id (nbformat 4.5; reading fills missing ones with random ids and warns)
        assert all("id" in c for c in json.loads(nb_path.read_text())["cells"]), (
            f"{nb_path}: a cell has no id"
        )
        nb = nbformat.read(nb_path, as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3", nb_path
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.outputs == [] and c.execution_count is None for c in code), f"{nb_path} has outputs"
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, nb_path
        src = "\n".join(c.source for c in code)
        assert "mtl3d.reporting" in src and "torch" not in src, nb_path


def test_report_cli(runs_root: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mtl3d.reporting.cli import app

    runner = CliRunner()
    out = tmp_path / "s" / "summary.csv"
    res = runner.invoke(
        app,
        [
            "collect",
            "--runs-root",
            str(runs_root),
            "--study",
            "toy",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "s" / "m.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "from 6 runs" in res.output and out.is_file() and (tmp_path / "s" / "m.json").is_file()
    res = runner.invoke(app, ["tables", "--summary", str(out), "--out-dir", str(tmp_path / "t")])
    assert res.exit_code == 0 and (tmp_path / "t" / "synthrooms.md").is_file()
    res = runner.invoke(app, ["check-study", str(REPO / "config" / "smoke.yaml")])
    smoke = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    n_runs = len(smoke["variants"] + smoke["searched_variants"]) * len(smoke["seeds"])
    assert res.exit_code == 0 and f"{n_runs} runs" in res.output
    # a variant's recipe file must exist (paths relative to the project root) and be a valid config
    study = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    study["variants"][3]["args"]["config"] = "config/recipes/synthrooms/nope.yaml"
    (REPO_COPY := tmp_path / "proj").mkdir()
    for name in ("Snakefile", "dvc.yaml"):
        (REPO_COPY / name).write_text("")
    (REPO_COPY / "config").mkdir()
    (REPO_COPY / "config" / "s.yaml").write_text(yaml.safe_dump(study))
    schema = ["--schema", str(REPO / "config" / "schema.yaml")]
    res = runner.invoke(app, ["check-study", str(REPO_COPY / "config" / "s.yaml"), *schema])
    assert (
        res.exit_code == 2
        and "variant mtinet+3d names config config/recipes/synthrooms/nope.yaml" in res.output
    )
    (REPO_COPY / "config" / "recipes" / "synthrooms").mkdir(parents=True)
    (REPO_COPY / "config" / "recipes" / "synthrooms" / "nope.yaml").write_text(
        "model: {name: mtinet, options: {w: 1}}"
    )
    res = runner.invoke(app, ["check-study", str(REPO_COPY / "config" / "s.yaml"), *schema])
    assert res.exit_code == 2 and "has no option 'w'" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: x\n")
    res = runner.invoke(app, ["check-study", str(bad), "--schema", str(REPO / "config" / "schema.yaml")])
    assert res.exit_code == 2 and "required property" in res.output
    res = runner.invoke(
        app, ["collect", "--runs-root", str(tmp_path / "none"), "--study", "x", "--out", str(out)]
    )
    assert res.exit_code == 2 and "runs root not found" in res.output


def test_ablation_names_need_their_default(tmp_path: Path) -> None:
    study = yaml.safe_load((REPO / "config" / "ablations.yaml").read_text())
    study["variants"] = [v for v in study["variants"] if v["name"] != "mtl+3d"]
    bad = tmp_path / "a.yaml"
    bad.write_text(yaml.safe_dump(study))
    with pytest.raises(UserError, match="needs its default variant 'mtl\\+3d'"):
        load_study(bad, REPO / "config" / "schema.yaml")
    study["variants"].append({"name": "mtl+3d", "args": {"model": "mtl", "regularizer": True}})
    study["variants"].append({"name": "mtl@x", "args": {"model": "mtl", "regularizer": True}})
    bad.write_text(yaml.safe_dump(study))
    with pytest.raises(UserError, match="before any '@'"):
        load_study(bad, REPO / "config" / "schema.yaml")


def test_check_study_applies_the_dataset_and_the_variant_set_as_the_command_line_does() -> None:
    """The workflow writes the dataset's train options, then the variant's: both `set`s reach mtl3d train
    (a bad key in either is caught), and one `set` may hold several overrides."""
    from mtl3d.reporting.study import _run_config

    blocks = [{"dataset": "synthrooms"}, {"set": "eval_every=25; eval_images=36"}]
    cfg = _run_config(
        [*blocks, {"model": "mtl", "set": "data.train_fraction=0.1; regularizer.mode=flat"}], None
    )
    assert (cfg.eval_every, cfg.eval_images, cfg.data.train_fraction, cfg.regularizer.mode) == (
        25,
        36,
        0.1,
        "flat",
    )
    with pytest.raises(UserError, match="eval_evry"):
        _run_config(
            [{"dataset": "synthrooms"}, {"set": "eval_evry=25"}, {"model": "mtl", "set": "iters=3"}], None
        )


def test_learning_curves_sum_the_task_losses_and_keep_each_tasks_headline_metric(tmp_path: Path) -> None:
    """train/val loss = the sum of the final outputs' task losses at a step (a step missing one task's
    value is left out); the validation series are each task's Δm metric only."""
    from mtl3d.reporting.curves import TRAIN_LOSS, VAL_LOSS, learning_curves, write_learning_curves

    run = tmp_path / "s" / "synthrooms" / "mtl" / "seed0"
    run.mkdir(parents=True)
    (run / "train_log.csv").write_text(
        "step,lr,time_s,loss/semseg,loss/depth,loss/total,reg/depth,val/loss/semseg,val/loss/depth,"
        "val/semseg/mIoU,val/semseg/pixel_acc,val/depth/rmse\n"
        "1,0.1,1,2.0,0.5,9,0.1,,,,,\n"
        "2,0.1,2,1.5,,9,0.1,3.0,1.25,20,70,0.9\n"
        "3,0.1,3,1.0,0.25,9,0.1,2.5,1.0,25,75,0.8\n"
    )
    curves = write_learning_curves(tmp_path / "s", tmp_path / "c.csv")
    got = {(r.series, r.step): r.value for r in curves.itertuples()}
    assert got == {
        (TRAIN_LOSS, 1): 2.5,
        (TRAIN_LOSS, 3): 1.25,
        (VAL_LOSS, 2): 4.25,
        (VAL_LOSS, 3): 3.5,
        ("val/semseg/mIoU", 2): 20,
        ("val/semseg/mIoU", 3): 25,
        ("val/depth/rmse", 2): 0.9,
        ("val/depth/rmse", 3): 0.8,
    }
    assert pd.read_csv(tmp_path / "c.csv").shape == (8, 6)
    assert learning_curves(pd.DataFrame(columns=curves.columns)).empty


def test_export_stage_picks_the_seed_with_the_best_delta_m(tmp_path: Path) -> None:
    from mtl3d.reporting.export import best_seed_run

    variant = tmp_path / "runs" / "s" / "synthrooms" / "mtl+3d"
    for seed in (0, 1, 2):
        (variant / f"seed{seed}").mkdir(parents=True)
        (variant / f"seed{seed}" / "done").write_text("1\n")
    head = "study,dataset,model,variant,regularizer,backbone,seed,task,metric,value\n"
    rows = [
        "s,synthrooms,mtl,mtl+3d,True,resnet18,0,all,delta_m,-1.5",
        "s,synthrooms,mtl,mtl+3d,True,resnet18,1,all,delta_m,2.0",
        "s,synthrooms,mtl,mtl+3d,True,resnet18,2,all,delta_m,2.0",
        "s,synthrooms,mtl,mtl+3d,True,resnet18,0,semseg,mIoU,99",
        "s,synthrooms,mtl,mtl,False,resnet18,0,all,delta_m,9.0",
    ]
    summary = tmp_path / "summary.csv"
    summary.write_text(head + "\n".join(rows) + "\n")
    assert best_seed_run(variant, summary) == variant / "seed1"  # a tie goes to the lower seed
    (variant / "seed1" / "done").unlink()  # an unfinished run is never exported
    assert best_seed_run(variant, summary) == variant / "seed2"
    with pytest.raises(UserError, match="no Δm of a finished run of synthrooms/stl"):
        best_seed_run(variant.parent / "stl", summary)


def test_effects_figure_puts_each_control_under_its_regularizer_effect() -> None:
    from mtl3d.reporting.figures import effects_figure

    rows = []
    for h in ("mtl-f10", "mtinet-f10"):
        for a, b in ((h + "+3d", h + "+3d@flat"), (h, h + "+3d")):
            for task, metric in (("all", "delta_m"), ("semseg", "mIoU")):
                rows.append(
                    {
                        "host": a,
                        "task": task,
                        "metric": metric,
                        "diff": 0.5,
                        "ci_low": -1.0,
                        "ci_high": 2.0,
                        "seeds": 6,
                        "a": a,
                        "b": b,
                        "dataset": "synthrooms",
                    }
                )
    fig = effects_figure(pd.DataFrame(rows))
    top_down = [t.get_text() for t in fig.axes[0].get_yticklabels()][::-1]
    assert top_down == [
        "mtl-f10+3d − mtl-f10",
        "mtl-f10+3d@flat − mtl-f10+3d",
        "mtinet-f10+3d − mtinet-f10",
        "mtinet-f10+3d@flat − mtinet-f10+3d",
    ]
    assert len(fig.axes) == 2  # one panel per (task, metric)


def test_interval_seeds_from_the_t_distribution() -> None:
    """Half-width t_{0.975, n-1}·sd/√n: sd 2 at 6 seeds is ±2.571·2/√6 = ±2.10; ±1.5 needs 10 seeds
    (±2.262·2/√10 = ±1.431; at 9, ±2.306·2/3 = ±1.537)."""
    from mtl3d.reporting.power import interval_halfwidth, seeds_for_interval

    assert interval_halfwidth(6, 2.0) == pytest.approx(2.5706 * 2 / 6**0.5, rel=1e-4)
    assert interval_halfwidth(9, 2.0) == pytest.approx(2.3060 * 2 / 3, rel=1e-4)
    assert seeds_for_interval(1.5, 2.0) == 10
    assert seeds_for_interval(1.5, 0.0) == 2 and math.isnan(seeds_for_interval(1.5, math.nan))


def test_training_steps_come_from_the_config_each_run_trains_with(tmp_path: Path) -> None:
    """The train rule's priority: a variant's iters, else the dataset's train options', else the
    config default; a recipe (`config:`) counts as on the command line."""
    from mtl3d.config import TrainConfig
    from mtl3d.reporting.study import training_steps

    evidence = training_steps(load_study(REPO / "config" / "evidence.yaml"), REPO)
    assert evidence[("synthrooms", "mtinet-f100+3d@flat")] == 350
    assert evidence[("synthrooms", "mtl-f10")] == 150
    (tmp_path / "recipe.yaml").write_text("iters: 7\n")
    study = {
        "study": "x",
        "datasets": [{"name": "synthrooms", "train": {"iters": 40}}, {"name": "nyud"}],
        "variants": [
            {"name": "a", "args": {"model": "mtl"}},
            {"name": "b", "args": {"model": "mtl", "iters": 90}},
            {"name": "c", "args": {"model": "mtl", "config": "recipe.yaml"}},
        ],
    }
    steps = training_steps(study, tmp_path)
    assert steps[("synthrooms", "a")] == 40
    assert steps[("synthrooms", "b")] == 90
    assert steps[("nyud", "a")] == TrainConfig().iters
    assert steps[("nyud", "c")] == 7


def test_variant_colors_are_distinct_and_never_grey() -> None:
    """The train-vs-val panels draw the training loss near-black: no variant may be grey, and past
    seaborn's 10 colours no two variants may share one."""
    from mtl3d.reporting.figures.style import variant_colors

    for n in (1, 9, 12, 30):
        colors = list(variant_colors([f"v{i}" for i in range(n)]).values())
        assert len(colors) == n
        assert len({tuple(np.round(c, 3)) for c in colors}) == n
        assert all(np.ptp(c) > 0.1 for c in colors)  # grey: r == g == b
