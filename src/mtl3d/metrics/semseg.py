"""Semantic segmentation / human-parts metrics: mIoU and pixel accuracy from a split-wide confusion matrix.

Protocol (as the MTL survey's, InvPT's and TaskPrompter's evaluation code): TP/FP/FN per class are
pooled over all valid pixels (``target != 255``) of the split; ``IoU_c = TP / (TP + FP + FN)``, taken
as 0 when the class is absent from both GT and prediction; ``mIoU`` is the mean over **all** classes
(NYUD 40, PASCAL 21 incl. background, human parts 7 incl. background). ``mIoU_present`` averages only
over classes present in the GT or the prediction (reported for reference, not used for Δm).
Images whose pixels are all ignore contribute nothing. If the whole split has no valid pixel, every
value is NaN (undefined, rather than a 0 that would look like a real score).

Per-image statistics (:meth:`SegmentationMetric.per_image`): each image's per-class TP, FP, FN (int32,
[N, C]); pixel accuracy follows from them (correct = sum TP, valid = sum TP + FN). Summing them over
any subset of images and scoring with :meth:`SegmentationMetric.from_per_image` gives exactly what a
metric fed only that subset computes (integer counts, so pooling is exact).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import torch

from mtl3d.metrics.pooling import first_row, index_weights, select, weighted_sums

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
        self._per_image: list[np.ndarray] = []  # [B, 3, C] int32 per batch: TP, FP, FN

    def reset(self) -> None:
        self.confusion[:] = 0
        self._per_image = []

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
        n_img, c = target.shape[0], self.num_classes
        if t.numel() == 0:
            # images without a valid pixel still get a (zero) row, so rows stay aligned with image ids
            self._per_image.append(np.zeros((n_img, 3, c), dtype=np.int32))
            return
        if int(t.min()) < 0 or int(t.max()) >= self.num_classes:
            raise ValueError(f"target labels outside [0, {self.num_classes}) and != {self.ignore_index}")
        if int(p.min()) < 0 or int(p.max()) >= self.num_classes:
            raise ValueError(f"predicted labels outside [0, {self.num_classes})")
        # one bincount for the whole batch, offset by image, gives every image's confusion matrix at once
        img = torch.arange(n_img, device=target.device).view(-1, 1, 1).expand_as(target)[valid]
        counts = torch.bincount((img * c + t) * c + p, minlength=n_img * c * c)
        conf = counts.cpu().numpy().reshape(n_img, c, c)
        self.confusion += conf.sum(axis=0)
        tp = np.diagonal(conf, axis1=1, axis2=2)
        fp = conf.sum(axis=1) - tp
        fn = conf.sum(axis=2) - tp
        self._per_image.append(np.stack([tp, fp, fn], axis=1).astype(np.int32))

    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image sufficient statistics of the images seen so far: ``tp``, ``fp``, ``fn`` [N, C] int32."""
        rows = (
            np.concatenate(self._per_image)
            if self._per_image
            else np.zeros((0, 3, self.num_classes), dtype=np.int32)
        )
        return {"tp": rows[:, 0], "fp": rows[:, 1], "fn": rows[:, 2]}

    @staticmethod
    def from_weights(
        stats: dict[str, np.ndarray],
        weights: np.ndarray,
        keys: Collection[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """The values [R] for each row of image weights [R, N] (:mod:`mtl3d.metrics.pooling`): the pooling
        that :meth:`from_per_image` and the bootstrap share (integer counts, so exact). ``keys``: only
        these (None: all)."""
        tp, fp, fn = weighted_sums(weights, stats["tp"], stats["fp"], stats["fn"])
        return _scores(tp, fp, fn, (tp + fn).sum(axis=-1), class_names, keys)

    @staticmethod
    def from_per_image(
        stats: dict[str, np.ndarray],
        index: np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """``compute()``'s values from :meth:`per_image` statistics of the images ``index`` (default: all;
        repeats count twice, as a bootstrap resample needs)."""
        weights = index_weights(index, len(stats["tp"]))
        return first_row(SegmentationMetric.from_weights(stats, weights, class_names=class_names))

    def compute(self) -> dict[str, float]:
        tp = np.diag(self.confusion)
        fp = self.confusion.sum(axis=0) - tp
        fn = self.confusion.sum(axis=1) - tp
        return first_row(_scores(tp[None], fp[None], fn[None], self.confusion.sum()[None], self.class_names))


def _scores(
    tp: np.ndarray,
    fp: np.ndarray,
    fn: np.ndarray,
    total: np.ndarray,
    class_names: Sequence[str] | None,
    keys: Collection[str] | None = None,
) -> dict[str, np.ndarray]:
    """The metric values [R] from R rows of pooled per-class counts [R, C] and valid pixels [R] (shared
    by compute, from_per_image and the bootstrap; no valid pixel: NaN)."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(tp.shape[-1])]
    tp = tp.astype(np.float64)
    fp = fp.astype(np.float64)
    fn = fn.astype(np.float64)
    union = tp + fp + fn
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    present = union > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"mIoU": 100.0 * iou.mean(axis=-1)}
        if keys is None or "mIoU_present" in keys:
            # row by row: the mean over the present classes alone, summed as a 1-D mean sums
            out["mIoU_present"] = 100.0 * np.array(
                [r[m].mean() if m.any() else np.nan for r, m in zip(iou, present, strict=True)]
            )
        out["pixel_acc"] = 100.0 * (tp.sum(axis=-1) / total)
        out.update({f"iou/{n}": 100.0 * iou[:, j] for j, n in enumerate(names)})
    empty = np.asarray(total) == 0
    return select({k: np.where(empty, np.nan, v) for k, v in out.items()}, keys)
