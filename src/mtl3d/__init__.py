"""mtl3d: multi-task dense prediction with a 3D-aware regularizer (Li et al., ICLR 2024)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtl3d._version import __version__

__all__ = ["__version__", "load"]


def load(source: str | Path, **kwargs: Any) -> Any:
    """A trained model from a run folder, a ``.mtl3d`` model file or a URL (``sha256=`` pinned):
    ``model.predict(image) -> {task: array}`` at the image's size. See :func:`mtl3d.engine.predictor.load`."""
    from mtl3d.engine.predictor import load as _load

    return _load(source, **kwargs)
