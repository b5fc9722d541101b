"""Evaluation of a trained run: ``metrics.json`` (per-task metrics, params, FLOPs, timing) + predictions."""

from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from mtl3d import config as C
from mtl3d.data.registry import create_dataset, get_dataset_info
from mtl3d.data.transforms import denormalize_image
from mtl3d.engine.checkpoint import atomic_write_json, load_checkpoint
from mtl3d.engine.fastpath import FastPath
from mtl3d.engine.trainer import build_branch, loader_workers, resolve_device, to_device
from mtl3d.errors import UserError
from mtl3d.io import atomic_write
from mtl3d.metrics.registry import create_metric
from mtl3d.models import build_model, decode_inputs
from mtl3d.tasks import TASKS, classes_for, get_task

PER_IMAGE_FILE = "per_image.npz"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def inference_cost(model: nn.Module, size: tuple[int, int], device: torch.device) -> tuple[int, int]:
    """(parameters, FLOPs) of one inference forward pass on a single image of ``size``.

    Parameters count the modules that inference runs (forward hooks), so training-only parts of a
    model (e.g. PAD-Net's and MTI-Net's initial-prediction classifiers, which only deep supervision
    reads) are left out; FLOPs come from torch's flop counter.
    """
    model.eval()
    ran: set[int] = set()
    hooks = [m.register_forward_hook(lambda mod, i, o: ran.add(id(mod))) for m in model.modules()]
    x = torch.zeros(1, 3, *size, device=device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    params = {id(p): p.numel() for m in model.modules() if id(m) in ran for p in m.parameters(recurse=False)}
    return sum(params.values()), int(counter.get_total_flops())


def count_flops(model: nn.Module, size: tuple[int, int], device: torch.device) -> int:
    """FLOPs of one inference forward pass on a single image of ``size`` (torch's flop counter)."""
    return inference_cost(model, size, device)[1]


def postprocess(task: str, logits: Tensor) -> Tensor:
    """Head output -> what the metric and the figures consume."""
    if task in ("edges", "saliency"):
        return torch.sigmoid(logits.float())
    if task == "normals":
        return F.normalize(logits.float(), dim=1)
    return logits.float()


def _compact(task: str, pred: Tensor) -> np.ndarray:
    """A prediction as stored for figures: class scores -> label map, others as float."""
    if get_task(task).kind == "classification":
        return pred.argmax(0).to(torch.uint8).cpu().numpy()
    return pred.cpu().numpy().astype(np.float32 if task == "depth" else np.float16)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(p: Path) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        p.write_bytes(buf.getvalue())

    atomic_write(path, write)


def load_run(run_dir: Path) -> tuple[C.TrainConfig, dict[str, Any]]:
    cfg_path, ckpt_path = run_dir / "config.yaml", run_dir / "last.pt"
    if not cfg_path.is_file():
        raise UserError(
            f"{run_dir} is not a run directory (no config.yaml); train it with mtl3d train --out {run_dir}"
        )
    if not (run_dir / "done").is_file():
        raise UserError(
            f"run {run_dir} has not finished training; re-run its mtl3d train command to resume it"
        )
    return C.load(cfg_path), load_checkpoint(ckpt_path)


def _pad_stack(tensors: list[Tensor], fill: float) -> Tensor:
    """Stack maps of different sizes, padded at the bottom/right to the largest with ``fill``."""
    h = max(int(t.shape[-2]) for t in tensors)
    w = max(int(t.shape[-1]) for t in tensors)
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], h, w), fill)
    for i, t in enumerate(tensors):
        out[i, ..., : t.shape[-2], : t.shape[-1]] = t
    return out


def _fill(key: str) -> float:
    """Pad value of a dense entry: each task's ignore value (255; 0 = invalid for depth and normals)."""
    if key in TASKS:
        value = TASKS[key].ignore_value
        return 0.0 if value is None else float(value)
    return 0.0


