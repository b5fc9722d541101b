"""Markdown and LaTeX tables from a study's ``summary.csv``, laid out like the papers' tables.

Per dataset: one row per variant (the reference first, each model followed by its ``+3d`` run), one
column per task metric, Δm against the reference, parameters and FLOPs at inference, cells
``mean ± std`` over seeds (the mean alone for one seed), the best non-reference mean in bold.
A second table sets our numbers beside the papers' reported ones where the setting matches; every
reported row says so ("reported: SOURCE TABLE").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mtl3d.reporting.collect import ALL_TASKS, DELTA, GAIN, RUN_TASK, aggregate
from mtl3d.reporting.reported import SOURCES, main_results, matching, source_label

TASK_LABELS = {
    "semseg": "SemSeg",
    "depth": "Depth",
    "normals": "Normals",
    "edges": "Bound",
    "human_parts": "PartSeg",
    "saliency": "Sal",
}
TASK_ORDER = ["semseg", "human_parts", "saliency", "depth", "normals", "edges"]
_LOWER = {("depth", m) for m in ("rmse", "log_rmse", "abs_rel", "sq_rel", "mae")} | {
    ("normals", m) for m in ("mean", "median", "rmse")
}
_HIGHER_PREFIX = ("delta", "d1", "d2", "d3", "11", "22", "30")


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


def lower_is_better(task: str, metric: str) -> bool | None:
    """Direction of a metric (None when it has none, e.g. a count)."""
    from mtl3d.tasks import TASKS

    if task == ALL_TASKS or metric in (DELTA, GAIN):
        return False
    if task == RUN_TASK:
        return None
    if task in TASKS and metric == TASKS[task].delta_metric:
        return TASKS[task].lower_is_better
    if (task, metric) in _LOWER:
        return True
    if metric.startswith(_HIGHER_PREFIX) or metric in (
        "mIoU",
        "pixel_acc",
        "odsF",
        "oisF",
        "AP",
        "maxF",
        "F1",
    ):
        return False
    return None


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


def variant_order(variants: list[str], reference: str) -> list[str]:
    """Reference first, then models in order of first appearance, each followed by its +3d run."""
    bases: list[str] = []
    for v in variants:
        b = v.removesuffix("+3d")
        if b not in bases:
            bases.append(b)
    out = [reference] if reference in variants else []
    for b in bases:
        for v in (b, f"{b}+3d"):
            if v in variants and v not in out:
                out.append(v)
    return out


def _arrow(task: str, metric: str) -> str:
    lib = lower_is_better(task, metric)
    return "" if lib is None else (" ↓" if lib else " ↑")


def _tasks_in(agg: pd.DataFrame) -> list[str]:
    present = [t for t in agg["task"].unique() if t not in (RUN_TASK, ALL_TASKS)]
    return [t for t in TASK_ORDER if t in present] + sorted(t for t in present if t not in TASK_ORDER)


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
    from mtl3d.reporting.compare import significant
    from mtl3d.reporting.study import REG_SUFFIX
    from mtl3d.tasks import TASKS

    sig = _significance(comparisons, dataset, key="b")

    agg = aggregate(summary[summary["dataset"] == dataset])
    if agg.empty:
        return Table(["Model"], [], caption=f"{dataset}: no runs")
    tasks = _tasks_in(agg)
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
            header.append(f"{TASK_LABELS.get(t, t)} {m}{_arrow(t, m)}")
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
    from mtl3d.reporting.compare import significant
    from mtl3d.tasks import TASKS

    agg = aggregate(summary[summary["dataset"] == dataset])
    sig = _significance(comparisons, dataset)
    tasks = _tasks_in(agg)
    cols = [(t, TASKS[t].delta_metric) for t in tasks if t in TASKS]
    if ((agg["task"] == ALL_TASKS) & (agg["metric"] == DELTA)).any():
        cols.append((ALL_TASKS, DELTA))
    header = ["Model"] + [
        "Δm (%) ↑" if t == ALL_TASKS else f"{TASK_LABELS.get(t, t)} {m}{_arrow(t, m)}" for t, m in cols
    ]
    means = agg.set_index(["variant", "task", "metric"])["mean"]
    rows = []
    for v in variant_order(list(agg["variant"].unique()), ""):
        if v.endswith("+3d") or f"{v}+3d" not in set(agg["variant"]):
            continue
        row = [f"{v} → {v}+3d"]
        for t, m in cols:
            k = decimals(t, m)
            c = sig.get((v, t, m))
            if c is not None and math.isfinite(c["ci_low"]):
                star = "*" if significant(c) else ""
                row.append(f"{c['diff']:+.{k}f} [{c['ci_low']:+.{k}f}, {c['ci_high']:+.{k}f}]{star}")
                continue
            a, b = means.get((v, t, m), math.nan), means.get((f"{v}+3d", t, m), math.nan)
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
    from mtl3d.reporting.compare import ABLATION, REGULARIZED, significant

    if comparisons is None or comparisons.empty:
        return None
    comp = comparisons[
        (comparisons["dataset"] == dataset) & comparisons["b"].astype(str).str.contains(ABLATION, regex=False)
    ]
    if comp.empty:
        return None
    base = str(comp["a"].iloc[0])
    cols = list(dict.fromkeys(zip(comp["task"], comp["metric"], strict=True)))
    header = ["Variant"] + [
        "Δm (%) ↑" if t == ALL_TASKS else f"{TASK_LABELS.get(t, t)} {m}{_arrow(t, m)}" for t, m in cols
    ]
    agg = aggregate(summary[summary["dataset"] == dataset]).set_index(["variant", "task", "metric"])
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
    rows = [first]

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

    if base.endswith(REGULARIZED):  # the regularizer switched off, as one more "choice"
        host = base.removesuffix(REGULARIZED)
        off = comparisons[
            (comparisons["dataset"] == dataset) & (comparisons["a"] == host) & (comparisons["b"] == base)
        ]
        if not off.empty:
            rows.append([f"no regularizer ({host})", *cells(off, -1.0)])
    for b, sub in comp.groupby("b", sort=True):
        rows.append([f"{ABLATION}{str(b).split(ABLATION, 1)[1]}", *cells(sub, 1.0)])
    return Table(
        header,
        rows,
        caption=(
            f"{dataset}: ablations of the regularizer's open choices, one at a time around the default "
            f"`{base}` (first row: mean ± std over seeds); every other row is variant − default with "
            "its 95 % interval (bootstrap over test images and paired seeds). " + SIG_NOTE
        ),
    )


def power_table(summary: pd.DataFrame, dataset: str, effect: float = 1.0) -> Table | None:
    """Seeds needed to detect ``effect`` mIoU points of the regularizer per host (``power.seed_power_table``);
    None when the dataset has no semseg or fewer than two paired seeds."""
    from mtl3d.reporting.power import seed_power_table

    df = seed_power_table(summary, dataset, "semseg", "mIoU", effect)
    df = df[df["seeds"] >= 2]
    if df.empty:
        return None

    def n(x: float) -> str:
        return "–" if math.isnan(x) else ("> 10000" if math.isinf(x) else str(int(x)))

    rows = [
        [
            r.host,
            str(r.seeds),
            f"{r.mean_diff:+.2f}",
            f"{r.sd_diff:.2f}",
            n(r.seeds_needed),
            n(r.seeds_needed_sd80),
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


def reported_comparison(summary: pd.DataFrame, reported: pd.DataFrame, reference: str = "stl") -> Table:
    """Our runs beside the papers' numbers for the same dataset, model, regularizer and task set."""
    from mtl3d.tasks import TASKS

    agg = aggregate(summary)
    header = ["Dataset", "Model", "3D reg.", "Source", "Backbone"]
    tasks_all = _tasks_in(agg)
    cols = [(t, TASKS[t].delta_metric) for t in tasks_all if t in TASKS] + [(ALL_TASKS, DELTA)]
    header += [
        "Δm (%) ↑" if t == ALL_TASKS else f"{TASK_LABELS.get(t, t)} {m}{_arrow(t, m)}" for t, m in cols
    ]
    rows: list[list[str]] = []
    for dataset in agg["dataset"].unique():
        a = agg[agg["dataset"] == dataset]
        for v in variant_order(list(a["variant"].unique()), reference):
            # the task set of the run decides what counts as the same setting
            sub = a[a["variant"] == v]
            first = sub.iloc[0]
            run_tasks = [t for t in sub["task"].unique() if t in TASKS]
            rep = matching(reported, dataset, str(first["model"]), bool(first["regularizer"]), run_tasks)
            if rep.empty:
                continue
            idx = sub.set_index(["task", "metric"])
            n = int(sub["n"].max())
            ours = [
                dataset,
                str(first["model"]),
                "✓" if first["regularizer"] else "–",
                f"ours ({n} seed{'s' if n > 1 else ''})",
                str(first["backbone"]),
            ]
            for t, m in cols:
                if (t, m) in idx.index:
                    r = idx.loc[(t, m)]
                    ours.append(fmt(float(r["mean"]), float(r["std"]), int(r["n"]), decimals(t, m)))
                else:
                    ours.append("–")
            rows.append(ours)
            for (_src, _table, bb), g in rep.groupby(["source", "table", "backbone"], sort=False):
                gi = g.set_index(["task", "metric"])
                line = [
                    dataset,
                    str(first["model"]),
                    "✓" if first["regularizer"] else "–",
                    source_label(g.iloc[0]),
                    bb,
                ]
                for t, m in cols:
                    if (t, m) in gi.index:
                        r = gi.loc[(t, m)]
                        r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
                        std = float(r["std"]) if not pd.isna(r["std"]) else None
                        line.append(fmt(float(r["value"]), std, 2 if std is not None else 1, decimals(t, m)))
                    else:
                        line.append("–")
                rows.append(line)
    return Table(
        header,
        rows,
        caption=(
            "Ours beside the numbers the papers report (rows 'reported: ...'; not re-run here) for the same "
            "dataset, model, regularizer and task set. Protocols and backbones may differ; see the notes."
        ),
        notes=[f"{k}: {v}" for k, v in SOURCES.items()],
    )


