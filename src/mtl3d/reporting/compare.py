"""Paired comparison of two variants of a study: B − A per task (Δm metric) and for Δm, with a bootstrap
confidence interval that resamples both images and seeds.

Input: ``RUNS_ROOT/STUDY/DATASET/VARIANT/seedK/{metrics.json, per_image.npz}`` (``mtl3d evaluate``
writes both). Only seeds present for both A and B are used (paired). Each bootstrap resample draws

* one multiset of **images** (multinomial counts over the split), shared by A, B, the reference and
  every seed, so per-image difficulty cancels in the difference, and
* one multiset of the **paired seeds**, shared by A and B;

recomputes every run's metric from the re-weighted per-image sufficient statistics (the metric class's
own pooling, ``from_weights``: sums over images, then the split-level formula), averages over the
resampled seeds and takes B − A. Δm per resample uses the reference variant's metrics (mean over all
its seeds) under the same image resample. CI: 2.5/97.5 % percentiles; p: two-sided bootstrap p
``min(1, 2·min(P(d* ≤ 0), P(d* ≥ 0)))`` (the smallest level at which the percentile interval excludes 0).

``scipy.stats.bootstrap`` is not used: it resamples the observations of each sample independently (or
one paired axis), while this design resamples two crossed levels (images × seeds) with the same image
indices for every run, and needs a statistic that is a ratio of pooled sums per run. A seeded numpy loop
over multiplicity matrices (one matrix product per run and statistic) does it in a fraction of a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtl3d.engine.rundir import REG_SUFFIX, RunDir, parse_seed
from mtl3d.errors import UserError
from mtl3d.metrics.registry import metric_class
from mtl3d.reporting.study import ABLATION
from mtl3d.tasks import TASKS

METHOD = "bootstrap images x paired seeds; percentile CI; p=2min(P(d*<=0),P(d*>=0))"
DELTA_TASK = "all"
DELTA_METRIC = "delta_m"
COLUMNS = [
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
    "a",
    "b",
    "dataset",
]


@dataclass
class Run:
    """One evaluated run: its per-image statistics by task (``{task: {stat: array [N, ...]}}``)."""

    path: Path
    seed: int
    image_ids: np.ndarray
    stats: dict[str, dict[str, np.ndarray]]


# ------------------------------------------------------------------------------------------------ loading
def _variants(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def load_variant(dataset_dir: Path, variant: str) -> dict[int, Run]:
    """Every ``seedK`` run of a variant, by seed; a run without per_image.npz is a ``UserError``."""
    runs: dict[int, Run] = {}
    for seed_dir in sorted((dataset_dir / variant).glob("seed*")):
        rd, seed = RunDir(seed_dir), parse_seed(seed_dir.name)
        if seed is None or not rd.metrics.is_file():
            continue
        npz = rd.per_image
        if not npz.is_file():
            raise UserError(f"{seed_dir} has no {RunDir.PER_IMAGE}; re-run `mtl3d evaluate {seed_dir}`")
        with np.load(npz) as data:
            arrays = {k: data[k] for k in data.files}
        stats: dict[str, dict[str, np.ndarray]] = {}
        for key, arr in arrays.items():
            if "/" in key:
                task, stat = key.split("/", 1)
                stats.setdefault(task, {})[stat] = arr
        runs[seed] = Run(seed_dir, seed, arrays.get("image_ids", np.array([])), stats)
    return runs


def _pick_dataset(study_root: Path, variants: Sequence[str], dataset: str | None) -> Path:
    if not study_root.is_dir():
        raise UserError(f"study folder not found: {study_root}")
    datasets = sorted(p.name for p in study_root.iterdir() if p.is_dir())
    if dataset is not None:
        if dataset not in datasets:
            raise UserError(
                f"unknown dataset {dataset!r} in {study_root}; valid: {', '.join(datasets) or 'none'}"
            )
        return study_root / dataset
    having = [d for d in datasets if all((study_root / d / v).is_dir() for v in variants)]
    if len(having) == 1:
        return study_root / having[0]
    if not having:
        valid = sorted({v for d in datasets for v in _variants(study_root / d)})
        unknown = [v for v in variants if v not in valid]
        listed = ", ".join(valid) or "none"
        raise UserError(
            f"unknown variant(s) {', '.join(unknown or variants)} in {study_root}; valid: {listed}"
        )
    raise UserError(
        f"{study_root} has several datasets with both variants ({', '.join(having)}); pass --dataset"
    )


# ------------------------------------------------------------------------ Δm metric from weighted stats
def _metric_values(run: Run, task: str, metric: str, weights: np.ndarray) -> np.ndarray:
    """``metric`` of ``task`` for each row of image weights [R, N]: the metric class's own pooling."""
    cls = metric_class(task)
    try:
        return cls.from_weights(run.stats[task], weights, keys=(metric,))[metric]
    except KeyError:
        raise UserError(f"{run.path}: no per-image statistics for {task} {metric!r}") from None


