"""Surface-normal metrics on planted angles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtl3d.metrics import NormalsMetric
from mtl3d.metrics.normals import angular_error_deg


def _tilted(deg: float) -> list[float]:
    a = math.radians(deg)
    return [math.sin(a), 0.0, math.cos(a)]


def _field(vectors: list[list[float]]) -> torch.Tensor:
    return torch.tensor(vectors, dtype=torch.float64).T.reshape(1, 3, 1, len(vectors))


def test_planted_angles() -> None:
    up = [0.0, 0.0, 1.0]
    preds = [[1, 0, 0], [1, 0, 1], [0, 0, -1], [0, 0, 5], _tilted(11.24), _tilted(11.26), [3, 3, 3]]
    gts = [up] * 6 + [[0.0, 0.0, 0.0]]  # last pixel invalid (zero GT vector)
    m = NormalsMetric()
    m.update(_field(preds), _field(gts))
    r = m.compute()
    angles = [90.0, 45.0, 180.0, 0.0, 11.24, 11.26]
    assert r["mean"] == pytest.approx(sum(angles) / 6)
    assert r["median"] == pytest.approx((11.26 + 45.0) / 2, abs=5e-4)
    assert r["rmse"] == pytest.approx(math.sqrt(sum(a * a for a in angles) / 6))
    # strictly below the threshold, as the MTL survey: 11.24 counts for 11.25, 11.26 does not
    assert r["within_11.25"] == pytest.approx(200 / 6)
    assert r["within_22.5"] == pytest.approx(300 / 6)
    assert r["within_30"] == pytest.approx(300 / 6)


def test_angle_formula_is_accurate_near_zero_and_180() -> None:
    p = torch.tensor([_tilted(1e-6), _tilted(180 - 1e-6)], dtype=torch.float64)
    g = torch.tensor([[0.0, 0.0, 1.0]] * 2, dtype=torch.float64)
    ang = angular_error_deg(p, g, dim=1)
    assert ang[0].item() == pytest.approx(1e-6, rel=1e-6)
    assert ang[1].item() == pytest.approx(180 - 1e-6, abs=1e-9)
    # a zero prediction has no direction: 90 degrees
    assert angular_error_deg(torch.zeros(1, 3), g[:1], dim=1).item() == pytest.approx(90.0)


def test_median_histogram_error_bound_over_batches() -> None:
    rng = np.random.default_rng(0)
    m = NormalsMetric()
    all_angles = []
    for _ in range(3):
        deg = rng.uniform(0, 60, size=501)
        all_angles.append(deg)
        m.update(_field([_tilted(d) for d in deg]), _field([[0.0, 0.0, 1.0]] * deg.size))
    exact = np.concatenate(all_angles)
    r = m.compute()
    assert abs(r["median"] - float(np.median(exact))) <= 5e-4 + 1e-9
    assert r["mean"] == pytest.approx(float(exact.mean()), abs=1e-9)


def test_no_valid_pixel_gives_nan() -> None:
    m = NormalsMetric()
    m.update(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
    assert all(math.isnan(v) for v in m.compute().values())
