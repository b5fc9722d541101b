"""ATRC's context-pooling (CP) blocks: the four context types and the per-target fusion of their outputs.

ATRC (Bruggemann et al., "Exploring Relational Context for Multi-Task Dense Prediction", ICCV 2021;
released code github.com/brdav/atrc), as the released code runs it. Context types (q from the target's
``F_t``, k and v from the source's; 1×1 Conv-BN-ReLU projections, attention width = ``F_t`` width / 2):

- global: linearised attention ``v'_i = Σ_j (q_i·k_j) v_j / Σ_j q_i·k_j`` with softplus q, k — O(L);
- local: softmax attention over the 9×9 window around each pixel, written as 81 shifted products (no
  custom kernel; memory O(81·L), not O(L²)). ``local_border="zero_pad"`` is the released CUDA kernel:
  window positions outside the map score 0 and carry a zero value, but still take part in the
  softmax; ``"mask"`` leaves them out;
- tlabel / slabel: source features pooled into region prototypes by the spatially soft-maxed
  auxiliary predictions of the target / source task (``label_spaces.py``), then softmax attention.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d.errors import unknown_name

# Index = the released code's genotype code (0 none, 1 global, 2 local, 3 T-label, 4 S-label).
CONTEXTS = ("none", "global", "local", "tlabel", "slabel")
LOCAL_BORDERS = ("zero_pad", "mask")


def global_context_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = 1e-12) -> Tensor:
    """Linear attention with kernel φ(x)=x: q, k [B,d,L] (non-negative), v [B,m,L] -> [B,m,L]."""
    kv = torch.bmm(v, k.transpose(1, 2))  # [B,m,d]: Σ_j v_j k_jᵀ, shared by every query
    denom = torch.bmm(k.sum(dim=2, keepdim=True).transpose(1, 2), q)  # [B,1,L]: Σ_j q_i·k_j
    return torch.bmm(kv, q) / denom.clamp_min(eps)


def local_context_attention(
    q: Tensor, k: Tensor, v: Tensor, kernel: int = 9, border: str = "zero_pad"
) -> Tensor:
    """Softmax attention of every pixel over its ``kernel``×``kernel`` window. q, k [B,d,H,W], v [B,m,H,W].

    Loops over the window offsets on shifted views of the zero-padded k and v, so the largest tensor
    is the [B, kernel², H, W] score map (ATRC at 425×560: 107×140 maps, 81 offsets).
    """
    if border not in LOCAL_BORDERS:
        raise unknown_name("local_border", border, LOCAL_BORDERS)
    _, d, h, w = q.shape
    r = kernel // 2
    kp = F.pad(k, (r, r, r, r))
    vp = F.pad(v, (r, r, r, r))
    offsets = [(dy, dx) for dy in range(kernel) for dx in range(kernel)]
    scores = torch.stack([(q * kp[:, :, dy : dy + h, dx : dx + w]).sum(1) for dy, dx in offsets], 1)
    scores = scores / math.sqrt(d)
    if border == "mask":
        inside = F.pad(q.new_ones(1, 1, h, w), (r, r, r, r))
        valid = torch.stack([inside[0, 0, dy : dy + h, dx : dx + w] for dy, dx in offsets], 0)
        scores = scores.masked_fill(valid[None] == 0, float("-inf"))
    attn = scores.softmax(dim=1)
    out = torch.zeros_like(v)
    for j, (dy, dx) in enumerate(offsets):
        out = out + attn[:, j : j + 1] * vp[:, :, dy : dy + h, dx : dx + w]
    return out


def spatial_softmax(logits: Tensor) -> Tensor:
    """[B,R,H,W] auxiliary logits -> [B,R,H·W]: each region's spatial probability density."""
    return logits.flatten(2).softmax(dim=2)


def label_prototypes(prob: Tensor, feats: Tensor) -> Tensor:
    """Region prototypes ``p = Âᵀ F``: prob [B,R,L], feats [B,C,H,W] -> [B,C,R,1] (a 'map' for Conv1×1)."""
    return torch.bmm(prob, feats.flatten(2).transpose(1, 2)).transpose(1, 2).unsqueeze(-1)


