"""Tri-plane feature field: a plane encoder from image-encoder features and point sampling.

Planes are stored as one tensor [B, 3, C, R_h, R_w] in the order ``xy, xz, yz``. A box point
(x', y', z') ∈ [−1, 1]³ reads

* plane ``xy`` at (x', y')  — image-aligned (x' ↔ width, y' ↔ height of the feature map),
* plane ``xz`` at (x', z')  — x' keeps the width axis, z' runs along the height axis,
* plane ``yz`` at (z', y')  — y' keeps the height axis, z' runs along the width axis,

so every plane shares one image axis with the 2D map it was decoded from (EG3D-style: all three
planes come from the same 2D feature map, split along channels). Sampling is bilinear with
``align_corners=False`` and zeros outside the box.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d.errors import unknown_name

AGGREGATIONS = ("prod", "sum", "concat")
FEATURE_SOURCES = ("fused", "last")
PLANES = ("xy", "xz", "yz")


def aggregated_channels(plane_ch: int, agg: str) -> int:
    """Channels of a sampled point feature for an aggregation."""
    if agg not in AGGREGATIONS:
        raise unknown_name("plane aggregation", agg, AGGREGATIONS)
    return 3 * plane_ch if agg == "concat" else plane_ch


def plane_grids(coords: Tensor) -> Tensor:
    """Box coordinates [B, n, S, 3] → the three planes' ``grid_sample`` grids [B, 3, n, S, 2]."""
    x, y, z = coords.unbind(-1)
    return torch.stack([torch.stack([x, y], -1), torch.stack([x, z], -1), torch.stack([z, y], -1)], dim=1)


def sample_planes(planes: Tensor, coords: Tensor) -> Tensor:
    """Bilinear features of each plane at box points: planes [B,3,C,Rh,Rw], coords [B,n,S,3] → [B,3,C,n,S]."""
    B, P, C, Rh, Rw = planes.shape
    # Sample in the wider of the two dtypes: bf16 coordinates would be off by ~0.1 plane pixel.
    dtype = torch.promote_types(planes.dtype, coords.dtype)
    planes = planes.to(dtype)
    grids = plane_grids(coords.to(dtype))
    n, S = coords.shape[1], coords.shape[2]
    out = F.grid_sample(
        planes.reshape(B * P, C, Rh, Rw),
        grids.reshape(B * P, n, S, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return out.reshape(B, P, C, n, S)


def aggregate(samples: Tensor, agg: str) -> Tensor:
    """Combine the three planes' samples [B,3,C,n,S] into point features [B,n,S,C'] (channels last)."""
    if agg == "prod":
        f = samples[:, 0] * samples[:, 1] * samples[:, 2]
    elif agg == "sum":
        f = samples.sum(dim=1)
    elif agg == "concat":
        f = samples.flatten(1, 2)
    else:
        raise unknown_name("plane aggregation", agg, AGGREGATIONS)
    return f.permute(0, 2, 3, 1)


def sample_triplane(planes: Tensor, coords: Tensor, agg: str = "prod") -> Tensor:
    """Point features [B, n, S, C'] of box points [B, n, S, 3] from planes [B, 3, C, Rh, Rw]."""
    return aggregate(sample_planes(planes, coords), agg)


class PlaneEncoder(nn.Module):
    """Encoder features → tri-plane.

    ``fused``: every scale resized (bilinear) to the plane resolution and concatenated; ``last``: the
    coarsest scale only (e.g. a ViT's last layer). Then Conv3×3 → BN → ReLU → Conv1×1 to 3·C_p
    channels, split into the planes xy, xz, yz.

    For ``prod`` aggregation the planes are offset by +1 (``P = 1 + e(F)``): a product of three
    zero-mean maps would start near zero with tiny gradients (K-Planes initialises multiplicative
    planes away from zero for the same reason); with the offset the field starts ≈ 1 and each plane's
    gradient is ≈ the upstream gradient. Zeros outside the box remain zeros (padding is applied after).
    """

    def __init__(
        self,
        feature_channels: list[int],
        plane_ch: int = 32,
        hidden: int = 128,
        feat_source: str = "fused",
        agg: str = "prod",
    ) -> None:
        super().__init__()
        if feat_source not in FEATURE_SOURCES:
            raise unknown_name("regularizer feature source", feat_source, FEATURE_SOURCES)
        if agg not in AGGREGATIONS:
            raise unknown_name("plane aggregation", agg, AGGREGATIONS)
        self.feat_source = feat_source
        self.plane_ch = plane_ch
        self.offset = 1.0 if agg == "prod" else 0.0
        c_in = sum(feature_channels) if feat_source == "fused" else feature_channels[-1]
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 3 * plane_ch, 1),
        )

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        """Planes [B, 3, C_p, size[0], size[1]] from multi-scale features (finest first)."""
        feats = features if self.feat_source == "fused" else features[-1:]
        x = torch.cat([_resize(f, size) for f in feats], dim=1)
        x = self.net(x)
        B = x.shape[0]
        return x.reshape(B, 3, self.plane_ch, *size) + self.offset


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    # antialias when shrinking: a stride-4 map resized to stride 8 should average, not alias
    shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)
