"""InvPT (Ye & Xu, ECCV'22): ViT encoder + UP-Transformer multi-task decoder, as the released code builds it.

Released code: github.com/prismformore/Multi-Task-Transformer, folder ``InvPT/``
(``models/transformers/invpt.py``, ``configs/*_vitLp16.yml``); docs/models.md lists where we differ.

Forward pass (p = patch size, 16 published; T tasks; stage widths c0/c1/c2 = 576/288/144 published):

1. ViT encoder (timm, ``dynamic_img_size``): four taps at stride p, blocks 6/12/18/24 of ViT-L (default:
   1/4, 2/4, 3/4 and 4/4 of the depth). Taps 1-3 are residual-stream tokens, the last one goes through the
   final LayerNorm; prefix (cls) tokens are dropped. The image is padded bottom/right to a multiple of p
   (timm's ``dynamic_img_pad``), so every size works; outputs are cropped back to the input size.
2. Scale embeddings: tap 1 -> ConvT3×3 s2 (-> c2 @ p/2), tap 2 -> Conv3×3 (-> c1 @ p); both with bias.
3. Last tap resized (bilinear) to the 2p grid; per task a preliminary decoder (2× Conv3×3-BN-ReLU,
   C -> C -> ``decoder_dim``) and an intermediate head (Conv1×1 -> K_t): deep supervision, and an input
   of ``mix_proj`` (Conv1×1 over [features, logits] -> c0), so it also runs at inference.
4. Three UP-Transformer stages at 2p, p, p/2: stages 1 and 2 start with a per-task UpEmbed (bilinear to
   the next grid, 2× dilated Conv3×3-BN-ReLU) plus the encoder skip (tap 2, then tap 1). Each stage is one
   pre-LN transformer block whose attention is joint over tasks and space: per-task depthwise Conv3×3
   stride 2 + BN makes the queries, per-task adaptive average pooling to one key grid (the stage-0 query
   grid, ⌈h/4⌉×⌈w/4⌉ for an h×w token grid: 7×9 for NYUD) makes keys and values (the released fixed
   2/4/8 kernels where they divide); q/k/v/out Linears, LayerNorms and the MLP are shared by the tasks.
   Scores are scaled by c^-1/2 (full width). From stage 1 on the previous stage's pre-softmax scores are
   resized to the new query grid and fused with the new ones by Conv1×1 (2·heads -> heads).
5. After every stage: LayerNorm over the concatenated task channels, per-task Conv1×1 -> c0 (stages 1-2),
   bilinear to the p/4 grid, summed over stages; per task Conv3×3 (bias)-BN-ReLU + Conv1×1 -> K_t,
   bilinear to the input.

Every size comes from the input (explicit ``size=`` resizes, adaptive pooling of the keys), so one set of
weights runs at any resolution; the released code is locked to its training size (its position
embeddings and token grids are derived from ``TRAIN.SCALE``, and evaluation pads every image to it).
Parameters that the released code creates but never uses are left out: the scale embedding of tap 3
(the tap is still returned by ``encode``), the stage-0 channel-reduction convs, a final LayerNorm and
the stage-0 attention-fusion conv (6.64 M for NYUD's 4 tasks, 6.97 M for PASCAL's 5).
Plain BatchNorm2d, not SyncBN; blocks after the last tap are removed from the encoder. When the input
is padded, the intermediate (deep-supervision) logits are resized to the padded image and cropped, so
that they align with the labels; otherwise they stay at stride 2p and the loss resizes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mtl3d.errors import UserError
from mtl3d.models.base import DenseModel
from mtl3d.models.blocks import TaskPrediction, conv_bn_relu, upsample_to
from mtl3d.models.registry import register_model

PRED_CHANNELS = 64  # released code's PRED_OUT_NUM_CONSTANT: stage-0 width = decoder_dim + 64
_VIT_MODULES = ("timm.models.vision_transformer", "timm.models.deit")


def default_taps(depth: int) -> list[int]:
    """Blocks at 1/4, 2/4, 3/4 and 4/4 of the depth (1-based): 24 -> [6, 12, 18, 24], 12 -> [3, 6, 9, 12]."""
    return [max(1, k * depth // 4) for k in range(1, 5)]


def create_vit(
    name: str,
    pretrained: bool,
    patch_size: int | None = None,
    img_size: Sequence[int] | None = None,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """A timm ViT that takes any input size (interpolated position embedding, padding to the patch)."""
    import difflib

    import timm
    from timm.models import model_entrypoint, split_model_name_tag
    from timm.models.vision_transformer import VisionTransformer

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models("*vit*"), n=5)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise UserError(
            f"unknown backbone {name!r}{hint} (invpt needs a timm ViT, e.g. vit_small_patch16_224)"
        )
    if model_entrypoint(split_model_name_tag(name)[0]).__module__ not in _VIT_MODULES:
        raise UserError(
            f"backbone {name!r} is not a plain ViT; invpt needs a timm vision_transformer/deit model, "
            "e.g. vit_large_patch16_384 (published), vit_small_patch16_224, vit_tiny_patch16_224"
        )
    kwargs: dict = {"drop_path_rate": drop_path_rate}
    if patch_size is not None:
        kwargs["patch_size"] = patch_size
    if img_size is not None:
        kwargs["img_size"] = tuple(img_size) if len(img_size) == 2 else int(img_size[0])
    try:
        vit = timm.create_model(
            name,
            pretrained=pretrained,
            num_classes=0,
            global_pool="",  # the final LayerNorm is `norm` (not `fc_norm`) for every ViT
            dynamic_img_size=True,
            dynamic_img_pad=True,
            **kwargs,
        )
    except (RuntimeError, TypeError, ValueError, AssertionError) as e:
        raise UserError(f"backbone {name!r} cannot be created: {e}") from None
    if not isinstance(vit, VisionTransformer):
        raise UserError(f"backbone {name!r} is not a VisionTransformer")
    return vit


class UpEmbed(nn.Module):
    """Bilinear resize to the next stage's grid, then 2× Conv3×3 (dilation 2, no bias)-BN-ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn_relu(cin, cout, dilation=2), conv_bn_relu(cout, cout, dilation=2))

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        return self.body(upsample_to(x, size))


