"""Encoders: any timm backbone through ``features_only``, returning stride >= 4 feature maps."""

from __future__ import annotations

import difflib

import timm
from torch import Tensor, nn

from mtl3d.errors import UserError

# Names we test; any other timm model with features_only support works too.
TESTED_BACKBONES = ("resnet18", "resnet50", "hrnet_w18_small_v2", "hrnet_w48", "convnext_tiny")


class TimmEncoder(nn.Module):
    """Wraps ``timm.create_model(name, features_only=True)``; keeps levels with stride >= 4.

    The stride-2 stem level is dropped because dense heads in this family of work (survey, HRNet,
    ATRC) start at 1/4 resolution.
    """

    def __init__(self, name: str, pretrained: bool = False) -> None:
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
        extra = {"feature_location": ""} if name.startswith("hrnet") else {}
        try:
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True, **extra)
        except RuntimeError as e:
            raise UserError(f"backbone {name!r} cannot be created: {e}") from None
        reductions = self.body.feature_info.reduction()
        self.keep = [i for i, r in enumerate(reductions) if r >= 4]
        self.channels = [self.body.feature_info.channels()[i] for i in self.keep]
        self.strides = [reductions[i] for i in self.keep]

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.body(x)
        return [feats[i] for i in self.keep]


def create_encoder(name: str, pretrained: bool = False) -> TimmEncoder:
    return TimmEncoder(name, pretrained=pretrained)

