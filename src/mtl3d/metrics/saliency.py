"""Saliency metrics: maxF and mIoU over thresholds, two published protocols.

``protocol="mtl"`` (default; MTL survey / ASTMT ``eval_sal``): thresholds ``linspace(0.2, 0.9, 15)``,
positive = ``prob > t``. Per image and threshold: Jaccard (1 when GT and prediction are both empty),
precision ``TP/(TP+FP)`` and recall ``TP/(TP+FN)`` (0 when the denominator is 0). Each is averaged over
images; ``maxF = max_t 2 P̄ R̄ / (P̄ + R̄)`` (β² = 1, from the image-averaged P and R) and
``mIoU = max_t`` mean Jaccard.

``protocol="invpt"`` (InvPT / TaskPrompter ``SaliencyMeter``): thresholds 0.05, 0.10, ..., 0.95 (19),
positive = ``prob >= t``; TP, predicted and actual positives pooled over all valid pixels of the split;
``maxF = max_t (1 + β²) P R / (β² P + R)`` with β² = 0.3; ``mIoU = max_t`` of the per-image Jaccard
averaged over images (TaskPrompter). InvPT's meter receives probabilities and applies a *second*
sigmoid, which shifts its effective thresholds to logit(t) (t ≤ 0.5 then means "everything positive");
that quirk is **not** reproduced: thresholds apply to the probability itself, so our numbers are what
the InvPT protocol intends, not bit-identical to its code.

``protocol="both"`` (what :func:`mtl3d.metrics.create_metric` gives by default): both at once, the MTL
survey numbers under the plain keys (``maxF``, ``mIoU``: Δm uses these) and the InvPT ones with the
suffix ``_invpt`` (``maxF_invpt``, ``mIoU_invpt``, ``maxF_threshold_invpt``, ``mIoU_threshold_invpt``).

In both protocols pixels with target 255 are ignored (the MTL code has no ignore label; its GT has
none) and images with no valid pixel are skipped. No image in the split: every value is NaN.

Per-image statistics (:meth:`SaliencyMetric.per_image`): per image ``valid`` (has a valid pixel),
``n_pos`` (GT positives) and per threshold the true and predicted positives, ``<protocol>/tp`` and
``<protocol>/pp`` [N, T] (int32; ``mtl/`` and/or ``invpt/`` keys). Jaccard, precision and recall per
image follow from these counts, so :meth:`SaliencyMetric.from_per_image` reproduces ``compute()`` up to
float64 summation order, for all images or any subset.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch

from mtl3d.errors import unknown_name
from mtl3d.metrics.pooling import first_row, index_weights, select, weighted_sums

PROTOCOLS = ("mtl", "invpt", "both")
INVPT_SUFFIX = "_invpt"
_KEYS = ("maxF", "mIoU", "maxF_threshold", "mIoU_threshold")


class SaliencyMetric:
    """``maxF`` and ``mIoU`` (%) and the thresholds attaining them (``maxF_threshold``, ``mIoU_threshold``).

    ``protocol`` picks the definition ("mtl", "invpt", or "both" with the InvPT keys suffixed ``_invpt``,
    see the module docstring); afterwards the attribute ``protocol`` holds the one-line description
    written to metrics.json, ``mode`` the name.
    """

    def __init__(self, protocol: str = "mtl", ignore_index: int = 255) -> None:
        if protocol not in PROTOCOLS:
            raise unknown_name("saliency protocol", protocol, PROTOCOLS)
        self.mode = protocol
        self.ignore_index = ignore_index
        self._parts: tuple[SaliencyMetric, SaliencyMetric] | None = None
        if protocol == "both":
            # two independent accumulators; the survey one keeps the plain keys
            self._parts = (SaliencyMetric("mtl", ignore_index), SaliencyMetric("invpt", ignore_index))
            self.protocol = f"{self._parts[0].protocol} || keys *{INVPT_SUFFIX}: {self._parts[1].protocol}"
            return
        if protocol == "mtl":
            self.thresholds = np.linspace(0.2, 0.9, 15)
            self.beta_sq = 1.0
            self.protocol = (
                "MTL survey: 15 thresholds linspace(0.2,0.9), prob > t; per-image Jaccard/P/R averaged "
                "over images; maxF (beta^2=1) from mean P,R; mIoU = max_t mean Jaccard; ignore 255; %"
            )
        else:
            self.thresholds = np.arange(1, 20) * 0.05
            self.beta_sq = 0.3
            self.protocol = (
                "InvPT/TaskPrompter: 19 thresholds 0.05..0.95, prob >= t; TP/PP/AP pooled over valid pixels; "
                "maxF beta^2=0.3; mIoU = max_t mean per-image Jaccard; no double sigmoid; ignore 255; %"
            )
        self.reset()

    def reset(self) -> None:
        if self._parts is not None:
            for part in self._parts:
                part.reset()
            return
        t = len(self.thresholds)
        self._n_images = 0
        self._sum_jac = np.zeros(t)
        self._sum_prec = np.zeros(t)
        self._sum_rec = np.zeros(t)
        self._tp = np.zeros(t, dtype=np.int64)
        self._pp = np.zeros(t, dtype=np.int64)
        self._ap = 0
        self._rows: list[tuple[bool, int, np.ndarray, np.ndarray]] = []  # valid, n_pos, tp, pp per image

    def _positives(self, sorted_vals: np.ndarray) -> np.ndarray:
        """Number of values counted positive at each threshold (> t for mtl, >= t for invpt)."""
        side = "right" if self.mode == "mtl" else "left"
        return sorted_vals.size - np.searchsorted(sorted_vals, self.thresholds, side=side)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if self._parts is not None:
            for part in self._parts:
                part.update(pred, target)
            return
        p = torch.as_tensor(pred).detach().to("cpu", torch.float64).numpy()
        g = torch.as_tensor(target).detach().to("cpu", torch.float64).numpy()
        if p.shape != g.shape or p.ndim != 4 or p.shape[1] != 1:
            raise ValueError(
                f"saliency metric expects pred and target [B,1,H,W], got {p.shape} and {g.shape}"
            )
        for i in range(p.shape[0]):
            valid = g[i, 0] != self.ignore_index
            if not valid.any():
                # a zero row keeps per-image statistics aligned with the image ids
                zeros = np.zeros(len(self.thresholds), dtype=np.int32)
                self._rows.append((False, 0, zeros, zeros))
                continue
            prob = p[i, 0][valid]
            pos = g[i, 0][valid] >= 0.5
            n_pos = int(pos.sum())
            pp = self._positives(np.sort(prob))  # predicted positives per threshold
            tp = self._positives(np.sort(prob[pos]))  # true positives per threshold
            self._rows.append((True, n_pos, tp.astype(np.int32), pp.astype(np.int32)))
            jac, prec, rec = _image_scores(tp, pp, np.int64(n_pos))
            self._n_images += 1
            self._sum_jac += jac
            self._sum_prec += prec
            self._sum_rec += rec
            self._tp += tp
            self._pp += pp
            self._ap += n_pos

    def compute(self) -> dict[str, float]:
        if self._parts is not None:
            survey, invpt = (part.compute() for part in self._parts)
            return {**survey, **{k + INVPT_SUFFIX: v for k, v in invpt.items()}}
        values = _scores(
            self.mode,
            self.thresholds,
            np.array([self._n_images]),
            self._sum_jac[None],
            self._sum_prec[None],
            self._sum_rec[None],
            self._tp[None],
            self._pp[None],
            np.array([self._ap]),
        )
        return first_row(values)

    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image sufficient statistics: ``valid`` [N] bool, ``n_pos`` [N] int64 and
        ``<protocol>/tp``, ``<protocol>/pp`` [N, T] int32 for each protocol accumulated."""
        if self._parts is not None:
            survey, invpt = (part.per_image() for part in self._parts)
            return {**survey, **invpt}
        t = len(self.thresholds)
        rows = self._rows
        return {
            "valid": np.array([r[0] for r in rows], dtype=bool),
            "n_pos": np.array([r[1] for r in rows], dtype=np.int64),
            f"{self.mode}/tp": np.stack([r[2] for r in rows]) if rows else np.zeros((0, t), np.int32),
            f"{self.mode}/pp": np.stack([r[3] for r in rows]) if rows else np.zeros((0, t), np.int32),
        }

    @staticmethod
    def from_weights(
        stats: dict[str, np.ndarray], weights: np.ndarray, keys: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The values [R] for each row of image weights [R, N] (:mod:`mtl3d.metrics.pooling`): the pooling
        that :meth:`from_per_image` and the bootstrap share. Both protocols present (``mtl/`` and
        ``invpt/`` keys): the ``protocol="both"`` keys. ``keys``: only these (None: all; a protocol none
        of whose keys is asked for is not pooled)."""
        valid = np.asarray(stats["valid"], dtype=bool)
        w = valid.astype(np.float64)  # images without a valid pixel weigh nothing
        n_pos = np.asarray(stats["n_pos"], dtype=np.int64)
        modes = [m for m in ("mtl", "invpt") if f"{m}/tp" in stats]
        out: dict[str, np.ndarray] = {}
        for mode in modes:
            suffix = INVPT_SUFFIX if mode == "invpt" and len(modes) == 2 else ""
            if keys is not None and not any(
                k.removesuffix(suffix) in _KEYS for k in keys if k.endswith(suffix)
            ):
                continue
            tp = np.asarray(stats[f"{mode}/tp"], dtype=np.int64)
            pp = np.asarray(stats[f"{mode}/pp"], dtype=np.int64)
            jac, prec, rec = _image_scores(tp, pp, n_pos[:, None])
            # each protocol pools only what its formula reads: image-averaged P/R (mtl) or pixel counts
            if mode == "mtl":
                n, s_jac, s_prec, s_rec = weighted_sums(
                    weights, w, jac * w[:, None], prec * w[:, None], rec * w[:, None]
                )
                s_tp = s_pp = s_ap = None
            else:
                n, s_jac, s_tp, s_pp, s_ap = weighted_sums(
                    weights, w, jac * w[:, None], tp * valid[:, None], pp * valid[:, None], n_pos * valid
                )
                s_prec = s_rec = None
            values = _scores(mode, SaliencyMetric(mode).thresholds, n, s_jac, s_prec, s_rec, s_tp, s_pp, s_ap)
            out.update({k + suffix: v for k, v in values.items()})
        return select(out, keys)

    @staticmethod
    def from_per_image(stats: dict[str, np.ndarray], index: np.ndarray | None = None) -> dict[str, float]:
        """``compute()``'s values from :meth:`per_image` statistics of the images ``index`` (default all;
        repeats count twice, as a bootstrap resample needs). Both protocols present (``mtl/`` and
        ``invpt/`` keys): the ``protocol="both"`` keys."""
        weights = index_weights(index, len(stats["valid"]))
        return first_row(SaliencyMetric.from_weights(stats, weights))


def _image_scores(tp: np.ndarray, pp: np.ndarray, n_pos: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-image Jaccard (1 if GT and prediction are empty), precision and recall (0 on 0/0)."""
    tp = tp.astype(np.float64)
    pp = pp.astype(np.float64)
    n_pos = np.broadcast_to(np.asarray(n_pos, dtype=np.float64), tp.shape)
    union = pp + n_pos - tp  # tp + fp + fn
    jac = np.divide(tp, union, out=np.ones_like(tp), where=union > 0)
    prec = np.divide(tp, pp, out=np.zeros_like(tp), where=pp > 0)
    rec = np.divide(tp, n_pos, out=np.zeros_like(tp), where=n_pos > 0)
    return jac, prec, rec


