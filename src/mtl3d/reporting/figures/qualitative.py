"""Qualitative figures: saved predictions beside the ground truth, per run and across variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mtl3d.engine.rundir import RunDir, find_runs
from mtl3d.errors import UserError
from mtl3d.reporting.figures.style import colorize, grid, save_figure
from mtl3d.reporting.labels import TASK_LABELS, ordered_tasks, variant_order


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
    return ordered_tasks(tasks)


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
    fig, axes = grid(len(preds), len(cols))
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
    fig, axes = grid(len(preds) + 1, len(tasks) + 1)
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
