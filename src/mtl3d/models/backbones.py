"""Encoders: any timm backbone through ``features_only``, returning stride >= 4 feature maps."""

from __future__ import annotations

import difflib

import timm
import torch.nn.functional as F
from timm.models.hrnet import HighResolutionModule
from torch import Tensor, nn

from mtl3d.errors import UserError

# Names we test; any other timm model with features_only support works too.
TESTED_BACKBONES = ("resnet18", "resnet50", "hrnet_w18_small_v2", "hrnet_w48", "convnext_tiny")


class _SizeFusedHRModule(HighResolutionModule):
    """timm's HRNet module with HRNetV2-segmentation fusion (survey seg_hrnet.py, MMSeg): a coarser
    branch, after its Conv1×1+BN, is resized bilinearly to the finer branch's *size*. timm keeps the
    classification code's nearest ``Upsample(scale_factor=2**k)``, which fails whenever a branch is not
    exactly twice the next (425×560: 107×140 vs 2×54 = 108). No parameter changes: timm's weights load.
    """

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        x = [branch(xi) for branch, xi in zip(self.branches, x, strict=True)]
        fused = []
        for i, fuse_outer in enumerate(self.fuse_layers):
            y = None
            for j, f in enumerate(fuse_outer):
                z = f(x[j])
                if j > i:
                    z = F.interpolate(z, size=x[i].shape[-2:], mode="bilinear", align_corners=False)
                y = z if y is None else y + z
            fused.append(self.fuse_act(y))
        return fused


def size_aware_hrnet_fusion(body: nn.Module) -> None:
    """Switch every HRNet module of a timm HRNet to :class:`_SizeFusedHRModule` (in place)."""
    for m in body.modules():
        if type(m) is HighResolutionModule and isinstance(m.fuse_layers, nn.ModuleList):
            for row in m.fuse_layers:
                for f in row:
                    if isinstance(f, nn.Sequential) and isinstance(f[-1], nn.Upsample):
                        f[-1] = nn.Identity()  # the resize moves into forward, where the size is known
            m.__class__ = _SizeFusedHRModule


class TimmEncoder(nn.Module):
    """Wraps ``timm.create_model(name, features_only=True)``; keeps levels with stride >= ``min_stride``.

    By default the stride-2 stem level is dropped because dense heads in this family of work (survey,
    HRNet, ATRC) start at 1/4 resolution; U-Net decoders (3-ways PAD-Net, DenseMTL) ask for
    ``min_stride=2``. ``strides`` are nominal reductions: with ``output_stride`` the dilated levels
    report the stride they actually have.
    """

    def __init__(
        self, name: str, pretrained: bool = False, output_stride: int | None = None, min_stride: int = 4
    ) -> None:
        super().__init__()
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=5)
            hint = f"; did you mean: {', '.join(close)}" if close else ""
            raise UserError(
                f"unknown backbone {name!r}{hint}; tested: {', '.join(TESTED_BACKBONES)} "
                "(any timm model with features_only support works)"
            )
        # HRNet: the raw branch outputs (18/36/72/144 channels for W18), as the MTL survey, MTI-Net and
        # ATRC use them, rather than timm's default "incre" classification-neck features.
        extra: dict = {"feature_location": ""} if name.startswith("hrnet") else {}
        if output_stride is not None:  # dilated last stage(s), e.g. ResNet OS16 (DeepLab, DenseMTL)
            extra["output_stride"] = output_stride
        try:
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True, **extra)
        except RuntimeError as e:
            raise UserError(f"backbone {name!r} cannot be created: {e}") from None
        if name.startswith("hrnet"):
            size_aware_hrnet_fusion(self.body)
        reductions = self.body.feature_info.reduction()
        self.keep = [i for i, r in enumerate(reductions) if r >= min_stride]
        self.channels = [self.body.feature_info.channels()[i] for i in self.keep]
        self.strides = [reductions[i] for i in self.keep]

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.body(x)
        return [feats[i] for i in self.keep]


def create_encoder(
    name: str, pretrained: bool = False, output_stride: int | None = None, min_stride: int = 4
) -> TimmEncoder:
    return TimmEncoder(name, pretrained=pretrained, output_stride=output_stride, min_stride=min_stride)
