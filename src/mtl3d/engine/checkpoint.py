"""Resumable checkpoints, written atomically (see :mod:`mtl3d.io`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtl3d.errors import UserError
from mtl3d.io import atomic_write, atomic_write_json, atomic_write_text, check_out_dir

__all__ = [
    "atomic_torch_save",
    "atomic_write_json",
    "atomic_write_text",
    "check_out_dir",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
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


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
