"""Boundary metric (odsF / oisF / AP) on planted cases, plus its building blocks against references.

Images are 96x128, so the NYUD tolerance is 0.011 * 160 = 1.76 px (PASCAL 0.0075 * 160 = 1.2 px).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, sparse
from scipy.optimize import linear_sum_assignment

from mtl3d.metrics import BoundaryMetric, create_metric
from mtl3d.metrics.boundary import (
    average_precision,
    average_precision_seism,
    image_counts,
    max_matching_size,
    thin,
)

H, W = 96, 128


def _line(
    row: int, c0: int = 10, c1: int = 110, value: float = 1.0, img: np.ndarray | None = None
) -> np.ndarray:
    img = np.zeros((H, W), dtype=np.float32) if img is None else img
    img[row, c0:c1] = value
    return img


def _score(pred: np.ndarray, gt: np.ndarray, **kw: object) -> dict[str, float]:
    m = BoundaryMetric(**kw)
    m.update(torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None])
    return m.compute()


def test_perfect_prediction() -> None:
    gt = _line(40)
    gt[20:80, 60] = 1.0  # a vertical boundary crossing it
    r = _score(gt.copy(), gt)
    assert r["odsF"] == pytest.approx(100.0)
    assert r["oisF"] == pytest.approx(100.0)
    assert r["AP"] == pytest.approx(100.0)  # perfect detector: AP 100 (SEISM's own formula gives 0)
    assert r["AP_seism"] == 0.0


@pytest.mark.parametrize(("dy", "dx"), [(1, 0), (1, 1), (-1, 1)])
def test_shift_within_tolerance_is_perfect(dy: int, dx: int) -> None:
    gt = _line(40)
    pred = np.roll(np.roll(gt, dy, axis=0), dx, axis=1)
    assert _score(pred, gt)["odsF"] == pytest.approx(100.0)


def test_shift_beyond_tolerance_scores_zero() -> None:
    gt = _line(40)
    assert _score(_line(42), gt)["odsF"] == 0.0  # 2 px > 1.76 px
    # PASCAL tolerance 1.2 px: a 1 px shift matches; isolated dots shifted by (1, 1) (1.41 px) match
    # only under the NYUD tolerance
    assert _score(_line(41), gt, max_dist=0.0075)["odsF"] == pytest.approx(100.0)
    dots = np.zeros((H, W), dtype=np.float32)
    dots[40, 10:110:5] = 1.0
    moved = np.roll(np.roll(dots, 1, axis=0), 1, axis=1)
    assert _score(moved, dots, max_dist=0.0075)["odsF"] == 0.0
    assert _score(moved, dots)["odsF"] == pytest.approx(100.0)


def test_half_of_the_boundary_predicted() -> None:
    gt = _line(40, 10, 110)
    r = _score(_line(40, 10, 60), gt)
    assert r["ods_recall"] == pytest.approx(50.0)
    assert r["ods_precision"] == pytest.approx(100.0)
    assert r["odsF"] == pytest.approx(200 / 3)


def test_empty_gt_and_empty_prediction() -> None:
    empty = np.zeros((H, W), dtype=np.float32)
    r = _score(empty, empty)
    assert (r["odsF"], r["oisF"], r["AP"]) == (100.0, 100.0, 100.0)
    counts = image_counts(empty, empty > 0, np.array([0.5]))
    assert counts.tolist() == [[0, 0, 0, 0]]


def test_empty_gt_with_prediction_scores_zero() -> None:
    empty = np.zeros((H, W), dtype=np.float32)
    r = _score(_line(40), empty)
    assert r["odsF"] == 0.0 and r["oisF"] == 0.0
    assert not any(math.isnan(v) for v in r.values())


def test_gt_with_empty_prediction_scores_zero() -> None:
    r = _score(np.zeros((H, W), dtype=np.float32), _line(40))
    assert r["odsF"] == 0.0 and r["oisF"] == 0.0 and r["AP"] == 0.0


def test_two_images_ois_above_ods_and_ap() -> None:
    # image 1: true line at p=0.75, a far false line at p=0.55; image 2: true 0.35, false 0.15 (100 px each)
    gt1, gt2 = _line(40), _line(40)
    p1 = _line(70, value=0.55, img=_line(40, value=0.75))
    p2 = _line(70, value=0.15, img=_line(40, value=0.35))
    m = create_metric("edges")
    m.update(torch.from_numpy(np.stack([p1, p2]))[:, None], torch.from_numpy(np.stack([gt1, gt2]))[:, None])
    r = m.compute()
    # pooled (R, P) per threshold band: t<=.15 (1, 1/2); .15<t<=.35 (1, 2/3); .35<t<=.55 (1/2, 1/2);
    # .55<t<=.75 (1/2, 1); t>.75 (0, 1 vacuous).  Best F = 0.8 at t = 0.16.
    assert r["odsF"] == pytest.approx(80.0)
    assert r["ods_threshold"] == pytest.approx(0.16)
    # each image at its own best threshold is perfect
    assert r["oisF"] == pytest.approx(100.0)
    # curve through (0,1), (1/2,1), (1,2/3): 1/2 + 1/2 * (1 + 2/3) / 2
    assert r["AP"] == pytest.approx(100 * (0.5 + 0.5 * (1 + 2 / 3) / 2))
    # SEISM: first threshold per recall -> (0,1), (1/2,1/2), (1,1/2); grid sum (38.25 + 25) / 100
    assert r["AP_seism"] == pytest.approx(63.25)


def test_thin_gt_option() -> None:
    gt = _line(41, img=_line(40))  # a 2-px-thick GT band (200 px)
    pred = thin(gt > 0).astype(np.float32)  # a perfect one-pixel-wide detection of it
    n = int(pred.sum())
    assert 95 <= n <= 100
    assert _score(pred, gt)["odsF"] == pytest.approx(100.0)  # GT thinned the same way
    r = _score(pred, gt, thin_gt=False)  # every thin pixel matches one of 200 GT pixels: R = n / 200
    assert r["ods_recall"] == pytest.approx(100 * n / 200)
    assert r["odsF"] == pytest.approx(100 * 2 * (n / 200) / (n / 200 + 1))


def test_ignore_label_is_non_boundary() -> None:
    gt = _line(40)
    gt[60, :] = 255  # ignore region: not a GT boundary, so predictions there are false positives
    pred = _line(60, img=_line(40))
    r = _score(pred, gt)
    assert r["ods_recall"] == pytest.approx(100.0)
    assert r["ods_precision"] == pytest.approx(100 * 100 / (100 + 100))


def test_nothing_accumulated_and_bad_input() -> None:
    m = BoundaryMetric()
    assert all(math.isnan(v) for v in m.compute().values())
    with pytest.raises(ValueError, match="probabilities"):
        m.update(torch.full((1, 1, 4, 4), 3.0), torch.zeros(1, 1, 4, 4))


# --- building blocks ------------------------------------------------------------------------------


def test_thin_one_pixel_lines_and_bars() -> None:
    bar = np.zeros((12, 20), dtype=bool)
    bar[4:7, 2:18] = True  # 3-px-thick bar thins to a single row
    t = thin(bar)
    assert t.sum(axis=0).max() == 1 and 10 <= t.sum() <= 16 and t[5, 5:15].all()
    line = np.zeros((12, 20), dtype=bool)
    line[5, 2:18] = True
    assert np.array_equal(thin(line), line)  # already thin: untouched, end points kept
    assert np.array_equal(thin(t), t)  # idempotent


def test_thin_matches_skimage() -> None:
    skimage_morphology = pytest.importorskip("skimage.morphology")
    rng = np.random.default_rng(0)
    for _ in range(60):
        h, w = rng.integers(5, 50, size=2)
        field = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 3.0))
        mask = field > np.quantile(field, rng.uniform(0.2, 0.9))
        assert np.array_equal(thin(mask), skimage_morphology.thin(mask))


def _brute_force_matching(adj: np.ndarray) -> int:
    if adj.size == 0:
        return 0
    cost = np.where(adj, 0, 1)
    r, c = linear_sum_assignment(cost)
    return int((cost[r, c] == 0).sum())


def test_max_matching_size_against_assignment() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        n, m = rng.integers(1, 30, size=2)
        adj = rng.random((n, m)) < rng.uniform(0.02, 0.3)
        assert max_matching_size(sparse.csr_matrix(adj.astype(np.int8))) == _brute_force_matching(adj)


def test_max_matching_size_on_ladder_graph() -> None:
    # Two parallel 2000-px curves, radius 8.8, rows shuffled: scipy's maximum_bipartite_matching takes
    # minutes on this (scipy gh-26147); the max-flow formulation takes milliseconds.
    n = 2000
    rows, cols = np.nonzero(np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) ** 2 + 1 <= 8.8**2)
    adj = sparse.csr_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(n, n))
    perm = np.random.default_rng(0).permutation(n)
    assert max_matching_size(adj[perm]) == n
    assert max_matching_size(adj[perm][: n // 2]) == n // 2


def test_image_counts_against_brute_force() -> None:
    rng = np.random.default_rng(2)
    thresholds = np.array([0.2, 0.5, 0.8])
    for _ in range(8):
        h, w = 24, 32
        gt = ndimage.gaussian_filter(rng.random((h, w)), 1.5)
        gt = thin(gt > np.quantile(gt, 0.7))
        prob = np.clip(ndimage.gaussian_filter(gt.astype(float), 1.0) * 3 + rng.random((h, w)) * 0.3, 0, 1)
        counts = image_counts(prob, gt, thresholds, max_dist=0.05, thin_gt=False)
        radius = 0.05 * math.hypot(h, w)
        g_pts = np.argwhere(gt)
        for k, t in enumerate(thresholds):
            p_pts = np.argwhere(thin(prob >= t))
            d = np.sqrt(((p_pts[:, None, :] - g_pts[None, :, :]) ** 2).sum(-1))
            match = _brute_force_matching(d <= radius)
            assert counts[k].tolist() == [match, len(g_pts), match, len(p_pts)]


def test_average_precision_definitions() -> None:
    assert average_precision(np.array([1.0]), np.array([1.0])) == pytest.approx(1.0)
    # flat extension to R=0 at P(0.5)=0.8, then linear to (1, 0.4): 0.5*0.8 + 0.5*(0.8+0.4)/2
    assert average_precision(np.array([0.5, 1.0]), np.array([0.8, 0.4])) == pytest.approx(0.7)
    # SEISM: only inside [0.5, 1]: grid 0.50..1.00 -> sum of 0.8 - 0.008 k for k = 0..50, / 100
    expected = sum(0.8 - 0.008 * k for k in range(51)) / 100
    assert average_precision_seism(np.array([0.5, 1.0]), np.array([0.8, 0.4])) == pytest.approx(expected)


def _blurry_pairs(n: int, h: int = 48, w: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(5)
    pairs = []
    for _ in range(n):
        gt = np.zeros((h, w), dtype=np.float32)
        gt[rng.integers(5, h - 5), 4 : w - 4] = 1
        gt[6 : h - 6, rng.integers(5, w - 5)] = 1
        ridge = ndimage.gaussian_filter(ndimage.shift(gt, rng.normal(0, 1, 2), order=0), 1.5)
        noise = ndimage.gaussian_filter(rng.standard_normal((h, w)), 2)
        prob = 1 / (1 + np.exp(-(-4 + 40 * ridge + 2 * noise)))
        pairs.append((prob.astype(np.float32), gt))
    return pairs


def test_worker_processes_give_identical_numbers() -> None:
    pairs = _blurry_pairs(7)
    serial = BoundaryMetric(max_dist=0.0075)
    pooled = create_metric("edges", max_dist=0.0075, workers=2, progress=False)
    for k in range(0, 7, 3):  # batches of 3, 3, 1
        pred = torch.stack([torch.from_numpy(p)[None] for p, _ in pairs[k : k + 3]])
        gt = torch.stack([torch.from_numpy(g)[None] for _, g in pairs[k : k + 3]])
        serial.update(pred, gt)
        pooled.update(pred, gt)
    a, b = serial.compute(), pooled.compute()
    assert a == b and 0 < a["odsF"] < 100
    assert pooled._pool is None  # compute shut the pool down
    # more images after compute start a new pool; order of the per-image counts is kept
    p, g = pairs[0]
    serial.update(torch.from_numpy(p)[None, None], torch.from_numpy(g)[None, None])
    pooled.update(torch.from_numpy(p)[None, None], torch.from_numpy(g)[None, None])
    assert serial.compute() == pooled.compute()
    assert all(np.array_equal(x, y) for x, y in zip(serial._counts, pooled._counts, strict=True))
    pooled.update(torch.from_numpy(p)[None, None], torch.from_numpy(g)[None, None])
    pooled.reset()
    assert pooled._pool is None and all(math.isnan(v) for v in pooled.compute().values())
    with pytest.raises(ValueError):
        BoundaryMetric(workers=-1)


@pytest.mark.parametrize("shape", [(400, 400), (272, 496)])
def test_radius_has_no_slack_as_in_the_reference(shape: tuple[int, int]) -> None:
    # BSDS' correspondPixels tests d2 > (maxDist * sqrt(rows² + cols²))² with no slack. Here that radius²
    # computes to 17.999999999999996, so a (3, 3) offset (d2 = 18) is out of reach; (4, 1) (d2 = 17) is not.
    h, w = shape
    r = 0.0075 * math.sqrt(h * h + w * w)
    assert r * r < 18
    gt = np.zeros((h, w), dtype=bool)
    gt[100, 100] = True
    for (dy, dx), matched in (((3, 3), 0), ((4, 1), 1)):
        prob = np.zeros((h, w))
        prob[100 + dy, 100 + dx] = 1.0
        counts = image_counts(prob, gt, np.array([0.5]), max_dist=0.0075, thin_gt=False)
        assert counts.tolist() == [[matched, 1, matched, 1]], (dy, dx)
