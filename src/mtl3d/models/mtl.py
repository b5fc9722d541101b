"""Shared-encoder multi-task baseline: one encoder, one fusion head per task."""

from __future__ import annotations

from torch import Tensor, nn

from mtl3d.errors import unknown_name
from mtl3d.models.base import DenseModel
from mtl3d.models.blocks import DeepLabHead, FusionHead, fuse_scales, upsample_to
from mtl3d.models.registry import register_model


@register_model("mtl")
class MTLBaseline(DenseModel):
    """Shared encoder + one head per task (the survey's multi-task baseline).

    ``head="fusion"`` (default): every encoder scale resized to the finest and concatenated, then a
    Conv-BN-ReLU head (the survey's HRNet head). ``head="aspp"``: DeepLabv3's head on the last feature map
    only, with ``output_stride`` 8 or 16 dilating the backbone (timm) — with ``resnet50``,
    ``output_stride=8``, ``head_channels=256`` it is LibMTL's NYUv2 network (docs/models.md).
    """

    def __init__(
        self,
        out_channels: dict[str, int],
        backbone: str = "resnet18",
        pretrained: bool = False,
        head_channels: int = 64,
        head: str = "fusion",
        output_stride: int | None = None,
        aspp_rates: list[int] | None = None,
    ) -> None:
        super().__init__()
        if head not in ("fusion", "aspp"):
            raise unknown_name("mtl head", head, ("aspp", "fusion"))
        self.init_host(out_channels, backbone, pretrained, output_stride=output_stride)
        self.head_kind = head
        if head == "aspp":
            rates = aspp_rates or ([12, 24, 36] if output_stride == 8 else [6, 12, 18])
            last = self.feature_channels[-1]
            self.heads = nn.ModuleDict(
                {t: DeepLabHead(last, c, head_channels, rates) for t, c in out_channels.items()}
            )
        else:
            fused = sum(self.feature_channels)
            self.heads = nn.ModuleDict(
                {t: FusionHead(fused, c, head_channels) for t, c in out_channels.items()}
            )

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
        x = features[-1] if self.head_kind == "aspp" else fuse_scales(features)
        return {t: upsample_to(head(x), size) for t, head in self.heads.items()}
