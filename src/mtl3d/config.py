"""One typed config for a run: dataclasses, loaded from YAML, merged with CLI overrides, validated.

Unknown keys and wrongly typed values fail with a one-line ``UserError`` naming the key, so a typo in
a YAML file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtl3d.errors import UserError
from mtl3d.io import atomic_write_text
from mtl3d.typecheck import from_annotated_dict


@dataclass
class DataConfig:
    dataset: str = "synthrooms"
    root: str = "data/processed/synthrooms"
    height: int | None = None  # None: the dataset's native size
    width: int | None = None
    train_split: str = "train"
    eval_split: str = "val"
    hflip: bool = True  # training augmentation (K and normals follow)
    # data-loader worker processes; None: none on a CPU, on CUDA one per free core (at most 8)
    num_workers: int | None = None
    # Fraction of the training split used (the paper's 25/50/100 % ablation): a seeded subset of the ids
    # that depends only on the split, so every seed and model of a study sees the same images.
    train_fraction: float = 1.0
    # How images reach the network input size (height x width; docs/datasets.md, 'Training at the
    # published resolutions'):
    #   resize: the MTL survey's FixedResize to height x width (aspect ratio not preserved);
    #   pad: ATRC/InvPT, training = random scale -> random crop -> flip -> pad to height x width,
    #        evaluation = centred pad only (never resized; height/width must fit the largest image).
    resize_mode: str = "resize"
    # pad mode training: uniform scale range of the random scaling; None -> [0.5, 2.0] (ATRC/InvPT)
    scale_range: list[float] | None = None
    # pad mode training: divide depth by the scale factor, as the published code does (depth /= scale);
    # false keeps metric depth (K is rescaled either way, see mtl3d.data.transforms.scale)
    depth_scale_aug: bool = True
    # Resolution at which evaluation scores predictions:
    #   original: each image's original size, against the untransformed labels (the published protocol:
    #             MTL resizes predictions back, InvPT crops its padding away), comparable across input sizes;
    #   input: the network input size against the transformed labels (cheap online-style checks, and
    #          runs scored at input size stay reproducible).
    eval_resolution: str = "original"


@dataclass
class ModelConfig:
    name: str = "mtl"
    backbone: str | None = None  # None: the model's default (`mtl3d models` lists them)
    pretrained: bool = False
    head_channels: int | None = None  # None: the model's default width (mtl/stl: 64)
    # Model-specific options = the constructor's keyword arguments (`mtl3d models --options NAME`),
    # checked against its signature and type hints.
    options: dict[str, Any] = field(default_factory=dict)
    # A searched architecture (ATRC): the genotype.json of `mtl3d search atrc`, or a shipped name.
    genotype: str | None = None
    # Loss weights of the final and of the auxiliary (deep-supervision) outputs; None: the model's
    # published recipe (docs/models.md).
    final_weight: float | None = None
    aux_weight: float | None = None


@dataclass
class OptimConfig:
    name: str = "adam"  # adam | sgd
    lr: float = 1e-3  # heads, decoders and the regularizer branch
    backbone_lr: float | None = None  # the encoder's parameter group; None: same as lr
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam
    schedule: str = "poly"  # poly | step | constant
    schedule_unit: str = "iter"  # iter | epoch: when the schedule advances (the survey steps per epoch)
    poly_power: float = 0.9  # poly: (1 - t/T)^power, to 0 at the end
    milestones: list[int] = field(default_factory=list)  # step: iterations (or epochs) where lr *= gamma
    gamma: float = 0.1
    grad_clip: float | None = 10.0


@dataclass
class RegularizerConfig:
    """The 3D-aware regularizer (training-only branch). See docs/regularizer.md for every default."""

    enabled: bool = False
    feat_source: str = "fused"  # fused: all encoder scales resized to the plane res, concatenated | last
    plane_ch: int = 32
    plane_res: list[int] | None = None  # [H, W] of the planes; None = render resolution
    plane_agg: str = "prod"  # prod | sum | concat
    plane_hidden: int = 32  # width of the plane encoder's Conv3x3 (chosen for cost, docs/regularizer.md)
    hidden: int = 32  # hidden width of the density MLP and of each task MLP
    feat_dim: int = 64
    camera: str = "pinhole"  # pinhole (uses the dataset's K) | ortho (rays parallel to z)
    near: float | None = None  # None: the dataset's default
    far: float | None = None
    n_samples: int = 16  # samples per ray (16: cost on CPU; paper-scale GPU runs: 64)
    spacing: str = "linear"  # linear | inverse
    stratified: bool = True  # jitter samples during training
    render_stride: int = 8  # render resolution = input resolution / stride
    alpha: float = 1.0  # weight of every rendered-task loss (on top of the task weight)
    task_alpha: dict[str, float] = field(default_factory=dict)  # per-task override
    depth_supervision: float = 0.0  # weight of expected-termination depth loss (0 = off)
    cross_view: bool = False
    cross_view_tasks: list[str] = field(default_factory=lambda: ["depth"])
    cross_view_alpha: float = 1.0
    chunk_rays: int = 16384
    # Tasks the branch renders and supervises (the paper's render-one-task ablation); None: every task.
    render_tasks: list[str] | None = None
    # render: the 3D-aware regularizer. flat: its capacity control (the paper's auxiliary-heads
    # control): the same modules and losses, but every pixel reads the tri-plane once at mid-depth with
    # opacity 1, so there is no volume rendering, no depth along rays, no 3D (docs/regularizer.md).
    mode: str = "render"


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: list[str] = field(default_factory=lambda: ["semseg", "depth", "normals", "edges"])
    task_weights: dict[str, float] = field(default_factory=dict)  # missing task -> 1.0
    losses: dict[str, str] = field(default_factory=dict)  # task -> loss name override
    edge_pos_weight: float = 0.95
    optim: OptimConfig = field(default_factory=OptimConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    iters: int = 1000
    batch_size: int = 8  # per process and per micro-batch
    # Micro-batches of batch_size accumulated per optimizer step (global batch = batch_size·grad_accum·world).
    grad_accum: int = 1
    sync_bn: bool = False  # BatchNorm -> SyncBatchNorm under torchrun (no-op in one process)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    # torch.compile the host network (and the regularizer branch) in place: same state_dict keys, so
    # checkpoints load either way. First steps are slower (compilation); CPU needs a C++ compiler.
    compile: bool = False
    log_every: int = 10
    ckpt_every: int = 100
    # Periodic validation (learning curves, mtl3d.engine.validation): every eval_every steps (0: never)
    # on eval_images images of data.eval_split spread evenly over it (0: all), at the input size; the
    # boundary metric (odsF, slow) only with eval_edges. Logged as val/... columns of train_log.csv.
    eval_every: int = 0
    eval_images: int = 64
    eval_edges: bool = False
    eval_batch_size: int = 8
    n_saved_predictions: int = 4


def from_dict(data: dict[str, Any]) -> TrainConfig:
    cfg = from_annotated_dict(TrainConfig, data)
    validate(cfg)
    return cfg


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def set_nested(d: dict[str, Any], dotted: str, value: Any) -> None:
    """``d[a][b][c] = value`` for ``dotted`` = ``a.b.c``; a mapping merges into what is already there
    (``--regularizer --set regularizer={cross_view: true}`` keeps the regularizer on), as overrides merge
    into the config file."""
    keys = dotted.split(".")
    if not all(keys):
        raise UserError(f"empty key in {dotted!r}")
    for i, k in enumerate(keys[:-1]):
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise UserError(f"{'.'.join(keys[: i + 1])} is not a mapping ({d!r})")
    old = d.get(keys[-1])
    d[keys[-1]] = deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value


def apply_sets(over: dict[str, Any], values: list[str]) -> dict[str, Any]:
    """``over`` with every ``--set KEY=VALUE`` applied in order (VALUE is YAML). One value may hold
    several overrides separated by ``;`` (a study file's dataset or variant has a single ``set`` key)."""
    items = [part.strip() for value in values for part in str(value).split(";") if part.strip()]
    for item in items:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            set_nested(over, k.strip(), yaml.safe_load(v))
        except yaml.YAMLError as e:
            why = getattr(e, "problem", None) or "bad YAML"
            raise UserError(f"--set {item!r}: the value is not valid YAML ({why})") from None
        except UserError as e:
            raise UserError(f"--set {item!r}: {e}") from None
    return over


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML mapping; a missing file, bad YAML or a non-mapping is a one-line ``UserError``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {p} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{what} {p} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{what} {p} must hold a mapping at the top level")
    return data


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults ← YAML file ← overrides (nested dicts), then validated."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
    if overrides:
        data = deep_merge(data, overrides)
    return from_dict(data)


# The allowed range of every numeric config key (a list's items and a mapping's values each): checked
# before a run writes anything, so a bad value never crashes a run half-way.
RANGES: dict[str, str] = {
    "data.height": ">= 1",
    "data.width": ">= 1",
    "data.num_workers": ">= 0",
    "data.train_fraction": "in (0, 1]",
    "data.scale_range": "> 0",
    "model.head_channels": ">= 1",
    "model.final_weight": ">= 0",
    "model.aux_weight": ">= 0",
    "optim.lr": "> 0",
    "optim.backbone_lr": ">= 0",
    "optim.weight_decay": ">= 0",
    "optim.momentum": "in [0, 1)",
    "optim.betas": "in [0, 1)",
    "optim.poly_power": ">= 0",
    "optim.milestones": ">= 1",
    "optim.gamma": "> 0",
    "optim.grad_clip": "> 0",
    "regularizer.plane_ch": ">= 1",
    "regularizer.plane_res": ">= 1",
    "regularizer.plane_hidden": ">= 1",
    "regularizer.hidden": ">= 1",
    "regularizer.feat_dim": ">= 1",
    "regularizer.near": "> 0",
    "regularizer.far": "> 0",
    "regularizer.n_samples": ">= 1",
    "regularizer.render_stride": ">= 1",
    "regularizer.alpha": ">= 0",
    "regularizer.task_alpha": ">= 0",
    "regularizer.depth_supervision": ">= 0",
    "regularizer.cross_view_alpha": ">= 0",
    "regularizer.chunk_rays": ">= 1",
    "task_weights": ">= 0",
    "edge_pos_weight": "in [0, 1]",
    "iters": ">= 1",
    "batch_size": ">= 1",
    "grad_accum": ">= 1",
    "seed": ">= 0",
    "log_every": ">= 1",
    "ckpt_every": ">= 1",
    "eval_every": ">= 0",
    "eval_images": ">= 0",
    "eval_batch_size": ">= 1",
    "n_saved_predictions": ">= 0",
}


def _in_range(value: float, rule: str) -> bool:
    if rule.startswith("in "):
        lo, hi = (float(x) for x in rule[4:-1].split(","))
        above = value > lo if rule[3] == "(" else value >= lo
        below = value < hi if rule[-1] == ")" else value <= hi
        return above and below
    op, bound = rule.split()
    return value >= float(bound) if op == ">=" else value > float(bound)


def check_ranges(cfg: TrainConfig) -> None:
    """Every number finite and inside its ``RANGES`` entry; a ``UserError`` naming the key otherwise."""

    def walk(d: dict[str, Any], prefix: str = "") -> None:
        for k, v in d.items():
            key = prefix + k
            if isinstance(v, dict) and key not in RANGES:
                walk(v, key + ".")
                continue
            items = (
                list(v.items())
                if isinstance(v, dict)
                else [(None, x) for x in v]
                if isinstance(v, list)
                else [(None, v)]
            )
            for sub, x in items:
                if isinstance(x, bool) or not isinstance(x, (int, float)):
                    continue
                where = key if sub is None else f"{key}.{sub}"
                rule = RANGES.get(key)
                if not math.isfinite(x) or (rule is not None and not _in_range(x, rule)):
                    shown = v if isinstance(v, list) else x
                    raise UserError(
                        f"config key {where!r} must be {rule or 'a finite number'}, got {shown!r}"
                    )

    walk(to_dict(cfg))
    r = cfg.regularizer
    if r.near is not None and r.far is not None and r.far <= r.near:
        raise UserError(f"config key 'regularizer.far' ({r.far}) must be > regularizer.near ({r.near})")


def validate(cfg: TrainConfig) -> None:
    from mtl3d.tasks import parse_tasks

    check_ranges(cfg)
    cfg.tasks = parse_tasks(cfg.tasks)
    for t in list(cfg.task_weights) + list(cfg.losses) + list(cfg.regularizer.task_alpha):
        if t not in cfg.tasks:
            raise UserError(f"config names task {t!r} which is not in tasks ({', '.join(cfg.tasks)})")
    o = cfg.optim
    if o.name not in ("adam", "sgd"):
        raise UserError(f"config key 'optim.name': unknown optimizer {o.name!r}; valid: adam, sgd")
    if o.schedule not in ("poly", "step", "constant"):
        raise UserError(f"config key 'optim.schedule': {o.schedule!r}; valid: constant, poly, step")
    if o.schedule_unit not in ("iter", "epoch"):
        raise UserError(f"config key 'optim.schedule_unit': {o.schedule_unit!r}; valid: epoch, iter")
    if len(o.betas) != 2:
        raise UserError(f"config key 'optim.betas' must be two numbers in [0, 1), got {o.betas}")
    if o.schedule == "step" and (not o.milestones or sorted(o.milestones) != o.milestones):
        raise UserError(
            "config key 'optim.milestones' must be a non-empty increasing list for schedule 'step'"
        )
    d = cfg.data
    if d.resize_mode not in ("resize", "pad"):
        raise UserError(f"config key 'data.resize_mode': {d.resize_mode!r}; valid: pad, resize")
    if d.eval_resolution not in ("original", "input"):
        raise UserError(f"config key 'data.eval_resolution': {d.eval_resolution!r}; valid: input, original")
    if d.scale_range is not None and (len(d.scale_range) != 2 or d.scale_range[0] > d.scale_range[1]):
        raise UserError(
            f"config key 'data.scale_range' must be two numbers 0 < lo <= hi, got {d.scale_range}"
        )
    if d.resize_mode == "pad" and not (d.height and d.width):
        raise UserError("config keys 'data.height' and 'data.width' are needed with data.resize_mode 'pad'")
    from mtl3d.models.registry import check_options

    cfg.model.options = check_options(cfg.model.name, cfg.model.options)
    if cfg.model.backbone is None:
        from mtl3d.models.registry import default_backbone

        cfg.model.backbone = default_backbone(cfg.model.name)
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"config key 'device': {cfg.device!r}; valid: auto, cpu, cuda")
    r = cfg.regularizer
    if r.plane_agg not in ("prod", "sum", "concat"):
        raise UserError(f"config key 'regularizer.plane_agg': {r.plane_agg!r}; valid: concat, prod, sum")
    if r.camera not in ("pinhole", "ortho"):
        raise UserError(f"config key 'regularizer.camera': {r.camera!r}; valid: ortho, pinhole")
    if r.spacing not in ("linear", "inverse"):
        raise UserError(f"config key 'regularizer.spacing': {r.spacing!r}; valid: inverse, linear")
    if r.mode not in ("render", "flat"):
        raise UserError(f"config key 'regularizer.mode': {r.mode!r}; valid: flat, render")
    for t in r.render_tasks or []:
        if t not in cfg.tasks:
            raise UserError(f"regularizer.render_tasks names {t!r}, not a task ({', '.join(cfg.tasks)})")
    if r.render_tasks is not None and not r.render_tasks:
        raise UserError("regularizer.render_tasks is empty; leave it out (null) to render every task")


def task_weight(cfg: TrainConfig, task: str) -> float:
    return cfg.task_weights.get(task, 1.0)


def save(cfg: TrainConfig, path: str | Path) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))
