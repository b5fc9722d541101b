"""The best constant predictors of a dataset: the floor every trained model must beat.

Fitted on the training split (most frequent class, mean valid depth, mean normal direction, edge
prior) and scored on the evaluation split with the task's own metric, so "beats constant
predictors" is a statement in the same units as the results. The caller opens the splits (with
:func:`mtl3d.data.registry.create_dataset`): metrics sit below the data registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtl3d.metrics.registry import create_metric

SUPPORTED = ("semseg", "depth", "normals", "edges")


def constant_baselines(
    tr: Sequence[dict], va: Sequence[dict], tasks: list[str]
) -> dict[str, dict[str, float]]:
    """Metrics of the constant predictors of ``tasks`` (a subset of :data:`SUPPORTED`), fitted on the
    samples of ``tr`` and scored on those of ``va`` (datasets opened without augmentation; ``tr`` has
    ``num_classes``)."""
    tasks = [t for t in tasks if t in SUPPORTED]
    n_cls = tr.num_classes
    counts = torch.zeros(n_cls)
    depth_sum, depth_n, normal_sum, edge_sum, n_px = 0.0, 0, torch.zeros(3), 0.0, 0
    for i in range(len(tr)):
        s = tr[i]
        if "semseg" in tasks:
            lab = s["semseg"].flatten()
            counts += torch.bincount(lab[lab < n_cls], minlength=n_cls)[:n_cls].float()
        if "depth" in tasks:
            valid = s["depth"] > 0
            depth_sum += float(s["depth"][valid].sum())
            depth_n += int(valid.sum())
        if "normals" in tasks:
            normal_sum += s["normals"].sum(dim=(1, 2))
        if "edges" in tasks:
            edge_sum += float((s["edges"] == 1).sum())
            n_px += s["edges"].numel()
    metrics = {t: create_metric(t, num_classes=n_cls) for t in tasks}
    for i in range(len(va)):
        s = va[i]
        h, w = s["image"].shape[-2:]
        if "semseg" in tasks:
            metrics["semseg"].update(torch.full((1, h, w), int(counts.argmax())), s["semseg"][None])
        if "depth" in tasks:
            metrics["depth"].update(torch.full((1, 1, h, w), depth_sum / max(depth_n, 1)), s["depth"][None])
        if "normals" in tasks:
            metrics["normals"].update(normal_sum.view(1, 3, 1, 1).expand(1, 3, h, w), s["normals"][None])
        if "edges" in tasks:
            metrics["edges"].update(torch.full((1, 1, h, w), edge_sum / max(n_px, 1)), s["edges"][None])
    return {t: m.compute() for t, m in metrics.items()}


def runs_vs_constants(summary: Any, dataset: str, constants: dict[str, dict[str, float]]) -> Any:
    """Every run of ``dataset`` in a study's summary (``mtl3d report collect``) against the constant
    predictors, on each task's Δm metric: one row per (variant, seed, task) with ``beats``."""
    import pandas as pd

    from mtl3d.tasks import TASKS

    rows = []
    sub = summary[summary["dataset"] == dataset]
    for task, const in constants.items():
        metric, lower = TASKS[task].delta_metric, TASKS[task].lower_is_better
        for r in sub[(sub["task"] == task) & (sub["metric"] == metric)].itertuples():
            beats = r.value < const[metric] if lower else r.value > const[metric]
            rows.append(
                {
                    "variant": r.variant,
                    "seed": r.seed,
                    "task": task,
                    "metric": metric,
                    "value": r.value,
                    "constant": const[metric],
                    "beats": bool(beats),
                }
            )
    return pd.DataFrame(rows, columns=["variant", "seed", "task", "metric", "value", "constant", "beats"])
