"""Benchmark: boundary (odsF) scoring throughput, in images/s, serial vs worker processes. Not a test.

Synthetic but realistic inputs: the GT is a set of random straight and curved one-pixel boundaries;
the "prediction" is a blurred, slightly displaced copy of the GT with smooth low-amplitude background
clutter, squashed to (0, 1) like a sigmoid output. Sizes: NYUD (ATRC variant, 425x560, maxDist 0.011)
and PASCAL-Context (375x500, maxDist 0.0075). Each row times ``update`` for every image plus the final
``compute`` (which waits for the workers); the one-off start of the worker pool's fork server is
measured separately, before the timed runs. Checks that every worker count gives identical numbers.

Usage: python benchmarks/bench_boundary.py [--images 16] [--sizes nyud pascal 96x128] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from mtl3d.metrics.boundary import BoundaryMetric

PRESETS = {"nyud": (425, 560, 0.011), "pascal": (375, 500, 0.0075)}


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


def run(pairs: list[tuple[torch.Tensor, torch.Tensor]], max_dist: float, workers: int) -> tuple[float, dict]:
    """Seconds to score ``pairs`` (update each, then compute) and the resulting metrics."""
    metric = BoundaryMetric(max_dist=max_dist, workers=workers)
    start = time.perf_counter()
    for prob, gt in pairs:
        metric.update(prob, gt)
    res = metric.compute()
    return time.perf_counter() - start, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--sizes", nargs="+", default=["nyud", "pascal"], help="nyud, pascal or HxW")
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    ap.add_argument("--max-dist", type=float, default=0.011, help="for HxW sizes")
    args = ap.parse_args()
    torch.set_num_threads(1)

    if any(w > 0 for w in args.workers):
        t0 = time.perf_counter()
        warm = BoundaryMetric(workers=max(args.workers))
        warm.update(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
        warm.compute()
        print(f"worker pool start-up (fork server, once per process): {time.perf_counter() - t0:.2f} s")

    rows = []
    for size in args.sizes:
        if size in PRESETS:
            h, w, max_dist = PRESETS[size]
        else:
            h, w = (int(v) for v in size.split("x"))
            max_dist = args.max_dist
        rng = np.random.default_rng(0)
        pairs = []
        for _ in range(args.images):
            prob, gt = synthetic_pair(h, w, rng)
            # float32, as the network's sigmoid output arrives
            pairs.append(
                (torch.from_numpy(prob).float()[None, None], torch.from_numpy(gt).float()[None, None])
            )
        reference = None
        for workers in args.workers:
            seconds, res = run(pairs, max_dist, workers)
            reference = reference or res
            same = "yes" if res == reference else "NO"
            rows.append(
                (f"{size} {h}x{w}", workers, args.images / seconds, 1000 * seconds / args.images, res, same)
            )

    print(f"\n{args.images} images per row, 99 thresholds")
    print(f"{'size':<20} {'workers':>7} {'images/s':>9} {'ms/image':>9} {'odsF':>7} {'same':>5}")
    for name, workers, ips, ms, res, same in rows:
        print(f"{name:<20} {workers:>7} {ips:>9.2f} {ms:>9.0f} {res['odsF']:>7.2f} {same:>5}")


if __name__ == "__main__":
    main()
