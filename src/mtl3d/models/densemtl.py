"""DenseMTL (Lopes, Vu, de Charette, WACV'23): cross-task attention (xTAM) in a multi-task exchange
block (mTEB) inside 3-ways PAD-Net's per-task U-Net decoders. Follows the released code
(github.com/astra-vision/DenseMTL ``models/ours_xatt.py``, ``models/components.py``) where it differs
from the paper; docs/models.md lists those differences and our own choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d.errors import UserError, unknown_name
from mtl3d.models.blocks import SpatialAttention, conv_bn_relu, upsample_to
from mtl3d.models.registry import register_model
from mtl3d.models.unet_decoder import DECODER_CHANNELS, UNetMultiTask

# The code's ``stage_nb``: attention downscale s per decoder scale (the token grid is ≈1/8 of the
# input at scales 0-2, the map itself at the coarser scales).
XTAM_DOWNSCALE = {4: 1, 3: 1, 2: 2, 1: 4, 0: 8}
FUSIONS = ("add", "concat", "prod")


class DirectionalXTAM(nn.Module):
    """xTAM_{j→i}: what target task i takes from source task j (one direction of a bidirectional xTAM).

    Code reality: the source first passes an extractor (Conv3×3 + ReLU); then

    * self-attention ``self = SA(src)`` (PAD-Net's spatial attention, c → c/2 channels);
    * correlation-guided attention: target tokens = nearest downscale by ``s`` (the code's
      ``Upsample(scale_factor=1/s)``), source tokens = ``MaxPool(s)``; Q from the target, K and V from
      the source, each Conv1×1 (no bias) + BN + ReLU with d = c; ``C = softmax(QᵀK / √c)`` over source
      positions; ``xtask = ↑_s(V·Cᵀ)`` (nearest, to the target's size);
    * ``f_{j→i} = P([self, α ⊙ xtask])`` with α (1×c×1×1) initialised to 0, so the block starts as
      pure self-attention, and P = Conv1×1 + BN + ReLU (1.5c → c), a projection the paper omits.
    """

    def __init__(self, channels: int, downscale: int) -> None:
        super().__init__()
        c = channels
        self.downscale = downscale
        self.extract = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True))
        self.self_attention = SpatialAttention(c, c // 2)
        self.query = conv_bn_relu(c, c, 1)
        self.key = conv_bn_relu(c, c, 1)
        self.value = conv_bn_relu(c, c, 1)
        self.alpha = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.project = conv_bn_relu(c + c // 2, c, 1)

    def tokens(self, target: Tensor, source: Tensor) -> tuple[Tensor, Tensor]:
        """Downscaled target and source maps the attention works on."""
        # Tiny maps (smaller than s) would leave no token: clamp s so there is at least one.
        s = max(1, min(self.downscale, *target.shape[-2:], *source.shape[-2:]))
        if s == 1:
            return target, source
        h, w = target.shape[-2] // s, target.shape[-1] // s
        # Strided slicing = nearest ``Upsample(scale_factor=1/s)``: it keeps pixel (s·y, s·x).
        return target[..., ::s, ::s][..., :h, :w], F.max_pool2d(source, s)

    def correlation(self, target_tokens: Tensor, source_tokens: Tensor) -> Tensor:
        """``softmax(QᵀK/√c)``: (B, target positions, source positions), rows sum to 1."""
        q = self.query(target_tokens).flatten(2)
        k = self.key(source_tokens).flatten(2)
        return torch.softmax(q.transpose(1, 2) @ k / math.sqrt(q.shape[1]), dim=-1)

    def xtask(self, target: Tensor, source: Tensor) -> Tensor:
        """Correlation-guided attention message (before α), at the target's size."""
        t, s = self.tokens(target, source)
        corr = self.correlation(t, s)
        v = self.value(s).flatten(2)
        out = (v @ corr.transpose(1, 2)).view(v.shape[0], v.shape[1], *t.shape[-2:])
        return upsample_to(out, target.shape[-2:], mode="nearest")

    def forward(self, target: Tensor, source: Tensor) -> Tensor:
        src = self.extract(source)
        # Concatenation order as in the code ([self, xtask]); the paper writes [α·xtask, self].
        return self.project(torch.cat([self.self_attention(src), self.alpha * self.xtask(target, src)], 1))


class MTEB(nn.Module):
    """Multi-task exchange block: ``f̃_i = f_i ⊕ F_{→i}([f_{j→i}]_{j≠i})`` for every task i.

    One :class:`DirectionalXTAM` per ordered pair (the two directions of a pair = one bidirectional
    xTAM). ``F_{→i}`` = Conv1×1 + BN + ReLU. Fusion ``⊕``: ``add`` (paper's choice), ``prod``
    (element-wise product), ``concat``: as in the code, the task's own features are concatenated with
    the directional features and ``F_{→i}`` maps the n·c channels back to c (``f̃_i = F([f_i, f_{j→i}…])``).
    Sources are concatenated in task order.
    """

    def __init__(self, tasks: Sequence[str], channels: int, downscale: int, fusion: str = "add") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise unknown_name("fusion", fusion, FUSIONS)
        self.tasks, self.fusion = list(tasks), fusion
        self.xtam = nn.ModuleDict(
            {
                t: nn.ModuleDict({s: DirectionalXTAM(channels, downscale) for s in self.tasks if s != t})
                for t in self.tasks
            }
        )
        n_in = (len(self.tasks) - 1 + (fusion == "concat")) * channels
        self.fuse = nn.ModuleDict({t: conv_bn_relu(n_in, channels, 1) for t in self.tasks})

    def forward(self, feats: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for t in self.tasks:
            msgs = [xtam(feats[t], feats[s]) for s, xtam in self.xtam[t].items()]
            if self.fusion == "concat":
                out[t] = self.fuse[t](torch.cat([feats[t], *msgs], 1))
                continue
            msg = self.fuse[t](torch.cat(msgs, 1))
            out[t] = feats[t] + msg if self.fusion == "add" else feats[t] * msg
        return out


@register_model("densemtl")
class DenseMTL(UNetMultiTask):
    """DenseMTL: 3-ways PAD-Net's U-Net decoders with one cross-task attention block (mTEB) at 1/2.

    Dilated ResNet (``output_stride`` 16), one :class:`~mtl3d.models.unet_decoder.UNetDecoder` per
    task, and an :class:`MTEB` after decoder scale ``mteb_scale`` (default 1 = 1/2 resolution, the
    released model: c = 128, attention downscale s = 4, i.e. 56×72 tokens and a 4032×4032 correlation
    per direction at NYUD 448×576: the published cost, kept). ``xtam_downscale`` overrides s (default:
    the code's per-scale table ``{4: 1, 3: 1, 2: 2, 1: 4, 0: 8}``); ``fusion`` ∈ add, concat, prod
    (see :class:`MTEB`). All α start at 0, so at initialisation the block is pure self-attention.

    Side outputs at scale 1 (deep supervision, training only, ``side_1/2``; taken before the mTEB, as
    in the code) and scale 0 (final). Loss: the released code averages each task's loss over the two
    scales, i.e. ``final_weight = aux_weight = 0.5`` (default here); the paper's Eq. 6 (supp. A.1),
    ``L = mean_{s∈S} L^s + L^final`` with S = {1}, is ``model.final_weight=1.0, model.aux_weight=1.0``.
    """

    def __init__(
        self,
        out_channels: dict[str, int],
        backbone: str = "resnet18",
        pretrained: bool = False,
        output_stride: int | None = 16,
        decoder_channels: list[int] = list(DECODER_CHANNELS),  # noqa: B006 (read only, copied)
        aspp_channels: int = 256,
        mteb_scale: int = 1,
        xtam_downscale: int | None = None,
        fusion: str = "add",
    ) -> None:
        if fusion not in FUSIONS:  # before building the encoder: fail fast
            raise unknown_name("fusion", fusion, FUSIONS)
        if xtam_downscale is not None and xtam_downscale < 1:
            raise UserError(
                f"xtam_downscale must be >= 1 (or null for the code's table), got {xtam_downscale}"
            )
        super().__init__(out_channels, backbone, pretrained, output_stride, decoder_channels, aspp_channels)
        self.block_scale = self.check_block_scale(mteb_scale, "mteb_scale")
        s = xtam_downscale if xtam_downscale is not None else XTAM_DOWNSCALE.get(mteb_scale, 1)
        if len(self.tasks) > 1:  # one task: nothing to exchange (the block stays an identity)
            self.block = MTEB(self.tasks, self.decoder_channels[mteb_scale], s, fusion)
