"""Evaluation of a trained run: ``metrics.json`` (per-task metrics, params, FLOPs, timing) + predictions.

Three steps, each a function: :func:`load_evaluation` (the run's config and weights, the dataset and the
metrics), :func:`run_inference` (the loop: scores every image, times the forward passes, saves a few
predictions) and :func:`build_report` (what ``metrics.json`` holds); :func:`evaluate` runs them and
writes the files. The forward pass and the mapping of outputs back to each image live in
:mod:`mtl3d.engine.inference`, shared with ``mtl3d predict``.
"""

from __future__ import annotations

import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mtl3d import config as C
from mtl3d.data.registry import create_dataset, get_dataset_info
from mtl3d.data.transforms import denormalize_image
from mtl3d.engine.checkpoint import atomic_write_json, load_checkpoint
from mtl3d.engine.fastpath import FastPath
from mtl3d.engine.inference import (
    collate_eval,
    count_params,
    infer,
    inference_cost,
    postprocess,
    score_batch,
    to_original,
)
from mtl3d.engine.rundir import RunDir, variant_name
from mtl3d.engine.runtime import loader_workers, resolve_device, to_device
from mtl3d.engine.trainer import build_branch
from mtl3d.errors import UserError
from mtl3d.io import atomic_write
from mtl3d.metrics.registry import create_metric
from mtl3d.models import build_model
from mtl3d.tasks import classes_for, get_task

EVAL_RESOLUTIONS = ("original", "input")


def load_run(run_dir: Path) -> tuple[C.TrainConfig, dict[str, Any]]:
    """The config and last checkpoint of a finished run; a ``UserError`` saying what to do otherwise."""
    rd = RunDir(run_dir)
    if not rd.config.is_file():
        raise UserError(
            f"{run_dir} is not a run directory (no config.yaml); train it with mtl3d train --out {run_dir}"
        )
    if not rd.done.is_file():
        raise UserError(
            f"run {run_dir} has not finished training; re-run its mtl3d train command to resume it"
        )
    return C.load(rd.config), load_checkpoint(rd.checkpoint)


# ------------------------------------------------------------------------------------------------- load
@dataclass
class Evaluation:
    """What scoring a run needs: its config (with the command's overrides), the eval-mode network (and
    the regularizer branch, for the saved renderings), the dataset and one metric per scored task."""

    cfg: C.TrainConfig
    device: torch.device
    split: str
    mode: str  # eval_resolution: "original" | "input"
    tasks: list[str]
    dataset: Any
    model: nn.Module
    fast: FastPath
    branch: nn.Module | None
    metrics: dict[str, Any]

    def close(self) -> None:
        """Stop the metrics' worker processes (the boundary metric's), also when evaluation fails."""
        for m in self.metrics.values():
            if hasattr(m, "close"):
                m.close()


def _class_names(dataset: Any, task: str) -> list[str] | None:
    """Class names of a classification task (None for the others)."""
    return list(dataset.class_names(task)) if get_task(task).kind == "classification" else None


def load_evaluation(
    run_dir: Path,
    split: str | None = None,
    data_root: str | None = None,
    device: str | None = None,
    progress: bool = True,
    eval_resolution: str | None = None,
    boundary_workers: int | None = None,
    model_file: str | Path | None = None,
) -> Evaluation:
    """The run (or the model file) ready to score; the arguments are :func:`evaluate`'s."""
    if model_file is not None:
        from mtl3d.engine.modelfile import load_run_state

        cfg, ckpt, _ = load_run_state(model_file)
    else:
        cfg, ckpt = load_run(run_dir)
    if data_root is not None:
        cfg.data.root = data_root
    if eval_resolution is not None:
        if eval_resolution not in EVAL_RESOLUTIONS:
            raise UserError(f"unknown eval resolution {eval_resolution!r}; valid: input, original")
        cfg.data.eval_resolution = eval_resolution
    dev = resolve_device(device or cfg.device)
    info = get_dataset_info(cfg.data.dataset)
    split = split or cfg.data.eval_split
    size = (cfg.data.height, cfg.data.width) if cfg.data.height and cfg.data.width else None
    # one int shared by the classification tasks (older runs, SynthRooms) or a per-task dict (PASCAL)
    num_classes = ckpt["num_classes"]
    num_classes = dict(num_classes) if isinstance(num_classes, dict) else int(num_classes)
    model = build_model(cfg.model, cfg.tasks, num_classes, pretrained=False)
    tasks = list(model.main_tasks)  # auxiliary-only tasks have no output to score: no labels to load
    dataset = create_dataset(
        info.name,
        cfg.data.root,
        split,
        tasks,
        train=False,
        size=size,
        resize_mode=cfg.data.resize_mode,
        keep_original=True,
    )
    model.load_state_dict(ckpt["model"])
    model.to(dev).eval()
    # channels-last on CUDA as in training; evaluation stays in full precision (the metrics are the result)
    fast = FastPath.for_device(dev, amp=False)
    fast.module(model)
    branch = None
    if ckpt.get("branch") is not None:
        branch = build_branch(cfg, model, num_classes)
        branch.load_state_dict(ckpt["branch"])
        branch.to(dev).eval()

    if boundary_workers is None:
        cpus = os.cpu_count() or 1
        boundary_workers = min(4, cpus) if cpus > 1 and len(dataset) > 8 else 0
    metrics = {
        t: create_metric(
            t,
            num_classes=classes_for(num_classes, t),
            class_names=_class_names(dataset, t),
            # what the evaluation offers every metric; each takes the parts its constructor names
            context={"max_dist": info.edge_max_dist, "workers": boundary_workers, "progress": progress},
        )
        for t in tasks
    }
    return Evaluation(cfg, dev, split, cfg.data.eval_resolution, tasks, dataset, model, fast, branch, metrics)


