"""Learning curves of a study: every run's ``train_log.csv`` in long format, and the series that the
figures draw and DVC plots (``learning_curves.csv`` of ``mtl3d report collect --curves``).

The series: each task's Δm metric on the validation subset (``val/TASK/METRIC``, written when the run
trained with ``eval_every``), and the loss of the final outputs summed over the tasks on the training
batches (``loss/train``, every logged step) and on the validation subset (``loss/val``), unweighted,
so the two are on one scale: a widening gap is over-fitting, two falling lines under-fitting.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mtl3d.engine.rundir import RunDir, find_runs
from mtl3d.engine.validation import VAL_PREFIX
from mtl3d.io import atomic_write_text
from mtl3d.tasks import TASKS

LOG_COLUMNS = ["dataset", "variant", "seed", "step", "series", "value"]
TRAIN_LOSS, VAL_LOSS = "loss/train", "loss/val"


def read_training_logs(runs_root: str | Path) -> pd.DataFrame:
    """All ``train_log.csv`` of a study, long format (:data:`LOG_COLUMNS`): every ``loss/``, ``reg/`` and
    ``val/`` column of every logged step."""
    frames = []
    for rd in find_runs(runs_root, RunDir.TRAIN_LOG):
        log = pd.DataFrame(rd.read_train_log())
        if "step" not in log.columns:
            continue
        log["step"] = log["step"].astype(int)
        series = [c for c in log.columns if c.startswith(("loss/", "reg/", VAL_PREFIX))]
        long = log.melt(id_vars=["step"], value_vars=series, var_name="series", value_name="value")
        long.insert(0, "seed", rd.seed)
        long.insert(0, "variant", rd.variant)
        long.insert(0, "dataset", rd.dataset)
        frames.append(long)
    if not frames:
        return pd.DataFrame(columns=LOG_COLUMNS)
    return pd.concat(frames, ignore_index=True).dropna(subset=["value"])


def _task_loss_sum(logs: pd.DataFrame, prefix: str, name: str) -> pd.DataFrame:
    """Per run and step, the sum of ``PREFIX + TASK`` over the tasks, where every task has a value."""
    rows = logs[logs["series"].str.fullmatch(re.escape(prefix) + "(" + "|".join(map(re.escape, TASKS)) + ")")]
    if rows.empty:
        return pd.DataFrame(columns=LOG_COLUMNS)
    keys = ["dataset", "variant", "seed", "step"]
    n_tasks = rows.groupby(["dataset", "variant", "seed"])["series"].transform("nunique")
    grouped = rows.assign(n=n_tasks).groupby(keys)
    total = grouped["value"].sum().to_frame("value")
    total = total[grouped.size() == grouped["n"].first()]  # a step missing a task is left out
    return total.reset_index().assign(series=name)[LOG_COLUMNS]


def learning_curves(logs: pd.DataFrame) -> pd.DataFrame:
    """The plotted series (module docstring) of :func:`read_training_logs`' frame, per run and step."""
    if logs.empty:
        return pd.DataFrame(columns=LOG_COLUMNS)
    headline = [f"{VAL_PREFIX}{t}/{spec.delta_metric}" for t, spec in TASKS.items()]
    val = logs[logs["series"].isin(headline)]
    train_loss = _task_loss_sum(logs, "loss/", TRAIN_LOSS)
    val_loss = _task_loss_sum(logs, f"{VAL_PREFIX}loss/", VAL_LOSS)
    out = pd.concat([val[LOG_COLUMNS], train_loss, val_loss], ignore_index=True)
    return out.sort_values(["dataset", "variant", "series", "seed", "step"], ignore_index=True)


def write_learning_curves(runs_root: str | Path, path: str | Path) -> pd.DataFrame:
    """``learning_curves.csv`` (atomically): :func:`learning_curves` of every run under ``runs_root``."""
    curves = learning_curves(read_training_logs(runs_root))
    atomic_write_text(Path(path), curves.to_csv(index=False, float_format="%.6g"))
    return curves
