"""Study figures: Δm per model, per-task gains and training curves of each dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mtl3d.engine.validation import VAL_PREFIX
from mtl3d.reporting.collect import ALL_TASKS, DELTA, GAIN
from mtl3d.reporting.curves import TRAIN_LOSS, VAL_LOSS, learning_curves, read_training_logs
from mtl3d.reporting.figures.forest import forest_figure
from mtl3d.reporting.figures.style import save_figure, theme, variant_colors
from mtl3d.reporting.labels import TASK_LABELS, ordered_tasks, variant_order
from mtl3d.reporting.study import ABLATION
from mtl3d.tasks import TASKS


def _no_data(fig: Figure, text: str) -> Figure:
    """A figure that says in words what is missing instead of drawing empty axes."""
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def delta_m_figure(summary: pd.DataFrame, dataset: str, reference: str = "stl") -> Figure:
    """Δm per model without / with the regularizer: bars = mean, error bars = std over seeds, dots = seeds."""
    import seaborn as sns

    theme()
    d = summary[
        (summary["dataset"] == dataset) & (summary["task"] == ALL_TASKS) & (summary["metric"] == DELTA)
    ]
    d = d[d["variant"] != reference].copy()
    fig = Figure(figsize=(2.4 + 0.9 * max(1, d["model"].nunique()), 3.0), layout="constrained")
    if d.empty:
        return _no_data(fig, f"no Δm for {dataset}\n(needs {reference} runs and other variants)")
    ax = fig.add_subplot()
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

    theme()
    d = summary[
        (summary["dataset"] == dataset) & (summary["metric"] == GAIN) & (summary["variant"] != reference)
    ]
    fig = Figure(figsize=(1.5 + 1.2 * max(1, d["task"].nunique()), 3.0), layout="constrained")
    if d.empty:
        return _no_data(fig, f"no per-task gains for {dataset}")
    ax = fig.add_subplot()
    tasks = ordered_tasks(d["task"])
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
        palette=variant_colors(order),
    )
    ax.set_xticks(range(len(tasks)), [TASK_LABELS.get(t, t) for t in tasks])
    ax.axhline(0.0, color="0.3", lw=0.8)
    ax.set_xlabel("")
    ax.set_ylabel(f"gain vs {reference} (%)")
    ax.set_title(f"{dataset}: per-task gain on the Δm metric (↑)")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), title="", frameon=False)
    return fig


def training_curves_figure(logs: pd.DataFrame, dataset: str, reference: str = "stl") -> Figure:
    """Training losses against steps: a panel per loss term, a line per variant (band: std over seeds)."""
    import seaborn as sns

    theme()
    d = logs[(logs["dataset"] == dataset) & logs["series"].str.startswith(("loss/", "reg/"))]
    series = sorted(d["series"].unique(), key=lambda s: (s != "loss/total", "reg/" in s, s))
    n = max(1, len(series))
    ncol = min(4, n)
    nrow = (n + ncol - 1) // ncol
    fig = Figure(figsize=(3.0 * ncol, 2.4 * nrow), layout="constrained")
    if d.empty:
        return _no_data(fig, f"no train_log.csv for {dataset}")
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
            palette=variant_colors(order),
        )
        ax.set_title(s, fontsize="small")
        ax.set_ylabel("")
        if (d[d["series"] == s]["value"] > 0).all():
            ax.set_yscale("log")
    for k in range(len(series), nrow * ncol):
        axes[k // ncol][k % ncol].set_axis_off()
    fig.suptitle(f"{dataset}: training losses")
    return fig


def learning_curves_figure(curves: pd.DataFrame, dataset: str, reference: str = "stl") -> Figure:
    """Validation curves and train vs validation loss (``reporting.curves.learning_curves``).

    Top row: each task's Δm metric on the validation subset against steps, a line per variant (mean over
    seeds, band: std over seeds). Below: a small panel per variant with the final outputs' loss summed
    over the tasks on the training batches and on the validation subset (band: std over seeds).
    """
    import seaborn as sns

    theme()
    d = curves[curves["dataset"] == dataset]
    val = d[d["series"].str.startswith(VAL_PREFIX)]
    metrics = [
        s
        for t in ordered_tasks(s.split("/")[1] for s in val["series"].unique())
        for s in sorted(val["series"].unique())
        if s.split("/")[1] == t
    ]
    if not metrics:
        return _no_data(
            Figure(figsize=(6, 2), layout="constrained"),
            f"{dataset}: no validation curves (train with eval_every > 0)",
        )
    order = variant_order(list(d["variant"].unique()), reference)
    ncol = max(len(metrics), 4)
    loss_rows = -(-len(order) // ncol)
    fig = Figure(figsize=(3.0 * ncol, 2.5 * (1 + loss_rows)), layout="constrained")
    axes = fig.subplots(1 + loss_rows, ncol, squeeze=False)
    palette = variant_colors(order)
    for k, s in enumerate(metrics):
        ax = axes[0][k]
        task, metric = s.split("/")[1:3]
        sns.lineplot(
            data=val[val["series"] == s],
            x="step",
            y="value",
            hue="variant",
            hue_order=order,
            errorbar="sd",
            palette=palette,
            ax=ax,
            legend=(k == len(metrics) - 1),
        )
        arrow = "↓" if TASKS[task].lower_is_better else "↑"
        ax.set_title(f"val {TASK_LABELS.get(task, task)} {metric} {arrow}", fontsize="small")
        ax.set_ylabel("")
        if k == len(metrics) - 1:
            sns.move_legend(
                ax, "upper left", bbox_to_anchor=(1.0, 1.0), title="", frameon=False, fontsize="x-small"
            )
    for k in range(len(metrics), ncol):
        axes[0][k].set_axis_off()
    losses = d[d["series"].isin([TRAIN_LOSS, VAL_LOSS])]
    for k, v in enumerate(order):
        ax = axes[1 + k // ncol][k % ncol]
        sns.lineplot(
            data=losses[losses["variant"] == v],
            x="step",
            y="value",
            hue="series",
            hue_order=[TRAIN_LOSS, VAL_LOSS],
            style="series",
            style_order=[TRAIN_LOSS, VAL_LOSS],
            dashes={TRAIN_LOSS: (2, 2), VAL_LOSS: ""},
            palette=["0.15", palette[v]],
            errorbar="sd",
            ax=ax,
            legend=(k == 0),
        )
        ax.set_title(f"{v}: train vs val loss", fontsize="small")
        ax.set_ylabel("")
        if k == 0:
            sns.move_legend(ax, "upper right", title="", frameon=False, fontsize="x-small")
    for k in range(len(order), loss_rows * ncol):
        axes[1 + k // ncol][k % ncol].set_axis_off()
    fig.suptitle(f"{dataset}: learning curves (validation subset, mean ± std over seeds)")
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
    out = Path(out_dir)
    written: list[Path] = []
    logs = read_training_logs(runs_root) if runs_root is not None else None
    for d in summary["dataset"].unique():
        written += save_figure(delta_m_figure(summary, d, reference), out / f"delta_m_{d}")
        written += save_figure(task_gain_figure(summary, d, reference), out / f"task_gains_{d}")
        if logs is not None:
            written += save_figure(training_curves_figure(logs, d, reference), out / f"training_curves_{d}")
            curves = learning_curves(logs[logs["dataset"] == d])
            if curves["series"].str.startswith(VAL_PREFIX).any():
                written += save_figure(
                    learning_curves_figure(curves, d, reference), out / f"learning_curves_{d}"
                )
        rows = comparisons[comparisons["dataset"] == d] if comparisons is not None else None
        if rows is not None and not rows.empty:
            ablation = rows["b"].astype(str).str.contains(ABLATION, regex=False)
            if (~ablation).any():
                written += save_figure(forest_figure(rows[~ablation]), out / f"regularizer_effect_{d}")
            if ablation.any():
                written += save_figure(forest_figure(rows[ablation]), out / f"ablations_{d}")
            if (~ablation).any() and ablation.any():
                written += save_figure(effects_figure(rows), out / f"effects_{d}")
    return written


def effects_figure(comparisons: pd.DataFrame) -> Figure:
    """Every comparison of a study in one forest plot, each labelled ``B − A``: a host's ``+3d − host``
    followed by the ablations of that ``+3d`` (e.g. the capacity control ``+3d@flat − +3d``), so the
    regularizer's effect and what a control says about it read side by side."""
    rows = comparisons.assign(host=comparisons["b"].astype(str) + " − " + comparisons["a"].astype(str))
    ablation = rows["b"].astype(str).str.contains(ABLATION, regex=False)
    order = []
    for a, b in dict.fromkeys(zip(rows["a"][~ablation], rows["b"][~ablation], strict=True)):
        order.append(f"{b} − {a}")
        order += [h for h in dict.fromkeys(rows["host"][ablation & (rows["a"] == b)])]
    order += [h for h in dict.fromkeys(rows["host"]) if h not in order]
    rank = {h: i for i, h in enumerate(order)}
    return forest_figure(rows.sort_values("host", key=lambda c: c.map(rank), kind="stable"))
