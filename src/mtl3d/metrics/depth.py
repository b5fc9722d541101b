"""Depth metrics, pixel-pooled over the whole split (MTL survey offline protocol, anchors §2).

Valid pixels: ``target > 0`` (0 = invalid, always masked) and finite, optionally ``target < max_depth``
(TaskPrompter masks ``gt < 80``; off by default). Predictions ``<= 0`` are set to 1e-9 before every
metric (as the MTL survey and InvPT do), so logs and ratios stay finite. Sums are float64 over all
valid pixels of the split, i.e. a large image weighs more than a small one (the survey's choice;
ASTMT averaged per image). No valid pixel in the split: every value is NaN.
"""

from __future__ import annotations

import math

import torch

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
        g = g[valid]
        p = p[valid]
        p = torch.where(p <= 0, torch.full_like(p, _EPS_PRED), p)
        diff = g - p
        ratio = torch.maximum(p / g, g / p)
        sums = torch.stack(
            [
                torch.tensor(float(g.numel()), dtype=torch.float64, device=g.device),
                (diff**2).sum(),
                ((torch.log(g) - torch.log(p)) ** 2).sum(),
                (diff.abs() / g).sum(),
                (diff**2 / g).sum(),
                (ratio < 1.25).sum().to(torch.float64),
                (ratio < 1.25**2).sum().to(torch.float64),
                (ratio < 1.25**3).sum().to(torch.float64),
            ]
        )
        self._sums += sums.cpu()

    def compute(self) -> dict[str, float]:
        n, sq, sq_log, abs_rel, sq_rel, d1, d2, d3 = (float(v) for v in self._sums)
        keys = ("rmse", "log_rmse", "abs_rel", "sq_rel", "delta1", "delta2", "delta3")
        if n == 0:
            return dict.fromkeys(keys, math.nan)
        return {
            "rmse": math.sqrt(sq / n),
            "log_rmse": math.sqrt(sq_log / n),
            "abs_rel": abs_rel / n,
            "sq_rel": sq_rel / n,
            "delta1": 100.0 * d1 / n,
            "delta2": 100.0 * d2 / n,
            "delta3": 100.0 * d3 / n,
        }
