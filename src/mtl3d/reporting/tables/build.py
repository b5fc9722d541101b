"""The study tables of one dataset: main (paper-style), regularizer effect, ablations and seeds needed,
as renderer-agnostic :class:`Table` objects (:mod:`.render` writes Markdown and LaTeX).

Per dataset: one row per variant (the reference first, each model followed by its ``+3d`` run), one
column per task metric, Δm against the reference, parameters and FLOPs at inference, cells
``mean ± std`` over seeds (the mean alone for one seed), the best non-reference mean in bold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from mtl3d.reporting.collect import ALL_TASKS, DELTA, GAIN, RUN_TASK, aggregate
from mtl3d.reporting.compare import significant
from mtl3d.reporting.labels import TASK_LABELS, arrow, lower_is_better, ordered_tasks, variant_order
from mtl3d.reporting.power import seed_interval_table, seed_power_table
from mtl3d.reporting.study import ABLATION, REG_SUFFIX
from mtl3d.tasks import TASKS


@dataclass
class Table:
    """A rendered-agnostic table: header, string cells, cells to set in bold, caption."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    bold: set[tuple[int, int]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def decimals(task: str, metric: str) -> int:
    if task == "depth" and metric in ("rmse", "log_rmse", "abs_rel", "sq_rel", "mae"):
        return 4
    return 2


