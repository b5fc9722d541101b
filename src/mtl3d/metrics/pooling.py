"""Pooling per-image statistics under image weights: what every metric's ``from_weights`` shares.

A metric's per-image statistics (``per_image()``) are sufficient: the split-level value of any multiset
of images is the metric's formula applied to their weighted sums. One row of weights [N] gives one
multiset (all ones: the split; ``bincount`` of an index: a subset or a bootstrap resample), and R rows
[R, N] give R of them at once with one matrix product per statistic, which is what makes a bootstrap
with thousands of resamples take a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np


def index_weights(index: np.ndarray | None, n: int) -> np.ndarray:
    """One row of image weights [1, n]: each image once (``index`` None) or as often as ``index`` names it."""
    if index is None:
        return np.ones((1, n))
    return np.bincount(np.asarray(index, dtype=np.int64).ravel(), minlength=n)[None].astype(np.float64)


def weighted_sum(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``weights`` [R, N] times per-image ``values`` [N, ...] -> float64 [R, ...]."""
    return weighted_sums(weights, values)[0]


def weighted_sums(weights: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    """:func:`weighted_sum` of several per-image arrays in one matrix product (the weights are read
    once, which is most of the cost with thousands of rows)."""
    arrays = [np.asarray(v) for v in values]
    widths = [int(np.prod(a.shape[1:], dtype=np.int64)) for a in arrays]
    flat = np.concatenate(
        [a.reshape(len(a), w).astype(np.float64, copy=False) for a, w in zip(arrays, widths, strict=True)],
        axis=1,
    )
    pooled = np.asarray(weights, dtype=np.float64) @ flat
    out, start = [], 0
    for a, width in zip(arrays, widths, strict=True):
        out.append(pooled[:, start : start + width].reshape(-1, *a.shape[1:]))
        start += width
    return out


def first_row(values: dict[str, np.ndarray]) -> dict[str, float]:
    """The floats of the first weighting (a split-level ``compute`` or ``from_per_image``)."""
    return {k: float(np.asarray(v).reshape(-1)[0]) for k, v in values.items()}


def select(values: dict[str, np.ndarray], keys: Collection[str] | None) -> dict[str, np.ndarray]:
    """``values`` restricted to ``keys`` (None: all)."""
    return values if keys is None else {k: values[k] for k in keys}