# -------------------------------------------------------------------------------------------- inference
@dataclass
class Pass:
    """What one pass over the split measured besides the metrics (which accumulate in place)."""

    n_images: int = 0
    forward_s: float = 0.0
    in_size: tuple[int, int] = (0, 0)  # network input size of the last batch
    original_sizes: list[list[int]] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)  # per_image.npz rows, in scoring order


def run_inference(ev: Evaluation, rd: RunDir, progress: bool = True) -> Pass:
    """Score every image of the split into ``ev.metrics``, timing the forward passes (the host network
    only) and saving the first ``n_saved_predictions`` images' predictions under ``rd.predictions``."""
    cfg, dev, dataset, mode = ev.cfg, ev.device, ev.dataset, ev.mode
    loader = DataLoader(
        dataset,
        batch_size=cfg.eval_batch_size,
        shuffle=False,
        num_workers=loader_workers(cfg.data.num_workers, dev),
        collate_fn=collate_eval,
    )
    n_save = cfg.n_saved_predictions
    saved = 0
    seen = Pass()
    for batch in tqdm(loader, desc=f"evaluate {rd.path.name}", disable=not progress, dynamic_ncols=True):
        batch = to_device(batch, dev)
        with torch.no_grad():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            in_size = (int(batch["image"].shape[-2]), int(batch["image"].shape[-1]))
            feats, out = infer(ev.model, batch, ev.fast)  # feats kept: the branch renders from them below
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seen.forward_s += time.perf_counter() - t0
            preds = score_batch(out, batch, ev.metrics, mode)
            rendered = None
            if ev.branch is not None and saved < n_save:
                rendered = ev.branch(feats, batch["K"], in_size)
        seen.in_size = in_size
        seen.n_images += batch["image"].shape[0]
        seen.original_sizes += batch["original_size"].tolist()
        seen.image_ids += [str(dataset.ids[int(j)]) for j in batch["index"]]
        for i in range(batch["image"].shape[0]):
            if saved >= n_save:
                break
            arrays = _saved_arrays(batch, i, preds[i], rendered, in_size, mode)
            _save_npz(rd.prediction(dataset.ids[int(batch["index"][i])]), arrays)
            saved += 1
    return seen


def _saved_arrays(
    batch: dict[str, Any],
    i: int,
    preds: dict[str, Tensor],
    rendered: dict[str, Any] | None,
    in_size: tuple[int, int],
    mode: str,
) -> dict[str, np.ndarray]:
    """What one saved prediction file holds: image, labels and predictions at the resolution they were
    scored at (original: the image cropped to its valid box and resized back), rendered maps likewise."""
    image = batch["image"][i]
    box = batch["valid_box"][i].tolist()
    h, w = batch["original_size"][i].tolist()
    if mode == "original":
        image = to_original(image, box, in_size, (h, w))
    rgb = denormalize_image(image[None])[0].permute(1, 2, 0).cpu().numpy()
    arrays: dict[str, np.ndarray] = {"image": (rgb * 255).round().astype(np.uint8)}
    for t, pred in preds.items():
        gt = batch[t][i] if mode == "input" else batch["original"][t][i, ..., :h, :w]
        arrays[f"gt_{t}"] = gt.cpu().numpy()
        arrays[f"pred_{t}"] = get_task(t).compact(pred)

    def back(x: Tensor) -> Tensor:
        return x if mode == "input" else to_original(x, box, in_size, (h, w))

    if rendered is not None:
        arrays["reg_depth"] = back(rendered["depth"][i].float()).cpu().numpy()
        for t, v in rendered["tasks"].items():
            arrays[f"reg_{t}"] = get_task(t).compact(postprocess(t, back(v[i].float())[None])[0])
    return arrays


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(p: Path) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        p.write_bytes(buf.getvalue())

    atomic_write(path, write)


