"""Figures (PNG + PDF) for a study and its datasets; the notebooks only call these.

Figures are built on ``matplotlib.figure.Figure`` without pyplot, so nothing here touches the global
backend state (works headless under papermill and inline in JupyterLab via ``display(fig)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mtl3d.engine.rundir import RunDir, find_runs
from mtl3d.errors import UserError
from mtl3d.reporting.collect import ALL_TASKS, DELTA, GAIN
from mtl3d.reporting.tables import TASK_LABELS, TASK_ORDER, variant_order

IGNORE = 255


def save_figure(fig: Figure, out_stem: str | Path, dpi: int = 150) -> list[Path]:
    """Write ``OUT_STEM.png`` and ``OUT_STEM.pdf``; returns both paths."""
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(
            p, dpi=dpi, bbox_inches="tight", metadata={"CreationDate": None} if p.suffix == ".pdf" else None
        )
    return paths


def _theme() -> None:
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")


# ----------------------------------------------------------------------------------------- study figures
def delta_m_figure(summary: pd.DataFrame, dataset: str, reference: str = "stl") -> Figure:
    """Δm per model without / with the regularizer: bars = mean, error bars = std over seeds, dots = seeds."""
    import seaborn as sns

    _theme()
    d = summary[
        (summary["dataset"] == dataset) & (summary["task"] == ALL_TASKS) & (summary["metric"] == DELTA)
    ]
    d = d[d["variant"] != reference].copy()
    fig = Figure(figsize=(2.4 + 0.9 * max(1, d["model"].nunique()), 3.0), layout="constrained")
    ax = fig.add_subplot()
    if d.empty:
        ax.text(
            0.5,
            0.5,
            f"no Δm for {dataset}\n(needs {reference} runs and other variants)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
        ax.set_axis_off()
        return fig
    d["3D-aware regularizer"] = np.where(d["regularizer"].astype(bool), "on", "off")
    order = variant_order(list(d["variant"].unique()), reference)
    models = list(dict.fromkeys(d.drop_duplicates("variant").set_index("variant").loc[order, "model"]))
    hue_order = [h for h in ("off", "on") if h in set(d["3D-aware regularizer"])]
    sns.barplot(
        data=d,
        x="model",
        y="value",
        hue="3D-aware regularizer",
        order=models,
        hue_order=hue_order,
        errorbar="sd",
        capsize=0.15,
        ax=ax,
        palette="deep",
    )
    sns.stripplot(
        data=d,
        x="model",
        y="value",
        hue="3D-aware regularizer",
        order=models,
        hue_order=hue_order,
        dodge=True,
        palette={h: "black" for h in hue_order},
        size=3,
        ax=ax,
        legend=False,
    )
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel(f"Δm vs {reference} (%)")
    ax.set_title(f"{dataset}: multi-task performance (↑)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), title="3D-aware reg.", frameon=False)
    return fig


def task_gain_figure(summary: pd.DataFrame, dataset: str, reference: str = "stl") -> Figure:
    """Per-task relative gain (%) over the reference, per variant; error bars = std over seeds."""
    import seaborn as sns

    _theme()
    d = summary[
        (summary["dataset"] == dataset) & (summary["metric"] == GAIN) & (summary["variant"] != reference)
    ]
    fig = Figure(figsize=(1.5 + 1.2 * max(1, d["task"].nunique()), 3.0), layout="constrained")
    ax = fig.add_subplot()
    if d.empty:
        ax.text(
            0.5, 0.5, f"no per-task gains for {dataset}", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_axis_off()
        return fig
    tasks = [t for t in TASK_ORDER if t in set(d["task"])] + sorted(set(d["task"]) - set(TASK_ORDER))
    order = variant_order(list(d["variant"].unique()), reference)
    sns.barplot(
        data=d,
        x="task",
        y="value",
        hue="variant",
        order=tasks,
        hue_order=order,
        errorbar="sd",
        capsize=0.1,
        ax=ax,
        palette="deep",
    )
    ax.set_xticks(range(len(tasks)), [TASK_LABELS.get(t, t) for t in tasks])
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel(f"gain vs {reference} (%)")
    ax.set_title(f"{dataset}: per-task gain on the Δm metric (↑)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), title="", frameon=False)
    return fig


def read_training_logs(runs_root: str | Path) -> pd.DataFrame:
    """All ``train_log.csv`` of a study, long format: dataset, variant, seed, step, series, value."""
    frames = []
    for rd in find_runs(runs_root, RunDir.TRAIN_LOG):
        log = pd.DataFrame(rd.read_train_log())
        if "step" not in log.columns:
            continue
        log["step"] = log["step"].astype(int)
        series = [c for c in log.columns if c.startswith(("loss/", "reg/"))]
        long = log.melt(id_vars=["step"], value_vars=series, var_name="series", value_name="value")
        long.insert(0, "seed", rd.seed)
        long.insert(0, "variant", rd.variant)
        long.insert(0, "dataset", rd.dataset)
        frames.append(long)
    if not frames:
        return pd.DataFrame(columns=["dataset", "variant", "seed", "step", "series", "value"])
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"])


def training_curves_figure(logs: pd.DataFrame, dataset: str, reference: str = "stl") -> Figure:
    """Training losses against steps: a panel per loss term, a line per variant (band: std over seeds)."""
    import seaborn as sns

    _theme()
    d = logs[logs["dataset"] == dataset]
    series = sorted(d["series"].unique(), key=lambda s: (s != "loss/total", "reg/" in s, s))
    n = max(1, len(series))
    ncol = min(4, n)
    nrow = (n + ncol - 1) // ncol
    fig = Figure(figsize=(3.0 * ncol, 2.4 * nrow), layout="constrained")
    if d.empty:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, f"no train_log.csv for {dataset}", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    order = variant_order(list(d["variant"].unique()), reference)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    few_points = d["step"].nunique() <= 20  # a line through one or two points is invisible
    for k, s in enumerate(series):
        ax = axes[k // ncol][k % ncol]
        sns.lineplot(
            data=d[d["series"] == s],
            x="step",
            y="value",
            hue="variant",
            hue_order=order,
            errorbar="sd",
            marker="o" if few_points else None,
            ax=ax,
            legend=(k == 0),
            palette="deep",
        )
        ax.set_title(s, fontsize="small")
        ax.set_ylabel("")
        if (d[d["series"] == s]["value"] > 0).all():
            ax.set_yscale("log")
    for k in range(len(series), nrow * ncol):
        axes[k // ncol][k % ncol].set_axis_off()
    fig.suptitle(f"{dataset}: training losses")
    return fig


def write_study_figures(
    summary: pd.DataFrame,
    runs_root: str | Path | None,
    out_dir: str | Path,
    reference: str = "stl",
    comparisons: pd.DataFrame | None = None,
) -> list[Path]:
    """Δm, per-task gains and training curves of every dataset of a study, into ``out_dir``; with
    ``comparisons`` (``compare.compare_hosts``) also the forest plot of every host's +3d − host."""
    from mtl3d.reporting.compare import ABLATION, forest_figure

    out = Path(out_dir)
    written: list[Path] = []
    logs = read_training_logs(runs_root) if runs_root is not None else None
    for d in summary["dataset"].unique():
        written += save_figure(delta_m_figure(summary, d, reference), out / f"delta_m_{d}")
        written += save_figure(task_gain_figure(summary, d, reference), out / f"task_gains_{d}")
        if logs is not None:
            written += save_figure(training_curves_figure(logs, d, reference), out / f"training_curves_{d}")
        rows = comparisons[comparisons["dataset"] == d] if comparisons is not None else None
        if rows is not None and not rows.empty:
            ablation = rows["b"].astype(str).str.contains(ABLATION, regex=False)
            if (~ablation).any():
                written += save_figure(forest_figure(rows[~ablation]), out / f"regularizer_effect_{d}")
            if ablation.any():
                written += save_figure(forest_figure(rows[ablation]), out / f"ablations_{d}")
    return written