def reported_listing(reported: pd.DataFrame, datasets: list[str] | None = None) -> dict[str, Table]:
    """The papers' main results per dataset, as reported (no numbers of ours)."""
    main = main_results(reported)
    out: dict[str, Table] = {}
    for dataset in datasets or list(main["dataset"].unique()):
        d = main[main["dataset"] == dataset]
        if d.empty:
            continue
        pairs = list(dict.fromkeys(zip(d["task"], d["metric"], strict=True)))
        pairs = sorted(
            pairs,
            key=lambda p: (
                p[0] == ALL_TASKS,
                p[0] == RUN_TASK,
                TASK_ORDER.index(p[0]) if p[0] in TASK_ORDER else 99,
            ),
        )
        header = ["Source", "Model", "3D reg.", "Backbone", "Tasks"]
        for t, m in pairs:
            if t == ALL_TASKS:
                header.append("Δm (%) ↑")
            elif t == RUN_TASK:
                header.append(m)
            else:
                header.append(f"{TASK_LABELS.get(t, t)} {m}{_arrow(t, m)}")
        rows = []
        for (src, tab, model, reg, bb, tasks), g in d.groupby(
            ["source", "table", "model", "regularizer", "backbone", "tasks"], sort=False
        ):
            gi = g.set_index(["task", "metric"])
            row = [
                f"reported: {src} {tab}"
                + (f" ({g.iloc[0]['status']})" if g.iloc[0]["status"] != "primary" else ""),
                model,
                "✓" if reg else "–",
                bb,
                tasks.replace(",", ", "),
            ]
            for t, m in pairs:
                if (t, m) in gi.index:
                    r = gi.loc[(t, m)]
                    r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
                    std = None if pd.isna(r["std"]) else float(r["std"])
                    row.append(fmt(float(r["value"]), std, 2 if std is not None else 1, decimals(t, m)))
                else:
                    row.append("–")
            rows.append(row)
        out[dataset] = Table(
            header,
            rows,
            caption=(
                f"{dataset}: main results as reported by the papers (not re-run here); '–' = not reported. "
                "Metric protocols differ between sources, see the notes column of reported_numbers.csv."
            ),
        )
    return out


