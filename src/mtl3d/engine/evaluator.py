"""Evaluation of a trained run: ``metrics.json`` (per-task metrics, params, FLOPs, timing) + predictions."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from mtl3d import config as C
from mtl3d.data.registry import create_dataset, get_dataset_info
from mtl3d.data.transforms import denormalize_image
from mtl3d.engine.checkpoint import _atomic, atomic_write_json, load_checkpoint
from mtl3d.engine.trainer import build_branch, resolve_device, to_device
from mtl3d.errors import UserError
from mtl3d.metrics.registry import create_metric
from mtl3d.models import build_model
from mtl3d.tasks import get_task


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

    _atomic(path, write)


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


def evaluate(
    run_dir: str | Path,
    split: str | None = None,
    data_root: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    cfg, ckpt = load_run(run_dir)
    if data_root is not None:
        cfg.data.root = data_root
    dev = resolve_device(device or cfg.device)
    info = get_dataset_info(cfg.data.dataset)
    split = split or cfg.data.eval_split
    size = (cfg.data.height, cfg.data.width) if cfg.data.height and cfg.data.width else None
    num_classes = int(ckpt["num_classes"])
    model = build_model(cfg.model, cfg.tasks, num_classes, pretrained=False)
    tasks = list(model.main_tasks)  # auxiliary-only tasks have no output to score: no labels to load
    dataset = create_dataset(info.name, cfg.data.root, split, tasks, train=False, size=size)
    model.load_state_dict(ckpt["model"])
    model.to(dev).eval()
    branch = None
    if ckpt.get("branch") is not None:
        branch = build_branch(cfg, model, num_classes)
        branch.load_state_dict(ckpt["branch"])
        branch.to(dev).eval()

    metrics = {
        t: create_metric(
            t,
            num_classes=num_classes,
            class_names=dataset.classes,
            **({"max_dist": info.edge_max_dist} if t == "edges" else {}),
        )
        for t in tasks
    }
    loader = DataLoader(
        dataset, batch_size=cfg.eval_batch_size, shuffle=False, num_workers=cfg.data.num_workers
    )
    pred_dir = run_dir / "predictions"
    n_save = cfg.n_saved_predictions
    saved = 0
    forward_s = 0.0
    n_images = 0
    for batch in tqdm(loader, desc=f"evaluate {run_dir.name}", disable=not progress, dynamic_ncols=True):
        batch = to_device(batch, dev)
        with torch.no_grad():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            size = tuple(batch["image"].shape[-2:])
            feats = model.encode(batch["image"])  # kept: the branch below renders from the same features
            out = model.decode(feats, size)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            forward_s += time.perf_counter() - t0
            preds = {t: postprocess(t, out[t]) for t in tasks}
            for t in tasks:
                metrics[t].update(preds[t], batch[t])
            rendered = None
            if branch is not None and saved < n_save:
                rendered = branch(feats, batch["K"], size)
        n_images += batch["image"].shape[0]
        for i in range(batch["image"].shape[0]):
            if saved >= n_save:
                break
            arrays: dict[str, np.ndarray] = {
                "image": (
                    denormalize_image(batch["image"][i : i + 1])[0].permute(1, 2, 0).cpu().numpy() * 255
                )
                .round()
                .astype(np.uint8)
            }
            for t in tasks:
                arrays[f"gt_{t}"] = batch[t][i].cpu().numpy()
                arrays[f"pred_{t}"] = _compact(t, preds[t][i])
            if rendered is not None:
                arrays["reg_depth"] = rendered["depth"][i].float().cpu().numpy()
                for t, v in rendered["tasks"].items():
                    arrays[f"reg_{t}"] = _compact(t, postprocess(t, v)[i])
            _save_npz(pred_dir / f"{dataset.ids[int(batch['index'][i])]}.npz", arrays)
            saved += 1

    results: dict[str, Any] = {}
    protocols: dict[str, str] = {}
    for t, m in metrics.items():
        results[t] = {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.compute().items()
        }
        protocols[t] = m.protocol
    h, w = size
    n_params, n_flops = inference_cost(model, (h, w), dev)
    report = {
        "run": {
            "dataset": cfg.data.dataset,
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
        "resolution": [h, w],
        "metrics": results,
        "protocols": protocols,
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


def _train_seconds(run_dir: Path) -> float | None:
    import csv

    log = run_dir / "train_log.csv"
    if not log.is_file():
        return None
    with log.open() as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["time_s"]) if rows else None
