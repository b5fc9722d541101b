"""Markdown and LaTeX tables from a study's ``summary.csv``, laid out like the papers' tables.

:mod:`.build` makes the study tables of a dataset, :mod:`.paper` sets ours beside the reported
numbers, :mod:`.render` renders and writes them. The names below are what the notebooks call.
"""

from mtl3d.reporting.labels import TASK_LABELS, TASK_ORDER, lower_is_better, variant_order
from mtl3d.reporting.tables.build import (
    SIG_NOTE,
    Table,
    ablation_table,
    decimals,
    fmt,
    interval_table,
    main_table,
    power_table,
    regularizer_table,
)
from mtl3d.reporting.tables.paper import (
    PAPER_LAYOUTS,
    PaperRow,
    paper_table,
    reported_comparison,
    reported_listing,
)
from mtl3d.reporting.tables.render import latex_escape, to_latex, to_markdown, write_all_tables, write_table

__all__ = [
    "PAPER_LAYOUTS",
    "SIG_NOTE",
    "TASK_LABELS",
    "TASK_ORDER",
    "PaperRow",
    "Table",
    "ablation_table",
    "decimals",
    "fmt",
    "latex_escape",
    "lower_is_better",
    "main_table",
    "paper_table",
    "interval_table",
    "power_table",
    "regularizer_table",
    "reported_comparison",
    "reported_listing",
    "to_latex",
    "to_markdown",
    "variant_order",
    "write_all_tables",
    "write_table",
]
