"""Metric registry: ``create_metric(task, ...)`` returns the split-level metric of a task.

Which metric scores a task is the task's choice (``TaskSpec.metric`` in :mod:`mtl3d.tasks`); this module
maps those metric names to their classes. A new metric is one class here; a new task names one.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from mtl3d.errors import UserError, unknown_name
from mtl3d.metrics.boundary import BoundaryMetric
from mtl3d.metrics.depth import DepthMetric
from mtl3d.metrics.normals import NormalsMetric
from mtl3d.metrics.saliency import SaliencyMetric
from mtl3d.metrics.semseg import SegmentationMetric
from mtl3d.tasks import TASKS


@runtime_checkable
class Metric(Protocol):
    """What the evaluator relies on: accumulate batches over a split, then one dict of floats."""

    protocol: str

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...

    def reset(self) -> None: ...


_CLASSES: dict[str, type] = {
    "segmentation": SegmentationMetric,
    "depth": DepthMetric,
    "normals": NormalsMetric,
    "boundary": BoundaryMetric,
    "saliency": SaliencyMetric,
}


def metric_names() -> list[str]:
    """The tasks that have a metric."""
    return [t for t, spec in TASKS.items() if spec.metric.name in _CLASSES]


def metric_class(task: str) -> type:
    """The metric class of ``task`` (its ``from_per_image`` / ``from_weights`` pool per-image statistics)."""
    if task not in metric_names():
        raise unknown_name("metric task", task, metric_names())
    return _CLASSES[TASKS[task].metric.name]


def create_metric(
    task: str,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    context: Mapping[str, Any] | None = None,
    **options: Any,
) -> Metric:
    """Create the metric of ``task`` (semseg, human_parts, depth, normals, edges, saliency).

    Classification tasks need ``num_classes`` (or ``class_names``, whose length then gives it).
    ``options`` go to the metric's constructor, e.g. ``max_dist=0.0075`` for PASCAL edges,
    ``protocol="invpt"`` for saliency (default ``"both"``: the survey keys ``maxF``/``mIoU`` plus the InvPT
    ones ``maxF_invpt``/``mIoU_invpt``), ``max_depth=80`` for depth, ``workers=4`` for edges (scoring in
    worker processes); unknown options raise ``UserError``. ``context``: settings of the surroundings
    (the evaluator's dataset tolerance, worker count, progress bar) offered to every metric, each taking
    only those its constructor names, so the caller needs no per-task switch; ``options`` win over it.
    """
    cls = metric_class(task)
    params = inspect.signature(cls.__init__).parameters
    valid = [n for n in params if n not in ("self", "num_classes", "class_names")]
    options = {**{k: v for k, v in (context or {}).items() if k in valid}, **options}
    bad = [k for k in options if k not in valid]
    if bad:
        raise UserError(
            f"unknown option(s) {', '.join(sorted(bad))} for the {task} metric; valid: "
            f"{', '.join(valid) or 'none'}"
        )
    if cls is SaliencyMetric:
        # both published protocols side by side unless one is asked for: survey keys plain (Δm), InvPT *_invpt
        options.setdefault("protocol", "both")
    if cls is SegmentationMetric:
        if num_classes is None and class_names is not None:
            num_classes = len(class_names)
        if num_classes is None:
            raise UserError(f"the {task} metric needs the dataset's number of classes")
        if class_names is not None and len(class_names) != num_classes:
            raise UserError(f"{len(class_names)} class names given for {num_classes} {task} classes")
        return SegmentationMetric(num_classes, class_names, **options)
    return cls(**options)
