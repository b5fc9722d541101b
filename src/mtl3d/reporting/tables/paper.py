"""Our numbers beside the papers' reported ones: the comparison and listing of ``reported_numbers.csv``
and the 3D-aware paper's own table layouts. Every reported row says so ("reported: SOURCE TABLE").
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mtl3d.reporting.collect import ALL_TASKS, DELTA, RUN_TASK, aggregate
from mtl3d.reporting.labels import TASK_LABELS, TASK_ORDER, arrow, variant_order
from mtl3d.reporting.reported import SOURCES, main_results, matching, source_label
from mtl3d.reporting.tables.build import Table, decimals, fmt, tasks_in
from mtl3d.tasks import TASKS


def reported_comparison(summary: pd.DataFrame, reported: pd.DataFrame, reference: str = "stl") -> Table:
    """Our runs beside the papers' numbers for the same dataset, model, regularizer and task set."""
    agg = aggregate(summary)
    header = ["Dataset", "Model", "3D reg.", "Source", "Backbone"]
    tasks_all = tasks_in(agg)
    cols = [(t, TASKS[t].delta_metric) for t in tasks_all if t in TASKS] + [(ALL_TASKS, DELTA)]
    header += ["Δm (%) ↑" if t == ALL_TASKS else f"{TASK_LABELS.get(t, t)} {m}{arrow(t, m)}" for t, m in cols]
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
                header.append(f"{TASK_LABELS.get(t, t)} {m}{arrow(t, m)}")
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
    header += [f"{TASK_LABELS.get(t, t)} {m}{arrow(t, m)}" for t, m in cols]
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