def collate_eval(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch evaluation samples whose sizes may differ (PASCAL).

    Network inputs of different sizes (``size=None``) are padded at the bottom/right (image 0 = the mean
    colour after normalisation, labels their ignore value); every sample gets ``valid_box`` = (top,
    left, h, w), the region of the input that shows the image (the whole input unless padded). The
    untransformed labels (``original``) are padded the same way to the batch's largest original size,
    and ``original_size`` [B, 2] says how much of each is real.
    """
    dense = [
        k
        for k, v in samples[0].items()
        if isinstance(v, Tensor) and v.dim() >= 2 and k not in ("K", "pose", "valid_box")
    ]
    rest = []
    for s in samples:
        r = {k: v for k, v in s.items() if k not in dense and k != "original"}
        if "valid_box" not in r:
            r["valid_box"] = torch.tensor([0, 0, *s["image"].shape[-2:]], dtype=torch.int64)
        rest.append(r)
    batch: dict[str, Any] = default_collate(rest)
    for k in dense:
        vals = [s[k] for s in samples]
        same = all(v.shape == vals[0].shape for v in vals)
        batch[k] = torch.stack(vals) if same else _pad_stack(vals, _fill(k))
    if "original" in samples[0]:
        batch["original"] = {
            t: _pad_stack([s["original"][t] for s in samples], _fill(t)) for t in samples[0]["original"]
        }
    return batch


def to_original(x: Tensor, box: list[int], in_size: tuple[int, int], out_size: tuple[int, int]) -> Tensor:
    """One image's output map [C, h, w] (at the input resolution, or a fraction of it) -> [C, *out_size].

    Crops the ``box`` (top, left, h, w; input pixels) that shows the image, i.e. drops pad-mode padding,
    then resizes bilinearly to the original size if the input had been resized.
    """
    ry, rx = x.shape[-2] / in_size[0], x.shape[-1] / in_size[1]
    top, left, h, w = box
    x = x[..., round(top * ry) : round((top + h) * ry), round(left * rx) : round((left + w) * rx)]
    if tuple(x.shape[-2:]) != tuple(out_size):
        x = F.interpolate(x[None].float(), size=tuple(out_size), mode="bilinear", align_corners=False)[0]
    return x


def score_batch(
    out: dict[str, Tensor],
    batch: dict[str, Any],
    metrics: dict[str, Any],
    eval_resolution: str = "original",
) -> list[dict[str, Tensor]]:
    """Update ``metrics`` with one batch of raw head outputs ``out`` ({task: [B, C, H, W]} at the input
    size); return each image's post-processed predictions at the resolution it was scored at.

    ``input``: predictions at the network input size against the transformed labels (the old behaviour).
    ``original``: each image's prediction mapped back to its original size (:func:`to_original`) and
    scored against its untransformed label. The mapping interpolates the *raw* outputs (class logits,
    edge/saliency logits, depth, unnormalised normals) bilinearly and then applies :func:`postprocess`
    (argmax happens in the metric, sigmoid, renormalisation). That is the MTL survey's protocol
    (``INFER_FLAGVALS``) in spirit; it differs in that the survey resizes the *post-processed* maps, the
    semseg/human_parts label maps with nearest neighbour and sigmoid probabilities and normals linearly
    (normals re-normalised when read back), so class borders and probabilities differ slightly in
    blurry regions; depth is the same.
    """
    tasks = list(metrics)
    if eval_resolution == "input":
        preds = {t: postprocess(t, out[t]) for t in tasks}
        for t in tasks:
            metrics[t].update(preds[t], batch[t])
        return [{t: preds[t][i] for t in tasks} for i in range(batch["image"].shape[0])]
    in_size = (int(batch["image"].shape[-2]), int(batch["image"].shape[-1]))
    boxes = batch["valid_box"].tolist()
    sizes = [tuple(hw) for hw in batch["original_size"].tolist()]
    if all(b == [0, 0, *in_size] and hw == in_size for b, hw in zip(boxes, sizes, strict=True)):
        # the input is every image at its original size: score the whole batch at once, exactly as ``input``
        preds = {t: postprocess(t, out[t]) for t in tasks}
        for t in tasks:
            metrics[t].update(preds[t], batch["original"][t])
        return [{t: preds[t][i] for t in tasks} for i in range(len(boxes))]
    per_image = []
    for i, (box, (h, w)) in enumerate(zip(boxes, sizes, strict=True)):
        preds = {t: postprocess(t, to_original(out[t][i], box, in_size, (h, w))[None]) for t in tasks}
        for t in tasks:
            metrics[t].update(preds[t], batch["original"][t][i : i + 1, ..., :h, :w])
        per_image.append({t: p[0] for t, p in preds.items()})
    return per_image


def _class_names(dataset: Any, task: str) -> list[str] | None:
    """Class names of a classification task; ``dataset.classes`` for semseg on readers without
    ``class_names``."""
    if get_task(task).kind != "classification":
        return None
    if hasattr(dataset, "class_names"):
        return list(dataset.class_names(task))
    return list(dataset.classes) if task == "semseg" else None


def infer(model: torch.nn.Module, batch: dict[str, Any], fast: FastPath) -> tuple[Any, dict[str, Tensor]]:
    """Features and outputs of an eval-mode model on one batch, in the path's memory format and precision."""
    image = fast.image(batch["image"])
    size = (int(image.shape[-2]), int(image.shape[-1]))
    with fast.autocast(image.device):
        feats = model.encode(image)
        out = model.decode(feats, size, **decode_inputs(model, batch, size))
    return feats, out


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
    """Score a finished run on ``split`` and write ``metrics.json`` (+ a few predictions).

    ``model_file``: score a ``.mtl3d`` model file instead (:mod:`mtl3d.engine.modelfile`); ``run_dir`` is
    then only where ``metrics.json`` and the predictions go.

    ``eval_resolution`` overrides the run's ``data.eval_resolution`` (``original`` | ``input``).
    ``boundary_workers``: processes that score edges while the network runs; default ``min(4, CPUs)``
    when the split has more than a handful of images, else 0 (no process start-up for tiny splits).
    """
    run_dir = Path(run_dir)
    if model_file is not None:
        from mtl3d.engine.modelfile import load_run_state

        cfg, ckpt, _ = load_run_state(model_file)
    else:
        cfg, ckpt = load_run(run_dir)
    if data_root is not None:
        cfg.data.root = data_root
    if eval_resolution is not None:
        if eval_resolution not in ("original", "input"):
            raise UserError(f"unknown eval resolution {eval_resolution!r}; valid: input, original")
        cfg.data.eval_resolution = eval_resolution
    mode = cfg.data.eval_resolution
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
            **(
                {"max_dist": info.edge_max_dist, "workers": boundary_workers, "progress": progress}
                if t == "edges"
                else {}
            ),
        )
        for t in tasks
    }
    loader = DataLoader(
        dataset,
        batch_size=cfg.eval_batch_size,
        shuffle=False,
        num_workers=loader_workers(cfg.data.num_workers, dev),
        collate_fn=collate_eval,
    )
    pred_dir = run_dir / "predictions"
    n_save = cfg.n_saved_predictions
    saved = 0
    forward_s = 0.0
    n_images = 0
    original_sizes: list[list[int]] = []
    image_ids: list[str] = []  # per_image.npz rows, in scoring order
    in_size: tuple[int, int] = (0, 0)
    try:
        for batch in tqdm(loader, desc=f"evaluate {run_dir.name}", disable=not progress, dynamic_ncols=True):
            batch = to_device(batch, dev)
            with torch.no_grad():
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                in_size = (int(batch["image"].shape[-2]), int(batch["image"].shape[-1]))
                feats, out = infer(model, batch, fast)  # feats kept: the branch renders from them below
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                forward_s += time.perf_counter() - t0
                preds = score_batch(out, batch, metrics, mode)
                rendered = None
                if branch is not None and saved < n_save:
                    rendered = branch(feats, batch["K"], in_size)
            n_images += batch["image"].shape[0]
            original_sizes += batch["original_size"].tolist()
            image_ids += [str(dataset.ids[int(j)]) for j in batch["index"]]
            for i in range(batch["image"].shape[0]):
                if saved >= n_save:
                    break
                arrays = _saved_arrays(batch, i, preds[i], rendered, in_size, mode)
                _save_npz(pred_dir / f"{dataset.ids[int(batch['index'][i])]}.npz", arrays)
                saved += 1

        results: dict[str, Any] = {}
        protocols: dict[str, str] = {}
        for t, m in metrics.items():
            results[t] = {
                k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.compute().items()
            }
            protocols[t] = m.protocol
        # per-image sufficient statistics (keys "<task>/<stat>"), for bootstrap comparisons of runs
        per_image = {f"{t}/{k}": v for t, m in metrics.items() for k, v in m.per_image().items()}
        per_image["image_ids"] = np.array(image_ids)
        _save_npz(run_dir / PER_IMAGE_FILE, per_image)
    finally:
        for m in metrics.values():
            if hasattr(m, "close"):
                m.close()  # worker processes of the boundary metric, also when evaluation fails
    h, w = in_size
    n_params, n_flops = inference_cost(model, (h, w), dev)
    sizes = np.array(original_sizes, dtype=np.int64).reshape(-1, 2)
    report = {
        "run": {
            "dataset": cfg.data.dataset,
            "dataset_variant": dataset.manifest.get("variant"),
            "model": cfg.model.name,
            "backbone": cfg.model.backbone,
            "regularizer": cfg.regularizer.enabled,
            "variant": cfg.model.name + ("+3d" if cfg.regularizer.enabled else ""),
            "seed": cfg.seed,
            "tasks": tasks,
            "aux_only_tasks": [t for t in cfg.tasks if t not in tasks],
            "iters": cfg.iters,
        },
        "split": split,
        "n_images": n_images,
        "resolution": [h, w],  # network input size (of the last batch)
        "resize_mode": cfg.data.resize_mode,
        # where predictions were scored: each image's original size, or the network input size
        "eval_resolution": mode,
        "original_sizes": {
            "min": sizes.min(axis=0).tolist() if len(sizes) else None,
            "max": sizes.max(axis=0).tolist() if len(sizes) else None,
            "distinct": int(len({tuple(r) for r in sizes.tolist()})),
        },
        "metrics": results,
        "protocols": protocols,
        "per_image": PER_IMAGE_FILE,
        "params": n_params,
        "params_total": count_params(model),
        "flops": n_flops,
        "timing": {
            "train_s": _train_seconds(run_dir),
            "ms_per_image": 1000.0 * forward_s / max(n_images, 1),
            "device": dev.type,
        },
    }
    atomic_write_json(run_dir / "metrics.json", report)
    return report


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
        arrays[f"pred_{t}"] = _compact(t, pred)

    def back(x: Tensor) -> Tensor:
        return x if mode == "input" else to_original(x, box, in_size, (h, w))

    if rendered is not None:
        arrays["reg_depth"] = back(rendered["depth"][i].float()).cpu().numpy()
        for t, v in rendered["tasks"].items():
            arrays[f"reg_{t}"] = _compact(t, postprocess(t, back(v[i].float())[None])[0])
    return arrays


def _train_seconds(run_dir: Path) -> float | None:
    import csv

    log = run_dir / "train_log.csv"
    if not log.is_file():
        return None
    with log.open() as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["time_s"]) if rows else None
