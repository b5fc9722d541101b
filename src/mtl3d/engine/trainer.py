"""Training: one run = (dataset, model, regularizer on/off, seed, settings) -> a run directory.

Resumability is exact on CPU: the batch of step ``k`` (its samples and their augmentation seeds)
is a pure function of ``(seed, k)``, and a checkpoint holds model, branch, optimizer, schedule,
step and RNG state. The training log is written just before each checkpoint and a resume keeps
only its rows up to the checkpoint's step, so after a kill at any point the log holds every step
exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mtl3d import config as C
from mtl3d.data.registry import create_dataset, get_dataset_info, near_far
from mtl3d.engine.checkpoint import (
    atomic_torch_save,
    atomic_write_text,
    check_out_dir,
    gather_rng_states,
    load_checkpoint,
    restore_rng_state,
)
from mtl3d.engine.distributed import DistInfo, barrier, cleanup, init_distributed, rank_seed
from mtl3d.engine.fastpath import FastPath
from mtl3d.engine.optim import build_optimizer, load_optimizer_state, lr_lambda
from mtl3d.engine.rundir import RunDir
from mtl3d.engine.runtime import loader_workers, resolve_device, seed_everything, to_device, train_loader
from mtl3d.engine.sampler import StepSampler
from mtl3d.engine.validation import Validator
from mtl3d.errors import UserError
from mtl3d.losses import multitask_loss
from mtl3d.models import build_model, decode_inputs, split_outputs
from mtl3d.models.base import TrainingHooks
from mtl3d.tasks import classes_for, get_task

# Keys that may differ when re-running a command on an existing run dir (they do not change
# what is trained); anything else differing means the user pointed at the wrong directory.
_RESUME_FREE_KEYS = (
    "data.root",
    "data.num_workers",
    "device",
    "log_every",
    "ckpt_every",
    "eval_every",
    "eval_images",
    "eval_edges",
    "eval_batch_size",
    "n_saved_predictions",
    "regularizer.chunk_rays",
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("task_weights", "losses", "task_alpha"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def check_same_run(saved: dict[str, Any], cfg: C.TrainConfig, path: Path) -> None:
    a, b = _flatten(saved), _flatten(C.to_dict(cfg))
    # A key added to TrainConfig after a run was saved reads as its default there (e.g. grad_accum).
    defaults = _flatten(C.to_dict(C.TrainConfig()))
    for key in sorted(set(a) | set(b)):
        if key in _RESUME_FREE_KEYS or a.get(key, defaults.get(key)) == b.get(key):
            continue
        raise UserError(
            f"run dir {path.parent} holds a run with a different config ({key}: {a.get(key)!r} there, "
            f"{b.get(key)!r} now); use another --out or delete that directory"
        )


class TrainStep(nn.Module):
    """The training forward: host model + optional branch -> loss dict. What the step compiles and wraps.

    One module holds every trained parameter (the branch's and ATRC's α too), so a single DDP forward
    covers them, with bucketed all-reduce overlapping the backward, and ``compile: true`` traces the
    whole forward (host, branch and losses), not only the modules' ``__call__``.
    """

    def __init__(
        self,
        model: nn.Module,
        branch: nn.Module | None,
        cfg: C.TrainConfig,
        fast: FastPath,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.model = model
        self.branch = branch
        self.cfg = cfg
        self.fast = fast
        self.device = device
        self.weights = {t: C.task_weight(cfg, t) for t in cfg.tasks}

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Host loss (+ regularizer loss) of one batch; keys: tasks, ``reg/...``, ``total``."""
        cfg, model = self.cfg, self.model
        image = self.fast.image(batch["image"])
        size = tuple(image.shape[-2:])
        with self.fast.autocast(self.device):
            feats = model.encode(image)
            decoded = model.decode(feats, size, **decode_inputs(model, batch, size))
            preds, aux = split_outputs(decoded)
            out = multitask_loss(
                preds,
                batch,
                self.weights,
                losses=cfg.losses,
                edge_pos_weight=cfg.edge_pos_weight,
                aux=aux,
                final_weight=model.final_weight,
                aux_weight=model.aux_weight,
                aux_loss=self._aux_loss,
            )
            for key, value in model.extra_losses().items():
                out[key] = value
                out["total"] = out["total"] + value
            if self.branch is not None:
                rendered = self.branch(feats, batch["K"], size, neighbor=self.branch.neighbor_input(batch))
                reg = self.branch.loss(rendered, batch, self.weights, cfg.losses, cfg.edge_pos_weight)
                out.update({k: v for k, v in reg.items() if k != "total"})
                out["total"] = out["total"] + reg["total"]
        return out

    def _aux_loss(self, name: str, task: str, pred: Tensor, target: Tensor) -> Tensor | None:
        return self.model.aux_loss(name, task, pred, target, self.cfg.edge_pos_weight)


