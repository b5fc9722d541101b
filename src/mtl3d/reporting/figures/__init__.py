"""Figures (PNG + PDF) for a study and its datasets; the notebooks only call these.

Figures are built on ``matplotlib.figure.Figure`` without pyplot, so nothing here touches the global
backend state (works headless under papermill and inline in JupyterLab via ``display(fig)``).
:mod:`.style` is how they look, :mod:`.study` the study figures, :mod:`.forest` the paired
comparisons, :mod:`.qualitative` the predictions, :mod:`.dataset` the data.
"""

from mtl3d.reporting.figures.dataset import (
    dataset_samples_figure,
    dataset_stats,
    label_stats_figure,
    multiview_figure,
    write_dataset_figures,
)
from mtl3d.reporting.figures.forest import forest_figure
from mtl3d.reporting.figures.qualitative import (
    compare_figure,
    load_prediction,
    qualitative_figure,
    study_runs,
    write_qualitative,
)
from mtl3d.reporting.figures.study import (
    delta_m_figure,
    effects_figure,
    learning_curves_figure,
    read_training_logs,
    task_gain_figure,
    training_curves_figure,
    write_study_figures,
)
from mtl3d.reporting.figures.style import IGNORE, class_colors, colorize, save_figure, theme

__all__ = [
    "IGNORE",
    "class_colors",
    "colorize",
    "compare_figure",
    "dataset_samples_figure",
    "dataset_stats",
    "delta_m_figure",
    "effects_figure",
    "forest_figure",
    "label_stats_figure",
    "learning_curves_figure",
    "load_prediction",
    "multiview_figure",
    "qualitative_figure",
    "read_training_logs",
    "save_figure",
    "study_runs",
    "task_gain_figure",
    "theme",
    "training_curves_figure",
    "write_dataset_figures",
    "write_qualitative",
    "write_study_figures",
]
