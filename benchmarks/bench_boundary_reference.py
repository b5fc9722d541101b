"""Benchmark: how far our exact maximum matching is above BSDS' randomised assignment. Not a test.

BSDS' ``correspondPixels`` (used by SEISM) solves a min-cost perfect assignment in which each boundary
pixel may be left unmatched only through a few "outlier" nodes: 6 picked at random (seeded from the
clock), plus a very expensive fallback. When those random links cannot be arranged, the optimum drops a
real match, so its counts are at most the maximum matching's. This script rebuilds that assignment graph
(same radius, integer weights, outlier degree, fallback) and solves it exactly with scipy's sparse
min-weight full bipartite matching, then compares the pooled odsF with ours on the synthetic maps of
``bench_boundary.py``. Several seeds stand in for the clock.

Usage: python benchmarks/bench_boundary_reference.py [--images 8] [--sizes nyud pascal] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from bench_boundary import PRESETS, synthetic_pair
from mtl3d.geometry import thin
from mtl3d.metrics.boundary import image_counts, match_radius

DEGREE = 6  # BSDS' outlier degree
MULTIPLIER = 100  # BSDS' float-to-integer weight scale
OUTLIER_COST = 100  # correspondPixels' default, a multiple of the radius


def reference_count(p1: np.ndarray, p2: np.ndarray, radius: float, rng: np.random.Generator) -> int:
    """Real pairs in an optimum of BSDS' assignment graph between pixel sets ``p1``, ``p2`` ([n, 2])."""
    if len(p1) == 0 or len(p2) == 0:
        return 0
    d2 = ((p1[:, None, :] - p2[None, :, :]) ** 2).sum(-1)
    close = d2 <= radius * radius
    keep1, keep2 = close.any(1), close.any(0)  # "matchable" pixels only
    d2 = d2[keep1][:, keep2]
    n1, n2 = d2.shape
    if n1 == 0:
        return 0
    n = n1 + n2
    ow = math.ceil(OUTLIER_COST * radius * MULTIPLIER)
    rows, cols, w = [], [], []
    i, j = np.nonzero(d2 <= radius * radius)
    rows += [i]
    cols += [j]
    w += [np.rint(np.sqrt(d2[i, j]) * MULTIPLIER)]

    def k_of_n(k: int, m: int) -> np.ndarray:
        return rng.choice(m, size=k, replace=False) if k else np.zeros(0, dtype=int)

    d1, dd2, d3 = max(0, min(DEGREE, n1 - 1)), max(0, min(DEGREE, n2 - 1)), min(DEGREE, n1, n2)
    for a in range(n1):  # pixel of map 1 -> outlier node of map 1 (not its own)
        o = k_of_n(d1, n1 - 1)
        o = o + (o >= a)
        rows.append(np.full(d1, a))
        cols.append(n2 + o)
        w.append(np.full(d1, ow))
    for b in range(n2):
        o = k_of_n(dd2, n2 - 1)
        o = o + (o >= b)
        rows.append(n1 + o)
        cols.append(np.full(dd2, b))
        w.append(np.full(dd2, ow))
    for a in range(max(n1, n2)):  # outlier-outlier
        o = k_of_n(d3, min(n1, n2))
        if n1 < n2:
            rows.append(n1 + np.full(d3, a))
            cols.append(n2 + o)
        else:
            rows.append(n1 + o)
            cols.append(n2 + np.full(d3, a))
        w.append(np.full(d3, ow))
    rows += [np.arange(n1), n1 + np.arange(n2)]  # the expensive fallback
    cols += [n2 + np.arange(n1), np.arange(n2)]
    w += [np.full(n1, ow * MULTIPLIER), np.full(n2, ow * MULTIPLIER)]
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(w).astype(np.float64)
    # +1: every perfect matching has n edges, so the optimum is unchanged, and no weight is an implicit 0.
    g = sparse.coo_matrix((v + 1, (r, c)), shape=(n, n)).tocsr()
    g.sum_duplicates()
    left, right = min_weight_full_bipartite_matching(g)
    return int(((left < n1) & (right < n2)).sum())


def ods_f(counts: np.ndarray) -> float:
    """Pooled odsF (%) from per-image counts [N, T, 4] (cntR, sumR, cntP, sumP)."""
    s = counts.sum(0).astype(float)
    r = np.where(s[:, 1] > 0, s[:, 0] / np.maximum(s[:, 1], 1), 1.0)
    p = np.where(s[:, 3] > 0, s[:, 2] / np.maximum(s[:, 3], 1), 1.0)
    f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return 100 * float(f.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--sizes", nargs="+", default=["nyud", "pascal"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--thresholds", type=int, default=99)
    args = ap.parse_args()
    thresholds = np.arange(1, args.thresholds + 1) / (args.thresholds + 1)
    for size in args.sizes:
        h, w, max_dist = PRESETS[size]
        radius = match_radius(h, w, max_dist)
        pairs = [synthetic_pair(h, w, np.random.default_rng(i)) for i in range(args.images)]
        ours = np.stack([image_counts(p, g, thresholds, max_dist) for p, g in pairs])
        for seed in args.seeds:
            rng = np.random.default_rng(1000 + seed)
            ref = ours.copy()
            dropped = 0
            for k_img, (prob, gt) in enumerate(pairs):
                g_pts = np.argwhere(thin(gt))
                cache: dict[int, int] = {}
                for k, t in enumerate(thresholds):
                    binary = prob >= t
                    key = int(binary.sum())  # nested sets: the same count is the same map
                    if key not in cache:
                        cache[key] = reference_count(np.argwhere(thin(binary)), g_pts, radius, rng)
                    ref[k_img, k, 0] = ref[k_img, k, 2] = cache[key]
                dropped += int((ours[k_img, :, 0] - ref[k_img, :, 0]).sum())
            assert (ref[..., 0] <= ours[..., 0]).all(), "the reference matched more than a maximum matching"
            print(
                f"{size} {h}x{w} maxDist {max_dist} seed {seed}: odsF ours {ods_f(ours):.3f} "
                f"reference-like {ods_f(ref):.3f} (+{ods_f(ours) - ods_f(ref):.3f}); "
                f"{dropped} of {int(ours[..., 0].sum())} matches dropped over {args.images} images x "
                f"{len(thresholds)} thresholds",
                flush=True,
            )


if __name__ == "__main__":
    main()