class TaskSpaceAttention(nn.Module):
    """Attention over the tokens of all tasks together, with attention message passing (§3.1)."""

    def __init__(self, num_tasks: int, dim: int, heads: int, fuse: bool) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim**-0.5  # full width, as the released code
        self.query_conv = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(dim, dim, 3, stride=2, padding=1, groups=dim, bias=False), nn.BatchNorm2d(dim)
                )
                for _ in range(num_tasks)
            ]
        )
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        # Stage 0 receives no message: the released code's fusion conv there is never used.
        self.fuse = nn.Conv2d(2 * heads, heads, 1) if fuse else None

    def _split_heads(self, x: Tensor) -> Tensor:  # [B, L, c] -> [B, heads, L, c/heads]
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    @staticmethod
    def _resize_scores(scores: Tensor, tasks: int, src: Sequence[int], dst: Sequence[int]) -> Tensor:
        """[B, h, T·src, K] scores -> [B, h, T·dst, K], resized bilinearly along each task's query grid."""
        b, h, _, k = scores.shape
        # reshape, not view: on the CUDA path the scores come from channels-last maps, not contiguous
        x = scores.reshape(b * h * tasks, src[0], src[1], k).permute(0, 3, 1, 2)
        x = upsample_to(x, dst).permute(0, 2, 3, 1)
        return x.reshape(b, h, tasks * dst[0] * dst[1], k)

    def forward(
        self, maps: list[Tensor], kv_size: tuple[int, int], message: tuple[Tensor, tuple[int, int]] | None
    ) -> tuple[list[Tensor], tuple[Tensor, tuple[int, int]]]:
        tasks = len(maps)
        b, c = maps[0].shape[:2]
        queries = [conv(m) for conv, m in zip(self.query_conv, maps, strict=True)]
        qh, qw = queries[0].shape[-2:]
        q = torch.cat([m.flatten(2) for m in queries], 2).transpose(1, 2)
        kv = torch.cat([nn.functional.adaptive_avg_pool2d(m, kv_size).flatten(2) for m in maps], 2).transpose(
            1, 2
        )
        q, k, v = self._split_heads(self.q(q)), self._split_heads(self.k(kv)), self._split_heads(self.v(kv))
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if message is not None:
            if self.fuse is None:
                raise RuntimeError("this attention layer was built without message fusion")
            prev, prev_size = message
            prev = self._resize_scores(prev, tasks, prev_size, (qh, qw))
            scores = self.fuse(torch.cat([scores, prev], dim=1))
        out = scores.softmax(dim=-1) @ v  # [B, heads, T·Lq, d]
        out = self.proj(out.transpose(1, 2).reshape(b, tasks * qh * qw, c))
        out = out.view(b, tasks, qh, qw, c).permute(0, 1, 4, 2, 3)
        return list(out.unbind(1)), (scores, (qh, qw))


