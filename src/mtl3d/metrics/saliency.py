"""Saliency metrics: maxF and mIoU over thresholds, two protocols (anchors §2).

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
                continue
            prob = p[i, 0][valid]
            pos = g[i, 0][valid] >= 0.5
            n_pos = int(pos.sum())
            pp = self._positives(np.sort(prob))  # predicted positives per threshold
            tp = self._positives(np.sort(prob[pos]))  # true positives per threshold
            fp = pp - tp
            fn = n_pos - tp
            union = tp + fp + fn
            jac = np.divide(tp, union, out=np.ones(len(tp)), where=union > 0)
            self._n_images += 1
            self._sum_jac += jac
            self._sum_prec += np.divide(tp, pp, out=np.zeros(len(tp)), where=pp > 0)
            self._sum_rec += np.divide(tp, n_pos, out=np.zeros(len(tp)), where=n_pos > 0)
            self._tp += tp
            self._pp += pp
            self._ap += n_pos

    def compute(self) -> dict[str, float]:
        if self._parts is not None:
            survey, invpt = (part.compute() for part in self._parts)
            return {**survey, **{k + INVPT_SUFFIX: v for k, v in invpt.items()}}
        keys = ("maxF", "mIoU", "maxF_threshold", "mIoU_threshold")
        if self._n_images == 0:
            return dict.fromkeys(keys, math.nan)
        mean_jac = self._sum_jac / self._n_images
        if self.mode == "mtl":
            prec = self._sum_prec / self._n_images
            rec = self._sum_rec / self._n_images
        else:
            prec = np.divide(self._tp, self._pp, out=np.zeros(len(self._tp)), where=self._pp > 0)
            rec = self._tp / self._ap if self._ap > 0 else np.zeros(len(self._tp))
        den = self.beta_sq * prec + rec
        f = np.divide((1 + self.beta_sq) * prec * rec, den, out=np.zeros_like(den), where=den > 0)
        bf = int(np.argmax(f))
        bj = int(np.argmax(mean_jac))
        return {
            "maxF": 100.0 * float(f[bf]),
            "mIoU": 100.0 * float(mean_jac[bj]),
            "maxF_threshold": float(self.thresholds[bf]),
            "mIoU_threshold": float(self.thresholds[bj]),
        }
