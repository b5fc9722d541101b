"""Building blocks shared by the models, written once (every model imports them from here).

Torchvision-style residual blocks, PAD-Net's spatial-attention distillation, squeeze-excitation,
DeepLab's ASPP, monodepth2's conv block, the HRNet multi-scale fusion, and the task heads. Sizes
follow the published code (docs/models.md names the repositories and where we differ).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d.errors import UserError


def conv_bn_relu(cin: int, cout: int, k: int = 3, bias: bool = False, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=bias),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def upsample_to(
    x: Tensor, size: Sequence[int], mode: str = "bilinear", align_corners: bool = False
) -> Tensor:
    """Resize to an explicit ``size`` (never ``scale_factor=2``: odd branch sizes, e.g. 27×35, break it)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


def fuse_scales(features: Sequence[Tensor]) -> Tensor:
    """HRNet-style fusion: upsample every level to the finest one and concatenate channels."""
    size = features[0].shape[-2:]
    return torch.cat([upsample_to(f, size) for f in features], dim=1)


class _Residual(nn.Module):
    """``relu(body(x) + shortcut(x))``; the shortcut is Conv1×1+BN whenever the shape changes."""

    def __init__(self, body: nn.Module, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = body
        self.shortcut: nn.Module = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if cin != cout or stride != 1
            else nn.Identity()
        )
        # Zero-init of the last BN is not used by the published code (torchvision default: off).

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x), inplace=True)


class BasicBlock(_Residual):
    """Torchvision BasicBlock: Conv3×3-BN-ReLU-Conv3×3-BN (+ projection shortcut when needed)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        super().__init__(body, cin, cout, stride)


class Bottleneck(_Residual):
    """Torchvision Bottleneck: Conv1×1 (→width) - Conv3×3 - Conv1×1 (→width·4), BN after each."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        cout = width * self.expansion
        body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        super().__init__(body, cin, cout, stride)


class SpatialAttention(nn.Module):
    """PAD-Net's attention-guided message: ``Conv3×3(f) ⊙ sigmoid(Conv3×3(f))`` (no bias, no BN)."""

    def __init__(self, cin: int, cout: int | None = None) -> None:
        super().__init__()
        cout = cout or cin
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.mask = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * torch.sigmoid(self.mask(x))


class MultiModalDistillation(nn.Module):
    """``f̃_t = f_t + Σ_{s∈sources, s≠t} SA_{s→t}(f_s)`` for every target task t (one SA per ordered pair)."""

    def __init__(self, targets: Sequence[str], sources: Sequence[str], channels: int) -> None:
        super().__init__()
        self.targets, self.sources = list(targets), list(sources)
        self.attention = nn.ModuleDict(
            {
                t: nn.ModuleDict({s: SpatialAttention(channels) for s in self.sources if s != t})
                for t in self.targets
            }
        )

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for t in self.targets:
            x = feats[t]
            for s, sa in self.attention[t].items():
                x = x + sa(feats[s])
            out[t] = x
        return out


class SqueezeExcitation(nn.Module):
    """Channel gating: GAP → Linear(c→c/r) → ReLU → Linear(→c) → sigmoid → scale (Hu et al.)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)  # W18s scale 0 has 18 channels: 1 hidden unit
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        w = self.fc(x.mean(dim=(2, 3)))
        return x * w[:, :, None, None]


class ASPP(nn.Module):
    """DeepLabv3 atrous spatial pyramid pooling: 1×1, three dilated 3×3 and image pooling branches
    (each Conv-BN-ReLU), concatenated and projected by Conv1×1-BN-ReLU-Dropout."""

    def __init__(
        self, cin: int, cout: int = 256, rates: Sequence[int] = (6, 12, 18), dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, cout, 1)] + [conv_bn_relu(cin, cout, 3, dilation=r) for r in rates]
        )
        self.pool = conv_bn_relu(cin, cout, 1)
        self.project = nn.Sequential(
            nn.Conv2d(cout * (len(rates) + 2), cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        outs = [b(x) for b in self.branches]
        # Image pooling: with batch 1 in training, BN over a 1×1 map has one value per channel; the
        # published code has the same property (it never trains at batch 1).
        outs.append(upsample_to(self.pool(F.adaptive_avg_pool2d(x, 1)), x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class ConvELU(nn.Module):
    """monodepth2's ConvBlock: reflection-padded Conv3×3 (with bias) + ELU, no normalisation."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.elu(self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect")), inplace=True)


class HRNetFuse(nn.Module):
    """HRNetV2 representation: all branches resized to the finest and concatenated, then
    Conv1×1 (with bias) + BN + ReLU at the same width (PAD-Net's ``fuse_hrnet``, MTI-Net's head)."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        c = int(sum(channels))
        self.out_channels = c
        self.body = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.body(fuse_scales(features))


class HRNetHead(nn.Module):
    """The survey's ``HighResolutionHead``: :class:`HRNetFuse` then a Conv1×1 classifier."""

    def __init__(self, channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.fuse = HRNetFuse(channels)
        self.classifier = nn.Conv2d(self.fuse.out_channels, out_channels, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.classifier(self.fuse(features))


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


class DeepLabHead(nn.Module):
    """DeepLabv3's task head on the last (dilated) feature map: ASPP -> Conv3×3-BN-ReLU -> 1×1 classifier
    (torchvision's and LibMTL's ``DeepLabHead``; rates 12/24/36 for output stride 8)."""

    def __init__(
        self, in_channels: int, out_channels: int, width: int = 256, rates: Sequence[int] = (12, 24, 36)
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(ASPP(in_channels, width, rates), conv_bn_relu(width, width))
        self.classifier = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.body(x))


class LevelAdapter(nn.Module):
    """Optional per-level Conv1×1-BN-ReLU projection of the encoder maps to the decoder's ``widths``.

    ``widths=None`` keeps the encoder's channels (the published HRNet configurations); a width per level
    lets a wide backbone (ResNet-18: 64…512) drive a CPU-sized decoder.
    """

    def __init__(self, channels: Sequence[int], widths: Sequence[int] | None = None) -> None:
        super().__init__()
        if widths is None:
            self.proj = None
            self.out_channels = list(channels)
            return
        if len(widths) != len(channels) or any(w < 1 for w in widths):
            raise UserError(
                f"widths must be {len(channels)} positive integers, one per encoder level "
                f"(encoder channels {list(channels)}); got {list(widths)}"
            )
        self.proj = nn.ModuleList([conv_bn_relu(c, w, 1) for c, w in zip(channels, widths, strict=True)])
        self.out_channels = list(widths)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if self.proj is None:
            return list(features)
        return [p(f) for p, f in zip(self.proj, features, strict=True)]


class TaskPrediction(nn.Module):
    """Per-task refinement ``body`` whose features go on, plus a Conv1×1 (with bias) ``classifier``.

    The initial predictions of PAD-Net and MTI-Net are only deep supervision, so callers run
    ``classifier`` in training alone; ``forward`` gives the features.
    """

    def __init__(self, body: nn.Module, channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def predict(self, x: Tensor) -> Tensor:
        """Features to logits in one go (final heads)."""
        return self.classifier(self.body(x))
