"""Where and how a run executes: its device, seeding, loader workers, moving a batch to the device."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from mtl3d.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("config asks for device 'cuda' but CUDA is not available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# Loader workers per GPU process when data.num_workers is unset: one batch of 8 at 448×576 with the pad-mode
# augmentation takes about a second on one core, longer than a step of the paper's hosts on one GPU.
MAX_AUTO_WORKERS = 8


def loader_workers(requested: int | None, device: torch.device) -> int:
    """``data.num_workers`` if set; else none on a CPU (workers would take the training's own cores) and,
    on CUDA, the cores this process may use, shared by the processes on the machine, less one for the
    training loop itself, at most ``MAX_AUTO_WORKERS``."""
    if requested is not None:
        return requested
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_AUTO_WORKERS, per_process - 1))


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def train_loader(dataset: Any, sampler: Any, workers: int, device: torch.device, seed: int) -> Any:
    """The training DataLoader: step-determined batches from ``sampler``, ``workers`` processes kept alive
    across epochs with 4 batches in flight each, pinned memory on CUDA.

    Its own generator: creating the iterator draws a base seed, which from the global RNG would shift
    every later random draw (dropout, the regularizer's stratified samples) by one on resume, since a
    resumed run creates its iterator after restoring the RNG state.
    """
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )
