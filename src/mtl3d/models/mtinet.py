"""MTI-Net (Vandenhende et al., ECCV'20) as the MTL survey's code implements it (``models/mti_net.py``).

Survey code: github.com/SimonVandenhende/Multi-Task-Learning-PyTorch; docs/models.md lists where we differ.

Coarse to fine over the encoder levels s = L-1 … 0 (HRNet: 1/32 … 1/4):
initial task prediction at s (2 BasicBlocks + Conv1×1; below the coarsest level its input is the level
concatenated with the previous level's propagated features, resized to this level's size) → feature
propagation module (FPM) after every level but the finest → per-level multi-modal distillation →
per-task HRNet head over all levels → bilinear to the input size. Every task is both a main and an
auxiliary task (the ATRC / InvPT / 3D-aware setting).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtl3d.errors import UserError
from mtl3d.models.base import DenseModel
from mtl3d.models.blocks import (
    BasicBlock,
    HRNetHead,
    LevelAdapter,
    MultiModalDistillation,
    SqueezeExcitation,
    TaskPrediction,
    upsample_to,
)
from mtl3d.models.registry import register_model

FPM_SOFTMAX = ("channel_groups", "tasks")


def fpm_attention(logits: Tensor, num_tasks: int, mode: str = "channel_groups") -> Tensor:
    """The FPM's softmax mask over ``logits`` of shape (B, N·c, H, W), returned in the same shape.

    ``"channel_groups"`` is the survey code: the map is viewed as (B, c, N, H, W) and normalised over
    the N-axis, i.e. over groups of N *adjacent* channels (mostly of one task; this is what the code's
    reshape does, whether or not it was meant to).
    ``"tasks"`` is the reading of the paper: viewed as (B, N, c, H, W), normalised across the N task
    blocks (channel i of every task competes). A deviation from the code; flag it when used.
    """
    b, ch, h, w = logits.shape
    if mode == "channel_groups":
        return torch.softmax(logits.view(b, ch // num_tasks, num_tasks, h, w), dim=2).view(b, ch, h, w)
    if mode == "tasks":
        return torch.softmax(logits.view(b, num_tasks, ch // num_tasks, h, w), dim=1).view(b, ch, h, w)
    raise UserError(f"unknown fpm_softmax {mode!r}; valid: {', '.join(FPM_SOFTMAX)}")


class FeaturePropagation(nn.Module):
    """MTI-Net's feature propagation module at one scale (``c`` channels per task, N tasks).

    concat over tasks (S = N·c) → BasicBlock(S→S/4) → BasicBlock(S/4) → Conv1×1 (S/4→S) = logits →
    :func:`fpm_attention` ⊙ concat → BasicBlock(S→c) = shared → per task ``SE_t(shared) + f_t``.
    """

    def __init__(self, tasks: list[str], channels: int, softmax: str = "channel_groups") -> None:
        super().__init__()
        if softmax not in FPM_SOFTMAX:
            raise UserError(f"unknown fpm_softmax {softmax!r}; valid: {', '.join(FPM_SOFTMAX)}")
        self.tasks, self.softmax = list(tasks), softmax
        shared = len(self.tasks) * channels
        hidden = max(1, shared // 4)  # max(): only tiny test widths with one task get below 4
        self.attention_logits = nn.Sequential(
            BasicBlock(shared, hidden), BasicBlock(hidden, hidden), nn.Conv2d(hidden, shared, 1)
        )
        self.reduce = BasicBlock(shared, channels)
        self.se = nn.ModuleDict({t: SqueezeExcitation(channels) for t in self.tasks})

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        concat = torch.cat([feats[t] for t in self.tasks], dim=1)
        mask = fpm_attention(self.attention_logits(concat), len(self.tasks), self.softmax)
        shared = self.reduce(mask * concat)
        return {t: self.se[t](shared) + feats[t] for t in self.tasks}


class TaskPropagation(nn.Module):
    """MTI-Net's first half, coarse to fine over the levels s = L-1 … 0: initial task predictions
    (2 BasicBlocks + Conv1×1; below the coarsest level the input is the level concatenated with the
    previous level's propagated features, resized to this level's size) and a feature propagation
    module after every level but the finest (survey: after 1/32, 1/16, 1/8).

    Returns the per-level task features (finest first) and the initial logits by scale
    (``{"scale<s>": {task: logits}}``, deep supervision). Shared by MTI-Net and ATRC+FPM.
    """

    def __init__(
        self,
        tasks: list[str],
        out_channels: dict[str, int],
        ch: list[int],
        fpm_softmax: str = "channel_groups",
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        levels = len(ch)

        def initial(s: int, k: int) -> TaskPrediction:
            # Coarsest level: its own map; finer ones also get the propagated features of level s+1.
            cin = ch[s] if s == levels - 1 else ch[s] + ch[s + 1]
            return TaskPrediction(nn.Sequential(BasicBlock(cin, ch[s]), BasicBlock(ch[s], ch[s])), ch[s], k)

        self.initial = nn.ModuleList(
            [nn.ModuleDict({t: initial(s, out_channels[t]) for t in self.tasks}) for s in range(levels)]
        )
        # Index s-1: the FPM applied after level s.
        self.fpm = nn.ModuleList(
            [FeaturePropagation(self.tasks, ch[s], fpm_softmax) for s in range(1, levels)]
        )

    def forward(self, x: list[Tensor]) -> tuple[list[dict[str, Tensor]], dict[str, dict[str, Tensor]]]:
        levels: list[dict[str, Tensor]] = [{} for _ in x]
        aux: dict[str, dict[str, Tensor]] = {}
        propagated: dict[str, Tensor] | None = None
        for s in reversed(range(len(x))):
            heads = self.initial[s]
            if propagated is None:
                feats = {t: heads[t](x[s]) for t in self.tasks}
            else:
                # Resize to the level's explicit size: branches of odd size (27×35 under 14×18) are
                # not twice the next, so the survey's scale_factor=2 would break the concat.
                feats = {
                    t: heads[t](torch.cat([x[s], upsample_to(propagated[t], x[s].shape[-2:])], dim=1))
                    for t in self.tasks
                }
            if self.training:  # initial logits feed only the deep-supervision loss
                aux[f"scale{s}"] = {t: heads[t].classifier(f) for t, f in feats.items()}
            levels[s] = feats
            if s > 0:
                propagated = self.fpm[s - 1](feats)
        return levels, dict(sorted(aux.items()))  # finest first, as the encoder's levels


@register_model("mtinet")
class MTINet(DenseModel):
    """MTI-Net (survey code): multi-scale initial predictions, feature propagation, distillation.

    Deep supervision (training only): ``"scale0"`` … ``"scale3"`` = every task's initial prediction
    at each encoder level (finest first). ``main_tasks`` (default: all) have final heads; the others
    are auxiliary-only (survey NYUD: S,D main, N,E auxiliary). The survey's MTINetLoss applies the
    full task weight at every scale and to the final output, hence ``final_weight = aux_weight = 1``.
    """

    # the published HRNet family at its CPU-friendly size (published: HRNet-W18 small / W48)
    default_backbone = "hrnet_w18_small_v2"

    final_weight = 1.0
    aux_weight = 1.0

    def __init__(
        self,
        out_channels: dict[str, int],
        backbone: str = "resnet18",
        pretrained: bool = False,
        widths: list[int] | None = None,
        fpm_softmax: str = "channel_groups",
        main_tasks: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.init_host(out_channels, backbone, pretrained, main_tasks=main_tasks)
        self.adapter = LevelAdapter(self.feature_channels, widths)
        ch = self.adapter.out_channels
        self.propagation = TaskPropagation(self.tasks, out_channels, ch, fpm_softmax)
        # Every task predicts at every scale and sends messages; main tasks receive them.
        self.distill = nn.ModuleList([MultiModalDistillation(self.main_tasks, self.tasks, c) for c in ch])
        self.heads = nn.ModuleDict({t: HRNetHead(ch, out_channels[t]) for t in self.main_tasks})

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> dict:
        levels, aux = self.propagation(self.adapter(features))
        distilled = [self.distill[s](feats) for s, feats in enumerate(levels)]
        out = {t: upsample_to(self.heads[t]([d[t] for d in distilled]), size) for t in self.main_tasks}
        return self.with_aux(out, aux if self.training else {})
