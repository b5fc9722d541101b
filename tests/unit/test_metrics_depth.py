"""Depth metrics on planted cases with hand-computed answers."""

from __future__ import annotations

import math

import pytest
import torch

from mtl3d.metrics import DepthMetric, create_metric


def _map(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def test_planted_values_with_invalid_pixel_masked() -> None:
    # target 2, 2, 4, 0 (invalid);  pred 2, 1, 5, 3 -> errors on the three valid pixels: 0, 1, -1
    m = DepthMetric()
    m.update(_map([2, 1, 5, 3]), _map([2, 2, 4, 0]))
    r = m.compute()
    assert r["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert r["log_rmse"] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(0.8) ** 2) / 3))
    assert r["abs_rel"] == pytest.approx((0 + 1 / 2 + 1 / 4) / 3)
    assert r["sq_rel"] == pytest.approx((0 + 1 / 2 + 1 / 4) / 3)
    # ratios max(p/g, g/p): 1, 2, 1.25 -> strictly below 1.25: one pixel; below 1.5625 and 1.953: two
    assert r["delta1"] == pytest.approx(100 / 3)
    assert r["delta2"] == pytest.approx(200 / 3)
    assert r["delta3"] == pytest.approx(200 / 3)


def test_nonpositive_prediction_is_clamped() -> None:
    m = create_metric("depth")
    m.update(_map([-1.0]), _map([1.0]))
    r = m.compute()
    assert r["log_rmse"] == pytest.approx(-math.log(1e-9))
    assert r["rmse"] == pytest.approx(1.0)
    assert math.isfinite(r["abs_rel"])


def test_pixel_pooled_over_split() -> None:
    # image A: one valid pixel, error 2; image B: four valid pixels, error 0 -> sqrt(4/5), not mean(2, 0)
    m = DepthMetric()
    m.update(_map([3.0, 9.0]), _map([1.0, 0.0]))
    m.update(_map([1.0, 2.0, 3.0, 4.0]), _map([1.0, 2.0, 3.0, 4.0]))
    assert m.compute()["rmse"] == pytest.approx(math.sqrt(4 / 5))


def test_max_depth_cap_and_no_valid_pixel() -> None:
    m = DepthMetric(max_depth=80)
    m.update(_map([1.0, 1.0]), _map([1.0, 90.0]))
    assert m.compute()["rmse"] == pytest.approx(0.0)
    empty = DepthMetric()
    empty.update(_map([1.0, 2.0]), _map([0.0, 0.0]))
    assert all(math.isnan(v) for v in empty.compute().values())


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        DepthMetric().update(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 4, 4))
