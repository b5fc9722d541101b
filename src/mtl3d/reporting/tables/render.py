"""Markdown and LaTeX renderings of a :class:`~mtl3d.reporting.tables.build.Table`, and every table of
a study written into one folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtl3d.reporting.reported import SOURCES, load_reported
from mtl3d.reporting.tables.build import (
    Table,
    ablation_table,
    interval_table,
    main_table,
    power_table,
    regularizer_table,
)
from mtl3d.reporting.tables.paper import paper_table, reported_comparison, reported_listing


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
        interval = interval_table(summary, d)
        if interval is not None:
            written += write_table(interval, out / f"{d}_interval", label=f"tab:{d}-interval")
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
