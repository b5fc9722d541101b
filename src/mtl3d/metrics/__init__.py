"""Split-level metrics for every task, following the published evaluation protocols (the MTL survey's
offline evaluation, Vandenhende et al. TPAMI 2021, and InvPT/TaskPrompter where they differ; each
module's docstring states its protocol).

Each metric has ``update(pred, target)`` (batched, at label resolution), ``compute() -> dict[str, float]``,
``reset()`` and a one-line ``protocol`` string written next to the numbers. Create them with
:func:`create_metric`; Δm against single-task references is in :mod:`mtl3d.metrics.delta`.
"""

from mtl3d.metrics.boundary import BoundaryMetric
from mtl3d.metrics.delta import delta_m, per_task_gain, select_delta_metrics
from mtl3d.metrics.depth import DepthMetric
from mtl3d.metrics.normals import NormalsMetric
from mtl3d.metrics.registry import Metric, create_metric, metric_class, metric_names
from mtl3d.metrics.saliency import SaliencyMetric
from mtl3d.metrics.semseg import SegmentationMetric

__all__ = [
    "BoundaryMetric",
    "DepthMetric",
    "Metric",
    "NormalsMetric",
    "SaliencyMetric",
    "SegmentationMetric",
    "create_metric",
    "delta_m",
    "metric_class",
    "metric_names",
    "per_task_gain",
    "select_delta_metrics",
]