def _conv_bn(cin: int, cout: int, act: nn.Module | None, affine: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, affine=affine)]
    return nn.Sequential(*layers, *([act] if act is not None else []))


class ContextBlock(nn.Module):
    """One CP block of a fixed context type (not ``none``): (target, source) features -> [B, att, H, W].

    ``last_affine=False`` switches off the affine of the value projection's BN (the search's
    candidates, released code).
    """

    def __init__(
        self,
        kind: str,
        channels: int,
        att_channels: int,
        kernel: int = 9,
        border: str = "zero_pad",
        last_affine: bool = True,
    ) -> None:
        super().__init__()
        if kind not in CONTEXTS[1:]:
            raise unknown_name("context", kind, CONTEXTS[1:])
        self.kind, self.kernel, self.border = kind, kernel, border
        # Global context needs non-negative q, k: softplus instead of the second ReLU (paper §3.2.1).
        last = nn.Softplus() if kind == "global" else nn.ReLU(inplace=True)

        def qk() -> nn.Sequential:
            return nn.Sequential(
                _conv_bn(channels, att_channels, nn.ReLU(inplace=True)),
                _conv_bn(att_channels, att_channels, last),
            )

        self.query, self.key = qk(), qk()
        self.value = _conv_bn(channels, att_channels, nn.ReLU(inplace=True), affine=last_affine)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, target: Tensor, source: Tensor, prob_t: Tensor | None, prob_s: Tensor | None) -> Tensor:
        b, _, h, w = target.shape
        q = self.query(target)
        if self.kind == "local":
            return local_context_attention(q, self.key(source), self.value(source), self.kernel, self.border)
        if self.kind == "global":
            out = global_context_attention(
                q.flatten(2), self.key(source).flatten(2), self.value(source).flatten(2)
            )
            return out.view(b, -1, h, w)
        prob = prob_t if self.kind == "tlabel" else prob_s
        if prob is None:
            raise RuntimeError(f"{self.kind} context needs the auxiliary prediction of its label task")
        protos = label_prototypes(prob, source)
        k, v = self.key(protos).flatten(2), self.value(protos).flatten(2)  # [B,d,R], [B,m,R]
        attn = (q.flatten(2).transpose(1, 2) @ k / math.sqrt(k.shape[1])).softmax(dim=-1)  # [B,L,R]
        return (attn @ v.transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)


class TargetFusion(nn.Module):
    """All CP blocks of one target task and their fusion into its refined features.

    ``blocks`` maps source task -> block (a :class:`ContextBlock` or the search's mixed block).
    concat(blocks) → Conv1×1-BN (BN γ, β zero-initialised: the CP contribution starts at 0) → concat
    with ``F_t`` → Conv1×1-BN-ReLU → Dropout2d. Without sources: Conv1×1-BN-ReLU → Dropout2d on ``F_t``.
    """

    def __init__(
        self, blocks: Mapping[str, nn.Module], channels: int, att_channels: int, dropout: float
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(dict(blocks))
        n = len(self.blocks)
        self.project: nn.Module | None = None
        if n:
            self.project = _conv_bn(att_channels * n, channels, None)
            nn.init.zeros_(self.project[1].weight)
            nn.init.zeros_(self.project[1].bias)
        self.fuse = nn.Sequential(
            _conv_bn(channels * (2 if n else 1), channels, nn.ReLU(inplace=True)),
            *([nn.Dropout2d(dropout)] if dropout > 0 else []),
        )

    def forward(self, target: str, feats: dict[str, Tensor], probs: dict[str, Tensor]) -> Tensor:
        x = feats[target]
        if self.project is not None:
            ctx = [blk(x, feats[s], probs.get(target), probs.get(s)) for s, blk in self.blocks.items()]
            x = torch.cat([x, self.project(torch.cat(ctx, dim=1))], dim=1)
        return self.fuse(x)
