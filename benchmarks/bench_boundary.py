"""Benchmark: time per image of the odsF accumulation (``BoundaryMetric.update``), not a test.

Synthetic but realistic inputs: the GT is a set of random straight and curved one-pixel boundaries;
the "prediction" is a blurred, slightly displaced copy of the GT with smooth low-amplitude background
clutter, squashed to (0, 1) like a sigmoid output. Prints seconds per image for each size.

Usage: python benchmarks/bench_boundary.py [--images 20] [--sizes 96x128 480x640] [--thresholds 99]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from mtl3d.metrics.boundary import BoundaryMetric


def synthetic_pair(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (probability map, binary GT boundary map) pair of size h x w."""
    gt = np.zeros((h, w), dtype=bool)
    for _ in range(12):
        y0, x0, y1, x1 = rng.integers(0, [h, w, h, w])
        n = int(max(abs(y1 - y0), abs(x1 - x0))) + 1
        bend = rng.normal(0, 0.1 * min(h, w))
        s = np.linspace(0, 1, 2 * n)
        ys = np.clip(np.round(y0 + (y1 - y0) * s + bend * np.sin(np.pi * s)), 0, h - 1).astype(int)
        xs = np.clip(np.round(x0 + (x1 - x0) * s), 0, w - 1).astype(int)
        gt[ys, xs] = True
    scale = h / 96.0
    shifted = ndimage.shift(gt.astype(float), rng.normal(0, scale, 2), order=0)
    ridge = ndimage.gaussian_filter(shifted, 1.0 * scale)
    ridge /= max(ridge.max(), 1e-9)
    clutter = ndimage.gaussian_filter(rng.standard_normal((h, w)), 2.0 * scale)
    clutter /= max(np.abs(clutter).max(), 1e-9)
    logit = -5.0 + 9.0 * ridge + 2.5 * clutter
    return 1.0 / (1.0 + np.exp(-logit)), gt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--sizes", nargs="+", default=["96x128", "480x640"])
    ap.add_argument("--thresholds", type=int, default=99)
    ap.add_argument("--max-dist", type=float, default=0.011)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        rng = np.random.default_rng(0)
        pairs = [synthetic_pair(h, w, rng) for _ in range(args.images)]
        metric = BoundaryMetric(n_thresholds=args.thresholds, max_dist=args.max_dist)
        start = time.perf_counter()
        for prob, gt in pairs:
            target = torch.from_numpy(gt.astype(np.float32))[None, None]
            metric.update(torch.from_numpy(prob)[None, None], target)
        elapsed = time.perf_counter() - start
        res = metric.compute()
        print(
            f"{h}x{w}: {args.images} images x {args.thresholds} thresholds: {elapsed:.2f} s total, "
            f"{elapsed / args.images * 1000:.0f} ms/image (odsF {res['odsF']:.2f}, oisF {res['oisF']:.2f}, "
            f"AP {res['AP']:.2f})"
        )


if __name__ == "__main__":
    main()
