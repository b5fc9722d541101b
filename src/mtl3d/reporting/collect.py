"""Collect every ``metrics.json`` of a study into one tidy ``summary.csv`` (one row per run x metric).

Rows, besides each task metric of each run:

* ``task == "_run"``: ``params``, ``flops``, ``n_images`` and the numeric timings (``train_s``, ...);
* ``task == "all", metric == "delta_m"``: the run's multi-task performance delta (%, survey Eq. 10)
  against the reference variant (STL) of the same study and dataset, whose metrics are first averaged
  over its seeds; the table later reports mean +- std of these per-seed values;
* ``metric == "gain"`` (per task): that task's term of the delta, i.e. its relative improvement (%)
  over the reference on the task's Δm metric (``TASKS[task].delta_metric``), signed so that > 0 is better.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from mtl3d.engine.rundir import REG_SUFFIX, RunDir, find_runs, parse_seed
from mtl3d.errors import UserError

COLUMNS = [
    "study",
    "dataset",
    "model",
    "variant",
    "regularizer",
    "backbone",
    "seed",
    "task",
    "metric",
    "value",
]
KEY = ["study", "dataset", "variant", "model", "regularizer", "backbone", "task", "metric"]
RUN_TASK = "_run"
ALL_TASKS = "all"
DELTA = "delta_m"
GAIN = "gain"


def find_metrics(runs_root: str | Path) -> list[Path]:
    """``RUNS_ROOT/DATASET/VARIANT/seedK/metrics.json`` files, sorted."""
    root = Path(runs_root)
    if not root.is_dir():
        raise UserError(f"runs root not found: {root}")
    return [rd.metrics for rd in find_runs(root, RunDir.METRICS)]


def _number(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def run_rows(path: str | Path, study: str) -> list[dict[str, Any]]:
    """The rows of one ``metrics.json``; dataset, variant and seed come from its folder names."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict) or "metrics" not in data or "run" not in data:
        raise UserError(f"{path} is not an mtl3d metrics.json (no 'run'/'metrics')")
    run = data["run"]
    seed_dir, variant_dir, dataset_dir = path.parent, path.parent.parent, path.parent.parent.parent
    seed = parse_seed(seed_dir.name)
    if "seed" in run and int(run["seed"]) != seed:
        raise UserError(f"{path}: run seed {run['seed']} does not match its folder {seed_dir.name}")
    base = {
        "study": study,
        "dataset": dataset_dir.name,
        "model": run.get("model", variant_dir.name.removesuffix(REG_SUFFIX)),
        "variant": variant_dir.name,
        "regularizer": bool(run.get("regularizer", variant_dir.name.endswith(REG_SUFFIX))),
        "backbone": run.get("backbone", ""),
        "seed": seed,
    }
    rows: list[dict[str, Any]] = []
    for task, metrics in data["metrics"].items():
        for metric, value in (metrics or {}).items():
            if isinstance(value, (dict, list, str)):
                continue  # per-class lists and the like stay in metrics.json
            rows.append({**base, "task": task, "metric": metric, "value": _number(value)})
    extra = {"params": data.get("params"), "flops": data.get("flops"), "n_images": data.get("n_images")}
    for k, v in (data.get("timing") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            extra[k] = v
    for metric, value in extra.items():
        if value is not None:
            rows.append({**base, "task": RUN_TASK, "metric": metric, "value": _number(value)})
    return rows


def delta_rows(df: pd.DataFrame, reference: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Δm and per-task gain rows for every run, against ``reference`` averaged over its seeds."""
    from mtl3d.metrics.delta import delta_m, per_task_gain
    from mtl3d.tasks import TASKS

    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for dataset, dfd in df.groupby("dataset", sort=False):
        ref = dfd[dfd["variant"] == reference]
        if ref.empty:
            warnings.append(f"{dataset}: no {reference!r} runs, so no delta_m (train the reference variant)")
            continue
        st: dict[str, float] = {}
        for task in ref["task"].unique():
            if task not in TASKS:
                continue
            vals = ref[(ref["task"] == task) & (ref["metric"] == TASKS[task].delta_metric)]["value"]
            ref_value = float(vals.mean()) if len(vals) and vals.notna().all() else math.nan
            if math.isfinite(ref_value) and ref_value != 0.0:
                st[task] = ref_value
            elif len(vals):
                # a relative gain over 0 is undefined (e.g. odsF 0 after a few smoke iterations)
                warnings.append(
                    f"{dataset}: {reference} {task} {TASKS[task].delta_metric} is {ref_value}; "
                    f"{task} left out of delta_m"
                )
        run_cols = ["variant", "seed"]
        for (variant, seed), dfr in dfd.groupby(run_cols, sort=False):
            mt: dict[str, float] = {}
            for task in dfr["task"].unique():
                if task not in st:
                    continue
                v = dfr[(dfr["task"] == task) & (dfr["metric"] == TASKS[task].delta_metric)]["value"]
                if len(v) and pd.notna(v.iloc[0]):
                    mt[task] = float(v.iloc[0])
            run_tasks = [t for t in dfr["task"].unique() if t in TASKS]
            missing = [t for t in run_tasks if t not in mt]
            if missing:
                warnings.append(
                    f"{dataset}/{variant}/seed{seed}: no reference or value for {', '.join(missing)}; "
                    f"delta_m uses {', '.join(mt) or 'no task'}"
                )
            if not mt:
                continue
            lower = {t: TASKS[t].lower_is_better for t in mt}
            ref_t = {t: st[t] for t in mt}
            first = dfr.iloc[0]
            base = {
                c: first[c]
                for c in ["study", "dataset", "model", "variant", "regularizer", "backbone", "seed"]
            }
            rows.append(
                {**base, "task": ALL_TASKS, "metric": DELTA, "value": float(delta_m(mt, ref_t, lower))}
            )
            for t, g in per_task_gain(mt, ref_t, lower).items():
                rows.append({**base, "task": t, "metric": GAIN, "value": float(g)})
    return rows, warnings


def collect(runs_root: str | Path, study: str, reference: str = "stl") -> tuple[pd.DataFrame, list[str]]:
    """Tidy summary of all runs under ``runs_root`` (plus Δm rows); returns (frame, warnings)."""
    paths = find_metrics(runs_root)
    if not paths:
        raise UserError(f"no metrics.json under {runs_root}/DATASET/VARIANT/seedK/; run mtl3d evaluate first")
    rows: list[dict[str, Any]] = []
    for p in paths:
        rows += run_rows(p, study)
    df = pd.DataFrame(rows, columns=COLUMNS)
    extra, warnings = delta_rows(df, reference)
    if extra:
        df = pd.concat([df, pd.DataFrame(extra, columns=COLUMNS)], ignore_index=True)
    df = df.astype({"seed": int, "regularizer": bool, "value": float})
    return df.reset_index(drop=True), warnings


def aggregate(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed) and seed count per (dataset, variant, task, metric)."""
    g = summary.groupby(KEY, sort=False, dropna=False)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    return out


def read_summary(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"summary not found: {p}; run mtl3d report collect first")
    df = pd.read_csv(p, dtype={"task": str, "metric": str, "variant": str, "model": str, "backbone": str})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{p} is not a summary.csv (missing columns: {', '.join(missing)})")
    df["backbone"] = df["backbone"].fillna("")
    return df


def summary_json(summary: pd.DataFrame) -> dict[str, Any]:
    """Nested means for ``dvc metrics``: dataset -> variant -> task -> metric -> mean (and ``*_std``)."""
    out: dict[str, Any] = {}
    for r in aggregate(summary).itertuples(index=False):
        leaf = out.setdefault(r.dataset, {}).setdefault(r.variant, {}).setdefault(r.task, {})
        leaf[r.metric] = None if pd.isna(r.mean) else round(float(r.mean), 6)
        if r.n > 1 and not pd.isna(r.std):
            leaf[f"{r.metric}_std"] = round(float(r.std), 6)
    return out


def delta_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, variant): Δm mean, std and seeds, for plots (``dvc plots``) and figures."""
    agg = aggregate(summary)
    d = agg[(agg["task"] == ALL_TASKS) & (agg["metric"] == DELTA)]
    return (
        d[["dataset", "variant", "model", "regularizer", "mean", "std", "n"]]
        .rename(columns={"mean": "delta_m", "std": "delta_m_std", "n": "seeds"})
        .reset_index(drop=True)
    )


def write_outputs(
    summary: pd.DataFrame,
    out_csv: str | Path,
    out_json: str | Path | None = None,
    out_delta: str | Path | None = None,
) -> None:
    """Write the summary (and optionally the DVC metrics JSON and the Δm table), creating folders."""
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out_csv, index=False, float_format="%.6g")
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(summary_json(summary), indent=1) + "\n")
    if out_delta is not None:
        Path(out_delta).parent.mkdir(parents=True, exist_ok=True)
        delta_table(summary).to_csv(out_delta, index=False, float_format="%.6g")


def warn(messages: list[str]) -> None:
    for m in messages:
        print(f"warning: {m}", file=sys.stderr)
