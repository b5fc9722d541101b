"""What a study's rows are called and in which order they appear: task labels and order, the order of
variants (each host followed by its ``+3d`` twin), and the better direction of each reported value
(the task's own, from :mod:`mtl3d.tasks`, plus the study-level rows). Tables and figures share these.
"""

from __future__ import annotations

from collections.abc import Iterable

from mtl3d.reporting.collect import ALL_TASKS, DELTA, GAIN
from mtl3d.reporting.study import REG_SUFFIX
from mtl3d.tasks import TASKS

TASK_LABELS = {
    "semseg": "SemSeg",
    "depth": "Depth",
    "normals": "Normals",
    "edges": "Bound",
    "human_parts": "PartSeg",
    "saliency": "Sal",
}
TASK_ORDER = ["semseg", "human_parts", "saliency", "depth", "normals", "edges"]


def ordered_tasks(tasks: Iterable[str]) -> list[str]:
    """``tasks`` in :data:`TASK_ORDER`, unknown ones after them, sorted."""
    present = set(tasks)
    return [t for t in TASK_ORDER if t in present] + sorted(present - set(TASK_ORDER))


def lower_is_better(task: str, metric: str) -> bool | None:
    """Direction of a summary row's value (None when it has none, e.g. a count or a threshold)."""
    if task == ALL_TASKS or metric in (DELTA, GAIN):
        return False
    if task not in TASKS:
        return None
    return TASKS[task].metric_lower_is_better(metric)


def arrow(task: str, metric: str) -> str:
    """`` ↓`` / `` ↑`` after a column name, or nothing for a value without direction."""
    lib = lower_is_better(task, metric)
    return "" if lib is None else (" ↓" if lib else " ↑")


def variant_order(variants: list[str], reference: str) -> list[str]:
    """Reference first, then models in order of first appearance, each followed by its +3d run."""
    bases: list[str] = []
    for v in variants:
        b = v.removesuffix(REG_SUFFIX)
        if b not in bases:
            bases.append(b)
    out = [reference] if reference in variants else []
    for b in bases:
        for v in (b, b + REG_SUFFIX):
            if v in variants and v not in out:
                out.append(v)
    return out
