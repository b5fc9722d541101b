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

import math

import numpy as np
import torch

from mtl3d.errors import unknown_name

PROTOCOLS = ("mtl", "invpt", "both")
INVPT_SUFFIX = "_invpt"


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
        return _scores(
            self.mode,
            self.thresholds,
            self._n_images,
            self._sum_jac,
            self._sum_prec,
            self._sum_rec,
            self._tp,
            self._pp,
            self._ap,
        )

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
    def from_per_image(stats: dict[str, np.ndarray], index: np.ndarray | None = None) -> dict[str, float]:
        """``compute()``'s values from :meth:`per_image` statistics of the images ``index`` (default all).
        Both protocols present (``mtl/`` and ``invpt/`` keys): the ``protocol="both"`` keys."""
        sel = slice(None) if index is None else np.asarray(index)
        valid = np.asarray(stats["valid"], dtype=bool)[sel]
        n_pos = np.asarray(stats["n_pos"], dtype=np.int64)[sel][valid]
        out: dict[str, float] = {}
        modes = [m for m in ("mtl", "invpt") if f"{m}/tp" in stats]
        for mode in modes:
            tp = np.asarray(stats[f"{mode}/tp"], dtype=np.int64)[sel][valid]
            pp = np.asarray(stats[f"{mode}/pp"], dtype=np.int64)[sel][valid]
            ref = SaliencyMetric(mode)  # thresholds and beta of the protocol
            jac, prec, rec = _image_scores(tp, pp, n_pos[:, None])
            values = _scores(
                mode,
                ref.thresholds,
                int(valid.sum()),
                jac.sum(axis=0),
                prec.sum(axis=0),
                rec.sum(axis=0),
                tp.sum(axis=0),
                pp.sum(axis=0),
                int(n_pos.sum()),
            )
            suffix = INVPT_SUFFIX if mode == "invpt" and len(modes) == 2 else ""
            out.update({k + suffix: v for k, v in values.items()})
        return out


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
    n_images: int,
    sum_jac: np.ndarray,
    sum_prec: np.ndarray,
    sum_rec: np.ndarray,
    tp: np.ndarray,
    pp: np.ndarray,
    ap: int,
) -> dict[str, float]:
    """maxF / mIoU and their thresholds from split-level sums (shared by compute and from_per_image)."""
    keys = ("maxF", "mIoU", "maxF_threshold", "mIoU_threshold")
    if n_images == 0:
        return dict.fromkeys(keys, math.nan)
    beta_sq = 1.0 if mode == "mtl" else 0.3
    mean_jac = sum_jac / n_images
    if mode == "mtl":
        prec = sum_prec / n_images
        rec = sum_rec / n_images
    else:
        prec = np.divide(tp, pp, out=np.zeros(len(tp)), where=pp > 0)
        rec = tp / ap if ap > 0 else np.zeros(len(tp))
    den = beta_sq * prec + rec
    f = np.divide((1 + beta_sq) * prec * rec, den, out=np.zeros_like(den), where=den > 0)
    bf = int(np.argmax(f))
    bj = int(np.argmax(mean_jac))
    return {
        "maxF": 100.0 * float(f[bf]),
        "mIoU": 100.0 * float(mean_jac[bj]),
        "maxF_threshold": float(thresholds[bf]),
        "mIoU_threshold": float(thresholds[bj]),
    }
