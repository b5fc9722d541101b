"""PAD-Net (Xu et al., CVPR'18) as the MTL survey's code implements it (``models/padnet.py``).

Survey code: github.com/SimonVandenhende/Multi-Task-Learning-PyTorch; docs/models.md lists where we differ.

encoder → HRNet fusion of all levels at the finest (1/4) level → per task: 2 Bottlenecks (features,
4·``head_channels`` wide) + Conv1×1 initial prediction → multi-modal distillation (spatial-attention
messages from every other task) → per task: 2 Bottlenecks + Conv1×1 → bilinear to the input size.
Every task is both a main and an auxiliary task (the ATRC / InvPT / 3D-aware setting).
"""

from __future__ import annotations

from torch import Tensor, nn

from mtl3d.models.base import DenseModel
from mtl3d.models.blocks import (
    Bottleneck,
    HRNetFuse,
    LevelAdapter,
    MultiModalDistillation,
    TaskPrediction,
    upsample_to,
)
from mtl3d.models.registry import register_model


@register_model("padnet")
class PADNet(DenseModel):
    """PAD-Net (survey code): fused HRNet features, initial predictions, spatial-attention distillation.

    Deep supervision (training only): ``"initial"`` = every task's 1/4-resolution initial prediction.
    ``main_tasks`` (default: all) have final heads; the others are auxiliary-only (survey NYUD: S,D
    main, N,E auxiliary).
    The survey's PADNetLoss weighs initial and final predictions with the same task weight, hence
    ``final_weight = aux_weight = 1``.
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
        head_channels: int = 64,
        widths: list[int] | None = None,
        main_tasks: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.init_host(out_channels, backbone, pretrained, main_tasks=main_tasks)
        self.adapter = LevelAdapter(self.feature_channels, widths)
        self.fuse = HRNetFuse(self.adapter.out_channels)  # the survey's ``fuse_hrnet``
        fused = self.fuse.out_channels
        feat = head_channels * Bottleneck.expansion  # 256 as published

        def bottlenecks(cin: int) -> nn.Sequential:
            # Bottleneck adds its projection shortcut itself when cin != 4·width (fused 270 → 256).
            return nn.Sequential(Bottleneck(cin, head_channels), Bottleneck(feat, head_channels))

        self.initial = nn.ModuleDict(
            {t: TaskPrediction(bottlenecks(fused), feat, k) for t, k in out_channels.items()}
        )
        # Every task makes an initial prediction and sends messages; main tasks receive them.
        self.distill = MultiModalDistillation(self.main_tasks, self.tasks, feat)
        self.final = nn.ModuleDict(
            {t: TaskPrediction(bottlenecks(feat), feat, out_channels[t]) for t in self.main_tasks}
        )

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> dict:
        fused = self.fuse(self.adapter(features))
        feats = {t: head(fused) for t, head in self.initial.items()}
        # Initial logits feed only the deep-supervision loss: not computed at inference.
        aux = (
            {"initial": {t: self.initial[t].classifier(f) for t, f in feats.items()}} if self.training else {}
        )
        feats = self.distill(feats)
        out = {t: upsample_to(self.final[t].predict(feats[t]), size) for t in self.main_tasks}
        return self.with_aux(out, aux)