class UPTransformerBlock(nn.Module):
    """One pre-LN block: x + up(attn(LN(x))), then x + MLP(LN(x)); LNs and MLP shared by the tasks."""

    def __init__(self, num_tasks: int, dim: int, heads: int, mlp_ratio: float, fuse: bool) -> None:
        from timm.layers import Mlp

        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TaskSpaceAttention(num_tasks, dim, heads, fuse)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(
        self, feats: list[Tensor], kv_size: tuple[int, int], message: tuple[Tensor, tuple[int, int]] | None
    ) -> tuple[list[Tensor], tuple[Tensor, tuple[int, int]]]:
        b, c, h, w = feats[0].shape
        x = torch.stack(feats, 1).flatten(3).transpose(2, 3)  # [B, T, hw, c]
        y = self.norm1(x).transpose(2, 3).reshape(b, len(feats), c, h, w)
        att, message = self.attn(list(y.unbind(1)), kv_size, message)
        # Each task's output goes from the (strided) query grid back to the stage grid.
        att = torch.stack([upsample_to(a, (h, w)) for a in att], 1).flatten(3).transpose(2, 3)
        x = x + att
        x = x + self.mlp(self.norm2(x))
        return list(x.transpose(2, 3).reshape(b, len(feats), c, h, w).unbind(1)), message


