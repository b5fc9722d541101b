"""The per-task U-Net decoder that 3-ways PAD-Net and DenseMTL share, and their common model skeleton.

The decoder is DenseMTL's ``DecoderHead`` (monodepth2's depth decoder with an intermediate ASPP):
one stage per encoder level, coarsest first. Stage ``i`` (``i = n−1 … 0``, ``n`` = encoder levels) is

    first conv (stage n−1: ASPP on the coarsest map; else ConvELU ch[i+1] → ch[i])
    → nearest resize to the skip's size (stage 0: to the image size)
    → concat the encoder skip ``features[i−1]`` (none at stage 0)
    → ConvELU → ch[i]

and side outputs (Conv1×1 → K_t) are taken at scales 0 and 1. With a ResNet at output stride 16 the
stages output 4: 1/16, 3: 1/8, 2: 1/4, 1: 1/2, 0: 1/1 (stage 4 does not resize: e4 and e3 are both
1/16). Sizes come from the feature maps themselves (no ×2 assumption), so odd input sizes and other
strides work.

:class:`UNetMultiTask` runs the per-task decoders scale by scale and lets a subclass insert one
cross-task block after a chosen scale (3-ways PAD-Net: PAD-Net distillation after scale 2; DenseMTL:
mTEB after scale 1). As in the released code, a side output at the block's own scale is taken from
the features *before* the block. Released code: github.com/astra-vision/DenseMTL (``models/padnetplus.py``,
``vendor/monodepth2/decoder.py``); docs/models.md lists where we differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtl3d.errors import UserError
from mtl3d.models.base import DenseModel
from mtl3d.models.blocks import ASPP, ConvELU, upsample_to

# DenseMTL's NYUD configs: ``num_ch_dec`` for scales 0..4 and ``active_scales: [0, 1]``.
DECODER_CHANNELS = (64, 128, 128, 256, 256)
SIDE_SCALES = (0, 1)


class DecoderStage(nn.Module):
    """One decoder scale: first conv, nearest resize to the skip (or image), concat skip, ConvELU."""

    def __init__(self, first: nn.Module, first_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.first = first
        self.second = ConvELU(first_channels + skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None, size: Sequence[int]) -> Tensor:
        x = self.first(x)
        # The code upsamples ×2 only when the map is smaller than the skip (not at the dilated level);
        # resizing to the skip's actual size does the same and also handles odd sizes.
        x = upsample_to(x, size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.second(x)


class UNetDecoder(nn.Module):
    """monodepth2-style decoder with ASPP at the coarsest scale, U-Net skips and side outputs.

    ``enc_channels`` are the encoder's channels, finest first; ``channels[i]`` is the width of scale
    ``i`` (one per encoder level). ``stages[i]`` and ``sides[str(i)]`` are the per-scale modules.
    """

    def __init__(
        self,
        enc_channels: Sequence[int],
        out_channels: int,
        channels: Sequence[int] = DECODER_CHANNELS,
        aspp_channels: int = 256,
        side_scales: Sequence[int] = SIDE_SCALES,
    ) -> None:
        super().__init__()
        n = len(enc_channels)
        if len(channels) != n:
            raise UserError(
                f"decoder_channels needs one width per encoder level ({n}, finest first), "
                f"got {list(channels)}"
            )
        stages = []
        for i in range(n):
            if i == n - 1:
                first: nn.Module = ASPP(enc_channels[-1], aspp_channels, rates=(6, 12, 18), dropout=0.5)
                first_ch = aspp_channels
            else:
                first, first_ch = ConvELU(channels[i + 1], channels[i]), channels[i]
            skip_ch = enc_channels[i - 1] if i > 0 else 0
            stages.append(DecoderStage(first, first_ch, skip_ch, channels[i]))
        self.stages = nn.ModuleList(stages)  # indexed by scale: stages[0] is the full-resolution one
        self.sides = nn.ModuleDict({str(i): nn.Conv2d(channels[i], out_channels, 1) for i in side_scales})

    def stage(self, i: int, x: Tensor | None, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Run scale ``i`` on ``x`` (the previous scale's output; ``None`` at the coarsest scale)."""
        if x is None:
            x = features[-1]
        skip = features[i - 1] if i > 0 else None
        target = skip.shape[-2:] if skip is not None else size
        return self.stages[i](x, skip, target)


class UNetMultiTask(DenseModel):
    """Shared dilated encoder + one :class:`UNetDecoder` per task + one cross-task block after a scale.

    Subclasses set ``self.block`` (a module mapping ``{task: features}`` to refined features of the
    same shape) and ``self.block_scale``. The final output is the scale-0 side output; the scale-1 side
    output is deep supervision (training only), named ``side_1/<stride>``. Both are resized to the input
    with bilinear ``align_corners=True``, as the released code resizes logits to the label. The
    released loss is the mean over the two scales, i.e. ``final_weight = aux_weight = 0.5``.
    """

    final_weight = 0.5
    aux_weight = 0.5

    def __init__(
        self,
        out_channels: dict[str, int],
        backbone: str,
        pretrained: bool,
        output_stride: int | None,
        decoder_channels: Sequence[int],
        aspp_channels: int,
    ) -> None:
        super().__init__()
        # min_stride=2: the U-Net skips include the stride-2 stem output (e0).
        self.init_host(out_channels, backbone, pretrained, output_stride=output_stride, min_stride=2)
        if len(self.feature_channels) < 2:
            raise UserError(f"backbone {backbone!r} gives {len(self.feature_channels)} level(s); need >= 2")
        self.decoder_channels = [int(c) for c in decoder_channels]
        self.decoders = nn.ModuleDict(
            {
                t: UNetDecoder(self.feature_channels, k, self.decoder_channels, aspp_channels)
                for t, k in out_channels.items()
            }
        )
        self.block: nn.Module = nn.Identity()
        self.block_scale = -1  # set by the subclass

    def check_block_scale(self, scale: int, option: str) -> int:
        """``scale`` must be a decoder scale whose output still feeds a later scale (1 … n−1)."""
        n = len(self.feature_channels)
        if not 1 <= scale <= n - 1:
            raise UserError(
                f"{option} must be in 1..{n - 1} (scale 0 is the last one: a block there would change "
                f"nothing the outputs use), got {scale}"
            )
        return scale

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
        x: dict[str, Tensor | None] = dict.fromkeys(self.tasks)
        sides: dict[int, dict[str, Tensor]] = {s: {} for s in SIDE_SCALES}
        for i in reversed(range(len(features))):
            for t, dec in self.decoders.items():
                x[t] = dec.stage(i, x[t], features, size)
                # Intermediate side outputs only feed the loss: skip them at inference.
                if i in sides and (i == 0 or self.training):
                    sides[i][t] = dec.sides[str(i)](x[t])
            if i == self.block_scale and len(self.tasks) > 1:
                x = self.block(x)

        def full(logits: dict[str, Tensor]) -> dict[str, Tensor]:
            return {t: upsample_to(v, size, align_corners=True) for t, v in logits.items()}

        aux = {
            f"side_1/{self.feature_strides[i - 1]}": full(sides[i]) for i in SIDE_SCALES if i > 0 and sides[i]
        }
        return self.with_aux(full(sides[0]), aux)
