"""Task heads on multi-scale features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def fuse_scales(features: list[Tensor]) -> Tensor:
    """HRNet-style fusion: upsample every level to the finest one and concatenate channels."""
    size = features[0].shape[-2:]
    ups = [features[0]] + [
        F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]
    ]
    return torch.cat(ups, dim=1)


class FusionHead(nn.Module):
    """Fused multi-scale features -> 1×1 reduce -> 3×3 refine -> 1×1 classifier (DeepLab/HRNet style)."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(in_channels, mid_channels, 1), conv_bn_relu(mid_channels, mid_channels)
        )
        self.classifier = nn.Conv2d(mid_channels, out_channels, 1)

    def forward(self, fused: Tensor) -> Tensor:
        return self.classifier(self.body(fused))


def upsample_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
