"""A run's optimiser (parameter groups: heads at ``lr``, the encoder at ``backbone_lr``), its
learning-rate schedule, and restoring an optimiser's state on whatever machine a run resumes on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mtl3d import config as C


def lr_lambda(o: C.OptimConfig, iters: int, steps_per_epoch: int):
    """The learning-rate factor at an iteration: poly to 0, step decay at milestones, or constant.

    With ``schedule_unit: epoch`` the factor changes only at epoch boundaries (the survey's
    per-epoch poly); milestones are then counted in epochs.
    """
    per = steps_per_epoch if o.schedule_unit == "epoch" else 1
    total = -(-iters // per)

    def factor(step: int) -> float:
        t = step // per
        if o.schedule == "poly":
            return max(0.0, 1.0 - t / total) ** o.poly_power
        if o.schedule == "step":
            return o.gamma ** sum(t >= m for m in o.milestones)
        return 1.0

    return factor


def is_backbone_param(name: str) -> bool:
    """Parameters of a model's ``encoder`` (``encoder.*``, or ``nets.<task>.encoder.*`` in stl)."""
    return name.startswith("encoder.") or ".encoder." in name


def build_optimizer(
    o: C.OptimConfig,
    model: nn.Module,
    branch: nn.Module | None,
    fused: bool = False,
    exclude: Sequence[nn.Parameter] = (),
) -> torch.optim.Optimizer:
    """Two parameter groups: heads/decoders/branch at ``lr`` (group 0), the encoder at ``backbone_lr``.

    ``exclude``: parameters left out, which the model's training hooks optimise themselves (a search's
    architecture parameters). ``fused``: one kernel launch for every parameter (the CUDA path); off,
    torch's defaults, which keep the CPU numbers (and the bit-exact resume tests) as they are.
    """
    skip = {id(p) for p in exclude}
    named = [(n, p) for n, p in model.named_parameters() if id(p) not in skip]
    heads = [p for n, p in named if not is_backbone_param(n)]
    backbone = [p for n, p in named if is_backbone_param(n)]
    if branch is not None:
        heads += list(branch.parameters())
    groups = [{"params": heads, "lr": o.lr, "name": "heads"}]
    if backbone:
        lr = o.lr if o.backbone_lr is None else o.backbone_lr
        groups.append({"params": backbone, "lr": lr, "name": "backbone"})
    kernel = {"fused": True} if fused else {}
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, **kernel)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, **kernel)


# Per-group settings that choose the optimiser's kernel, not its maths: they follow the machine a run
# is on now, never the checkpoint it resumes from (a CPU checkpoint resumed on a GPU runs fused).
_KERNEL_KEYS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    kernel = [{k: g[k] for k in _KERNEL_KEYS if k in g} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, keep in zip(opt.param_groups, kernel, strict=True):
        for k in _KERNEL_KEYS:
            group.pop(k, None)
        group.update(keep)