# ----------------------------------------------------------------------------------------------- report
def metric_results(metrics: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every task's metrics (NaN as None: JSON has no NaN) and the protocol each follows."""
    results: dict[str, dict[str, Any]] = {}
    protocols: dict[str, str] = {}
    for t, m in metrics.items():
        results[t] = {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.compute().items()
        }
        protocols[t] = m.protocol
    return results, protocols


def per_image_arrays(metrics: dict[str, Any], image_ids: list[str]) -> dict[str, np.ndarray]:
    """The per-image sufficient statistics (keys ``<task>/<stat>``) and the image ids, row by row: what
    bootstrap comparisons of runs resample."""
    per_image = {f"{t}/{k}": v for t, m in metrics.items() for k, v in m.per_image().items()}
    per_image["image_ids"] = np.array(image_ids)
    return per_image


def build_report(
    ev: Evaluation,
    rd: RunDir,
    seen: Pass,
    results: dict[str, dict[str, Any]],
    protocols: dict[str, str],
) -> dict[str, Any]:
    """``metrics.json``'s content: the run, the split and resolution scored, the metrics with their
    protocols, parameters and FLOPs of one inference forward pass, and timings."""
    cfg = ev.cfg
    h, w = seen.in_size
    n_params, n_flops = inference_cost(ev.model, (h, w), ev.device)
    sizes = np.array(seen.original_sizes, dtype=np.int64).reshape(-1, 2)
    return {
        "run": {
            "dataset": cfg.data.dataset,
            "dataset_variant": ev.dataset.manifest.get("variant"),
            "model": cfg.model.name,
            "backbone": cfg.model.backbone,
            "regularizer": cfg.regularizer.enabled,
            "variant": variant_name(cfg.model.name, cfg.regularizer.enabled),
            "seed": cfg.seed,
            "tasks": ev.tasks,
            "aux_only_tasks": [t for t in cfg.tasks if t not in ev.tasks],
            "iters": cfg.iters,
        },
        "split": ev.split,
        "n_images": seen.n_images,
        "resolution": [h, w],  # network input size (of the last batch)
        "resize_mode": cfg.data.resize_mode,
        # where predictions were scored: each image's original size, or the network input size
        "eval_resolution": ev.mode,
        "original_sizes": {
            "min": sizes.min(axis=0).tolist() if len(sizes) else None,
            "max": sizes.max(axis=0).tolist() if len(sizes) else None,
            "distinct": int(len({tuple(r) for r in sizes.tolist()})),
        },
        "metrics": results,
        "protocols": protocols,
        "per_image": RunDir.PER_IMAGE,
        "params": n_params,
        "params_total": count_params(ev.model),
        "flops": n_flops,
        "timing": {
            "train_s": rd.train_seconds(),
            "ms_per_image": 1000.0 * seen.forward_s / max(seen.n_images, 1),
            "device": ev.device.type,
        },
    }


def evaluate(
    run_dir: str | Path,
    split: str | None = None,
    data_root: str | None = None,
    device: str | None = None,
    progress: bool = True,
    eval_resolution: str | None = None,
    boundary_workers: int | None = None,
    model_file: str | Path | None = None,
) -> dict[str, Any]:
    """Score a finished run on ``split`` and write ``metrics.json``, ``per_image.npz`` and a few
    predictions into ``run_dir``; returns ``metrics.json``'s content.

    ``model_file``: score a ``.mtl3d`` model file instead (:mod:`mtl3d.engine.modelfile`); ``run_dir`` is
    then only where the files go.

    ``eval_resolution`` overrides the run's ``data.eval_resolution`` (``original`` | ``input``).
    ``boundary_workers``: processes that score edges while the network runs; default ``min(4, CPUs)``
    when the split has more than a handful of images, else 0 (no process start-up for tiny splits).
    """
    rd = RunDir(run_dir)
    ev = load_evaluation(
        rd.path, split, data_root, device, progress, eval_resolution, boundary_workers, model_file
    )
    try:
        seen = run_inference(ev, rd, progress)
        results, protocols = metric_results(ev.metrics)
        _save_npz(rd.per_image, per_image_arrays(ev.metrics, seen.image_ids))
    finally:
        ev.close()
    report = build_report(ev, rd, seen, results, protocols)
    atomic_write_json(rd.metrics, report)
    return report
