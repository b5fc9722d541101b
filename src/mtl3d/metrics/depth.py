"""Depth metrics, pixel-pooled over the whole split (the MTL survey's offline protocol).

Valid pixels: ``target > 0`` (0 = invalid, always masked) and finite, optionally ``target < max_depth``
(TaskPrompter masks ``gt < 80``; off by default). Predictions ``<= 0`` are set to 1e-9 before every
metric (as the MTL survey and InvPT do), so logs and ratios stay finite. Sums are float64 over all
valid pixels of the split, i.e. a large image weighs more than a small one (the survey's choice;
ASTMT averaged per image). No valid pixel in the split: every value is NaN.

Per-image statistics (:meth:`DepthMetric.per_image`): each image's float64 sums ``sums`` [N, 8] (valid
count, squared error, squared log error, abs-rel, sq-rel, delta1/2/3 counts). ``compute()`` pools the
same rows, so :meth:`DepthMetric.from_per_image` over all images reproduces it up to float64 summation
order (~1e-15 relative), and over a subset it matches a metric fed only that subset.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch

from mtl3d.metrics.pooling import first_row, index_weights, select, weighted_sum

_EPS_PRED = 1e-9


class DepthMetric:
    """rmse, log_rmse (natural log), abs_rel, sq_rel, delta1/2/3 (% with max(p/g, g/p) < 1.25**k)."""

    def __init__(self, max_depth: float | None = None) -> None:
        self.max_depth = max_depth
        cap = f", target < {max_depth:g}" if max_depth is not None else ""
        self.protocol = (
            f"pixel-pooled over the split; valid = target > 0{cap}; pred <= 0 -> 1e-9; "
            "rmse/log_rmse (ln)/abs_rel/sq_rel; delta_k = % max(p/g,g/p) < 1.25^k"
        )
        self.reset()

    def reset(self) -> None:
        self._sums = torch.zeros(8, dtype=torch.float64)  # n, sq, sq_log, abs_rel, sq_rel, d1, d2, d3
        self._per_image: list[np.ndarray] = []  # [B, 8] float64 per batch, the same sums per image

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(
                f"depth metric expects pred and target of the same shape [B,1,H,W], got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}"
            )
        g = target.to(torch.float64)
        p = pred.to(device=g.device, dtype=torch.float64)
        valid = (g > 0) & torch.isfinite(g)
        if self.max_depth is not None:
            valid &= g < self.max_depth
        # per-image sums: invalid pixels get harmless stand-ins (1 for g and p) and are zeroed by ``w``
        w = valid.to(torch.float64)
        p = torch.where(p <= 0, torch.full_like(p, _EPS_PRED), p)
        g = torch.where(valid, g, torch.ones_like(g))
        p = torch.where(valid, p, torch.ones_like(p))
        diff = g - p
        ratio = torch.maximum(p / g, g / p)
        terms = [
            w,
            diff**2,
            (torch.log(g) - torch.log(p)) ** 2,
            diff.abs() / g,
            diff**2 / g,
            (ratio < 1.25).to(torch.float64),
            (ratio < 1.25**2).to(torch.float64),
            (ratio < 1.25**3).to(torch.float64),
        ]
        dims = tuple(range(1, g.dim()))
        sums = torch.stack([(x * w).sum(dim=dims) for x in terms], dim=1).cpu()  # [B, 8]
        self._per_image.append(sums.numpy().copy())
        self._sums += sums.sum(dim=0)

    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image sufficient statistics: ``sums`` [N, 8] float64 (n, sq, sq_log, abs_rel, sq_rel, d1-3)."""
        rows = np.concatenate(self._per_image) if self._per_image else np.zeros((0, 8))
        return {"sums": rows}

    @staticmethod
    def from_weights(
        stats: dict[str, np.ndarray], weights: np.ndarray, keys: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The values [R] for each row of image weights [R, N] (:mod:`mtl3d.metrics.pooling`): the pooling
        that ``compute``, :meth:`from_per_image` and the bootstrap share. ``keys``: only these (None: all)."""
        return select(_scores(weighted_sum(weights, stats["sums"])), keys)

    @staticmethod
    def from_per_image(stats: dict[str, np.ndarray], index: np.ndarray | None = None) -> dict[str, float]:
        """``compute()``'s values from :meth:`per_image` statistics of the images ``index`` (default all;
        repeats count twice, as a bootstrap resample needs)."""
        weights = index_weights(index, len(stats["sums"]))
        return first_row(DepthMetric.from_weights(stats, weights))

    def compute(self) -> dict[str, float]:
        return first_row(_scores(self._sums.numpy()[None]))


def _scores(sums: np.ndarray) -> dict[str, np.ndarray]:
    """The metric values [R] from R rows of the 8 pooled sums [R, 8] (no valid pixel: NaN)."""
    n, sq, sq_log, abs_rel, sq_rel, d1, d2, d3 = np.moveaxis(np.asarray(sums, dtype=np.float64), -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "rmse": np.sqrt(sq / n),
            "log_rmse": np.sqrt(sq_log / n),
            "abs_rel": abs_rel / n,
            "sq_rel": sq_rel / n,
            "delta1": 100.0 * d1 / n,
            "delta2": 100.0 * d2 / n,
            "delta3": 100.0 * d3 / n,
        }
    return {k: np.where(n == 0, np.nan, v) for k, v in out.items()}
