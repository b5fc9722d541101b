"""The forest plot of paired comparisons (``mtl3d report compare``): B − A with its 95 % interval."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mtl3d.errors import UserError
from mtl3d.reporting.compare import DELTA_TASK, significant
from mtl3d.reporting.figures.style import theme
from mtl3d.tasks import TASKS


def forest_figure(rows: pd.DataFrame | Sequence[dict[str, Any]]) -> Figure:
    """Forest plot: one panel per (task, metric), since units differ (mIoU points, metres, degrees, Δm
    in %); in each, one line per host (B − A) with its 95 % interval, filled where it is
    :func:`significant` (excludes 0, at least ``MIN_SEEDS`` paired seeds).

    ``rows``: :func:`compare` output (several comparisons may be concatenated); the host label is the
    ``host`` column if present, else ``"B − A"``.
    """

    df = pd.DataFrame(rows)
    if df.empty:
        raise UserError("no comparison rows to plot")
    theme()
    df = df.assign(label=df["host"] if "host" in df else df["b"].astype(str) + " − " + df["a"].astype(str))
    panels = list(dict.fromkeys(zip(df["task"], df["metric"], strict=True)))
    hosts = list(dict.fromkeys(df["label"]))
    fig = Figure(figsize=(2.6 * len(panels) + 1.2, 0.32 * len(hosts) + 1.3))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    y_of = {h: len(hosts) - 1 - i for i, h in enumerate(hosts)}
    for ax, (task, metric) in zip(axes, panels, strict=True):
        sub = df[(df["task"] == task) & (df["metric"] == metric)]
        y = sub["label"].map(y_of).to_numpy()
        err = np.vstack([sub["diff"] - sub["ci_low"], sub["ci_high"] - sub["diff"]])
        ax.errorbar(sub["diff"], y, xerr=err, fmt="none", ecolor="C0", capsize=3)
        sig = sub.apply(significant, axis=1).astype(bool)
        ax.scatter(sub["diff"][sig], y[sig.to_numpy()], color="C0", zorder=3, label="CI excludes 0")
        ax.scatter(sub["diff"][~sig], y[~sig.to_numpy()], facecolor="white", edgecolor="C0", zorder=3)
        ax.axvline(0.0, color="0.3", lw=1, ls="--")
        lower = None if task == DELTA_TASK else TASKS[task].metric_lower_is_better(metric)
        better = "" if lower is None else (" (↓ better)" if lower else " (↑ better)")
        ax.set_title("Δm (%)" if task == DELTA_TASK else f"{task} {metric}{better}", fontsize=9)
    axes[0].set_yticks(range(len(hosts)), hosts[::-1])
    axes[0].set_ylim(-0.6, len(hosts) - 0.4)
    fig.supxlabel("difference B − A with 95 % interval (filled: excludes 0)", fontsize=9)
    fig.tight_layout()
    return fig
