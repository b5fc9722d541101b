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

Per-image statistics (:meth:`NormalsMetric.per_image`): each image's valid count ``n``, angle sum
``sum`` and squared sum ``sum_sq`` (float64), ``within`` counts [N, 3] and a coarse histogram ``hist``
[N, 360] (uint32, 0.5° bins: ~0.9 MB for NYUD's 654 images, ~7 MB for PASCAL's 5,105 before compression;
the 0.001° one per image would be ~0.5 GB for NYUD). Pooling them with
:meth:`NormalsMetric.from_per_image` gives mean, rmse (up to float64 summation order) and the
``within`` percentages exactly; its **median has 0.5° resolution** (centre of the 0.5° bin holding each
middle rank, so within 0.25° of the exact median and of ``compute()``'s 0.001° median). The split-level
metric keeps its fine histogram: metrics.json is unchanged, and Δm uses the mean, which pools exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BIN_WIDTH_DEG = 1e-3
_N_BINS = int(round(180.0 / BIN_WIDTH_DEG))
THRESHOLDS_DEG = (11.25, 22.5, 30.0)
PER_IMAGE_BIN_DEG = 0.5
_N_COARSE = int(round(180.0 / PER_IMAGE_BIN_DEG))


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
        self._rows: list[dict[str, np.ndarray]] = []  # one dict of per-image statistics per image

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
        ang_all = angular_error_deg(p, g, dim=1)
        for i in range(ang_all.shape[0]):
            # per image, so that per-image statistics exist; images without a valid pixel get zero rows
            self._add_image(ang_all[i][valid[i]])

    def _add_image(self, ang: torch.Tensor) -> None:
        n = ang.numel()
        within = np.array([int((ang < t).sum()) for t in THRESHOLDS_DEG], dtype=np.int64)
        coarse = (ang / PER_IMAGE_BIN_DEG).floor().clamp(0, _N_COARSE - 1).long()
        row = {
            "n": np.int64(n),
            "sum": np.float64(ang.sum()) if n else np.float64(0.0),
            "sum_sq": np.float64((ang**2).sum()) if n else np.float64(0.0),
            "within": within,
            "hist": torch.bincount(coarse, minlength=_N_COARSE).cpu().numpy().astype(np.uint32),
        }
        self._rows.append(row)
        if n == 0:
            return
        self._n += n
        self._sum += float(row["sum"])
        self._sum_sq += float(row["sum_sq"])
        self._within += within
        bins = (ang / BIN_WIDTH_DEG).floor().clamp(0, _N_BINS - 1).long()
        self._hist += torch.bincount(bins, minlength=_N_BINS).cpu().numpy()

    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image sufficient statistics: ``n`` [N], ``sum``/``sum_sq`` [N] float64, ``within`` [N, 3],
        ``hist`` [N, 360] uint32 (0.5° bins)."""
        if not self._rows:
            return {
                "n": np.zeros(0, np.int64),
                "sum": np.zeros(0),
                "sum_sq": np.zeros(0),
                "within": np.zeros((0, len(THRESHOLDS_DEG)), np.int64),
                "hist": np.zeros((0, _N_COARSE), np.uint32),
            }
        return {k: np.stack([r[k] for r in self._rows]) for k in self._rows[0]}

    @staticmethod
    def from_per_image(stats: dict[str, np.ndarray], index: np.ndarray | None = None) -> dict[str, float]:
        """``compute()``'s values from :meth:`per_image` statistics of the images ``index`` (default all);
        the median from the 0.5° histogram (see the module docstring)."""
        sel = slice(None) if index is None else np.asarray(index)
        n = int(np.asarray(stats["n"])[sel].sum())
        keys = ("mean", "median", "rmse") + tuple(f"within_{t:g}" for t in THRESHOLDS_DEG)
        if n == 0:
            return dict.fromkeys(keys, math.nan)
        hist = np.asarray(stats["hist"])[sel].astype(np.int64).sum(axis=0)
        within = np.asarray(stats["within"])[sel].sum(axis=0)
        out = {
            "mean": float(np.asarray(stats["sum"])[sel].sum()) / n,
            "median": _hist_median(hist, n, PER_IMAGE_BIN_DEG),
            "rmse": math.sqrt(float(np.asarray(stats["sum_sq"])[sel].sum()) / n),
        }
        for t, c in zip(THRESHOLDS_DEG, within, strict=True):
            out[f"within_{t:g}"] = 100.0 * float(c) / n
        return out

    def _median(self) -> float:
        return _hist_median(self._hist, self._n, BIN_WIDTH_DEG)

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


def _hist_median(hist: np.ndarray, n: int, width: float) -> float:
    """Median of ``n`` values from their histogram: mean of the centres of the bins of the middle ranks."""
    cum = np.cumsum(hist)
    ranks = np.array([(n - 1) // 2, n // 2])  # 0-based middle ranks
    bins = np.searchsorted(cum, ranks, side="right")
    return float(((bins + 0.5) * width).mean())