def require_sync_bn_device(device: torch.device) -> None:
    if device.type != "cuda":
        raise UserError("sync_bn needs CUDA: torch's SyncBatchNorm does not run on CPU")


def ddp_find_unused(
    model: nn.Module, branch: nn.Module | None, cfg: C.TrainConfig, hooks: TrainingHooks
) -> bool:
    """Whether some trained parameter can get no gradient in a step (DDP then must search the graph).

    True for: a model with a ``ddp_find_unused = True`` attribute (none needs it today: every host
    model's parameters all get gradients, checked per model); training hooks that say so (a search: a
    block fixed early skips its other candidates, whose weights then get none); the regularizer in
    ``mode: flat`` (its density head gets none). Else False, DDP's cheaper path.
    """
    return (
        bool(getattr(model, "ddp_find_unused", False))
        or hooks.find_unused_parameters
        or (branch is not None and cfg.regularizer.mode == "flat")
    )


class Run:
    """Everything a training run builds from its config: data, model, branch, optimiser."""

    def __init__(
        self, cfg: C.TrainConfig, dist: DistInfo | None = None, fast: FastPath | None = None
    ) -> None:
        """``fast``: the CUDA-only settings; by default those of the run's device (none on a CPU)."""
        self.cfg = cfg
        self.dist = dist or DistInfo()
        self.device = resolve_device(cfg.device)
        info = get_dataset_info(cfg.data.dataset)
        reg = cfg.regularizer
        cross_view = reg.enabled and reg.cross_view
        if cross_view and not info.multiview:
            raise UserError(f"regularizer.cross_view needs multi-view data; {info.name} has none")
        size = (cfg.data.height, cfg.data.width) if cfg.data.height and cfg.data.width else None
        self.train_set = create_dataset(
            info.name,
            cfg.data.root,
            cfg.data.train_split,
            cfg.tasks,
            train=True,
            size=size,
            hflip=cfg.data.hflip,
            multiview=cross_view,
            resize_mode=cfg.data.resize_mode,
            scale_range=cfg.data.scale_range,
            depth_scale=cfg.data.depth_scale_aug,
        )
        self.train_set.subset(cfg.data.train_fraction)
        self.num_classes = self.train_set.task_num_classes
        seed_everything(cfg.seed)
        self.model = build_model(cfg.model, cfg.tasks, self.num_classes)
        self.model.fit_to_data(self.train_set)  # deterministic; a resumed run reloads the same buffers
        self.model = self.model.to(self.device)
        self.branch: nn.Module | None = None
        if reg.enabled:
            self.branch = build_branch(cfg, self.model, self.num_classes).to(self.device)
        if cfg.sync_bn and self.dist.enabled:
            require_sync_bn_device(self.device)
            # In place below the top level (neither model nor branch is itself a BatchNorm); before the
            # optimiser is built so that it holds the converted layers' parameters.
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            if self.branch is not None:
                self.branch = nn.SyncBatchNorm.convert_sync_batchnorm(self.branch)
        self.fast = fast or FastPath.for_device(self.device, cfg.amp)
        self.model = self.fast.module(self.model)
        if self.branch is not None:
            self.branch = self.fast.module(self.branch)
        if self.fast.cudnn_benchmark:
            # fixed input sizes within a run: let cuDNN pick the fastest convolution algorithms once
            torch.backends.cudnn.benchmark = True
        # What the model adds to the loop (a search's own optimiser and schedules), once it is final.
        self.hooks = self.model.training_hooks()
        self.optimizer = build_optimizer(
            cfg.optim, self.model, self.branch, fused=self.fast.fused_optimizer, exclude=self.hooks.parameters
        )
        self.global_batch = cfg.batch_size * cfg.grad_accum * self.dist.world_size
        steps_per_epoch = max(1, -(-len(self.train_set) // self.global_batch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.optim, cfg.iters, steps_per_epoch)
        )
        self.step_module = TrainStep(self.model, self.branch, cfg, self.fast, self.device)
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self.train_step: nn.Module = self.step_module
        if self.dist.enabled:
            cuda = self.device.type == "cuda"
            self.ddp = nn.parallel.DistributedDataParallel(
                self.step_module,
                # init_distributed made the local rank's GPU the current one; the model lives there
                device_ids=[torch.cuda.current_device()] if cuda else None,
                find_unused_parameters=ddp_find_unused(self.model, self.branch, cfg, self.hooks),
            )
            self.train_step = self.ddp
        if cfg.compile:
            # In place on the module the step calls (the DDP wrapper under torchrun): host, branch and
            # losses are traced together; model and branch keep their parameter names, so checkpoints
            # load either way.
            self.train_step.compile(backend=self.fast.compile_backend)
        # The training streams (dropout, the regularizer's stratified samples) differ per rank; in one
        # process they continue from the seed as they always have.
        if self.dist.enabled:
            seed_everything(rank_seed(cfg.seed, self.dist.rank))

    def losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Host loss (+ regularizer loss) of one batch, uncompiled and unwrapped."""
        return self.step_module(batch)

    def clip_groups(self) -> list[list[nn.Parameter]]:
        groups = (
            self.model.param_groups_for_clipping()
            if hasattr(self.model, "param_groups_for_clipping")
            else [list(self.model.parameters())]
        )
        if self.branch is not None:
            groups = [*groups, list(self.branch.parameters())]
        return groups

    def step(self, batch: dict[str, Any] | list[dict[str, Any]], step: int = 0) -> dict[str, Tensor]:
        """One optimisation step over a batch or a list of micro-batches (gradient accumulation).

        ``step`` (0-based) drives the model's training hooks (a search's schedules). Returns the losses,
        mean over the micro-batches, as detached tensors on the device: reading them waits for the
        device, so the caller does it only when it logs (``loss_values``).
        """
        micro = batch if isinstance(batch, list) else [batch]
        self.model.train()
        self.hooks.before_step(step, self.cfg.iters)
        if self.branch is not None:
            self.branch.train()
        optimizers = [self.optimizer, *self.hooks.optimizers.values()]
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        sums: dict[str, Tensor] = {}
        for i, b in enumerate(micro):
            last = i == len(micro) - 1
            # DDP all-reduces only on the last micro-batch's backward; the others accumulate locally.
            sync = nullcontext() if self.ddp is None or last else self.ddp.no_sync()
            with sync:
                out = self.train_step(b)
                total = out["total"] if len(micro) == 1 else out["total"] / len(micro)
                total.backward()
            for k, v in out.items():
                v = v.detach().float()
                sums[k] = sums[k] + v if k in sums else v
        if self.cfg.optim.grad_clip:
            for group in self.clip_groups():
                torch.nn.utils.clip_grad_norm_(group, self.cfg.optim.grad_clip)
        for opt in optimizers:
            opt.step()
        self.scheduler.step()
        return sums if len(micro) == 1 else {k: v / len(micro) for k, v in sums.items()}

    def state(self, step: int) -> dict[str, Any]:
        """The checkpoint; under torchrun every rank must call it (it gathers each rank's RNG state)."""
        return {
            "step": step,
            "model": self.model.state_dict(),
            "branch": self.branch.state_dict() if self.branch is not None else None,
            "optimizer": self.optimizer.state_dict(),
            **{name: opt.state_dict() for name, opt in self.hooks.optimizers.items()},
            "scheduler": self.scheduler.state_dict(),
            "rng": gather_rng_states(self.device, self.dist),
            "config": C.to_dict(self.cfg),
            "num_classes": self.num_classes,
        }

    def load_state(self, ckpt: dict[str, Any]) -> int:
        self.model.load_state_dict(ckpt["model"])
        if self.branch is not None and ckpt.get("branch") is not None:
            self.branch.load_state_dict(ckpt["branch"])
        load_optimizer_state(self.optimizer, ckpt["optimizer"])
        for name, opt in self.hooks.optimizers.items():
            load_optimizer_state(opt, ckpt[name])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        warning = restore_rng_state(ckpt["rng"], self.device, self.dist)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        return int(ckpt["step"])


def loss_values(losses: dict[str, Tensor]) -> dict[str, float]:
    """The losses as floats, read from the device in one transfer."""
    keys = list(losses)
    values = torch.stack([losses[k].float() for k in keys]).tolist() if keys else []
    return dict(zip(keys, values, strict=True))


def check_same_world(info_path: Path, dist: DistInfo) -> None:
    """Refuse to resume with another number of processes: that changes every later step's batches."""
    if not info_path.is_file():
        return
    saved = json.loads(info_path.read_text()).get("world_size", 1)
    if saved != dist.world_size:
        raise UserError(
            f"run dir {info_path.parent} was trained with {saved} process(es), now {dist.world_size}; "
            "resume with the same number (the batches depend on it) or use another --out"
        )


def build_branch(cfg: C.TrainConfig, model: nn.Module, num_classes: int | dict[str, int]) -> nn.Module:
    if not getattr(model, "supports_regularizer", True):
        raise UserError(f"model {cfg.model.name!r} has no shared encoder; the 3D-aware regularizer needs one")
    from mtl3d.regularizer.branch import RegularizerBranch

    near, far = near_far(cfg.data.dataset, cfg.data.root)
    reg = cfg.regularizer
    near = reg.near if reg.near is not None else near
    far = reg.far if reg.far is not None else far
    rendered = reg.render_tasks if reg.render_tasks is not None else cfg.tasks
    channels = {t: get_task(t).out_channels(classes_for(num_classes, t)) for t in cfg.tasks if t in rendered}
    return RegularizerBranch(reg, list(model.feature_channels), channels, near, far)


LOG_FIELDS_FIXED = ("step", "lr", "time_s")


def _log_csv(rows: list[dict[str, float]]) -> str:
    keys: list[str] = list(LOG_FIELDS_FIXED)
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def train(cfg: C.TrainConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Train (or resume, or do nothing if finished) the run in ``out_dir``; returns ``out_dir``."""
    out = Path(out_dir)
    rd = RunDir(out)
    check_out_dir(out)
    if rd.config.is_file():
        check_same_run(C.read_yaml(rd.config), cfg, rd.config)
    ckpt = None
    if rd.checkpoint.is_file():
        # the checkpoint's own config decides, also where config.yaml is missing
        ckpt = load_checkpoint(rd.checkpoint)
        check_same_run(ckpt.get("config") or {}, cfg, rd.checkpoint)
    if rd.done.is_file() and ckpt is not None:
        if not rd.config.is_file():  # checked against the checkpoint above: `evaluate` reads it
            C.save(cfg, rd.config)
        print(f"{out}: already trained ({cfg.iters} iterations); nothing to do")
        return out
    for stale in rd.stale_temporaries():
        stale.unlink(missing_ok=True)
    dist = init_distributed(resolve_device(cfg.device).type)
    try:
        check_same_world(rd.run_info, dist)
        run = Run(cfg, dist)
        start = run.load_state(ckpt) if ckpt is not None else 0
        if dist.is_main and not rd.config.is_file():
            out.mkdir(parents=True, exist_ok=True)
            C.save(cfg, rd.config)
        if dist.is_main and not rd.run_info.is_file():
            # Beside config.yaml, not in it: these depend on the launch (world size), which
            # check_same_run must not compare as config.
            info = {
                "world_size": dist.world_size,
                "batch_per_process": cfg.batch_size,
                "grad_accum": cfg.grad_accum,
                "global_batch": run.global_batch,
            }
            atomic_write_text(rd.run_info, json.dumps(info, indent=2) + "\n")
        rows = rd.read_train_log(upto=start)
        elapsed = rows[-1]["time_s"] if rows else 0.0
        sampler = StepSampler(
            len(run.train_set), cfg.batch_size, cfg.iters, cfg.seed, start, dist, cfg.grad_accum
        )
        workers = loader_workers(cfg.data.num_workers, run.device)
        loader = train_loader(run.train_set, sampler, workers, run.device, cfg.seed)
        bar = tqdm(
            total=cfg.iters,
            initial=start,
            desc=f"train {out.name}",
            disable=not (progress and dist.is_main),
            dynamic_ncols=True,
        )
        validate = None
        if cfg.eval_every and dist.is_main:
            validate = Validator(cfg, list(run.model.main_tasks), run.num_classes, run.device)
        t0 = time.perf_counter() - elapsed
        step = start
        micro: list[dict[str, Any]] = []
        last_checked = start
        for batch in loader:
            micro.append(to_device(batch, run.device))
            if len(micro) < cfg.grad_accum:
                continue
            lr = run.optimizer.param_groups[0]["lr"]
            losses = run.step(micro if cfg.grad_accum > 1 else micro[0], step)
            micro = []
            step += 1
            due = bool(cfg.eval_every) and (step % cfg.eval_every == 0 or step == cfg.iters)
            log = step % cfg.log_every == 0 or step == cfg.iters or due
            save = step % cfg.ckpt_every == 0 or step == cfg.iters
            if not (log or save):
                bar.update(1)
                continue  # no read of the losses: the host does not wait for the device between logs
            values = loss_values(losses)
            if not all(math.isfinite(v) for v in values.values()):
                raise UserError(
                    f"loss became non-finite between steps {last_checked + 1} and {step} ({values}); "
                    "lower the learning rate"
                )
            last_checked = step
            if log:
                row = {
                    "step": step,
                    "lr": lr,
                    "time_s": time.perf_counter() - t0,
                    **{f"loss/{k}": v for k, v in values.items()},
                }
                if due and validate is not None:
                    tv = time.perf_counter()
                    row.update(validate(run.model))
                    t0 += time.perf_counter() - tv  # time_s stays training time
                rows.append(row)
                bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if "/" not in k})
            bar.update(1)
            if save:
                state = run.state(step)  # every rank: it gathers each rank's random state
                if dist.is_main:
                    # Log first: a kill between the two writes leaves log rows past the checkpoint,
                    # which resume drops (read_train_log upto), never a checkpoint past the log's last row.
                    atomic_write_text(rd.train_log, _log_csv(rows))
                    atomic_torch_save(rd.checkpoint, state)
        bar.close()
        if dist.is_main:
            if step < cfg.iters:  # defensive: the sampler always yields up to iters
                raise RuntimeError("training ended early")
            atomic_write_text(rd.done, f"{cfg.iters}\n")
        barrier(dist)
    finally:
        cleanup(dist)
    return out
