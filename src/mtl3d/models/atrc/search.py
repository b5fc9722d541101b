"""ATRC's architecture search (Bruggemann et al., ICCV'21; github.com/brdav/atrc, ``search_pl_model.py``).

Every CP block of the supergraph is a :class:`MixedContext`: all candidates (none, global, local,
T-label and, off the diagonal, S-label) weighted by a Gumbel-softmax sample of its architecture
logits α (SNAS-style relaxation, single-level: α and the weights are updated from the same backward,
α by Adam lr 5e-4 without weight decay). The temperature λ falls linearly 1.0 → 0.05 and the entropy
weight ω_H rises linearly −0.02 → 0.06 over the run (negative for the first quarter: exploration,
then a push towards one-hot); the loss adds ω_H · mean_j H(softmax(α_j)). A block whose top-two
softmax(α) differ by ≥ 0.3 is fixed to its argmax for the rest of the search (irreversible). The
genotype is the argmax (or fixed choice) of every block; several searches are combined by a
majority vote per block.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d.errors import UserError
from mtl3d.io import atomic_write_text, check_out_file
from mtl3d.models.atrc.contexts import CONTEXTS, ContextBlock
from mtl3d.models.atrc.genotype import Genotype, genotype_json, load_genotype, parse_genotype
from mtl3d.models.base import TrainingHooks

if TYPE_CHECKING:
    from mtl3d.config import TrainConfig

# The search recipe of the released code (the model's defaults): λ 1.0 → 0.05, ω_H −0.02 → 0.06, fix
# at a 0.3 margin, Adam lr 5e-4 for α.
TEMPERATURE = (1.0, 0.05)
ENTROPY_WEIGHT = (-0.02, 0.06)
FIX_MARGIN = 0.3
ARCH_LR = 5e-4


def linear_schedule(start: float, end: float, step: int, total: int) -> float:
    """``start`` at step 0, ``end`` at step ``total`` (released code's Gumbel / entropy schedulers)."""
    return start + (end - start) * min(max(step, 0), total) / max(total, 1)


def _settled(alpha: Tensor, margin: float) -> Tensor:
    top = alpha.softmax(-1).topk(2).values
    return top[0] - top[1] >= margin


def should_fix(alpha: Tensor, margin: float = FIX_MARGIN) -> bool:
    """Early-fixing rule: the two largest softmax(α) probabilities differ by at least ``margin``."""
    return bool(_settled(alpha, margin))


def fix_settled(blks: list[MixedContext]) -> None:
    """Fix every still-searched block whose α passes the early-fixing rule (before a training forward).

    One read from the device for all blocks together, not one per block and forward.
    """
    open_ = [b for b in blks if b.fixed_index() < 0]
    if not open_:
        return
    with torch.no_grad():
        rows = [torch.stack((_settled(b.alpha, b.margin).long(), b.alpha.argmax())) for b in open_]
        decisions = torch.stack(rows).tolist()
    for blk, (settled, best) in zip(open_, decisions, strict=True):
        if settled:
            blk.fix(best)


def entropy(alpha: Tensor) -> Tensor:
    return -(alpha.softmax(-1) * alpha.log_softmax(-1)).sum()


class MixedContext(nn.Module):
    """A searchable CP block: candidates ``none, global, local, tlabel[, slabel]`` mixed by Gumbel-softmax.

    ``temperature`` and ``margin`` are set by the model each step; ``fixed`` (a buffer, so checkpoints
    keep it) is −1 while the block is still searched, else the index of the chosen candidate.
    """

    def __init__(self, diagonal: bool, channels: int, att_channels: int, kernel: int, border: str) -> None:
        super().__init__()
        # On the diagonal (source = target) S-label equals T-label: 4 candidates (released code).
        self.candidates = list(CONTEXTS[:4] if diagonal else CONTEXTS)
        self.ops = nn.ModuleDict(
            {
                k: ContextBlock(k, channels, att_channels, kernel, border, last_affine=False)
                for k in self.candidates[1:]
            }
        )
        self.alpha = nn.Parameter(torch.zeros(len(self.candidates)))
        self.register_buffer("fixed", torch.tensor(-1))
        # ``fixed`` as a Python int, so that the forward never reads the device; None: read it again
        # (after a checkpoint was loaded into the buffer)
        self._fixed: int | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_fixed", None))
        self.temperature = TEMPERATURE[0]
        self.margin = FIX_MARGIN

    def fixed_index(self) -> int:
        if self._fixed is None:
            self._fixed = int(self.fixed)
        return self._fixed

    def fix(self, index: int) -> None:
        self.fixed.fill_(index)
        self._fixed = int(index)

    def choice(self) -> str:
        i = self.fixed_index()
        return self.candidates[i if i >= 0 else int(self.alpha.argmax())]

    def _chosen(self) -> int | None:
        """The one candidate the block computes (fixed, or argmax in eval), or None while it is searched."""
        if self.fixed_index() >= 0 or not self.training:
            return self.candidates.index(self.choice())
        return None

    def weights(self) -> Tensor:
        chosen = self._chosen()
        if chosen is not None:
            w = torch.zeros_like(self.alpha)  # made on the device: no host tensor to copy over every forward
            w[chosen] = 1.0
            return w
        return F.gumbel_softmax(self.alpha, tau=self.temperature, hard=False)

    def forward(self, target: Tensor, source: Tensor, prob_t: Tensor | None, prob_s: Tensor | None) -> Tensor:
        chosen = self._chosen()
        w = self.weights()
        out = None
        # "none" contributes nothing, but its weight still takes part in the softmax (and gets a gradient).
        for i, name in enumerate(self.candidates[1:], start=1):
            if chosen is not None and i != chosen:
                continue  # a one-hot choice: skip the candidates it zeroes (same output, less work)
            y = w[i] * self.ops[name](target, source, prob_t, prob_s)
            out = y if out is None else out + y
        if out is None:  # "none" chosen: a zero map of the block's output shape
            b, _, h, wd = target.shape
            out = target.new_zeros(b, self.ops["global"].value[0].out_channels, h, wd)
        return out


class SearchHooks(TrainingHooks):
    """What a search adds to the training loop: α by its own Adam (no weight decay, no schedule), and
    before each step the Gumbel temperature and entropy weight of the step and the early fixing.

    DDP must look for parameters without a gradient: a block fixed early skips its other candidates.
    """

    find_unused_parameters = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.blocks = [blk for _, _, blk in blocks(model)]
        self.parameters = [blk.alpha for blk in self.blocks]
        # the checkpoint key of this optimiser since searches were first checkpointed
        self.optimizers = {
            "arch_optimizer": torch.optim.Adam(self.parameters, lr=model.arch_lr, weight_decay=0.0)
        }

    def before_step(self, step: int, total: int) -> None:
        """Set this step's Gumbel temperature and entropy weight (linear schedules over the run) and, in
        training mode, fix the blocks that have settled."""
        model = self.model
        tau = linear_schedule(*model.search_temperature, step, total)
        model.entropy_weight = linear_schedule(*model.search_entropy_weight, step, total)
        for blk in self.blocks:
            blk.temperature, blk.margin = tau, model.search_fix_margin
        if model.training:
            fix_settled(self.blocks)


def blocks(model: nn.Module) -> list[tuple[str, str, MixedContext]]:
    """Every (target, source, block) of a search model."""
    return [
        (t, s, blk)
        for t, fusion in model.fusion.items()
        for s, blk in fusion.blocks.items()
        if isinstance(blk, MixedContext)
    ]


def block_probabilities(model: nn.Module) -> dict[str, dict[str, dict[str, float]]]:
    """softmax(α) of every block, for the genotype file (how sure the search was)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for t, s, blk in blocks(model):
        p = blk.alpha.detach().softmax(-1).tolist()
        out.setdefault(t, {})[s] = {c: round(v, 4) for c, v in zip(blk.candidates, p, strict=True)}
    return out


def write_genotype(model: nn.Module, path: str | Path, **extra: object) -> Path:
    """The search model's genotype (with its α probabilities and which blocks were fixed early) as JSON."""
    path = Path(path)
    fixed = {f"{t}<-{s}": blk.choice() for t, s, blk in blocks(model) if blk.fixed_index() >= 0}
    text = genotype_json(
        model.current_genotype(), probabilities=block_probabilities(model), fixed_early=fixed, **extra
    )
    atomic_write_text(path, text + "\n")
    return path


def vote(genotypes: Sequence[Genotype]) -> tuple[Genotype, dict[str, float]]:
    """Majority vote per block over several searches; ties go to the earlier search's choice.

    Returns the voted genotype and agreement statistics (mean pairwise agreement, as ATRC App. F).
    """
    if not genotypes:
        raise UserError("vote needs at least one genotype")
    tasks = list(genotypes[0])
    out: Genotype = {}
    for t in tasks:
        out[t] = {}
        for s in tasks:
            picks = [g[t][s] for g in genotypes]
            counts = Counter(picks)
            best = max(counts.values())
            out[t][s] = next(p for p in picks if counts[p] == best)
    pairs = [(i, j) for i in range(len(genotypes)) for j in range(i + 1, len(genotypes))]
    agree = [
        sum(genotypes[i][t][s] == genotypes[j][t][s] for t in tasks for s in tasks) / len(tasks) ** 2
        for i, j in pairs
    ]
    return out, {"searches": len(genotypes), "pairwise_agreement": sum(agree) / len(agree) if agree else 1.0}


def _expand(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; a folder stands for the ``seed*/genotype.json`` of the searches in it, by seed."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [f for f in p.glob("seed*/genotype.json") if f.parent.name[4:].isdigit()]
            if not found:
                raise UserError(f"{p} holds no finished search (no seed*/genotype.json)")
            out += sorted(found, key=lambda f: int(f.parent.name[4:]))
        else:
            out.append(p)
    return out


def vote_files(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Read searched genotype files (or folders of searches), vote, write the result with its sources."""
    paths = _expand(paths)
    if not paths:
        raise UserError("vote needs at least one genotype file")
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"genotype {p} is neither a file nor a known name (a search's genotype.json)")
    out = Path(out)
    check_out_file(out)
    genos = []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise UserError(f"{p}: not an ATRC genotype (a JSON {type(data).__name__}, not an object)")
        genos.append(parse_genotype(data, str(p)))
    for p, g in zip(paths[1:], genos[1:], strict=True):
        if set(g) != set(genos[0]):
            raise UserError(
                f"{p} and {paths[0]} are searches over different tasks ({', '.join(g)} vs "
                f"{', '.join(genos[0])}); vote over searches of one task set"
            )
    tasks = list(genos[0])
    genos = [load_genotype(str(p), tasks) for p in paths]
    voted, stats = vote(genos)
    atomic_write_text(out, genotype_json(voted, sources=[str(p) for p in paths], **stats) + "\n")
    return out


def search_config(cfg: TrainConfig) -> str | None:
    """Turn an ATRC training config into its search's, in place: the supergraph (``search: true``), no
    genotype (an ATRC recipe names one for retraining; the search finds its own), and no regularizer
    (a ``UserError``: it is added when the genotype is retrained). Returns a note for the user when the
    config named a genotype."""
    if cfg.regularizer.enabled:
        raise UserError(
            "the search runs without the 3D-aware regularizer; add it when retraining the genotype"
        )
    note = None
    if cfg.model.genotype is not None or "genotype" in cfg.model.options:
        note = f"search: not using the config's genotype ({cfg.model.genotype}); searching one"
        cfg.model.genotype = None
        cfg.model.options = {k: v for k, v in cfg.model.options.items() if k != "genotype"}
    cfg.model.options = {**cfg.model.options, "search": True}
    return note
