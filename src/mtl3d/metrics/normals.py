"""Surface-normal metrics, pixel-pooled over the whole split (MTL survey offline ``eval_normals``).

Valid pixels: GT vector non-zero (``||g|| > 0``; the zero vector = invalid). Both vectors are
L2-normalised; the angle is ``2 * atan2(||p - g||, ||p + g||)`` in degrees (exact near 0° and 180°,
unlike ``acos`` of a clipped dot product; InvPT uses the same formula). A zero predicted vector has no
direction and scores 90°. ``within_<t>`` counts angles **strictly** below t (as the survey).

Median: kept exactly *enough* with a histogram of 180 000 bins of 0.001° over [0°, 180°] (1.4 MB,
independent of the split size; storing every angle of NYUD val would need ~0.8 GB). The reported
median is the centre of the bin holding each middle rank, so it is within 0.0005° of the exact
median (``numpy.median`` convention: mean of the two middle values for an even count). Mean, rmse
and the ``within`` percentages are exact (float64 sums and exact comparisons). No valid pixel in the
split: every value is NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BIN_WIDTH_DEG = 1e-3
_N_BINS = int(round(180.0 / BIN_WIDTH_DEG))
THRESHOLDS_DEG = (11.25, 22.5, 30.0)


def angular_error_deg(pred: torch.Tensor, target: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Angle in degrees between the directions of ``pred`` and ``target`` along ``dim``.

    Inputs need not be normalised. Uses ``2 atan2(|p̂ - ĝ|, |p̂ + ĝ|)``, accurate at every angle.
    """
    p = _unit(pred.double() if not pred.is_floating_point() else pred, dim)
    g = _unit(target.double() if not target.is_floating_point() else target, dim)
    return torch.rad2deg(2.0 * torch.atan2((p - g).norm(dim=dim), (p + g).norm(dim=dim)))


def _unit(v: torch.Tensor, dim: int) -> torch.Tensor:
    # zero vectors stay zero (no 0/0): they then score 90 degrees against any unit vector
    return v / v.norm(dim=dim, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)


class NormalsMetric:
    """mean, median, rmse (degrees) and within_11.25 / within_22.5 / within_30 (%) over a split."""

    def __init__(self) -> None:
        self.protocol = (
            "pixel-pooled over the split; valid = ||gt|| > 0; pred and gt L2-normalised; "
            "angle = 2*atan2(|p-g|,|p+g|) deg; median from 0.001 deg histogram (error <= 0.0005 deg); "
            "within_t = % angle < t"
        )
        self.reset()

    def reset(self) -> None:
        self._n = 0
        self._sum = 0.0
        self._sum_sq = 0.0
        self._within = np.zeros(len(THRESHOLDS_DEG), dtype=np.int64)
        self._hist = np.zeros(_N_BINS, dtype=np.int64)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(
                f"normals metric expects pred and target [B,3,H,W], got {tuple(pred.shape)} and "
                f"{tuple(target.shape)}"
            )
        g = target.to(torch.float64)
        p = pred.to(device=g.device, dtype=torch.float64)
        valid = g.norm(dim=1) > 0
        ang = angular_error_deg(p, g, dim=1)[valid]
        if ang.numel() == 0:
            return
        self._n += ang.numel()
        self._sum += float(ang.sum())
        self._sum_sq += float((ang**2).sum())
        for i, t in enumerate(THRESHOLDS_DEG):
            self._within[i] += int((ang < t).sum())
        bins = (ang / BIN_WIDTH_DEG).floor().clamp(0, _N_BINS - 1).long()
        self._hist += torch.bincount(bins, minlength=_N_BINS).cpu().numpy()

    def _median(self) -> float:
        cum = np.cumsum(self._hist)
        ranks = np.array([(self._n - 1) // 2, self._n // 2])  # 0-based middle ranks
        bins = np.searchsorted(cum, ranks, side="right")
        return float(((bins + 0.5) * BIN_WIDTH_DEG).mean())

    def compute(self) -> dict[str, float]:
        keys = ("mean", "median", "rmse") + tuple(f"within_{t:g}" for t in THRESHOLDS_DEG)
        if self._n == 0:
            return dict.fromkeys(keys, math.nan)
        out = {
            "mean": self._sum / self._n,
            "median": self._median(),
            "rmse": math.sqrt(self._sum_sq / self._n),
        }
        for t, c in zip(THRESHOLDS_DEG, self._within, strict=True):
            out[f"within_{t:g}"] = 100.0 * float(c) / self._n
        return out
