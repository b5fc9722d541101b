"""The model contract: ``encode(image) -> features``, ``decode(features, size) -> {task: logits}``.

A model that must know which input pixels are padding (ATRC's label softmax) sets
``reads_valid_mask = True`` and takes ``decode(features, size, valid=mask)``; callers build the keyword
arguments with :func:`decode_inputs`, so every other model keeps the two-argument ``decode``.

Deep supervision is part of the contract, not a special case: in training mode ``decode`` may add
one extra key, :data:`AUX_KEY`, holding named auxiliary outputs ``{name: {task: logits}}`` (e.g.
MTI-Net's initial predictions per scale). The loss weighs the final outputs by ``final_weight`` and
every auxiliary output by ``aux_weight`` (each on top of the task weight); both are the published
recipe's values by default and can be overridden by ``model.final_weight`` / ``model.aux_weight``.
In ``eval()`` mode ``decode`` returns the task outputs only, so inference parameters and FLOPs
count only what inference runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

AUX_KEY = "aux"


class TrainingHooks:
    """A model's additions to the generic training loop, which calls them without knowing what they are.

    The trainer leaves ``parameters`` out of its optimiser; steps, zeroes, checkpoints (under each name)
    and restores every one of ``optimizers``; calls ``before_step`` before each step's forward; and
    tells DDP to look for parameters without a gradient when ``find_unused_parameters``. This default
    adds nothing.
    """

    find_unused_parameters = False

    def __init__(self) -> None:
        self.parameters: list[nn.Parameter] = []
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def before_step(self, step: int, total: int) -> None:
        """Called with the 0-based step and the run's number of steps, the model in its step's mode."""


class DenseModel(nn.Module):
    """Base class of every multi-task model.

    ``feature_channels`` / ``feature_strides`` describe what ``encode`` returns (a list of maps,
    finest first), which is all a training-only branch (the 3D-aware regularizer) needs to plug in.
    A model keeps its backbone in ``self.encoder`` (parameters named ``encoder.*``): that is how the
    trainer finds the backbone's parameter group (``optim.backbone_lr``).
    """

    tasks: list[str]  # every task the model is trained on (its labels are loaded)
    main_tasks: list[str]  # the tasks with a final output: what inference returns and evaluation scores
    out_channels: dict[str, int]
    feature_channels: list[int]
    feature_strides: list[int]
    supports_regularizer: bool = True
    # True: ``decode`` also takes ``valid`` (``[B, 1, H, W]`` bool, False on padded pixels, or None when
    # nothing is padded); the trainer and the evaluator pass it (ATRC masks padding out of a softmax).
    reads_valid_mask: bool = False
    # The backbone `mtl3d train --model NAME` uses when none is given (a model with another published or
    # CPU-friendly encoder overrides it); `mtl3d models` lists it.
    default_backbone: str = "resnet18"
    final_weight: float = 1.0  # loss weight of the final outputs (× task weight)
    aux_weight: float = 1.0  # loss weight of every auxiliary (deep-supervision) output (× task weight)

    def init_host(
        self,
        out_channels: dict[str, int],
        backbone: str,
        pretrained: bool,
        output_stride: int | None = None,
        min_stride: int = 4,
        main_tasks: list[str] | None = None,
    ) -> None:
        """Tasks, output channels and the shared ``encoder`` (any timm backbone), as every host needs.

        ``main_tasks`` (default: all) are the tasks with a final output; the others are auxiliary-only
        tasks, supervised through the deep-supervision outputs alone (the survey's NYUD PAD-Net and
        MTI-Net: semseg and depth main, normals and edges auxiliary).
        """
        from mtl3d.errors import UserError
        from mtl3d.models.backbones import create_encoder

        tasks = list(out_channels)
        main = list(tasks) if main_tasks is None else list(main_tasks)
        wrong = [t for t in main if t not in tasks]
        if wrong or not main:
            raise UserError(
                f"main_tasks must be a non-empty subset of the tasks ({', '.join(tasks)}); got {main}"
            )
        self.main_tasks = [t for t in tasks if t in main]
        self.tasks = tasks
        self.out_channels = dict(out_channels)
        self.encoder = create_encoder(
            backbone, pretrained, output_stride=output_stride, min_stride=min_stride
        )
        self.feature_channels = list(self.encoder.channels)
        self.feature_strides = list(self.encoder.strides)

    def encode(self, image: Tensor) -> Any:
        """The encoder's maps, finest first (what the regularizer reads)."""
        return self.encoder(image)

    def decode(self, features: Any, size: tuple[int, int]) -> dict[str, Any]:
        raise NotImplementedError

    def forward(self, image: Tensor) -> dict[str, Any]:
        return self.decode(self.encode(image), tuple(image.shape[-2:]))

    # -- optional hooks the trainer calls (defaults: nothing special) -------------------------------
    def aux_loss(
        self, name: str, task: str, pred: Tensor, target: Tensor, edge_pos_weight: float
    ) -> Tensor | None:
        """The loss of auxiliary output ``name`` for ``task``; ``None``: the task's own loss (the usual
        case). ATRC's label heads predict in another label space (depth bins, normal codewords)."""
        return None

    def fit_to_data(self, dataset: Any) -> None:
        """Fit data-derived buffers (ATRC's normals codebook) from the training set, before training."""

    def training_hooks(self) -> TrainingHooks:
        """What this model adds to the generic training loop (an architecture search's own optimiser
        and schedules); the default adds nothing. Called once, when a run has built the model."""
        return TrainingHooks()

    def extra_losses(self) -> dict[str, Tensor]:
        """Weighted loss terms beyond the task losses (a search's entropy regulariser), added to the total."""
        return {}

    def with_aux(self, out: dict[str, Tensor], aux: dict[str, dict[str, Tensor]]) -> dict[str, Any]:
        """``out`` plus the auxiliary outputs in training mode; ``out`` alone in eval mode."""
        if self.training and aux:
            return {**out, AUX_KEY: aux}
        return out


def split_outputs(out: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """``decode``'s result -> (task outputs, auxiliary outputs by name)."""
    aux = out.get(AUX_KEY, {})
    return {k: v for k, v in out.items() if k != AUX_KEY}, aux


def valid_mask(batch: dict[str, Any], size: tuple[int, int]) -> Tensor | None:
    """``[B, 1, H, W]`` bool mask of the image pixels (False where the input was padded), from the batch's
    ``valid_box`` rows ``(top, left, h, w)``; None when the batch has no box (nothing was padded)."""
    boxes = batch.get("valid_box")
    if boxes is None:
        return None
    boxes = boxes.to(torch.long)
    device = boxes.device
    rows = torch.arange(size[0], device=device)
    cols = torch.arange(size[1], device=device)
    top, left, h, w = (boxes[:, i, None] for i in range(4))
    in_rows = (rows >= top) & (rows < top + h)  # [B, H]
    in_cols = (cols >= left) & (cols < left + w)  # [B, W]
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def decode_inputs(model: nn.Module, batch: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """The keyword arguments of ``model.decode`` beyond ``(features, size)`` for this batch: ``valid``
    for models that read it (``reads_valid_mask``), nothing for the others."""
    return {"valid": valid_mask(batch, size)} if getattr(model, "reads_valid_mask", False) else {}
