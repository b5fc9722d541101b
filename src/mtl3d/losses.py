"""Per-task losses and the weighted multi-task sum (returns ``{task: value, ..., "total": value}``).

Every loss takes the head's raw output (logits) at label resolution and the dataset's label, and
masks invalid pixels with the task's ignore value (see ``mtl3d.tasks``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl3d.errors import UserError
from mtl3d.tasks import get_task


def cross_entropy(pred: Tensor, target: Tensor, ignore: int = 255) -> Tensor:
    """Mean CE over the non-ignored pixels; 0 (with a gradient) when every pixel is ignored.

    Sum over the count, not ``reduction="mean"``: the same number, without a data-dependent branch
    (which on a GPU makes the host wait for the device every step).
    """
    ce = F.cross_entropy(pred.float(), target.long(), ignore_index=ignore, reduction="sum")
    return ce / (target != ignore).sum().clamp(min=1)


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    n = mask.sum()
    return (x * mask).sum() / n.clamp(min=1)


def depth_l1(pred: Tensor, target: Tensor) -> Tensor:
    mask = (target > 0).float()
    return _masked_mean((pred.float() - target).abs(), mask)


def depth_berhu(pred: Tensor, target: Tensor) -> Tensor:
    """Reverse Huber: L1 below c, scaled L2 above; c = 0.2·max|err| over the batch (Laina et al.)."""
    mask = target > 0
    err = (pred.float() - target).abs()
    # max over valid pixels (err >= 0, so zeroing the others changes nothing; all invalid: c = 1e-6, loss 0)
    c = (0.2 * torch.where(mask, err, torch.zeros_like(err)).max()).clamp(min=1e-6).detach()
    loss = torch.where(err <= c, err, (err**2 + c**2) / (2 * c))
    return _masked_mean(loss, mask.float())


def _normal_mask(target: Tensor) -> Tensor:
    return (target.abs().sum(dim=1, keepdim=True) > 0).float()


def normals_l1(pred: Tensor, target: Tensor) -> Tensor:
    """L1 between the L2-normalised prediction and the unit GT, mean over valid channel elements."""
    mask = _normal_mask(target).expand_as(target)
    return _masked_mean((F.normalize(pred.float(), dim=1) - target).abs(), mask)


def normals_cosine(pred: Tensor, target: Tensor) -> Tensor:
    mask = _normal_mask(target)
    cos = (F.normalize(pred.float(), dim=1) * target).sum(dim=1, keepdim=True)
    return _masked_mean(1.0 - cos, mask)


def balanced_bce(pred: Tensor, target: Tensor, pos_weight: float = 0.95, ignore: float = 255) -> Tensor:
    """Mean of ``w·BCE`` on positives and ``(1−w)·BCE`` on negatives over non-ignored pixels."""
    valid = (target != ignore).float()
    t = (target == 1).float()
    bce = F.binary_cross_entropy_with_logits(pred.float(), t, reduction="none")
    w = t * pos_weight + (1 - t) * (1 - pos_weight)
    return _masked_mean(w * bce, valid)


def task_loss(
    task: str,
    pred: Tensor,
    target: Tensor,
    *,
    loss: str | None = None,
    edge_pos_weight: float = 0.95,
) -> Tensor:
    """The loss of one task; ``loss`` overrides the task's default (e.g. ``berhu``, ``cosine``)."""
    spec = get_task(task)
    name = loss or spec.loss
    if spec.kind != "classification" and pred.shape[1] != spec.channels:
        # e.g. a label-space output (40 depth bins) reaching a regression loss, where it would broadcast
        raise ValueError(
            f"prediction for {task} has {pred.shape[1]} channels; its loss needs {spec.channels}"
        )
    if pred.shape[-2:] != target.shape[-2:]:
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
    if name == "ce":
        return cross_entropy(pred, target, int(spec.ignore_value))
    if name in ("l1", "l1_normalized") and task == "depth":
        return depth_l1(pred, target)
    if name == "berhu":
        return depth_berhu(pred, target)
    if name == "l1_normalized":
        return normals_l1(pred, target)
    if name == "cosine":
        return normals_cosine(pred, target)
    if name == "balanced_bce":
        return balanced_bce(pred, target, edge_pos_weight)
    raise UserError(
        f"unknown loss {name!r} for task {task!r}; valid: {', '.join(spec.loss_options or (spec.loss,))}"
    )


def multitask_loss(
    preds: Mapping[str, Tensor],
    batch: Mapping[str, Tensor],
    weights: Mapping[str, float],
    *,
    losses: Mapping[str, str] | None = None,
    edge_pos_weight: float = 0.95,
    aux: Mapping[str, Mapping[str, Tensor]] | None = None,
    final_weight: float = 1.0,
    aux_weight: float = 1.0,
    aux_loss: Callable[[str, str, Tensor, Tensor], Tensor | None] | None = None,
) -> dict[str, Tensor]:
    """Weighted sum over ``weights``' tasks; the returned per-task values are unweighted.

    ``aux`` holds a model's deep-supervision outputs ``{name: {task: logits}}`` (e.g. MTI-Net's
    initial predictions per scale): each adds ``aux_weight · w_t · L_t`` and is reported as
    ``ds/<name>/<task>``; the final outputs count ``final_weight · w_t · L_t``. Predictions at a
    lower resolution are bilinearly upsampled to the label (as the published code does).
    ``aux_loss(name, task, pred, target)`` may supply the loss of an auxiliary output predicted in
    another label space (ATRC's label heads); ``None`` from it means the task's own loss.
    """
    out: dict[str, Tensor] = {}
    terms: list[Tensor] = []

    def add(key: str, task: str, pred: Tensor, scale: float, name: str | None = None) -> None:
        value = aux_loss(name, task, pred, batch[task]) if aux_loss is not None and name else None
        if value is None:
            value = task_loss(
                task, pred, batch[task], loss=(losses or {}).get(task), edge_pos_weight=edge_pos_weight
            )
        out[key] = value
        terms.append(scale * weights[task] * value)

    aux = aux or {}
    unsupervised = [t for t in weights if t not in preds and not any(t in a for a in aux.values())]
    if unsupervised:
        raise ValueError(f"no prediction of task(s) {unsupervised} to supervise")
    for task in weights:
        if task in preds:  # auxiliary-only tasks (a model's main_tasks option) have no final output
            add(task, task, preds[task], final_weight)
    for name, aux_preds in aux.items():
        for task, pred in aux_preds.items():
            if task in weights:
                add(f"ds/{name}/{task}", task, pred, aux_weight, name)
    out["total"] = torch.stack(terms).sum() if terms else torch.zeros(())
    return out
