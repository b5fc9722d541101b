"""Resumable checkpoints, written atomically (see :mod:`mtl3d.io`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtl3d.engine.distributed import DistInfo
from mtl3d.errors import UserError
from mtl3d.io import atomic_write, atomic_write_json, atomic_write_text, check_out_dir

__all__ = [
    "atomic_torch_save",
    "atomic_write_json",
    "atomic_write_text",
    "check_out_dir",
    "gather_rng_states",
    "load_checkpoint",
    "restore_rng_state",
]


def atomic_torch_save(path: Path, obj: Any) -> None:
    atomic_write(path, lambda p: torch.save(obj, p))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint is tensors and plain containers, never code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"no checkpoint at {path}; train the run first") from None
    except Exception as e:
        raise UserError(f"corrupt checkpoint {path} ({type(e).__name__}); delete it to retrain") from None


def _own_rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def gather_rng_states(device: torch.device, dist_info: DistInfo | None = None) -> dict[str, Any]:
    """Every rank's own random state (CPU, and its own GPU's), gathered so that rank 0 can save them all.

    Only the device a rank runs on is saved, never every visible GPU's, so a run resumes with fewer
    GPUs visible. Under torchrun every rank must call this (a collective).
    """
    mine = _own_rng_state(device)
    ranks = [mine]
    if dist_info is not None and dist_info.enabled:
        import torch.distributed as dist

        ranks = [None] * dist_info.world_size
        dist.all_gather_object(ranks, mine)
    return {"ranks": ranks}


def restore_rng_state(
    state: dict[str, Any], device: torch.device, dist_info: DistInfo | None = None
) -> str | None:
    """Restore this rank's random state; returns a one-line warning when that cannot be exact."""
    rank = dist_info.rank if dist_info is not None else 0
    if "ranks" in state:
        ranks = state["ranks"]
        if rank >= len(ranks):
            return (
                f"the checkpoint holds the random state of {len(ranks)} process(es), not of rank {rank}; "
                "its random streams start afresh, so the run will not equal an uninterrupted one"
            )
        mine = ranks[rank]
        cuda = mine.get("cuda")
    else:  # a checkpoint holding rank 0's CPU state and every visible GPU's state
        mine = state
        saved = state.get("cuda") or []
        index = torch.cuda.current_device() if device.type == "cuda" else 0
        cuda = saved[index] if index < len(saved) else None
        if device.type == "cuda" and saved and cuda is None:
            torch.set_rng_state(mine["torch"])
            return (
                f"the checkpoint holds the random state of {len(saved)} GPU(s), none for GPU {index}; "
                "its random stream on the GPU starts afresh, so the run will not equal an uninterrupted one"
            )
    torch.set_rng_state(mine["torch"])
    if device.type == "cuda" and cuda is not None:
        torch.cuda.set_rng_state(cuda, torch.cuda.current_device())
    elif (device.type == "cuda") != (cuda is not None):
        saved_on, now = ("a GPU", "the CPU") if cuda is not None else ("the CPU", "a GPU")
        return (
            f"the checkpoint was saved on {saved_on} and resumes on {now}: the random streams on the device "
            "(ray samples, dropout) start afresh, so the run will not equal an uninterrupted one"
        )
    return None