# ----------------------------------------------------------------------------------------------- rendering
def _numeric_column(table: Table, j: int) -> bool:
    cells = [r[j] for r in table.rows if j < len(r) and r[j] not in ("–", "")]
    return bool(cells) and all(c[:1].isdigit() or c[:1] in "+-" for c in cells)


def to_markdown(table: Table) -> str:
    def cell(i: int, j: int, s: str) -> str:
        s = s.replace("|", "\\|")
        return f"**{s}**" if (i, j) in table.bold and s != "–" else s

    lines = []
    if table.caption:
        lines += [f"*{table.caption}*", ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append(
        "|"
        + "|".join("---:" if _numeric_column(table, j) else "---" for j in range(len(table.columns)))
        + "|"
    )
    for i, r in enumerate(table.rows):
        lines.append("| " + " | ".join(cell(i, j, s) for j, s in enumerate(r)) + " |")
    if not table.rows:
        lines.append("| " + " | ".join(["(no rows)"] + [""] * (len(table.columns) - 1)) + " |")
    for n in table.notes:
        lines += ["", f"- {n}"]
    return "\n".join(lines) + "\n"


_LATEX_SUBS = [
    ("\\", r"\textbackslash{}"),
    ("&", r"\&"),
    ("%", r"\%"),
    ("$", r"\$"),
    ("#", r"\#"),
    ("_", r"\_"),
    ("{", r"\{"),
    ("}", r"\}"),
    ("~", r"\textasciitilde{}"),
    ("^", r"\^{}"),
]
_LATEX_SYMBOLS = [
    ("±", r"$\pm$"),
    ("↑", r"$\uparrow$"),
    ("↓", r"$\downarrow$"),
    ("Δ", r"$\Delta$"),
    ("✓", r"\checkmark"),
    ("–", "--"),
    ("→", r"$\rightarrow$"),
    ("²", r"$^2$"),
]


def latex_escape(s: str) -> str:
    out = s
    for a, b in _LATEX_SUBS:
        out = out.replace(a, b) if a != "\\" else out.replace(a, "\x00")
    out = out.replace("\x00", r"\textbackslash{}")
    for a, b in _LATEX_SYMBOLS:
        out = out.replace(a, b)
    return out


def to_latex(table: Table, label: str = "") -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs,amssymb}``)."""
    align = "".join("r" if _numeric_column(table, j) else "l" for j in range(len(table.columns)))
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if table.caption:
        lines.append(r"\caption{" + latex_escape(table.caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [
        r"\begin{tabular}{" + align + "}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for i, r in enumerate(table.rows):
        cells = [latex_escape(s) for s in r]
        cells = [
            r"\textbf{" + c + "}" if (i, j) in table.bold and r[j] != "–" else c for j, c in enumerate(cells)
        ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for n in table.notes:
        lines.append(r"\par\footnotesize " + latex_escape(n))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PaperRow:
    """One row pair of a paper table: our variant, and the reported numbers of the same setting."""

    variant: str
    model: str
    regularizer: bool
    label: str
    table: str  # reported table id in reported_numbers.csv (source 3daware-iclr24)
    setting: str = ""  # reported 'setting' column ("" = the main comparison)


_T6 = "25% of the training set"
# The 3D-aware paper's tables (Li et al. 2024): Table 1 NYUD-v2, Table 2 PASCAL-Context, and the NYUD
# ablations (T4 capacity control, T6 data fraction, the render-one-task table without numbers). Our
# variant names are those of config/nyud.yaml and config/pascal.yaml.
PAPER_LAYOUTS: dict[str, tuple[str, list[tuple[str, str]], list[PaperRow]]] = {
    "nyud": (
        "Table 1 (NYUD-v2)",
        [("semseg", "mIoU"), ("depth", "rmse"), ("normals", "mean"), ("edges", "odsF")],
        [
            PaperRow("mtinet", "mtinet", False, "MTI-Net", "T1"),
            PaperRow("mtinet+3d", "mtinet", True, "MTI-Net + 3D-aware", "T1"),
            PaperRow("invpt", "invpt", False, "InvPT", "T1"),
            PaperRow("invpt+3d", "invpt", True, "InvPT + 3D-aware", "T1"),
            PaperRow(
                "invpt-flat+3d",
                "invpt",
                False,
                "InvPT + capacity control (T4)",
                "T4",
                "extra auxiliary heads (capacity control)",
            ),
            PaperRow("invpt-only-semseg+3d", "invpt", True, "InvPT + 3D, render SemSeg only", ""),
            PaperRow("invpt-only-depth+3d", "invpt", True, "InvPT + 3D, render Depth only", ""),
            PaperRow("invpt-only-normals+3d", "invpt", True, "InvPT + 3D, render Normals only", ""),
            PaperRow("invpt-only-edges+3d", "invpt", True, "InvPT + 3D, render Bound only", ""),
            PaperRow("invpt-25", "invpt", False, "InvPT, 25 % train (T6)", "T6", _T6),
            PaperRow("invpt-25+3d", "invpt", True, "InvPT + 3D, 25 % train (T6)", "T6", _T6),
            PaperRow("invpt-50", "invpt", False, "InvPT, 50 % train (T6)", "T6", "50% of the training set"),
            PaperRow(
                "invpt-50+3d", "invpt", True, "InvPT + 3D, 50 % train (T6)", "T6", "50% of the training set"
            ),
        ],
    ),
    "pascal": (
        "Table 2 (PASCAL-Context)",
        [
            ("semseg", "mIoU"),
            ("human_parts", "mIoU"),
            ("saliency", "maxF_invpt"),
            ("normals", "mean"),
            ("edges", "odsF"),
        ],
        [
            PaperRow("mtinet", "mtinet", False, "MTI-Net", "T2"),
            PaperRow("mtinet+3d", "mtinet", True, "MTI-Net + 3D-aware", "T2"),
            PaperRow("invpt", "invpt", False, "InvPT", "T2"),
            PaperRow("invpt+3d", "invpt", True, "InvPT + 3D-aware", "T2"),
        ],
    ),
}


def paper_table(
    summary: pd.DataFrame, reported: pd.DataFrame, dataset: str, reference: str = "stl"
) -> Table | None:
    """The paper's table layout for ``dataset`` (None if it has none): per row our mean ± std over
    seeds, then the paper's number for the same setting labelled "reported"; empty cells where we have
    no run or the paper gives no number. Δm is ours against our own ``reference`` runs.

    PASCAL saliency: the paper (as InvPT/ATRC) reports maxF with β² = 0.3 pooled over pixels, so our
    column is ``maxF_invpt``, the same protocol (the survey's ``maxF`` is in the full table)."""
    if dataset not in PAPER_LAYOUTS:
        return None
    title, cols, layout = PAPER_LAYOUTS[dataset]
    agg = aggregate(summary[summary["dataset"] == dataset])
    idx = agg.set_index(["variant", "task", "metric"]) if not agg.empty else None
    rep = reported[(reported["source"] == "3daware-iclr24") & (reported["dataset"] == dataset)]
    header = ["Model", "Numbers"]
    header += [f"{TASK_LABELS.get(t, t)} {m}{_arrow(t, 'maxF' if m == 'maxF_invpt' else m)}" for t, m in cols]
    header.append("Δm (%) ↑")
    rows: list[list[str]] = []
    present = set(agg["variant"]) if not agg.empty else set()
    for r in layout:
        if r.variant not in present and not r.table:
            continue  # an ablation without reported numbers and without our run: nothing to show
        ours = [r.label, "ours"]
        n = 0
        for t, m in [*cols, (ALL_TASKS, DELTA)]:
            key = (r.variant, t, m)
            if idx is None or key not in idx.index:
                ours.append("")
                continue
            v = idx.loc[key]
            n = max(n, int(v["n"]))
            ours.append(fmt(float(v["mean"]), float(v["std"]), int(v["n"]), decimals(t, m)))
        if n:
            ours[1] = f"ours ({n} seed{'s' if n > 1 else ''})"
        rows.append(ours)
        if not r.table:
            continue
        g = rep[(rep["table"] == r.table) & (rep["model"] == r.model) & (rep["regularizer"] == r.regularizer)]
        g = g[g["setting"] == r.setting]
        line = [r.label, f"reported: 3daware-iclr24 {r.table}"]
        gi = g.set_index(["task", "metric"])
        for t, m in cols:
            key = (t, "maxF" if m == "maxF_invpt" else m)
            if key in gi.index:
                v = gi.loc[key]
                v = v.iloc[0] if isinstance(v, pd.DataFrame) else v
                line.append(fmt(float(v["value"]), None, 1, decimals(*key)))
            else:
                line.append("")
        line.append("")
        rows.append(line)
    return Table(
        header,
        rows,
        caption=(
            f"{title} of Li et al. (ICLR 2024): ours (mean ± std over seeds) beside the **reported** numbers "
            f"(secondary source: the paper's text; empty = not recoverable or not run). Δm is ours, against "
            f"our {reference} runs."
        ),
        notes=[f"3daware-iclr24: {SOURCES.get('3daware-iclr24', '')}"],
    )


def write_table(table: Table, out_stem: str | Path, label: str = "") -> list[Path]:
    """``OUT_STEM.md`` and ``OUT_STEM.tex``; returns both paths."""
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, tex = stem.with_suffix(".md"), stem.with_suffix(".tex")
    md.write_text(to_markdown(table))
    tex.write_text(to_latex(table, label=label))
    return [md, tex]


def write_all_tables(
    summary: pd.DataFrame,
    out_dir: str | Path,
    reference: str = "stl",
    reported: pd.DataFrame | None = None,
    comparisons: pd.DataFrame | None = None,
) -> list[Path]:
    """Every table of a study into ``out_dir``: per dataset (main, full, regularizer, seeds needed) and
    reported; ``comparisons`` (``compare.compare_hosts``, collect's comparisons.csv) marks significance."""
    from mtl3d.reporting.reported import load_reported

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    datasets = list(summary["dataset"].unique())
    for d in datasets:
        written += write_table(
            main_table(summary, d, reference, comparisons=comparisons), out / d, label=f"tab:{d}"
        )
        written += write_table(
            main_table(summary, d, reference, full=True, comparisons=comparisons),
            out / f"{d}_full",
            label=f"tab:{d}-full",
        )
        written += write_table(
            regularizer_table(summary, d, comparisons), out / f"{d}_regularizer", label=f"tab:{d}-reg"
        )
        ablations = ablation_table(summary, d, comparisons)
        if ablations is not None:
            written += write_table(ablations, out / f"{d}_ablations", label=f"tab:{d}-ablations")
        power = power_table(summary, d)
        if power is not None:
            written += write_table(power, out / f"{d}_seeds_needed", label=f"tab:{d}-seeds")
    rep = reported if reported is not None else load_reported()
    for d in datasets:
        paper = paper_table(summary, rep, d, reference)
        if paper is not None:
            written += write_table(paper, out / f"{d}_paper", label=f"tab:{d}-paper")
    comp = reported_comparison(summary, rep, reference)
    listing = reported_listing(rep, [d for d in datasets if d in set(rep["dataset"])] or None)
    md = ["# Reported numbers", ""]
    tex = []
    if comp.rows:
        md += ["## Ours beside the reported numbers", "", to_markdown(comp)]
        tex.append(to_latex(comp, label="tab:reported-comparison"))
    else:
        md += [
            f"No run of this study ({', '.join(datasets)}) has a setting the papers report; their main "
            "results are listed below for reference. Every number below is **reported**, none is ours.",
            "",
        ]
    for d, t in listing.items():
        md += [f"## {d}: reported", "", to_markdown(t)]
        tex.append(to_latex(t, label=f"tab:reported-{d}"))
    md += ["## Sources", ""] + [f"- `{k}`: {v}" for k, v in SOURCES.items()]
    (out / "reported.md").write_text("\n".join(md) + "\n")
    (out / "reported.tex").write_text("\n".join(tex))
    written += [out / "reported.md", out / "reported.tex"]
    return written