# ------------------------------------------------------------------------------------------------ compare
def compare(
    runs_root: str | Path,
    study: str,
    a: str,
    b: str,
    dataset: str | None = None,
    reference: str = "stl",
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Rows (one per task's Δm metric, plus ``all``/``delta_m``) of B − A with bootstrap CI and p-value."""
    if resamples < 1:
        raise UserError("--resamples must be >= 1")
    root = Path(runs_root) / study
    ds_dir = _pick_dataset(root, [a, b], dataset)
    valid = _variants(ds_dir)
    unknown = [v for v in (a, b) if v not in valid]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)} in {ds_dir}; valid: {', '.join(valid)}")
    runs_a, runs_b = load_variant(ds_dir, a), load_variant(ds_dir, b)
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        raise UserError(
            f"no seed evaluated for both {a} ({sorted(runs_a)}) and {b} ({sorted(runs_b)}) in {ds_dir}"
        )
    runs_ref = load_variant(ds_dir, reference) if (ds_dir / reference).is_dir() else {}
    paired = [runs_a[s] for s in seeds] + [runs_b[s] for s in seeds]
    ids = paired[0].image_ids
    for r in [*paired, *runs_ref.values()]:
        if not np.array_equal(r.image_ids, ids):
            raise UserError(
                f"{r.path}: its images differ from {paired[0].path}'s; evaluate both on one split"
            )
    n_img, n_seed = len(ids), len(seeds)
    tasks = [t for t in paired[0].stats if t in TASKS and all(t in r.stats for r in paired)]

    rng = np.random.default_rng(seed)
    # row 0: the observed data (all images, every seed once); rows 1..R: the resamples
    w_img = np.vstack([np.ones(n_img), rng.multinomial(n_img, np.full(n_img, 1.0 / n_img), size=resamples)])
    w_seed = np.vstack(
        [np.ones(n_seed), rng.multinomial(n_seed, np.full(n_seed, 1.0 / n_seed), size=resamples)]
    )

    def seed_mean(values: np.ndarray) -> np.ndarray:  # [R+1, S] -> [R+1], weighted by the resampled seeds
        return (values * w_seed).sum(axis=1) / n_seed

    rows: list[dict[str, Any]] = []
    gains: dict[str, list[np.ndarray]] = {a: [], b: []}
    for task in tasks:
        metric = TASKS[task].delta_metric  # as summary.csv's Δm (saliency: maxF or mIoU, both supported)
        per = {
            v: np.stack([_metric_values(runs[s], task, metric, w_img) for s in seeds], axis=1)
            for v, runs in ((a, runs_a), (b, runs_b))
        }  # [R+1, S]
        rows.append(_row(task, metric, seed_mean(per[a]), seed_mean(per[b]), n_seed, n_img))
        if runs_ref and all(task in r.stats for r in runs_ref.values()):
            ref = np.mean([_metric_values(r, task, metric, w_img) for r in runs_ref.values()], axis=0)
            sign = -1.0 if TASKS[task].metric_lower_is_better(metric) else 1.0
            for v in (a, b):
                gains[v].append(100.0 * sign * (per[v] - ref[:, None]) / ref[:, None])
    if gains[a]:
        dm = {v: seed_mean(np.mean(gains[v], axis=0)) for v in (a, b)}
        rows.append(_row(DELTA_TASK, DELTA_METRIC, dm[a], dm[b], n_seed, n_img))
    out = pd.DataFrame(rows)
    out["a"], out["b"], out["dataset"] = a, b, ds_dir.name
    return out[COLUMNS]


REGULARIZED = REG_SUFFIX