def _scores(
    mode: str,
    thresholds: np.ndarray,
    n_images: np.ndarray,
    sum_jac: np.ndarray,
    sum_prec: np.ndarray | None,
    sum_rec: np.ndarray | None,
    tp: np.ndarray | None,
    pp: np.ndarray | None,
    ap: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """maxF / mIoU and their thresholds [R] from R rows of pooled sums (images [R], per threshold
    [R, T]; shared by compute, from_per_image and the bootstrap; no image: NaN). The survey protocol
    reads ``sum_prec``/``sum_rec``, the InvPT one ``tp``/``pp``/``ap``; the others may be None."""
    beta_sq = 1.0 if mode == "mtl" else 0.3
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_jac = sum_jac / n_images[:, None]
        if mode == "mtl":
            prec = sum_prec / n_images[:, None]
            rec = sum_rec / n_images[:, None]
        else:
            prec = np.divide(tp, pp, out=np.zeros(tp.shape), where=pp > 0)
            rec = np.divide(tp, ap[:, None], out=np.zeros(tp.shape), where=ap[:, None] > 0)
        den = beta_sq * prec + rec
        f = np.divide((1 + beta_sq) * prec * rec, den, out=np.zeros_like(den), where=den > 0)
    bf = np.argmax(f, axis=-1)
    bj = np.argmax(mean_jac, axis=-1)
    rows = np.arange(len(f))
    out = {
        "maxF": 100.0 * f[rows, bf],
        "mIoU": 100.0 * mean_jac[rows, bj],
        "maxF_threshold": np.asarray(thresholds, dtype=np.float64)[bf],
        "mIoU_threshold": np.asarray(thresholds, dtype=np.float64)[bj],
    }
    empty = np.asarray(n_images) == 0
    return {k: np.where(empty, np.nan, v) for k, v in out.items()}
