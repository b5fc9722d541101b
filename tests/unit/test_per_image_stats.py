"""Per-image sufficient statistics: pooling them reproduces ``compute()``, a subset a metric fed only it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl3d.metrics import BoundaryMetric, DepthMetric, NormalsMetric, SaliencyMetric, SegmentationMetric
from mtl3d.metrics.normals import PER_IMAGE_BIN_DEG

N_IMAGES = 7
SUBSET = np.array([0, 2, 5])


def _close(
    a: dict[str, float], b: dict[str, float], tol: float = 1e-9, loose: dict[str, float] | None = None
):
    assert a.keys() == b.keys()
    for k in a:
        if math.isnan(b[k]):
            assert math.isnan(a[k]), k
            continue
        atol = (loose or {}).get(k, tol * max(1.0, abs(b[k])))
        assert a[k] == pytest.approx(b[k], abs=atol), k


def _semseg_data(g: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i in range(N_IMAGES):
        pred = torch.randn(1, 5, 9, 11, generator=g)
        target = torch.randint(0, 5, (1, 9, 11), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.2] = 255
        if i == 3:
            target[:] = 255  # an image with nothing to score
        out.append((pred, target))
    return out


def _depth_data(g: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i in range(N_IMAGES):
        target = torch.rand(1, 1, 8, 10, generator=g) * 5
        target[torch.rand(target.shape, generator=g) < 0.3] = 0.0
        pred = target + torch.randn(target.shape, generator=g) * 0.5
        if i == 4:
            target[:] = 0.0  # no valid depth
        out.append((pred, target))
    return out


def _normals_data(g: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i in range(N_IMAGES):
        target = torch.randn(1, 3, 8, 9, generator=g)
        target[:, :, torch.rand(8, 9, generator=g) < 0.25] = 0.0
        pred = target + torch.randn(target.shape, generator=g) * 0.4
        if i == 1:
            target[:] = 0.0
        out.append((pred, target))
    return out


def _binary_data(g: torch.Generator, edges: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i in range(N_IMAGES):
        target = (torch.rand(1, 1, 16, 16, generator=g) < (0.1 if edges else 0.4)).float()
        target[torch.rand(target.shape, generator=g) < 0.1] = 255
        pred = torch.rand(1, 1, 16, 16, generator=g)
        if i == 2:
            target[target != 255] = 0.0  # empty boundaries / no salient pixel
        if i == 5 and not edges:
            target[:] = 255  # saliency: no valid pixel, skipped by the metric
        out.append((pred, target))
    return out


CASES = {
    "semseg": (lambda: SegmentationMetric(5, class_names=list("abcde")), _semseg_data),
    "depth": (DepthMetric, _depth_data),
    "normals": (NormalsMetric, _normals_data),
    "edges": (lambda: BoundaryMetric(n_thresholds=9, max_dist=0.05), lambda g: _binary_data(g, True)),
    "saliency_mtl": (lambda: SaliencyMetric("mtl"), lambda g: _binary_data(g, False)),
    "saliency_invpt": (lambda: SaliencyMetric("invpt"), lambda g: _binary_data(g, False)),
    "saliency_both": (lambda: SaliencyMetric("both"), lambda g: _binary_data(g, False)),
}


def _pool(metric, stats: dict[str, np.ndarray], index: np.ndarray | None) -> dict[str, float]:
    if isinstance(metric, SegmentationMetric):
        return SegmentationMetric.from_per_image(stats, index, class_names=metric.class_names)
    return type(metric).from_per_image(stats, index)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("batch", [1, 3])
def test_pooling_reproduces_compute(name: str, batch: int) -> None:
    make, data_fn = CASES[name]
    data = data_fn(torch.Generator().manual_seed(0))
    metric = make()
    for s in range(0, N_IMAGES, batch):  # batches of several images, too
        chunk = data[s : s + batch]
        metric.update(torch.cat([p for p, _ in chunk]), torch.cat([t for _, t in chunk]))
    stats = metric.per_image()
    assert all(v.shape[0] == N_IMAGES for v in stats.values())
    # the normals median pools a 0.5° histogram (compute() uses 0.001° bins): within half a bin of each
    loose = {"median": PER_IMAGE_BIN_DEG / 2 + 1e-3}
    _close(_pool(metric, stats, None), metric.compute(), loose=loose)

    sub = make()
    for i in SUBSET:
        sub.update(*data[i])
    _close(_pool(metric, stats, SUBSET), sub.compute(), loose=loose)
    # repeated indices (a bootstrap resample) count an image twice
    twice = make()
    for i in [*SUBSET, SUBSET[0]]:
        twice.update(*data[i])
    _close(_pool(metric, stats, np.array([*SUBSET, SUBSET[0]])), twice.compute(), loose=loose)


def test_exact_counts_types_and_empty() -> None:
    seg = SegmentationMetric(3)
    assert seg.per_image()["tp"].shape == (0, 3)
    assert math.isnan(SegmentationMetric.from_per_image(seg.per_image())["mIoU"])
    seg.update(torch.tensor([[[0, 1], [2, 2]]]), torch.tensor([[[0, 1], [2, 255]]]))
    st = seg.per_image()
    assert st["tp"].dtype == np.int32 and st["tp"].tolist() == [[1, 1, 1]]
    assert SegmentationMetric.from_per_image(st) == seg.compute()
    normals = NormalsMetric()
    normals.update(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
    assert normals.per_image()["hist"].shape == (2, 360) and normals.per_image()["hist"].dtype == np.uint32
    assert math.isnan(DepthMetric.from_per_image(DepthMetric().per_image())["rmse"])


@pytest.mark.parametrize("name", list(CASES))
def test_from_weights_is_from_per_image_row_by_row(name: str) -> None:
    """The bootstrap's vectorised pooling: row r of ``from_weights`` is ``from_per_image`` of resample r."""
    make, data_fn = CASES[name]
    metric = make()
    for p, t in data_fn(torch.Generator().manual_seed(0)):
        metric.update(p, t)
    stats = metric.per_image()
    rng = np.random.default_rng(0)
    resamples = [rng.integers(0, N_IMAGES, N_IMAGES) for _ in range(4)]
    weights = np.stack([np.bincount(i, minlength=N_IMAGES) for i in resamples]).astype(float)
    pooled = type(metric).from_weights(stats, weights)
    for r, index in enumerate(resamples):
        one = _pool(metric, stats, index)
        if isinstance(metric, SegmentationMetric):  # per-class keys are named by index here
            one = {k: v for k, v in one.items() if not k.startswith("iou/")}
        for k, v in one.items():
            assert pooled[k][r] == pytest.approx(v, rel=1e-12, nan_ok=True), k
    # asking for a few keys gives those keys and the same numbers
    key = next(iter(pooled))
    assert list(type(metric).from_weights(stats, weights, keys=(key,))) == [key]
    np.testing.assert_array_equal(type(metric).from_weights(stats, weights, keys=(key,))[key], pooled[key])


def test_every_reported_value_has_the_tasks_direction() -> None:
    """TaskSpec owns the direction of every value its metric reports (thresholds have none)."""
    from mtl3d.metrics import create_metric, metric_names
    from mtl3d.tasks import TASKS

    none = {"ods_threshold", "ods_recall", "ods_precision", "maxF_threshold", "mIoU_threshold"}
    for task in metric_names():
        keys = create_metric(task, num_classes=3).compute()
        spec = TASKS[task]
        for k in keys:
            direction = spec.metric_lower_is_better(k.removesuffix("_invpt"))
            assert (direction is None) == (k.removesuffix("_invpt") in none), (task, k)
        assert spec.lower_is_better == spec.metric_lower_is_better(spec.delta_metric)
    assert TASKS["depth"].metric_lower_is_better("rmse") is True
    assert TASKS["depth"].metric_lower_is_better("delta1") is False
    assert TASKS["normals"].metric_lower_is_better("within_11.25") is False
    assert TASKS["saliency"].metric_lower_is_better("maxF_invpt") is False
    assert TASKS["semseg"].metric_lower_is_better("iou/wall") is False
