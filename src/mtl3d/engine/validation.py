"""Periodic validation during training: the learning curves of a run.

Every ``eval_every`` steps the trainer scores a fixed subset of the evaluation split at the network
input size (cheap metrics; boundary odsF only with ``eval_edges``) and the loss of the final outputs on
it, and writes them beside the training losses in ``train_log.csv`` as ``val/...`` columns. The pass
draws no random numbers (no DataLoader, whose iterator would consume the global generator; eval-mode
modules), so a run's training is the same with or without it and a resumed run's curve is the same as
an uninterrupted one's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mtl3d import config as C
from mtl3d.data.registry import create_dataset, get_dataset_info
from mtl3d.engine.fastpath import FastPath
from mtl3d.engine.inference import collate_eval, infer, score_batch
from mtl3d.engine.runtime import to_device
from mtl3d.losses import multitask_loss
from mtl3d.metrics.registry import create_metric
from mtl3d.models import split_outputs
from mtl3d.tasks import classes_for, get_task

VAL_PREFIX = "val/"


def subset_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``k`` is 0 or at least ``n``)."""
    if k <= 0 or k >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


class Validator:
    """Scores the host network on a fixed subset of ``cfg.data.eval_split``; see the module docstring."""

    def __init__(self, cfg: C.TrainConfig, tasks: list[str], num_classes: Any, device: torch.device) -> None:
        info = get_dataset_info(cfg.data.dataset)
        size = (cfg.data.height, cfg.data.width) if cfg.data.height and cfg.data.width else None
        self.cfg, self.device, self.tasks, self.num_classes = cfg, device, tasks, num_classes
        self.dataset = create_dataset(
            info.name,
            cfg.data.root,
            cfg.data.eval_split,
            tasks,
            train=False,
            size=size,
            resize_mode=cfg.data.resize_mode,
        )
        self.indices = subset_indices(len(self.dataset), cfg.eval_images)
        self.scored = [t for t in tasks if cfg.eval_edges or get_task(t).metric.name != "boundary"]
        self.edge_max_dist = info.edge_max_dist
        self.weights = {t: C.task_weight(cfg, t) for t in tasks}
        # full precision, as the final evaluation: the curve's last point is comparable with it
        self.fast = FastPath.for_device(device, amp=False)

    def _metrics(self) -> dict[str, Any]:
        return {
            t: create_metric(
                t,
                num_classes=classes_for(self.num_classes, t),
                context={"max_dist": self.edge_max_dist, "workers": 0, "progress": False},
            )
            for t in self.scored
        }

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """``{"val/TASK/METRIC": value, "val/loss/TASK": value, "val/loss/total": value}``; leaves every
        module of ``model`` in the training mode it had."""
        modes = {m: m.training for m in model.modules()}
        model.eval()
        metrics = self._metrics()
        sums: dict[str, float] = {}
        n = 0
        bs = self.cfg.eval_batch_size
        try:
            with torch.no_grad():
                for start in range(0, len(self.indices), bs):
                    chunk = self.indices[start : start + bs]
                    batch = to_device(collate_eval([self.dataset[i] for i in chunk]), self.device)
                    _, decoded = infer(model, batch, self.fast)
                    preds, _ = split_outputs(decoded)
                    preds = {t: preds[t].float() for t in self.tasks}
                    losses = multitask_loss(
                        preds,
                        batch,
                        self.weights,
                        losses=self.cfg.losses,
                        edge_pos_weight=self.cfg.edge_pos_weight,
                    )
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + float(v) * len(chunk)
                    n += len(chunk)
                    score_batch({t: preds[t] for t in self.scored}, batch, metrics, "input")
        finally:
            for m, training in modes.items():
                m.training = training
            for m in metrics.values():
                if hasattr(m, "close"):
                    m.close()
        out = {f"{VAL_PREFIX}loss/{k}": v / max(n, 1) for k, v in sums.items()}
        for t, metric in metrics.items():
            for name, value in metric.compute().items():
                if "/" not in name:  # per-class values stay in the final evaluation
                    out[f"{VAL_PREFIX}{t}/{name}"] = float(value)
        return out
