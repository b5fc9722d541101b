"""ATRC: adaptive task-relational context (Bruggemann et al., ICCV'21), as the released code runs it.

Backbone levels resized to the finest one and concatenated (HRNet-18-small:
270 channels) → per task ``F_t`` = Conv3×3-BN-ReLU to in/4 channels; auxiliary label-space heads read
the *detached* concatenation (no gradient into the network) → an N×N grid of context-pooling (CP)
blocks, row = target, column = source, each one of ``none | global | local | tlabel | slabel`` (the
genotype) → per target: concat of its CP outputs → Conv1×1-BN with **zero-initialised** BN (the module
starts as the multi-task baseline) → concat with ``F_t`` → Conv1×1-BN-ReLU → Dropout2d → Conv1×1 logits →
bilinear to the input size. ``fpm=True`` is ATRC+FPM: MTI-Net's feature propagation over the levels
first, and ``F_t`` reads the task's own propagated features (the paper gives no code for it; our
reading, docs/models.md).

Context types (q from the target's ``F_t``, k and v from the source's; 1×1 Conv-BN-ReLU projections,
attention width = ``F_t`` width / 2):
- global: linearised attention ``v'_i = Σ_j (q_i·k_j) v_j / Σ_j q_i·k_j`` with softplus q, k — O(L);
- local: softmax attention over the 9×9 window around each pixel, written as 81 shifted products (no
  custom kernel; memory O(81·L), not O(L²)). ``local_border="zero_pad"`` is the released CUDA kernel:
  window positions outside the map score 0 and carry a zero value, but still take part in the
  softmax; ``"mask"`` leaves them out;
- tlabel / slabel: source features pooled into region prototypes by the spatially soft-maxed
  auxiliary predictions of the target / source task (``label_spaces.py``), then softmax attention.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d.errors import UserError, unknown_name
from mtl3d.models.base import DenseModel, TrainingHooks
from mtl3d.models.blocks import LevelAdapter, conv_bn_relu, fuse_scales, upsample_to
from mtl3d.models.label_spaces import LabelSpace, label_space_for, sample_normals
from mtl3d.models.mtinet import TaskPropagation
from mtl3d.models.registry import register_model

# Index = the released code's genotype code (0 none, 1 global, 2 local, 3 T-label, 4 S-label).
CONTEXTS = ("none", "global", "local", "tlabel", "slabel")
LOCAL_BORDERS = ("zero_pad", "mask")
PUBLISHED_GENOTYPES = ("nyud_hrnet18", "nyud_hrnet48", "pascal_hrnet18")
# Without a genotype, ATRC takes the first of these published ones that covers its tasks (NYUD's tasks,
# which SynthRooms shares, or PASCAL's), so `mtl3d train --model atrc` needs no search first.
DEFAULT_GENOTYPES = ("nyud_hrnet18", "pascal_hrnet18")
GENOTYPE_FORMAT = "mtl3d-atrc-genotype/1"
LABEL_AUX = "label"  # name of the auxiliary (label-space) outputs in the deep-supervision dict
# The released code's task names -> ours.
_CODE_TASK_NAMES = {"edge": "edges", "sal": "saliency"}

Genotype = dict[str, dict[str, str]]  # target -> source -> context


# ----------------------------------------------------------------------------------------- context ops


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


# -------------------------------------------------------------------------------------------- genotypes


def _genotype_dir() -> Any:
    return resources.files("mtl3d.models") / "genotypes"


def uniform_genotype(tasks: list[str], kind: str) -> Genotype:
    """Every CP block of one type (ATRC Table 1's single-context rows); S-label on the diagonal is T-label."""
    if kind not in CONTEXTS:
        raise unknown_name("context", kind, CONTEXTS)
    return {t: {s: ("tlabel" if kind == "slabel" and s == t else kind) for s in tasks} for t in tasks}


def parse_genotype(data: Mapping[str, Any], where: str) -> Genotype:
    """Our JSON format (context names) or the released code's (``{"data": {t: {s: code}}}``)."""
    grid = data.get("genotype", data.get("data"))
    if not isinstance(grid, Mapping):
        raise UserError(f"{where}: not an ATRC genotype (no 'genotype' mapping)")
    out: Genotype = {}
    for t, row in grid.items():
        if not isinstance(row, Mapping):
            raise UserError(f"{where}: row {t!r} is not a mapping")
        tt = _CODE_TASK_NAMES.get(t, t)
        out[tt] = {}
        for s, c in row.items():
            name = CONTEXTS[c] if isinstance(c, int) and 0 <= c < len(CONTEXTS) else c
            if name not in CONTEXTS:
                raise UserError(f"{where}: {t}<-{s} is {c!r}; valid: {', '.join(CONTEXTS)} (or codes 0-4)")
            out[tt][_CODE_TASK_NAMES.get(s, s)] = name
    return out


def load_genotype(spec: str, tasks: list[str]) -> Genotype:
    """A genotype by file path, shipped name (``nyud_hrnet18``, …) or uniform context (``tlabel``, …),
    restricted to ``tasks``."""
    if spec in CONTEXTS:
        return uniform_genotype(tasks, spec)
    if spec in PUBLISHED_GENOTYPES:
        where = f"published genotype {spec}"
        data = json.loads((_genotype_dir() / f"atrc_{spec}.json").read_text())
    else:
        path = Path(spec)
        where = str(path)
        if not path.is_file():
            raise UserError(
                f"genotype {spec!r} is neither a file nor a known name; valid names: "
                f"{', '.join(PUBLISHED_GENOTYPES + CONTEXTS)} (or the genotype.json of `mtl3d search atrc`)"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
    grid = parse_genotype(data, where)
    missing = [(t, s) for t in tasks for s in tasks if s not in grid.get(t, {})]
    if missing:
        t, s = missing[0]
        raise UserError(f"{where} has no block {t}<-{s}; it covers tasks {', '.join(grid)}")
    return {t: {s: grid[t][s] for s in tasks} for t in tasks}


def default_genotype(tasks: list[str]) -> Genotype:
    """The first of :data:`DEFAULT_GENOTYPES` that covers ``tasks``; none covering them is an error."""
    for name in DEFAULT_GENOTYPES:
        with contextlib.suppress(UserError):
            return load_genotype(name, tasks)
    raise UserError(
        f"atrc needs a genotype for tasks {', '.join(tasks)} (no published one covers them): "
        "--set model.genotype=FILE (from `mtl3d search atrc`) or one of "
        f"{', '.join(PUBLISHED_GENOTYPES + CONTEXTS)}"
    )


def genotype_json(genotype: Genotype, **extra: Any) -> str:
    return json.dumps(
        {"format": GENOTYPE_FORMAT, "tasks": list(genotype), "genotype": genotype, **extra}, indent=2
    )


# ------------------------------------------------------------------------------------------------ model


@register_model("atrc")
class ATRC(DenseModel):
    """ATRC: per-pair context pooling (global/local/T-label/S-label/none) chosen by architecture search.

    ``genotype`` (or ``model.genotype`` in a config): the genotype.json of ``mtl3d search atrc``, a
    shipped published genotype (``nyud_hrnet18``, ``nyud_hrnet48``, ``pascal_hrnet18``) or one context
    everywhere (``global``, ``local``, ``tlabel``, ``slabel``, ``none``). Deep supervision: the label-space
    auxiliary heads (``"label"``, cross-entropy in each task's label space, released code) and, with
    ``fpm``, MTI-Net's initial predictions per scale.
    """

    # the HRNet family of the published genotypes, at its CPU-friendly size (published: W18/W48)
    default_backbone = "hrnet_w18_small_v2"

    final_weight = 1.0
    aux_weight = 1.0

    def __init__(
        self,
        out_channels: dict[str, int],
        backbone: str = "resnet18",
        pretrained: bool = False,
        genotype: str | None = None,
        head_channels: int | None = None,
        widths: list[int] | None = None,
        fpm: bool = False,
        fpm_softmax: str = "channel_groups",
        local_kernel: int = 9,
        local_border: str = "zero_pad",
        dropout: float = 0.05,
        depth_bins: int = 40,
        depth_range: list[float] | None = None,
        normal_codewords: int = 40,
        normal_coding: str = "nearest",
        mask_padding: bool = True,
        search: bool = False,
        search_temperature: list[float] | None = None,
        search_entropy_weight: list[float] | None = None,
        search_fix_margin: float = 0.3,
        arch_lr: float = 5e-4,
    ) -> None:
        super().__init__()
        self.init_host(out_channels, backbone, pretrained)
        # Released code: padded pixels leave the label heads' spatial softmax (logits -> -inf there), so
        # T-/S-label prototypes pool image pixels only. False: they stay in (the paper says nothing).
        self.mask_padding = mask_padding
        if local_border not in LOCAL_BORDERS:
            raise unknown_name("local_border", local_border, LOCAL_BORDERS)
        self.adapter = LevelAdapter(self.feature_channels, widths)
        levels = self.adapter.out_channels
        fused = sum(levels)
        ch = head_channels or fused // 4  # released code: F_t has in/4 channels, attention F_t/2
        att = max(1, ch // 2)
        self.channels, self.att_channels = ch, att
        self.search = search
        # The search recipe (released code): λ 1.0 → 0.05, ω_H −0.02 → 0.06, fix at a 0.3 margin, Adam 5e-4.
        self.search_temperature = list(search_temperature or [1.0, 0.05])
        self.search_entropy_weight = list(search_entropy_weight or [-0.02, 0.06])
        self.search_fix_margin = search_fix_margin
        self.arch_lr = arch_lr
        self.entropy_weight = self.search_entropy_weight[0]  # this step's ω_H (SearchHooks.before_step)
        if search:
            if genotype is not None:
                raise UserError("an ATRC search model takes no genotype (it finds one)")
            self.genotype: Genotype = {}
        elif genotype is None:
            self.genotype = default_genotype(self.tasks)
        else:
            self.genotype = load_genotype(genotype, self.tasks)

        self.propagation: TaskPropagation | None = None
        if fpm:
            self.propagation = TaskPropagation(self.tasks, self.out_channels, levels, fpm_softmax)
        self.task_features = nn.ModuleDict({t: conv_bn_relu(fused, ch, 3) for t in self.tasks})

        if search:
            from mtl3d.models.atrc_search import MixedContext

            rows = {
                t: {s: MixedContext(t == s, ch, att, local_kernel, local_border) for s in self.tasks}
                for t in self.tasks
            }
            self.label_tasks = list(self.tasks)
            drop = 0.0  # the search supergraph has no dropout (released code)
        else:
            rows = {
                t: {
                    s: ContextBlock(kind, ch, att, local_kernel, local_border)
                    for s, kind in self.genotype[t].items()
                    if kind != "none"
                }
                for t in self.tasks
            }
            # Auxiliary heads only where a label context reads them (released code).
            self.label_tasks = [
                t
                for t in self.tasks
                if any(self.genotype[t][s] == "tlabel" for s in self.tasks)
                or any(self.genotype[u][t] == "slabel" for u in self.tasks)
            ]
            drop = dropout
        self.fusion = nn.ModuleDict({t: TargetFusion(rows[t], ch, att, drop) for t in self.tasks})

        lo, hi = depth_range or [0.7, 10.0]
        self.label_spaces = nn.ModuleDict(
            {
                t: label_space_for(
                    t,
                    out_channels[t],
                    depth_bins=depth_bins,
                    depth_range=(lo, hi),
                    normal_codewords=normal_codewords,
                    normal_coding=normal_coding,
                )
                for t in self.label_tasks
            }
        )
        self.label_heads = nn.ModuleDict(
            {
                t: nn.Sequential(
                    _conv_bn(fused, fused, nn.ReLU(inplace=True)),
                    nn.Conv2d(fused, self.label_spaces[t].channels, 1),
                )
                for t in self.label_tasks
            }
        )
        self.classifiers = nn.ModuleDict({t: nn.Conv2d(ch, k, 1) for t, k in out_channels.items()})
        for m in [*self.classifiers.values(), *(h[-1] for h in self.label_heads.values())]:
            nn.init.normal_(m.weight, std=0.01)  # released code: logits layers N(0, 0.01²)
            nn.init.zeros_(m.bias)

    # -- decode ---------------------------------------------------------------------------------------
    reads_valid_mask = True

    def decode(
        self, features: list[Tensor], size: tuple[int, int], valid: Tensor | None = None
    ) -> dict[str, Any]:
        x = self.adapter(features)
        shared = fuse_scales(x)
        aux: dict[str, dict[str, Tensor]] = {}
        if self.propagation is not None:
            levels, initial = self.propagation(x)
            if self.training:
                aux.update(initial)
            finest = levels[0][self.tasks[0]].shape[-2:]
            feats = {
                t: self.task_features[t](torch.cat([upsample_to(lv[t], finest) for lv in levels], dim=1))
                for t in self.tasks
            }
        else:
            feats = {t: self.task_features[t](shared) for t in self.tasks}
        # The label heads learn from their own loss only: their input is detached (released code).
        label_logits = {t: self.label_heads[t](shared.detach()) for t in self.label_tasks}
        keep = None
        if self.mask_padding and valid is not None and label_logits:
            grid = next(iter(label_logits.values())).shape[-2:]
            keep = F.interpolate(valid.float(), size=grid, mode="nearest") > 0.5
            keep = keep | ~keep.flatten(1).any(dim=1)[:, None, None, None]  # no pixel left: keep all
        probs = {
            t: spatial_softmax(v if keep is None else v.masked_fill(~keep, -math.inf))
            for t, v in label_logits.items()
        }
        out = {
            t: upsample_to(self.classifiers[t](self.fusion[t](t, feats, probs)), size)
            for t in self.main_tasks
        }
        if self.training and label_logits:
            aux[LABEL_AUX] = label_logits
        return self.with_aux(out, aux)

    # -- hooks the trainer calls ----------------------------------------------------------------------
    def aux_loss(
        self, name: str, task: str, pred: Tensor, target: Tensor, edge_pos_weight: float
    ) -> Tensor | None:
        """Label-space cross-entropy for the label heads; ``None`` (the task's own loss) otherwise."""
        if name != LABEL_AUX:
            return None
        space: LabelSpace = self.label_spaces[task]
        if task == "edges":  # the run's edge weight, as the released code's aux edge loss
            space = label_space_for(task, self.out_channels[task], edge_pos_weight=edge_pos_weight)
        return space.loss(pred, target)

    def fit_to_data(
        self, dataset: Any, max_images: int = 64, max_points: int = 50_000, seed: int = 0
    ) -> None:
        """Fit the normals codebook (k-means, released code: on the training normals) before training."""
        if "normals" not in self.label_spaces:  # (ModuleDict has no .get)
            return
        space = self.label_spaces["normals"]
        n = min(len(dataset), max_images)
        idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
        normals = sample_normals((dataset[i]["normals"] for i in idx), max_points, seed)
        space.fit(normals, seed=seed)

    def current_genotype(self) -> Genotype:
        """The fixed genotype, or for a search model the argmax (or early-fixed) choice of every block."""
        if not self.search:
            return {t: dict(row) for t, row in self.genotype.items()}
        return {t: {s: blk.choice() for s, blk in self.fusion[t].blocks.items()} for t in self.tasks}

    # -- the search's additions to training (nothing unless ``search``) ------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits α of every searched block (none unless ``search``)."""
        from mtl3d.models.atrc_search import blocks

        return [blk.alpha for _, _, blk in blocks(self)]

    def training_hooks(self) -> TrainingHooks:
        """For a search: α's own optimiser, the per-step schedules and early fixing (``SearchHooks``)."""
        if not self.search:
            return super().training_hooks()
        from mtl3d.models.atrc_search import SearchHooks

        return SearchHooks(self)

    def extra_losses(self) -> dict[str, Tensor]:
        """The search's entropy regulariser ω_H · mean_j H(softmax α_j) (weighted: it joins the total)."""
        if not self.search:
            return {}
        from mtl3d.models.atrc_search import blocks, entropy

        h = torch.stack([entropy(blk.alpha) for _, _, blk in blocks(self)]).mean()
        return {"search/entropy": self.entropy_weight * h}
