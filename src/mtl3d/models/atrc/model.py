"""ATRC: adaptive task-relational context (Bruggemann et al., ICCV'21), as the released code runs it.

Released code: github.com/brdav/atrc. Backbone levels resized to the finest one and concatenated
(HRNet-18-small: 270 channels) → per task ``F_t`` = Conv3×3-BN-ReLU to in/4 channels; auxiliary
label-space heads read the *detached* concatenation (no gradient into the network) → an N×N grid of
context-pooling (CP) blocks, row = target, column = source, each one of ``none | global | local |
tlabel | slabel`` (the genotype) → per target: concat of its CP outputs → Conv1×1-BN with
**zero-initialised** BN (the module starts as the multi-task baseline) → concat with ``F_t`` →
Conv1×1-BN-ReLU → Dropout2d → Conv1×1 logits → bilinear to the input size. ``fpm=True`` is ATRC+FPM:
MTI-Net's feature propagation over the levels first, and ``F_t`` reads the task's own propagated
features (the paper gives no code for it; our reading, docs/models.md).

Context types: :mod:`mtl3d.models.atrc.contexts`; genotypes: :mod:`mtl3d.models.atrc.genotype`;
the search's supergraph: :mod:`mtl3d.models.atrc.search`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d.errors import UserError, unknown_name
from mtl3d.models.atrc.contexts import LOCAL_BORDERS, ContextBlock, TargetFusion, _conv_bn, spatial_softmax
from mtl3d.models.atrc.genotype import Genotype, default_genotype, load_genotype
from mtl3d.models.atrc.search import (
    ARCH_LR,
    ENTROPY_WEIGHT,
    FIX_MARGIN,
    TEMPERATURE,
    MixedContext,
    SearchHooks,
    blocks,
    entropy,
)
from mtl3d.models.base import DenseModel, TrainingHooks
from mtl3d.models.blocks import LevelAdapter, conv_bn_relu, fuse_scales, upsample_to
from mtl3d.models.label_spaces import LabelSpace, label_space_for, sample_normals
from mtl3d.models.mtinet import TaskPropagation
from mtl3d.models.registry import register_model

LABEL_AUX = "label"  # name of the auxiliary (label-space) outputs in the deep-supervision dict


@register_model("atrc")
class ATRC(DenseModel):
    """ATRC: per-pair context pooling (global/local/T-label/S-label/none) chosen by architecture search.

    ``genotype`` (or ``model.genotype`` in a config): the genotype.json of ``mtl3d search atrc``, a
    shipped published genotype (``nyud_hrnet18``, ``nyud_hrnet48``, ``pascal_hrnet18``) or one context
    everywhere (``global``, ``local``, ``tlabel``, ``slabel``, ``none``). Deep supervision: the label-space
    auxiliary heads (``"label"``, cross-entropy in each task's label space, released code) and, with
    ``fpm``, MTI-Net's initial predictions per scale.
    """

    # the HRNet family of the published genotypes, at its CPU-friendly size (published: W18/W48)
    default_backbone = "hrnet_w18_small_v2"

    final_weight = 1.0
    aux_weight = 1.0

    def __init__(
        self,
        out_channels: dict[str, int],
        backbone: str = "resnet18",
        pretrained: bool = False,
        genotype: str | None = None,
        head_channels: int | None = None,
        widths: list[int] | None = None,
        fpm: bool = False,
        fpm_softmax: str = "channel_groups",
        local_kernel: int = 9,
        local_border: str = "zero_pad",
        dropout: float = 0.05,
        depth_bins: int = 40,
        depth_range: list[float] | None = None,
        normal_codewords: int = 40,
        normal_coding: str = "nearest",
        mask_padding: bool = True,
        search: bool = False,
        search_temperature: list[float] | None = None,
        search_entropy_weight: list[float] | None = None,
        search_fix_margin: float = FIX_MARGIN,
        arch_lr: float = ARCH_LR,
    ) -> None:
        super().__init__()
        self.init_host(out_channels, backbone, pretrained)
        # Released code: padded pixels leave the label heads' spatial softmax (logits -> -inf there), so
        # T-/S-label prototypes pool image pixels only. False: they stay in (the paper says nothing).
        self.mask_padding = mask_padding
        if local_border not in LOCAL_BORDERS:
            raise unknown_name("local_border", local_border, LOCAL_BORDERS)
        self.adapter = LevelAdapter(self.feature_channels, widths)
        levels = self.adapter.out_channels
        fused = sum(levels)
        ch = head_channels or fused // 4  # released code: F_t has in/4 channels, attention F_t/2
        att = max(1, ch // 2)
        self.channels, self.att_channels = ch, att
        self.search = search
        self.search_temperature = list(search_temperature or TEMPERATURE)
        self.search_entropy_weight = list(search_entropy_weight or ENTROPY_WEIGHT)
        self.search_fix_margin = search_fix_margin
        self.arch_lr = arch_lr
        self.entropy_weight = self.search_entropy_weight[0]  # this step's ω_H (SearchHooks.before_step)
        if search:
            if genotype is not None:
                raise UserError("an ATRC search model takes no genotype (it finds one)")
            self.genotype: Genotype = {}
        elif genotype is None:
            self.genotype = default_genotype(self.tasks)
        else:
            self.genotype = load_genotype(genotype, self.tasks)

        self.propagation: TaskPropagation | None = None
        if fpm:
            self.propagation = TaskPropagation(self.tasks, self.out_channels, levels, fpm_softmax)
        self.task_features = nn.ModuleDict({t: conv_bn_relu(fused, ch, 3) for t in self.tasks})

        if search:
            rows = {
                t: {s: MixedContext(t == s, ch, att, local_kernel, local_border) for s in self.tasks}
                for t in self.tasks
            }
            self.label_tasks = list(self.tasks)
            drop = 0.0  # the search supergraph has no dropout (released code)
        else:
            rows = {
                t: {
                    s: ContextBlock(kind, ch, att, local_kernel, local_border)
                    for s, kind in self.genotype[t].items()
                    if kind != "none"
                }
                for t in self.tasks
            }
            # Auxiliary heads only where a label context reads them (released code).
            self.label_tasks = [
                t
                for t in self.tasks
                if any(self.genotype[t][s] == "tlabel" for s in self.tasks)
                or any(self.genotype[u][t] == "slabel" for u in self.tasks)
            ]
            drop = dropout
        self.fusion = nn.ModuleDict({t: TargetFusion(rows[t], ch, att, drop) for t in self.tasks})

        lo, hi = depth_range or [0.7, 10.0]
        self.label_spaces = nn.ModuleDict(
            {
                t: label_space_for(
                    t,
                    out_channels[t],
                    depth_bins=depth_bins,
                    depth_range=(lo, hi),
                    normal_codewords=normal_codewords,
                    normal_coding=normal_coding,
                )
                for t in self.label_tasks
            }
        )
        self.label_heads = nn.ModuleDict(
            {
                t: nn.Sequential(
                    _conv_bn(fused, fused, nn.ReLU(inplace=True)),
                    nn.Conv2d(fused, self.label_spaces[t].channels, 1),
                )
                for t in self.label_tasks
            }
        )
        self.classifiers = nn.ModuleDict({t: nn.Conv2d(ch, k, 1) for t, k in out_channels.items()})
        for m in [*self.classifiers.values(), *(h[-1] for h in self.label_heads.values())]:
            nn.init.normal_(m.weight, std=0.01)  # released code: logits layers N(0, 0.01²)
            nn.init.zeros_(m.bias)

    # -- decode ---------------------------------------------------------------------------------------
    reads_valid_mask = True

    def decode(
        self, features: list[Tensor], size: tuple[int, int], valid: Tensor | None = None
    ) -> dict[str, Any]:
        x = self.adapter(features)
        shared = fuse_scales(x)
        aux: dict[str, dict[str, Tensor]] = {}
        if self.propagation is not None:
            levels, initial = self.propagation(x)
            if self.training:
                aux.update(initial)
            finest = levels[0][self.tasks[0]].shape[-2:]
            feats = {
                t: self.task_features[t](torch.cat([upsample_to(lv[t], finest) for lv in levels], dim=1))
                for t in self.tasks
            }
        else:
            feats = {t: self.task_features[t](shared) for t in self.tasks}
        # The label heads learn from their own loss only: their input is detached (released code).
        label_logits = {t: self.label_heads[t](shared.detach()) for t in self.label_tasks}
        keep = None
        if self.mask_padding and valid is not None and label_logits:
            grid = next(iter(label_logits.values())).shape[-2:]
            keep = F.interpolate(valid.float(), size=grid, mode="nearest") > 0.5
            keep = keep | ~keep.flatten(1).any(dim=1)[:, None, None, None]  # no pixel left: keep all
        probs = {
            t: spatial_softmax(v if keep is None else v.masked_fill(~keep, -math.inf))
            for t, v in label_logits.items()
        }
        out = {
            t: upsample_to(self.classifiers[t](self.fusion[t](t, feats, probs)), size)
            for t in self.main_tasks
        }
        if self.training and label_logits:
            aux[LABEL_AUX] = label_logits
        return self.with_aux(out, aux)

    # -- hooks the trainer calls ----------------------------------------------------------------------
    def aux_loss(
        self, name: str, task: str, pred: Tensor, target: Tensor, edge_pos_weight: float
    ) -> Tensor | None:
        """Label-space cross-entropy for the label heads; ``None`` (the task's own loss) otherwise."""
        if name != LABEL_AUX:
            return None
        space: LabelSpace = self.label_spaces[task]
        if task == "edges":  # the run's edge weight, as the released code's aux edge loss
            space = label_space_for(task, self.out_channels[task], edge_pos_weight=edge_pos_weight)
        return space.loss(pred, target)

    def fit_to_data(
        self, dataset: Any, max_images: int = 64, max_points: int = 50_000, seed: int = 0
    ) -> None:
        """Fit the normals codebook (k-means, released code: on the training normals) before training."""
        if "normals" not in self.label_spaces:  # (ModuleDict has no .get)
            return
        space = self.label_spaces["normals"]
        n = min(len(dataset), max_images)
        idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
        normals = sample_normals((dataset[i]["normals"] for i in idx), max_points, seed)
        space.fit(normals, seed=seed)

    def current_genotype(self) -> Genotype:
        """The fixed genotype, or for a search model the argmax (or early-fixed) choice of every block."""
        if not self.search:
            return {t: dict(row) for t, row in self.genotype.items()}
        return {t: {s: blk.choice() for s, blk in self.fusion[t].blocks.items()} for t in self.tasks}

    # -- the search's additions to training (nothing unless ``search``) ------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits α of every searched block (none unless ``search``)."""
        return [blk.alpha for _, _, blk in blocks(self)]

    def training_hooks(self) -> TrainingHooks:
        """For a search: α's own optimiser, the per-step schedules and early fixing (``SearchHooks``)."""
        if not self.search:
            return super().training_hooks()
        return SearchHooks(self)

    def extra_losses(self) -> dict[str, Tensor]:
        """The search's entropy regulariser ω_H · mean_j H(softmax α_j) (weighted: it joins the total)."""
        if not self.search:
            return {}
        h = torch.stack([entropy(blk.alpha) for _, _, blk in blocks(self)]).mean()
        return {"search/entropy": self.entropy_weight * h}