# ------------------------------------------------------------------------------------ image rendering
def class_colors(n: int) -> np.ndarray:
    """A fixed, distinguishable RGB palette (uint8, n x 3): seaborn's husl hues, lightness cycled."""
    import seaborn as sns

    base = np.array(sns.color_palette("husl", max(n, 1)))
    light = np.where(np.arange(max(n, 1)) % 2 == 0, 1.0, 0.7)[:, None]
    return (base * light * 255).round().astype(np.uint8)


def _hwc(a: np.ndarray) -> np.ndarray:
    """CHW (as saved from tensors) -> HWC; HWC and HW pass through."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    return a


def colorize(
    task: str, arr: np.ndarray, num_classes: int = 0, depth_range: tuple[float, float] | None = None
) -> np.ndarray:
    """A label map / prediction of ``task`` as an RGB float image in [0, 1] (invalid pixels black)."""
    import matplotlib

    a = _hwc(np.asarray(arr, dtype=np.float32) if task not in ("semseg", "human_parts") else np.asarray(arr))
    if task in ("semseg", "human_parts"):
        lab = a[..., 0] if a.ndim == 3 else a
        lab = lab.astype(np.int64)
        n = max(num_classes, int(lab[lab != IGNORE].max()) + 1 if (lab != IGNORE).any() else 1)
        pal = class_colors(n).astype(np.float32) / 255.0
        out = np.zeros((*lab.shape, 3), np.float32)
        ok = (lab >= 0) & (lab < n)
        out[ok] = pal[lab[ok]]
        return out
    if task == "normals":
        if a.ndim != 3 or a.shape[-1] != 3:  # not a 3-vector field: show an empty (grey) panel
            return np.full((*a.shape[:2], 3), 0.5, np.float32)
        n = a[..., :3]
        valid = np.linalg.norm(n, axis=-1, keepdims=True) > 1e-6
        return np.where(valid, np.clip((n + 1.0) / 2.0, 0.0, 1.0), 0.0)
    x = a[..., 0] if a.ndim == 3 else a
    if task == "depth":
        valid = x > 0
        lo, hi = (
            depth_range
            if depth_range
            else ((float(x[valid].min()), float(x[valid].max())) if valid.any() else (0.0, 1.0))
        )
        t = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        rgb = matplotlib.colormaps["viridis"](t)[..., :3].astype(np.float32)
        return np.where(valid[..., None], rgb, 0.0)
    # edges, saliency and anything else in [0, 1]; 255 (ignore) shown black
    valid = x != IGNORE
    g = np.clip(np.where(valid, x, 0.0), 0.0, 1.0)
    return np.repeat(g[..., None], 3, axis=-1)


def _depth_range(*arrays: np.ndarray | None) -> tuple[float, float] | None:
    vals = [np.asarray(a, np.float32) for a in arrays if a is not None]
    vals = [v[v > 0] for v in vals if (v > 0).any()]
    if not vals:
        return None
    allv = np.concatenate([v.ravel() for v in vals])
    return float(np.percentile(allv, 1)), float(np.percentile(allv, 99))


def load_prediction(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(Path(path)) as z:
        return {k: z[k] for k in z.files}


def _pred_tasks(pred: dict[str, np.ndarray]) -> list[str]:
    tasks = [k[len("gt_") :] for k in pred if k.startswith("gt_")]
    return [t for t in TASK_ORDER if t in tasks] + sorted(t for t in tasks if t not in TASK_ORDER)


def _grid(nrow: int, ncol: int, cell: float = 1.6) -> tuple[Figure, Any]:
    fig = Figure(figsize=(cell * ncol, cell * nrow * 0.8 + 0.3), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
    return fig, axes


def qualitative_figure(pred_files: list[Path], num_classes: int = 0, title: str = "") -> Figure:
    """Rows = saved images; columns: image, then per task GT | prediction | regularizer's rendering
    (``reg_<task>``, when the run has the regularizer), and the rendered depth (``reg_depth``)."""
    preds = [load_prediction(p) for p in pred_files]
    if not preds:
        raise UserError("no prediction files to show")
    tasks = _pred_tasks(preds[0])
    cols: list[tuple[str, str]] = [("image", "image")]
    for t in tasks:
        cols += [(t, f"gt_{t}"), (t, f"pred_{t}")]
        if f"reg_{t}" in preds[0]:
            cols.append((t, f"reg_{t}"))
    if "reg_depth" in preds[0] and "depth" not in tasks:
        cols.append(("depth", "reg_depth"))
    fig, axes = _grid(len(preds), len(cols))
    for i, (p, path) in enumerate(zip(preds, pred_files, strict=True)):
        drange = _depth_range(p.get("gt_depth"), p.get("pred_depth"))
        for j, (t, key) in enumerate(cols):
            ax = axes[i][j]
            if key not in p:
                continue
            img = (
                p[key].astype(np.float32) / 255.0
                if key == "image"
                else colorize(t, p[key], num_classes, drange)
            )
            ax.imshow(img, interpolation="nearest")
            if i == 0:
                label = "image" if key == "image" else f"{TASK_LABELS.get(t, t)} {key.split('_')[0]}"
                ax.set_title(
                    label.replace(" pred", " pred.").replace(" reg", " rendered"), fontsize="x-small"
                )
            if j == 0:
                ax.set_ylabel(Path(path).stem, fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="small")
    return fig


def compare_figure(runs: dict[str, Path], image_id: str, num_classes: int = 0, title: str = "") -> Figure:
    """One image across variants: rows = variants (first row GT), columns = tasks."""
    preds = {
        v: load_prediction(RunDir(rd).prediction(image_id))
        for v, rd in runs.items()
        if RunDir(rd).prediction(image_id).is_file()
    }
    if not preds:
        raise UserError(f"no run has a saved prediction for {image_id}")
    first = next(iter(preds.values()))
    tasks = _pred_tasks(first)
    fig, axes = _grid(len(preds) + 1, len(tasks) + 1)
    drange = _depth_range(first.get("gt_depth"))
    axes[0][0].imshow(first["image"].astype(np.float32) / 255.0)
    axes[0][0].set_ylabel("ground truth", fontsize="x-small")
    for j, t in enumerate(tasks, start=1):
        axes[0][j].imshow(colorize(t, first[f"gt_{t}"], num_classes, drange), interpolation="nearest")
        axes[0][j].set_title(TASK_LABELS.get(t, t), fontsize="x-small")
    for i, (v, p) in enumerate(preds.items(), start=1):
        axes[i][0].set_ylabel(v, fontsize="x-small")
        for j, t in enumerate(tasks, start=1):
            if f"pred_{t}" in p:
                axes[i][j].imshow(colorize(t, p[f"pred_{t}"], num_classes, drange), interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize="small")
    return fig


def study_runs(runs_root: str | Path) -> pd.DataFrame:
    """Run folders of a study that have predictions: dataset, variant, seed, run_dir."""
    rows = []
    for rd in find_runs(runs_root, RunDir.PREDICTIONS):
        if any(rd.predictions.glob("*.npz")):
            rows.append({"dataset": rd.dataset, "variant": rd.variant, "seed": rd.seed, "run_dir": rd.path})
    return pd.DataFrame(rows, columns=["dataset", "variant", "seed", "run_dir"])


def _num_classes(run_dir: Path) -> int:
    mf = RunDir(run_dir).metrics
    if mf.is_file():
        sem = json.loads(mf.read_text()).get("metrics", {}).get("semseg", {})
        for k in ("num_classes", "n_classes"):
            if isinstance(sem.get(k), int):
                return int(sem[k])
    return 0


def write_qualitative(
    runs_root: str | Path, out_dir: str | Path, max_images: int = 4, reference: str = "stl"
) -> list[Path]:
    """Per dataset: a variant comparison for each saved image of the lowest seed, and one grid per run."""
    runs = study_runs(runs_root)
    out = Path(out_dir)
    written: list[Path] = []
    if runs.empty:
        fig = Figure(figsize=(4, 1), layout="constrained")
        fig.text(0.5, 0.5, f"no saved predictions under {runs_root}", ha="center")
        return save_figure(fig, out / "no_predictions")
    for dataset, dr in runs.groupby("dataset", sort=False):
        seed = int(dr["seed"].min())
        dr = dr[dr["seed"] == seed]
        by_variant = {
            v: Path(dr[dr["variant"] == v]["run_dir"].iloc[0])
            for v in variant_order(list(dr["variant"].unique()), reference)
        }
        first_run = next(iter(by_variant.values()))
        ncls = _num_classes(first_run)
        ids = sorted(p.stem for p in RunDir(first_run).predictions.glob("*.npz"))[:max_images]
        for image_id in ids:
            fig = compare_figure(by_variant, image_id, ncls, title=f"{dataset} {image_id} (seed {seed})")
            written += save_figure(fig, out / f"compare_{dataset}_{image_id}")
        for v, rd in by_variant.items():
            files = sorted(RunDir(rd).predictions.glob("*.npz"))[:max_images]
            fig = qualitative_figure(files, ncls, title=f"{dataset} / {v} / seed {seed}")
            written += save_figure(fig, out / f"grid_{dataset}_{v.replace('+', '_plus_')}")
    return written


# ------------------------------------------------------------------------------------------ dataset figures
def _views(root: str | Path, split: str, tasks: list[str] | None = None):
    """The one reader of prepared data (``mtl3d.data``): any dataset, no layout knowledge here."""
    from mtl3d.data.folder import open_dataset

    return open_dataset(root, split, tasks)


def _sample_ids(ids: list[str], n: int) -> list[str]:
    if len(ids) <= n:
        return ids
    idx = np.linspace(0, len(ids) - 1, n).round().astype(int)
    return [ids[i] for i in idx]


def dataset_samples_figure(root: str | Path, split: str = "train", n: int = 4) -> Figure:
    ds = _views(root, split)
    man = ds.manifest
    tasks = [t for t in TASK_ORDER if t in ds.tasks]
    ids = _sample_ids(ds.ids, n)
    fig, axes = _grid(len(ids), len(tasks) + 1)
    ncls = ds.num_classes
    for i, vid in enumerate(ids):
        v = ds.load_arrays(vid)
        axes[i][0].imshow(v["image"])
        axes[i][0].set_ylabel(vid, fontsize="x-small")
        for j, t in enumerate(tasks, start=1):
            if t in v:
                axes[i][j].imshow(colorize(t, v[t], ncls), interpolation="nearest")
            if i == 0:
                axes[i][j].set_title(TASK_LABELS.get(t, t), fontsize="x-small")
    axes[0][0].set_title("image", fontsize="x-small")
    fig.suptitle(f"{man.get('dataset', Path(root).name)}: {split} samples", fontsize="small")
    return fig


def dataset_stats(root: str | Path, max_views: int = 200) -> dict[str, Any]:
    """Counts, sizes and label statistics of a prepared dataset (over up to ``max_views`` train views)."""
    from mtl3d.data.folder import split_names

    splits = {name: len(_views(root, name, []).ids) for name in split_names(root)}
    train = "train" if "train" in splits else next(iter(splits))
    ds = _views(root, train)
    man = ds.manifest
    classes = ds.classes
    ids = _sample_ids(ds.ids, max_views)
    counts = np.zeros(max(len(classes), 1), np.int64)
    depth_vals, ignore, total, edge_px, invalid_depth, invalid_normals = [], 0, 0, 0, 0, 0
    rng = np.random.default_rng(0)
    for vid in ids:
        v = ds.load_arrays(vid)
        total += v["image"].shape[0] * v["image"].shape[1]
        if "semseg" in v:
            lab = v["semseg"].astype(np.int64)
            ignore += int((lab == IGNORE).sum())
            ok = lab[(lab != IGNORE) & (lab < len(counts))]
            counts += np.bincount(ok.ravel(), minlength=len(counts))
        if "depth" in v:
            d = v["depth"].ravel()
            invalid_depth += int((d <= 0).sum())
            good = d[d > 0]
            if good.size:
                depth_vals.append(rng.choice(good, size=min(2000, good.size), replace=False))
        if "normals" in v:
            invalid_normals += int((np.linalg.norm(v["normals"], axis=-1) < 1e-6).sum())
        if "edges" in v:
            edge_px += int((v["edges"] > 0.5).sum())
    dv = np.concatenate(depth_vals) if depth_vals else np.zeros(0)
    return {
        "dataset": man.get("dataset", Path(root).name),
        "splits": splits,
        "views_used": len(ids),
        "size": [man.get("height"), man.get("width")],
        "classes": classes,
        "class_pixel_fraction": {c: float(counts[i] / max(counts.sum(), 1)) for i, c in enumerate(classes)},
        "semseg_ignore_fraction": ignore / max(total, 1),
        "depth_m": {
            "min": float(dv.min()) if dv.size else None,
            "median": float(np.median(dv)) if dv.size else None,
            "max": float(dv.max()) if dv.size else None,
        },
        "depth_invalid_fraction": invalid_depth / max(total, 1),
        "normals_invalid_fraction": invalid_normals / max(total, 1),
        "edge_pixel_fraction": edge_px / max(total, 1),
        "depth_sample": dv,
    }


def label_stats_figure(stats: dict[str, Any]) -> Figure:
    """Class pixel frequencies and the depth histogram of a dataset."""
    import seaborn as sns

    _theme()
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    freq = pd.DataFrame(
        {
            "class": list(stats["class_pixel_fraction"]),
            "fraction": list(stats["class_pixel_fraction"].values()),
        }
    )
    if not freq.empty:
        sns.barplot(data=freq, x="class", y="fraction", ax=ax1, color="C0")
        ax1.tick_params(axis="x", rotation=60, labelsize="x-small")
    ax1.set_title(f"class pixel fraction ({stats['views_used']} train views)", fontsize="small")
    ax1.set_xlabel("")
    if stats["depth_sample"].size:
        sns.histplot(stats["depth_sample"], bins=40, ax=ax2, color="C2")
    ax2.set_xlabel("depth (m)")
    ax2.set_title(f"depth; invalid {100 * stats['depth_invalid_fraction']:.1f}% of pixels", fontsize="small")
    fig.suptitle(f"{stats['dataset']}: label statistics", fontsize="small")
    return fig


def multiview_figure(root: str | Path, split: str = "train", n: int = 3) -> Figure:
    """Pairs of views: view a, its neighbour b, b warped into a by a's depth and the poses, |a − warp|."""
    from mtl3d.regularizer.rays import warp_to_reference

    ds = _views(root, split, ["depth"])
    man = ds.manifest
    views = man.get("views", {})
    ids = [i for i in ds.ids if views.get(i, {}).get("neighbors")]
    fig, axes = _grid(max(1, min(n, len(ids))), 4, cell=2.0)
    if not ids:
        axes[0][0].text(
            0.5, 0.5, "no multi-view pairs (no neighbours in the manifest)", transform=axes[0][0].transAxes
        )
        return fig
    for i, a in enumerate(_sample_ids(ids, n)):
        b = views[a]["neighbors"][0]
        va, vb = ds.load_arrays(a), ds.load_arrays(b)
        warped, valid = warp_to_reference(
            va["depth"], va["K"], va["pose"], vb["image"], vb["K"], vb["pose"], vb.get("depth")
        )
        err = np.abs(va["image"].astype(np.float32) - warped).mean(-1) / 255.0
        err[~valid] = np.nan
        axes[i][0].imshow(va["image"])
        axes[i][1].imshow(vb["image"])
        axes[i][2].imshow(warped.astype(np.uint8))
        axes[i][3].imshow(err, vmin=0, vmax=0.5, cmap="magma")
        axes[i][0].set_ylabel(f"{a} / {b}", fontsize="x-small")
        axes[i][3].set_xlabel(
            f"valid {100 * valid.mean():.0f}%, mean |Δ| {np.nanmean(err):.3f}"
            if valid.any()
            else "no overlap",
            fontsize="x-small",
        )
    for j, t in enumerate(["view a", "neighbour b", "b warped into a", "|a − warped b|"]):
        axes[0][j].set_title(t, fontsize="x-small")
    fig.suptitle(f"{man.get('dataset', Path(root).name)}: multi-view pairs", fontsize="small")
    return fig


def write_dataset_figures(
    root: str | Path, out_dir: str | Path, n: int = 4, max_views: int = 200
) -> list[Path]:
    """Samples, label statistics (+ stats.json) and multi-view pairs of one prepared dataset."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = save_figure(dataset_samples_figure(root, "train", n), out / "samples")
    stats = dataset_stats(root, max_views)
    written += save_figure(label_stats_figure(stats), out / "label_stats")
    from mtl3d.data.folder import read_manifest

    man = read_manifest(root, Path(root).name)
    if any(v.get("neighbors") for v in man.get("views", {}).values()):
        written += save_figure(multiview_figure(root, "train", min(n, 3)), out / "multiview_pairs")
    js = {k: v for k, v in stats.items() if k != "depth_sample"}
    (out / "stats.json").write_text(json.dumps(js, indent=1) + "\n")
    written.append(out / "stats.json")
    return written
