"""Multi-task performance Δm (MTL survey, Vandenhende et al., Eq. 10), in percent.

``Δm = 100 · (1/T) · Σ_i (−1)^{l_i} (M_mt,i − M_st,i) / M_st,i`` with ``l_i = 1`` when lower is better,
so a positive Δm means the multi-task model beats its single-task (STL) references on average.

The metric used per task and its direction come from ``mtl3d.tasks.TASKS`` (``delta_metric``,
``lower_is_better``): semseg mIoU ↑, depth rmse ↓, normals mean ↓, edges odsF ↑, human_parts mIoU ↑,
saliency maxF ↑. Note: the MTL survey code uses saliency **mIoU** for Δm; this project keeps maxF
(``TASKS``), so saliency Δm values are not directly comparable with the survey's.
Δm is a ratio, so the unit of each metric (fraction or %) does not matter as long as MT and STL agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mtl3d.errors import UserError
from mtl3d.tasks import TASKS, get_task


def _metric_name(task: str) -> str:
    return TASKS[task].delta_metric if task in TASKS else "?"


def _directions(tasks: list[str], lower_is_better: Mapping[str, bool] | None) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for task in tasks:
        if lower_is_better is not None and task in lower_is_better:
            out[task] = bool(lower_is_better[task])
        elif task in TASKS:
            out[task] = TASKS[task].lower_is_better
        else:
            raise UserError(f"no Δm direction for task {task!r}: pass lower_is_better[{task!r}]")
    return out


def per_task_gain(
    mt: Mapping[str, float], st: Mapping[str, float], lower_is_better: Mapping[str, bool] | None = None
) -> dict[str, float]:
    """Relative gain of the MT model over the STL reference per task, in %; positive = better.

    ``mt`` / ``st`` map task -> value of that task's Δm metric; ``lower_is_better`` maps task -> bool
    (defaults to ``TASKS[task].lower_is_better``). Raises ``UserError`` if an STL value is missing,
    non-finite or zero.
    """
    if not mt:
        raise UserError("Δm needs at least one task result")
    tasks = list(mt)
    lower = _directions(tasks, lower_is_better)
    gains: dict[str, float] = {}
    for task in tasks:
        ref = st.get(task)
        if ref is None:
            raise UserError(
                f"missing single-task (STL) result for task {task!r} (metric {_metric_name(task)!r}): "
                "run the STL baseline of this task first"
            )
        ref = float(ref)
        if not math.isfinite(ref) or ref == 0.0:
            raise UserError(
                f"STL result for task {task!r} (metric {_metric_name(task)!r}) is {ref}; Δm needs a finite, "
                "non-zero reference"
            )
        sign = -1.0 if lower[task] else 1.0
        gains[task] = 100.0 * sign * (float(mt[task]) - ref) / ref
    return gains


def delta_m(
    mt: Mapping[str, float], st: Mapping[str, float], lower_is_better: Mapping[str, bool] | None = None
) -> float:
    """Δm in % over the tasks of ``mt`` (survey Eq. 10); see :func:`per_task_gain` for the arguments."""
    gains = per_task_gain(mt, st, lower_is_better)
    return sum(gains.values()) / len(gains)


def select_delta_metrics(metrics: Mapping[str, Mapping[str, float]], what: str = "run") -> dict[str, float]:
    """Pick each task's Δm metric (``TASKS[task].delta_metric``) from ``{task: {metric: value}}``.

    ``what`` names the run in the error message (e.g. the STL run directory) when a metric is missing.
    """
    out: dict[str, float] = {}
    for task, values in metrics.items():
        name = get_task(task).delta_metric
        if name not in values:
            raise UserError(f"{what}: task {task!r} has no {name!r} metric (needed for Δm)")
        out[task] = float(values[name])
    return out