def fmt(mean: float, std: float | None, n: int, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    s = f"{mean:.{digits}f}"
    if n > 1 and std is not None and not math.isnan(std):
        s += f" ± {std:.{digits}f}"
    return s


def tasks_in(agg: pd.DataFrame) -> list[str]:
    present = [t for t in agg["task"].unique() if t not in (RUN_TASK, ALL_TASKS)]
    return ordered_tasks(present)


def _bold_best(
    table: Table, values: list[list[float]], directions: list[bool | None], skip_rows: set[int]
) -> None:
    for j, lib in enumerate(directions):
        if lib is None:
            continue
        col = [(i, v[j]) for i, v in enumerate(values) if i not in skip_rows and not math.isnan(v[j])]
        if len(col) < 2:
            continue
        best = min(v for _, v in col) if lib else max(v for _, v in col)
        for i, v in col:
            if math.isclose(v, best, rel_tol=1e-12, abs_tol=1e-12):
                table.bold.add((i, j))


def _significance(
    comparisons: pd.DataFrame | None, dataset: str, key: str = "host"
) -> dict[tuple[str, str, str], pd.Series]:
    """``{(row[key], task, metric): comparison row}`` of one dataset (rows of ``compare.compare_hosts``)."""
    if comparisons is None or comparisons.empty:
        return {}
    sub = comparisons[comparisons["dataset"] == dataset]
    return {(r[key], r["task"], r["metric"]): r for _, r in sub.iterrows()}


SIG_NOTE = (
    "* the 95 % interval of the paired difference (+3d − host, or ablation − default; bootstrap over "
    "test images and paired seeds, `mtl3d report compare`) excludes 0 (never marked with one seed)."
)


def main_table(
    summary: pd.DataFrame,
    dataset: str,
    reference: str = "stl",
    full: bool = False,
    comparisons: pd.DataFrame | None = None,
) -> Table:
    """The paper-style table of one dataset (``full``: every metric of every task, else Δm metrics).

    With ``comparisons`` (``compare.compare_hosts``), a compared variant's cell (``host+3d`` against its
    host, ``base@choice`` against ``base``) gets ``*`` where the difference is significant."""
    sig = _significance(comparisons, dataset, key="b")

    agg = aggregate(summary[summary["dataset"] == dataset])
    if agg.empty:
        return Table(["Model"], [], caption=f"{dataset}: no runs")
    tasks = tasks_in(agg)
    cols: list[tuple[str, str]] = []
    for t in tasks:
        if full:
            metrics = [m for m in agg[agg["task"] == t]["metric"].unique() if m != GAIN]
        else:
            metrics = [TASKS[t].delta_metric] if t in TASKS else []
        cols += [(t, m) for m in metrics]
    has_delta = bool(((agg["task"] == ALL_TASKS) & (agg["metric"] == DELTA)).any())
    if has_delta:
        cols.append((ALL_TASKS, DELTA))
    cols += [(RUN_TASK, "params"), (RUN_TASK, "flops")]
    header = ["Model", "3D reg."]
    for t, m in cols:
        if t == ALL_TASKS:
            header.append("Δm (%) ↑")
        elif (t, m) == (RUN_TASK, "params"):
            header.append("Params (M)")
        elif (t, m) == (RUN_TASK, "flops"):
            header.append("GFLOPs")
        else:
            header.append(f"{TASK_LABELS.get(t, t)} {m}{arrow(t, m)}")
    header.append("Seeds")
    order = variant_order(list(agg["variant"].unique()), reference)
    idx = agg.set_index(["variant", "task", "metric"])
    rows: list[list[str]] = []
    values: list[list[float]] = []
    for v in order:
        sub = agg[agg["variant"] == v]
        first = sub.iloc[0]
        model = str(first["model"])
        # a variant that is not just "MODEL" or "MODEL+3d" (an ablation `mtl+3d@sum`, `atrc-published`)
        # keeps its name: otherwise its row is indistinguishable from the default's
        label = model if v in (model, f"{model}{REG_SUFFIX}") else v
        row = [label, "✓" if bool(first["regularizer"]) else "–"]
        vals: list[float] = []
        for t, m in cols:
            key = (v, t, m)
            if key not in idx.index:
                row.append("–")
                vals.append(math.nan)
                continue
            r = idx.loc[key]
            mean, std, n = float(r["mean"]), float(r["std"]), int(r["n"])
            if (t, m) == (RUN_TASK, "params"):
                mean, std = mean / 1e6, std / 1e6
            elif (t, m) == (RUN_TASK, "flops"):
                mean, std = mean / 1e9, std / 1e9
            cell = fmt(mean, std, n, decimals(t, m))
            c = sig.get((v, t, m))
            row.append(cell + "*" if c is not None and significant(c) else cell)
            vals.append(mean)
        seeds = sub[sub["task"] != ALL_TASKS]["n"].max()
        row.append(str(int(seeds)))
        rows.append(row)
        values.append(vals)
    table = Table(
        header,
        rows,
        caption=(
            f"{dataset}: mean ± std over seeds; Δm against {reference} (mean over its seeds), in %; "
            f"params and FLOPs at inference (the regularizer is training-only)."
            + (f" {SIG_NOTE}" if sig else "")
        ),
    )
    directions = [lower_is_better(t, m) for t, m in cols]
    skip = {i for i, v in enumerate(order) if v == reference}
    # cell (i, j) of the rendered table: +2 for the Model and 3D-reg. columns
    tmp = Table(header, rows)
    _bold_best(tmp, values, directions, skip)
    table.bold = {(i, j + 2) for i, j in tmp.bold}
    return table


def regularizer_table(summary: pd.DataFrame, dataset: str, comparisons: pd.DataFrame | None = None) -> Table:
    """Effect of the regularizer: for each model run with and without it, (+3d) − (base) per metric.

    With ``comparisons`` (``compare.compare_hosts``) each cell also gives the paired difference's 95 %
    bootstrap interval, and ``*`` where it excludes 0."""
    agg = aggregate(summary[summary["dataset"] == dataset])
    sig = _significance(comparisons, dataset)
    tasks = tasks_in(agg)
    cols = [(t, TASKS[t].delta_metric) for t in tasks if t in TASKS]
    if ((agg["task"] == ALL_TASKS) & (agg["metric"] == DELTA)).any():
        cols.append((ALL_TASKS, DELTA))
    header = ["Model"] + [
        "Δm (%) ↑" if t == ALL_TASKS else f"{TASK_LABELS.get(t, t)} {m}{arrow(t, m)}" for t, m in cols
    ]
    means = agg.set_index(["variant", "task", "metric"])["mean"]
    rows = []
    for v in variant_order(list(agg["variant"].unique()), ""):
        if v.endswith(REG_SUFFIX) or v + REG_SUFFIX not in set(agg["variant"]):
            continue
        row = [f"{v} → {v}{REG_SUFFIX}"]
        for t, m in cols:
            k = decimals(t, m)
            c = sig.get((v, t, m))
            if c is not None and math.isfinite(c["ci_low"]):
                star = "*" if significant(c) else ""
                row.append(f"{c['diff']:+.{k}f} [{c['ci_low']:+.{k}f}, {c['ci_high']:+.{k}f}]{star}")
                continue
            a, b = means.get((v, t, m), math.nan), means.get((v + REG_SUFFIX, t, m), math.nan)
            d = b - a
            row.append("–" if math.isnan(d) else f"{d:+.{k}f}")
        rows.append(row)
    caption = (
        f"{dataset}: change of the seed-mean when the 3D-aware regularizer is added "
        "(arrows give the better direction)."
    )
    if sig:
        caption += " [95 % interval]; " + SIG_NOTE
    return Table(header, rows, caption=caption)


def ablation_table(summary: pd.DataFrame, dataset: str, comparisons: pd.DataFrame | None) -> Table | None:
    """The ablation study's table: the default (``base``, mean ± std over seeds), then one row per
    ``base@choice`` giving choice − default with its 95 % paired-bootstrap interval (``*``: excludes 0),
    and, where the base is a ``+3d`` variant, the host without the regularizer in the same terms.
    None when the comparisons hold no ablation."""
    if comparisons is None or comparisons.empty:
        return None
    comp = comparisons[
        (comparisons["dataset"] == dataset) & comparisons["b"].astype(str).str.contains(ABLATION, regex=False)
    ]
    if comp.empty:
        return None
    bases = list(dict.fromkeys(comp["a"].astype(str)))
    cols = list(dict.fromkeys(zip(comp["task"], comp["metric"], strict=True)))
    header = ["Variant"] + [
        "Δm (%) ↑" if t == ALL_TASKS else f"{TASK_LABELS.get(t, t)} {m}{arrow(t, m)}" for t, m in cols
    ]
    agg = aggregate(summary[summary["dataset"] == dataset]).set_index(["variant", "task", "metric"])

    def cells(sub: pd.DataFrame, sign: float) -> list[str]:
        out = []
        by = {(r["task"], r["metric"]): r for _, r in sub.iterrows()}
        for t, m in cols:
            r = by.get((t, m))
            if r is None:
                out.append("–")
                continue
            k = decimals(t, m)
            lo, hi = sorted((sign * r["ci_low"], sign * r["ci_high"]))
            star = "*" if significant(r) else ""
            out.append(f"{sign * r['diff']:+.{k}f} [{lo:+.{k}f}, {hi:+.{k}f}]{star}")
        return out

    rows = []
    for base in bases:  # several defaults (e.g. one per host and data fraction): a block each
        first = [f"{base} (default)"]
        for t, m in cols:
            key = (base, t, m)
            first.append(
                fmt(
                    float(agg.loc[key, "mean"]),
                    float(agg.loc[key, "std"]),
                    int(agg.loc[key, "n"]),
                    decimals(t, m),
                )
                if key in agg.index
                else "–"
            )
        rows.append(first)
        if base.endswith(REG_SUFFIX):  # the regularizer switched off, as one more "choice"
            host = base.removesuffix(REG_SUFFIX)
            off = comparisons[
                (comparisons["dataset"] == dataset) & (comparisons["a"] == host) & (comparisons["b"] == base)
            ]
            if not off.empty:
                rows.append([f"no regularizer ({host})", *cells(off, -1.0)])
        for b, sub in comp[comp["a"].astype(str) == base].groupby("b", sort=True):
            rows.append([f"{ABLATION}{str(b).split(ABLATION, 1)[1]}", *cells(sub, 1.0)])
    around = (
        f"the default `{bases[0]}`"
        if len(bases) == 1
        else "each default (" + ", ".join(f"`{b}`" for b in bases) + ")"
    )
    return Table(
        header,
        rows,
        caption=(
            f"{dataset}: ablations of the regularizer's open choices, one at a time around {around} (its "
            "row: mean ± std over seeds); every other row is variant − default with "
            "its 95 % interval (bootstrap over test images and paired seeds). " + SIG_NOTE
        ),
    )


def _seed_count(x: float) -> str:
    """A number of seeds as a table shows it ('–' unknown, '> 10000' beyond the search's cap)."""
    return "–" if math.isnan(x) else ("> 10000" if math.isinf(x) else str(int(x)))


def power_table(summary: pd.DataFrame, dataset: str, effect: float = 1.0) -> Table | None:
    """Seeds needed to detect ``effect`` mIoU points of the regularizer per host (``power.seed_power_table``);
    None when the dataset has no semseg or fewer than two paired seeds."""
    df = seed_power_table(summary, dataset, "semseg", "mIoU", effect)
    df = df[df["seeds"] >= 2]
    if df.empty:
        return None

    rows = [
        [
            r.host,
            str(r.seeds),
            f"{r.mean_diff:+.2f}",
            f"{r.sd_diff:.2f}",
            _seed_count(r.seeds_needed),
            _seed_count(r.seeds_needed_sd80),
        ]
        for r in df.itertuples()
    ]
    header = [
        "Host",
        "Seeds",
        "mean Δ mIoU (+3d − host)",
        "sd of Δ over seeds",
        "seeds needed",
        "at sd's 80 % bound",
    ]
    return Table(
        header,
        rows,
        caption=(
            f"{dataset}: seeds (paired runs host / host+3d) a two-sided paired t-test at α = 0.05 needs to "
            f"detect a {effect:g}-point mIoU difference with 80 % power, from the spread of the per-seed "
            "differences measured here (and from the upper end of that spread's 80 % interval)."
        ),
    )


def interval_table(summary: pd.DataFrame, dataset: str, halfwidth: float = 1.5) -> Table | None:
    """Seeds a ``±halfwidth`` interval of each host's Δm change needs (``power.seed_interval_table``);
    None when the dataset has fewer than two paired seeds."""
    df = seed_interval_table(summary, dataset, halfwidth)
    df = df[df["seeds"] >= 2]
    if df.empty:
        return None

    rows = [
        [
            r.host,
            str(r.seeds),
            f"{r.mean_diff:+.2f}",
            f"{r.sd_diff:.2f}",
            f"±{r.halfwidth:.2f}",
            _seed_count(r.seeds_needed),
            _seed_count(r.seeds_needed_sd80),
        ]
        for r in df.itertuples()
    ]
    header = [
        "Host",
        "Seeds",
        "mean Δ Δm (+3d − host)",
        "sd of Δ over seeds",
        "t interval now",
        f"seeds for ±{halfwidth:g}",
        "at sd's 80 % bound",
    ]
    return Table(
        header,
        rows,
        caption=(
            f"{dataset}: the spread over seeds of each host's paired Δm change (+3d − host, on the whole "
            f"evaluation split), the half-width of the 95 % t interval it gives at the seeds measured, and "
            f"the seeds a ±{halfwidth:g}-point interval needs at that spread (and at the upper end of the "
            "spread's 80 % interval)."
        ),
    )
