"""Shared-encoder multi-task baseline: one encoder, one fusion head per task."""

from __future__ import annotations

from torch import Tensor, nn

from mtl3d.models.backbones import create_encoder
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
        self.tasks = list(out_channels)
        self.out_channels = dict(out_channels)
        self.encoder = create_encoder(backbone, pretrained)
        self.feature_channels = list(self.encoder.channels)
        self.feature_strides = list(self.encoder.strides)
        fused = sum(self.feature_channels)
        self.heads = nn.ModuleDict({t: FusionHead(fused, c, head_channels) for t, c in out_channels.items()})

    def encode(self, image: Tensor) -> list[Tensor]:
        return self.encoder(image)

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
        fused = fuse_scales(features)
        return {t: upsample_to(head(fused), size) for t, head in self.heads.items()}
