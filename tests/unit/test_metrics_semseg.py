"""Semantic segmentation metric (and the metric registry) on planted cases with hand-computed answers."""

from __future__ import annotations

import math

import pytest
import torch

from mtl3d.errors import UserError
from mtl3d.metrics import Metric, SegmentationMetric, create_metric, metric_names

# One 2x3 image, 3 classes, one ignored pixel:
#   target [[0, 0, 1], [1, 255, 2]]   pred [[0, 1, 1], [1, 0, 0]]
# class 0: TP 1, FP 1 (gt 2 -> 0), FN 1 (gt 0 -> 1) -> IoU 1/3
# class 1: TP 2, FP 1, FN 0 -> 2/3;  class 2: TP 0, FP 0, FN 1 -> 0
# pixel accuracy 3/5.
TARGET = torch.tensor([[[0, 0, 1], [1, 255, 2]]])
PRED = torch.tensor([[[0, 1, 1], [1, 0, 0]]])


def test_planted_iou_and_accuracy() -> None:
    m = SegmentationMetric(3, class_names=["wall", "floor", "chair"])
    m.update(PRED, TARGET)
    r = m.compute()
    assert r["iou/wall"] == pytest.approx(100 / 3)
    assert r["iou/floor"] == pytest.approx(200 / 3)
    assert r["iou/chair"] == pytest.approx(0.0)
    assert r["mIoU"] == pytest.approx(100 / 3)
    assert r["mIoU_present"] == pytest.approx(100 / 3)
    assert r["pixel_acc"] == pytest.approx(60.0)


def test_class_absent_from_gt_and_pred_counts_zero_in_miou_only() -> None:
    m = SegmentationMetric(4)
    m.update(PRED, TARGET)
    r = m.compute()
    assert r["iou/3"] == 0.0
    assert r["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0 + 0) / 4 * 100)  # 25 %
    assert r["mIoU_present"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3 * 100)


def test_logits_equal_labels() -> None:
    logits = torch.nn.functional.one_hot(PRED, 3).permute(0, 3, 1, 2).float() * 5.0
    a, b = SegmentationMetric(3), SegmentationMetric(3)
    a.update(logits, TARGET)
    b.update(PRED, TARGET.unsqueeze(1))  # [B,1,H,W] target accepted too
    assert a.compute() == b.compute()


def test_all_ignore_image_contributes_nothing() -> None:
    m = SegmentationMetric(3)
    m.update(PRED, TARGET)
    before = m.compute()
    m.update(torch.tensor([[[2, 2, 2], [0, 0, 0]]]), torch.full((1, 2, 3), 255))
    assert m.compute() == before


def test_whole_split_ignored_gives_nan() -> None:
    m = SegmentationMetric(3)
    m.update(PRED, torch.full((1, 2, 3), 255))
    r = m.compute()
    assert math.isnan(r["mIoU"]) and math.isnan(r["pixel_acc"]) and math.isnan(r["mIoU_present"])


def test_pooled_over_split_not_per_image_mean() -> None:
    # image A: class 0 gt 1 px predicted right; image B: class 0 gt 3 px, 1 predicted right, 2 as class 1.
    m = SegmentationMetric(2)
    m.update(torch.tensor([[[0]]]), torch.tensor([[[0]]]))
    m.update(torch.tensor([[[0, 1, 1]]]), torch.tensor([[[0, 0, 0]]]))
    r = m.compute()
    # pooled class 0: TP 2, FN 2 -> 1/2 (per-image mean would be (1 + 1/3)/2); class 1: TP 0, FP 2 -> 0
    assert r["iou/0"] == pytest.approx(50.0)
    assert r["mIoU"] == pytest.approx(25.0)
    m.reset()
    assert math.isnan(m.compute()["mIoU"])


def test_bad_labels_raise() -> None:
    m = SegmentationMetric(2)
    with pytest.raises(ValueError):
        m.update(torch.tensor([[[0]]]), torch.tensor([[[5]]]))
    with pytest.raises(ValueError):
        m.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))  # 3 channels, 2 classes
    with pytest.raises(ValueError):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 3, 3, dtype=torch.long))


# --- registry ---------------------------------------------------------------------------------------


def test_registry_creates_every_task_metric() -> None:
    assert set(metric_names()) == {"semseg", "human_parts", "depth", "normals", "edges", "saliency"}
    for task in metric_names():
        metric = create_metric(task, num_classes=7)
        assert isinstance(metric, Metric)
        assert isinstance(metric.protocol, str) and metric.protocol
    parts = create_metric("human_parts", class_names=["bg", "head", "torso", "uarm", "larm", "uleg", "lleg"])
    assert isinstance(parts, SegmentationMetric) and parts.num_classes == 7
    assert create_metric("edges", max_dist=0.0075).max_dist == 0.0075


def test_registry_errors() -> None:
    with pytest.raises(UserError, match="unknown metric task 'sem'"):
        create_metric("sem")
    with pytest.raises(UserError, match="number of classes"):
        create_metric("semseg")
    with pytest.raises(UserError, match="unknown option"):
        create_metric("depth", max_dist=1.0)
    with pytest.raises(UserError, match="class names"):
        create_metric("semseg", num_classes=3, class_names=["a"])