def regularizer_pairs(variants: Sequence[str]) -> list[tuple[str, str]]:
    """``(host, host+3d)`` for every variant that was also run with the regularizer."""
    names = set(variants)
    return [
        (v, v + REGULARIZED)
        for v in sorted(names)
        if not v.endswith(REGULARIZED) and v + REGULARIZED in names
    ]


def comparison_pairs(variants: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(a, b, label)`` of every comparison a study implies: each host with its ``+3d`` twin (label: the
    host), then each ablation ``base@choice`` with its ``base`` (label: the ablation's name)."""
    names = set(variants)
    pairs = [(a, b, a) for a, b in regularizer_pairs(variants)]
    for v in sorted(names):
        base = v.split(ABLATION, 1)[0]
        if ABLATION in v and base in names:
            pairs.append((base, v, v))
    return pairs


def compare_hosts(
    runs_root: str | Path, study: str, reference: str = "stl", resamples: int = 2000, seed: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """:func:`compare` of every pair :func:`comparison_pairs` finds in every dataset of a study, one frame
    whose ``host`` column labels the pair; pairs that cannot be compared (no common seed, no
    per_image.npz) are skipped and named in the returned warnings."""
    root = Path(runs_root) / study
    frames, warnings = [], []
    for ds_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for a, b, label in comparison_pairs(_variants(ds_dir)):
            try:
                df = compare(runs_root, study, a, b, ds_dir.name, reference, resamples, seed)
            except UserError as e:
                warnings.append(f"{ds_dir.name}: {a} vs {b} not compared: {e}")
                continue
            df.insert(0, "host", label)
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["host", *COLUMNS]), warnings
    return pd.concat(frames, ignore_index=True), warnings


def read_comparisons(path: str | Path) -> pd.DataFrame | None:
    """``comparisons.csv`` as written by ``mtl3d report collect --comparisons``; None if absent."""
    p = Path(path)
    if not p.is_file():
        return None
    df = pd.read_csv(p)
    missing = [c for c in ["host", *COLUMNS] if c not in df.columns]
    if missing:
        raise UserError(f"{p} is not a comparisons.csv (missing columns: {', '.join(missing)})")
    return df


# With one paired seed the bootstrap resamples images only: its interval leaves out the training
# variance (the larger part here: README, seed spread), so it is printed but never marked significant.
MIN_SEEDS = 2


def significant(row: Any) -> bool:
    """The 95 % interval of a comparison row excludes zero, and it resampled at least ``MIN_SEEDS``
    paired seeds (one seed gives an image-only interval that says nothing about training variance)."""
    return bool(row["seeds"] >= MIN_SEEDS and (row["ci_low"] > 0 or row["ci_high"] < 0))


def seed_warning(df: pd.DataFrame) -> str | None:
    """A one-line caveat when some comparison rests on fewer than ``MIN_SEEDS`` paired seeds."""
    few = df[df["seeds"] < MIN_SEEDS]
    if few.empty:
        return None
    pairs = sorted({f"{r.a} vs {r.b}" for r in few.itertuples()})
    return (
        f"note: {', '.join(pairs)}: fewer than {MIN_SEEDS} paired seeds, so the interval covers image "
        "sampling only (not training variance) and is never marked significant"
    )


def _row(task: str, metric: str, va: np.ndarray, vb: np.ndarray, n_seed: int, n_img: int) -> dict[str, Any]:
    diff = vb - va
    boot = diff[1:]
    boot = boot[np.isfinite(boot)]
    if boot.size:
        low, high = np.percentile(boot, [2.5, 97.5])
        p = min(1.0, 2.0 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
    else:
        low = high = p = math.nan
    return {
        "task": task,
        "metric": metric,
        "mean_a": float(va[0]),
        "mean_b": float(vb[0]),
        "diff": float(diff[0]),
        "ci_low": float(low),
        "ci_high": float(high),
        "p": float(p),
        "seeds": n_seed,
        "images": n_img,
        "method": METHOD,
    }


def format_table(df: pd.DataFrame) -> str:
    """The printed table (CSV keeps full precision)."""
    show = df.drop(columns=["a", "b", "dataset"]).copy()
    for c in ("mean_a", "mean_b", "diff", "ci_low", "ci_high"):
        show[c] = show[c].map(lambda x: f"{x:.3f}")
    show["p"] = show["p"].map(lambda x: f"{x:.4f}")
    return show.to_string(index=False)