@register_model("invpt")
class InvPT(DenseModel):
    """InvPT: ViT encoder + UP-Transformer decoder with joint task-space attention (Ye & Xu, ECCV'22).

    Options: ``taps`` (4 blocks, 1-based; default 1/4…4/4 of the depth), ``decoder_dim`` (preliminary
    decoder width; stage widths ``decoder_dim + 64`` halved twice unless ``widths`` gives the three),
    ``heads``, ``mlp_ratio``, ``patch_size`` (overrides timm's; pretrained patch embeddings are
    resampled by timm), ``img_size`` (the position-embedding grid timm creates: [448, 576] is the released
    NYUD model's resized grid; any input size works either way), ``drop_path_rate`` of the encoder (0.15
    published). Deep supervision (training only): ``"inter"`` = the intermediate 2p-stride predictions;
    the published loss weighs them like the final ones (``final_weight = aux_weight = 1``).
    """

    # a small ViT that trains on a CPU (published: vit_large_patch16_384, the recipes' choice)
    default_backbone = "vit_tiny_patch16_224"

    final_weight = 1.0
    aux_weight = 1.0

    def __init__(
        self,
        out_channels: dict[str, int],
        backbone: str = "vit_large_patch16_384",
        pretrained: bool = False,
        taps: list[int] | None = None,
        decoder_dim: int = 512,
        widths: list[int] | None = None,
        heads: int = 2,
        mlp_ratio: float = 4.0,
        patch_size: int | None = None,
        img_size: list[int] | None = None,
        drop_path_rate: float = 0.15,
    ) -> None:
        super().__init__()
        if patch_size is not None and patch_size < 1:
            raise UserError(f"patch_size must be a positive integer; got {patch_size}")
        if img_size is not None and (len(img_size) not in (1, 2) or min(img_size) < 1):
            raise UserError(f"img_size must be one or two positive integers; got {img_size}")
        if heads < 1 or decoder_dim < 1 or mlp_ratio <= 0:
            raise UserError(
                f"heads, decoder_dim and mlp_ratio must be positive; got {heads}, {decoder_dim}, {mlp_ratio}"
            )
        d0 = decoder_dim + PRED_CHANNELS
        widths = [d0, d0 // 2, d0 // 4] if widths is None else list(widths)
        if len(widths) != 3 or any(w < 1 or w % heads for w in widths):
            raise UserError(
                f"widths must be 3 positive multiples of heads={heads} (one per stage); got {widths}"
            )

        self.tasks = list(out_channels)
        self.main_tasks = list(self.tasks)
        self.out_channels = dict(out_channels)
        self.encoder = create_vit(backbone, pretrained, patch_size, img_size, drop_path_rate)
        depth = len(self.encoder.blocks)
        self.taps = default_taps(depth) if taps is None else list(taps)
        if (
            len(self.taps) != 4
            or sorted(set(self.taps)) != self.taps
            or not 1 <= self.taps[0] <= self.taps[-1] <= depth
        ):
            raise UserError(
                f"taps must be 4 increasing block numbers in 1..{depth} ({backbone}); got {self.taps}"
            )
        # Blocks after the last tap would get no gradient: drop them.
        self.encoder.blocks = self.encoder.blocks[: self.taps[-1]]
        self.patch = int(self.encoder.patch_embed.patch_size[0])
        dim = int(self.encoder.embed_dim)
        self.feature_channels = [dim] * 4
        self.feature_strides = [self.patch] * 4
        self.widths = widths

        c0, c1, c2 = widths
        self.embed_fine = nn.ConvTranspose2d(dim, c2, 3, stride=2, padding=1, output_padding=1)  # tap 1
        self.embed_mid = nn.Conv2d(dim, c1, 3, padding=1)  # tap 2
        self.preliminary = nn.ModuleDict(
            {
                t: TaskPrediction(
                    nn.Sequential(conv_bn_relu(dim, dim), conv_bn_relu(dim, decoder_dim)), decoder_dim, k
                )
                for t, k in out_channels.items()
            }
        )
        self.mix_proj = nn.ModuleDict({t: nn.Conv2d(decoder_dim + k, c0, 1) for t, k in out_channels.items()})
        self.up_embed = nn.ModuleList(
            [nn.ModuleDict({t: UpEmbed(widths[i - 1], widths[i]) for t in self.tasks}) for i in (1, 2)]
        )
        n = len(self.tasks)
        self.stages = nn.ModuleList(
            [UPTransformerBlock(n, w, heads, mlp_ratio, fuse=i > 0) for i, w in enumerate(widths)]
        )
        self.stage_norm = nn.ModuleList([nn.LayerNorm(n * w) for w in widths])
        self.reduce = nn.ModuleList(
            [nn.ModuleDict({t: nn.Conv2d(w, c0, 1) for t in self.tasks}) for w in (c1, c2)]
        )
        self.final = nn.ModuleDict(
            {t: TaskPrediction(conv_bn_relu(c0, c0, bias=True), c0, k) for t, k in out_channels.items()}
        )
        self._init_decoder()

    def _init_decoder(self) -> None:
        """Released code: trunc-normal (std 0.02) Linears and final Conv3×3s, zero biases."""
        for m in self.stages.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        for head in self.final.values():
            nn.init.trunc_normal_(head.body[0].weight, std=0.02)

    def encode(self, image: Tensor) -> list[Tensor]:
        """The four taps [B, C, ⌈H/p⌉, ⌈W/p⌉] (the last one normalised), prefix tokens dropped."""
        # The encoder ends at the last tap, so timm's normalised final tokens are the last tap.
        final, taps = self.encoder.forward_intermediates(image, indices=[t - 1 for t in self.taps[:3]])
        b, c, h, w = taps[0].shape
        last = final[:, self.encoder.num_prefix_tokens :].transpose(1, 2).reshape(b, c, h, w)
        return [*taps, last]

    def decode(self, features: list[Tensor], size: tuple[int, int]) -> dict:
        tap_fine, tap_mid, _, tap_last = features
        h, w = tap_last.shape[-2:]
        padded = (h * self.patch, w * self.patch)  # what every map covers (the image padded to the patch)
        grid0 = ((h + 1) // 2, (w + 1) // 2)  # decoder input at stride 2p
        kv_size = ((grid0[0] + 1) // 2, (grid0[1] + 1) // 2)  # = stage-0 query grid, shared by all stages
        out_size = (4 * h, 4 * w)  # multi-scale aggregation at stride p/4
        skips = [None, self.embed_mid(tap_mid), self.embed_fine(tap_fine)]

        x = upsample_to(tap_last, grid0)
        inter: dict[str, Tensor] = {}
        feats: dict[str, Tensor] = {}
        for t in self.tasks:
            y = self.preliminary[t](x)
            inter[t] = self.preliminary[t].classifier(y)
            feats[t] = self.mix_proj[t](torch.cat([y, inter[t]], dim=1))

        message = None
        fused: dict[str, Tensor] = {}
        for i, stage in enumerate(self.stages):
            if i > 0:
                skip = skips[i]
                feats = {t: self.up_embed[i - 1][t](f, skip.shape[-2:]) + skip for t, f in feats.items()}
            blocks, message = stage([feats[t] for t in self.tasks], kv_size, message)
            normed = self.stage_norm[i](torch.cat(blocks, dim=1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            feats = dict(zip(self.tasks, blocks, strict=True))
            for t, y in zip(self.tasks, normed.split(self.widths[i], dim=1), strict=True):
                y = upsample_to(y if i == 0 else self.reduce[i - 1][t](y), out_size)
                fused[t] = fused[t] + y if t in fused else y

        def at_input(logits: Tensor) -> Tensor:
            return upsample_to(logits, padded)[..., : size[0], : size[1]]

        out = {t: at_input(self.final[t].predict(f)) for t, f in fused.items()}
        if self.training and padded != tuple(size):
            # The 2p-stride logits cover the padded image: bring them to the input's extent (the loss
            # would otherwise stretch them over the label). Unpadded, they stay small for the loss to resize.
            inter = {t: at_input(v) for t, v in inter.items()}
        return self.with_aux(out, {"inter": inter})
