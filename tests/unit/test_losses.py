import math

import pytest
import torch

from mtl3d.losses import (
    balanced_bce,
    depth_berhu,
    depth_l1,
    multitask_loss,
    normals_cosine,
    normals_l1,
    task_loss,
)


def test_depth_l1_masks_invalid():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 100.0]]]])
    gt = torch.tensor([[[[2.0, 2.0], [1.0, 0.0]]]])  # last pixel invalid
    assert math.isclose(depth_l1(pred, gt).item(), (1 + 0 + 2) / 3)


def test_berhu_is_l1_below_c_and_scaled_l2_above():
    pred = torch.tensor([[[[1.0, 2.0]]]])
    gt = torch.tensor([[[[1.5, 7.0]]]])  # errors 0.5 and 5 -> c = 1
    expected = (0.5 + (25 + 1) / 2) / 2
    assert math.isclose(depth_berhu(pred, gt).item(), expected, rel_tol=1e-6)


def test_normals_losses_planted():
    gt = torch.zeros(1, 3, 1, 2)
    gt[0, 2, 0, 0] = 1.0  # second pixel invalid (zero vector)
    pred = torch.zeros(1, 3, 1, 2)
    pred[0, 0, 0, 0] = 5.0  # 90 degrees off, not unit length
    pred[0, 1, 0, 1] = 1.0
    assert math.isclose(normals_l1(pred, gt).item(), 2 / 3, rel_tol=1e-6)  # |1|+|0|+|-1| over 3 elements
    assert math.isclose(normals_cosine(pred, gt).item(), 1.0, rel_tol=1e-6)


def test_balanced_bce_weights_and_ignore():
    logits = torch.zeros(1, 1, 1, 3)  # BCE = ln 2 everywhere
    target = torch.tensor([[[[1.0, 0.0, 255.0]]]])
    got = balanced_bce(logits, target, pos_weight=0.9).item()
    assert math.isclose(got, (0.9 * math.log(2) + 0.1 * math.log(2)) / 2, rel_tol=1e-6)


def test_ce_all_ignore_is_zero_with_grad():
    logits = torch.randn(1, 4, 2, 2, requires_grad=True)
    loss = task_loss("semseg", logits, torch.full((1, 2, 2), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


def test_multitask_total_is_weighted_sum_and_resizes():
    preds = {"depth": torch.ones(1, 1, 2, 2), "edges": torch.zeros(1, 1, 4, 4)}
    batch = {"depth": torch.full((1, 1, 4, 4), 3.0), "edges": torch.zeros(1, 1, 4, 4)}
    out = multitask_loss(preds, batch, {"depth": 2.0, "edges": 10.0})
    assert math.isclose(out["depth"].item(), 2.0)
    assert math.isclose(out["edges"].item(), 0.05 * math.log(2), rel_tol=1e-6)
    assert math.isclose(out["total"].item(), 2 * 2.0 + 10 * 0.05 * math.log(2), rel_tol=1e-6)


def test_auxiliary_only_tasks_are_supervised_through_deep_supervision():
    from mtl3d.losses import multitask_loss

    batch = {"depth": torch.ones(1, 1, 4, 4), "edges": torch.zeros(1, 1, 4, 4)}
    preds = {"depth": torch.zeros(1, 1, 4, 4)}
    aux = {"initial": {"depth": torch.zeros(1, 1, 4, 4), "edges": torch.zeros(1, 1, 4, 4)}}
    out = multitask_loss(preds, batch, {"depth": 1.0, "edges": 2.0}, aux=aux)
    assert "edges" not in out and "ds/initial/edges" in out
    assert torch.allclose(out["total"], out["depth"] + out["ds/initial/depth"] + 2 * out["ds/initial/edges"])
    with pytest.raises(ValueError, match="no prediction of task"):
        multitask_loss(preds, batch, {"depth": 1.0, "edges": 1.0})
