"""Task registry: everything about a dense task in one place (channels, ignore value, loss, metric and
the better direction of each value it reports, Δm)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mtl3d.errors import unknown_name

if TYPE_CHECKING:  # torch and numpy load only when a prediction is post-processed
    import numpy as np
    from torch import Tensor


# ---------------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class MetricSpec:
    """The split-level metric of a task and the better direction of every value it reports.

    ``name`` keys :func:`mtl3d.metrics.registry.create_metric`'s classes (this layer imports no metric
    code). ``lower`` / ``higher`` list the values where lower / higher is better; a name ending in
    ``/`` is a prefix (per-class values such as ``iou/wall``), and ``suffixes`` are protocol variants
    with the direction of their base value (saliency ``maxF_invpt`` is ``maxF`` under InvPT's
    protocol). Anything else (thresholds, the recall and precision at the ODS threshold) has none.
    """

    name: str
    lower: tuple[str, ...] = ()
    higher: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()

    def lower_is_better(self, metric: str) -> bool | None:
        for suffix in self.suffixes:
            metric = metric.removesuffix(suffix)
        for names, lower in ((self.lower, True), (self.higher, False)):
            if any(metric == n or (n.endswith("/") and metric.startswith(n)) for n in names):
                return lower
        return None


SEGMENTATION = MetricSpec("segmentation", higher=("mIoU", "mIoU_present", "pixel_acc", "iou/"))
DEPTH = MetricSpec(
    "depth", lower=("rmse", "log_rmse", "abs_rel", "sq_rel", "mae"), higher=("delta1", "delta2", "delta3")
)
NORMALS = MetricSpec(
    "normals", lower=("mean", "median", "rmse"), higher=("within_11.25", "within_22.5", "within_30")
)
# "F1" is how some papers name the ODS F-measure (the reported numbers use it)
BOUNDARY = MetricSpec("boundary", higher=("odsF", "oisF", "AP", "AP_seism", "F1"))
SALIENCY = MetricSpec("saliency", higher=("maxF", "mIoU"), suffixes=("_invpt",))


# ------------------------------------------------------------------------------------------------ tasks
@dataclass(frozen=True)
class TaskSpec:
    """One dense prediction task.

    ``channels`` is the number of output channels of a head (for classification tasks: classes; the
    dataset may override it through ``num_classes``). ``metric`` scores the task (see
    :class:`MetricSpec`); ``delta_metric`` is the value of it that Δm uses, ``lower_is_better`` that
    value's direction (survey Eq. 10).
    """

    name: str
    kind: str  # "classification" | "regression" | "binary"
    channels: int
    ignore_value: float | None
    loss: str
    delta_metric: str
    metric: MetricSpec
    label_dtype: str = "float32"
    loss_options: tuple[str, ...] = field(default=())
    # -- post-processing: a head's output -> what the metrics, the figures and `predict` read ----------
    # "sigmoid": probabilities; "unit": unit vectors along the channels; "none": as is (class scores,
    # whose argmax the metric takes; depth)
    activation: str = "none"
    # a saved prediction map of a non-classification task (classification ones: uint8 label maps)
    saved_dtype: str = "float16"

    # ---- metrics: the Δm value's direction comes from the metric spec, so it is written once
    def __post_init__(self) -> None:
        if self.metric.lower_is_better(self.delta_metric) is None:
            raise ValueError(f"task {self.name}: Δm metric {self.delta_metric!r} has no direction")

    @property
    def lower_is_better(self) -> bool:
        """Direction of the Δm metric."""
        return bool(self.metric.lower_is_better(self.delta_metric))

    def metric_lower_is_better(self, metric: str) -> bool | None:
        """Direction of any value the task's metric reports (None: no direction, e.g. a threshold)."""
        return self.metric.lower_is_better(metric)

    def out_channels(self, num_classes: int | None = None) -> int:
        if self.kind == "classification":
            if num_classes is None:
                raise ValueError(f"task {self.name} needs the dataset's number of classes")
            return num_classes
        return self.channels

    def postprocess(self, logits: Tensor) -> Tensor:
        """A head's output [B, C, H, W] -> the prediction, in float32 (see ``activation``)."""
        import torch.nn.functional as F

        x = logits.float()
        if self.activation == "sigmoid":
            return x.sigmoid()
        if self.activation == "unit":
            return F.normalize(x, dim=1)
        return x

    def compact(self, pred: Tensor) -> np.ndarray:
        """One post-processed prediction [C, H, W] as a saved file holds it: class scores -> label map
        (uint8), anything else in ``saved_dtype``."""
        import numpy as np
        import torch

        if self.kind == "classification":
            return pred.argmax(0).to(torch.uint8).cpu().numpy()
        return pred.cpu().numpy().astype(np.dtype(self.saved_dtype))


TASKS: dict[str, TaskSpec] = {
    "semseg": TaskSpec(
        "semseg", "classification", 0, 255, "ce", "mIoU", label_dtype="int64", metric=SEGMENTATION
    ),
    "depth": TaskSpec(
        "depth",
        "regression",
        1,
        0.0,
        "l1",
        "rmse",
        loss_options=("l1", "berhu"),
        metric=DEPTH,
        saved_dtype="float32",
    ),
    "normals": TaskSpec(
        "normals",
        "regression",
        3,
        0.0,
        "l1_normalized",
        "mean",
        loss_options=("l1_normalized", "cosine"),
        metric=NORMALS,
        activation="unit",
    ),
    "edges": TaskSpec(
        "edges", "binary", 1, 255, "balanced_bce", "odsF", metric=BOUNDARY, activation="sigmoid"
    ),
    # PASCAL-Context tasks.
    "human_parts": TaskSpec(
        "human_parts", "classification", 0, 255, "ce", "mIoU", label_dtype="int64", metric=SEGMENTATION
    ),
    # Δm on saliency uses the survey's image-averaged mIoU, as the only published Δm code (the MTL
    # survey's) does; InvPT/ATRC/the 3D-aware paper report maxF (β² = 0.3, pooled: `maxF_invpt`) but
    # compute no Δm (see mtl3d.metrics.saliency). Both maxF protocols stay in every metrics.json.
    "saliency": TaskSpec(
        "saliency", "binary", 1, 255, "balanced_bce", "mIoU", metric=SALIENCY, activation="sigmoid"
    ),
}


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise unknown_name("task", name, list(TASKS)) from None


def classes_for(num_classes: int | dict[str, int] | None, task: str) -> int | None:
    """The class count of ``task`` from a dataset's ``num_classes``: one number shared by every
    classification task (older runs, SynthRooms) or a per-task dict (PASCAL: semseg 21, human_parts 7)."""
    if isinstance(num_classes, dict):
        return num_classes.get(task)
    return num_classes


def parse_tasks(tasks: str | list[str] | tuple[str, ...]) -> list[str]:
    """Accept ``"semseg,depth"`` or a list; validate every name; keep order, drop duplicates."""
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for n in names:
        if not n:
            continue
        get_task(n)
        if n not in out:
            out.append(n)
    if not out:
        raise unknown_name("task", "", list(TASKS))
    return out
