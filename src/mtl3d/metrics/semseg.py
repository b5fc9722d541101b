"""Semantic segmentation / human-parts metrics: mIoU and pixel accuracy from a split-wide confusion matrix.

Protocol (MTL survey, InvPT, TaskPrompter, see notes/anchors-data-eval.md §2): TP/FP/FN per class are
pooled over all valid pixels (``target != 255``) of the split; ``IoU_c = TP / (TP + FP + FN)``, taken
as 0 when the class is absent from both GT and prediction; ``mIoU`` is the mean over **all** classes
(NYUD 40, PASCAL 21 incl. background, human parts 7 incl. background). ``mIoU_present`` averages only
over classes present in the GT or the prediction (reported for reference, not used for Δm).
Images whose pixels are all ignore contribute nothing. If the whole split has no valid pixel, every
value is NaN (undefined, rather than a 0 that would look like a real score).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

IGNORE = 255


class SegmentationMetric:
    """mIoU (%), mIoU_present (%), pixel_acc (%) and per-class ``iou/<name>`` (%) over a split.

    ``update(pred, target)``: pred logits [B, C, H, W] or labels [B, H, W]; target int [B, H, W] (or
    [B, 1, H, W]) with 255 = ignore, at the same size as pred.
    """

    def __init__(
        self, num_classes: int, class_names: Sequence[str] | None = None, ignore_index: int = IGNORE
    ) -> None:
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.class_names = [str(c) for c in class_names] if class_names is not None else None
        self.ignore_index = int(ignore_index)
        self.protocol = (
            f"confusion matrix pooled over the split, ignore {self.ignore_index}; IoU=TP/(TP+FP+FN); "
            f"mIoU = mean over all {self.num_classes} classes (absent from GT and pred -> 0); "
            "mIoU_present = mean over classes in GT or pred; %"
        )
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)  # [gt, pred]

    def reset(self) -> None:
        self.confusion[:] = 0

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.dim() == 4:
            if pred.shape[1] != self.num_classes:
                raise ValueError(f"pred has {pred.shape[1]} channels, expected {self.num_classes} classes")
            pred = pred.argmax(dim=1)
        if target.dim() == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if pred.shape != target.shape or pred.dim() != 3:
            raise ValueError(
                f"semseg metric expects pred [B,C,H,W]/[B,H,W] and target [B,H,W] of the same size, "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        target = target.long()
        pred = pred.long().to(target.device)
        valid = target != self.ignore_index
        t = target[valid]
        p = pred[valid]
        if t.numel() == 0:
            return
        if int(t.min()) < 0 or int(t.max()) >= self.num_classes:
            raise ValueError(f"target labels outside [0, {self.num_classes}) and != {self.ignore_index}")
        if int(p.min()) < 0 or int(p.max()) >= self.num_classes:
            raise ValueError(f"predicted labels outside [0, {self.num_classes})")
        counts = torch.bincount(t * self.num_classes + p, minlength=self.num_classes**2)
        self.confusion += counts.cpu().numpy().reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, float]:
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        total = int(self.confusion.sum())
        if total == 0:
            out = {"mIoU": math.nan, "mIoU_present": math.nan, "pixel_acc": math.nan}
            out.update({f"iou/{n}": math.nan for n in names})
            return out
        tp = np.diag(self.confusion).astype(np.float64)
        fp = self.confusion.sum(axis=0) - tp
        fn = self.confusion.sum(axis=1) - tp
        union = tp + fp + fn
        iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
        present = union > 0
        out = {
            "mIoU": 100.0 * float(iou.mean()),
            "mIoU_present": 100.0 * float(iou[present].mean()),
            "pixel_acc": 100.0 * float(tp.sum() / total),
        }
        out.update({f"iou/{n}": 100.0 * float(v) for n, v in zip(names, iou, strict=True)})
        return out
