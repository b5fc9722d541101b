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

from collections.abc import Collection

import numpy as np
import torch

from mtl3d.metrics.pooling import first_row, index_weights, select, weighted_sums

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
    def from_weights(
        stats: dict[str, np.ndarray], weights: np.ndarray, keys: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The values [R] for each row of image weights [R, N] (:mod:`mtl3d.metrics.pooling`): the pooling
        that :meth:`from_per_image` and the bootstrap share; the median from the 0.5° histogram (see the
        module docstring). ``keys``: only these (None: all; the histogram is pooled only for the median)."""
        parts = [stats["n"], stats["sum"], stats["sum_sq"], stats["within"]]
        if keys is None or "median" in keys:
            parts.append(stats["hist"])
        n, sums, sums_sq, within, *hist = weighted_sums(weights, *parts)
        values = _scores(n, sums, sums_sq, within, hist[0] if hist else None, PER_IMAGE_BIN_DEG)
        return select(values, keys)

    @staticmethod
    def from_per_image(stats: dict[str, np.ndarray], index: np.ndarray | None = None) -> dict[str, float]:
        """``compute()``'s values from :meth:`per_image` statistics of the images ``index`` (default all;
        repeats count twice, as a bootstrap resample needs); the median from the 0.5° histogram."""
        weights = index_weights(index, len(stats["n"]))
        return first_row(NormalsMetric.from_weights(stats, weights))

    def compute(self) -> dict[str, float]:
        values = _scores(
            np.array([self._n]),
            np.array([self._sum]),
            np.array([self._sum_sq]),
            self._within[None],
            self._hist[None],
            BIN_WIDTH_DEG,
        )
        return first_row(values)


def _scores(
    n: np.ndarray,
    sums: np.ndarray,
    sums_sq: np.ndarray,
    within: np.ndarray,
    hist: np.ndarray | None,
    width: float,
) -> dict[str, np.ndarray]:
    """The metric values [R] from R rows of pooled counts and sums (``hist`` None: no median; no valid
    pixel: NaN)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"mean": sums / n}
        if hist is not None:
            out["median"] = _hist_median(hist, n, width)
        out["rmse"] = np.sqrt(sums_sq / n)
        for j, t in enumerate(THRESHOLDS_DEG):
            out[f"within_{t:g}"] = 100.0 * within[:, j] / n
    return {k: np.where(n == 0, np.nan, v) for k, v in out.items()}


def _hist_median(hist: np.ndarray, n: np.ndarray, width: float) -> np.ndarray:
    """Medians of R sets of ``n`` values from their histograms [R, B]: the mean of the centres of the
    bins of the two middle ranks."""
    cum = np.cumsum(hist, axis=-1)
    n = np.asarray(n, dtype=np.int64)
    ranks = np.stack([(n - 1) // 2, n // 2], axis=-1)  # 0-based middle ranks [R, 2]
    # the first bin whose cumulative count exceeds the rank (searchsorted side="right", row by row)
    bins = (cum[:, None, :] <= ranks[:, :, None]).sum(axis=-1)
    return ((bins + 0.5) * width).mean(axis=-1)
