"""Shared-encoder multi-task baseline: one encoder, one fusion head per task."""

from __future__ import annotations

from torch import Tensor, nn

from mtl3d.models.base import DenseModel
from mtl3d.models.blocks import FusionHead, fuse_scales, upsample_to
from mtl3d.models.registry import register_model


@register_model("mtl")
class MTLBaseline(DenseModel):
    """Shared encoder + one fusion head per task (the survey's multi-task baseline)."""

    def __init__(
        self,
        out_channels: dict[str, int],
        backbone: str = "resnet18",
        pretrained: bool = False,
        head_channels: int = 64,
    ) -> None:
        super().__init__()
        self.init_host(out_channels, backbone, pretrained)
        fused = sum(self.feature_channels)
        self.heads = nn.ModuleDict({t: FusionHead(fused, c, head_channels) for t, c in out_channels.items()})

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
        fused = fuse_scales(features)
        return {t: upsample_to(head(fused), size) for t, head in self.heads.items()}
