"""Dataset figures: sample views with their labels, label statistics and the multi-view geometry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mtl3d.reporting.figures.style import IGNORE, colorize, grid, save_figure, theme
from mtl3d.reporting.labels import TASK_LABELS, TASK_ORDER


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
    fig, axes = grid(len(ids), len(tasks) + 1)
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

    theme()
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
    fig, axes = grid(max(1, min(n, len(ids))), 4, cell=2.0)
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
