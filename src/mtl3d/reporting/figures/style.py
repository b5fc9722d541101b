"""How every figure looks: the seaborn theme, the class palette, label maps and predictions as RGB
images, and saving as PNG + PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

IGNORE = 255


def save_figure(fig: Figure, out_stem: str | Path, dpi: int = 150) -> list[Path]:
    """Write ``OUT_STEM.png`` and ``OUT_STEM.pdf``; returns both paths."""
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(
            p, dpi=dpi, bbox_inches="tight", metadata={"CreationDate": None} if p.suffix == ".pdf" else None
        )
    return paths


def theme() -> None:
    """The seaborn theme of every figure."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")


def variant_colors(variants: list[str]) -> dict[str, tuple[float, float, float]]:
    """A distinct colour per variant, none of them grey (a cycled palette would give two variants one
    colour): seaborn's "deep" while its 9 non-grey colours suffice, then matplotlib's "tab20" pairs (18
    without its grey pair), then evenly spaced husl hues."""
    import seaborn as sns

    deep = [c for i, c in enumerate(sns.color_palette("deep", 10)) if i != 7]  # 7: deep's grey
    tab20 = [c for i, c in enumerate(sns.color_palette("tab20", 20)) if i not in (14, 15)]  # greys
    n = len(variants)
    colors = deep if n <= len(deep) else tab20 if n <= len(tab20) else sns.color_palette("husl", n)
    return dict(zip(variants, colors, strict=False))


def class_colors(n: int) -> np.ndarray:
    """A fixed, distinguishable RGB palette (uint8, n x 3): seaborn's husl hues, lightness cycled."""
    import seaborn as sns

    base = np.array(sns.color_palette("husl", max(n, 1)))
    light = np.where(np.arange(max(n, 1)) % 2 == 0, 1.0, 0.7)[:, None]
    return (base * light * 255).round().astype(np.uint8)


def _hwc(a: np.ndarray) -> np.ndarray:
    """CHW (as saved from tensors) -> HWC; HWC and HW pass through."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    return a


def colorize(
    task: str, arr: np.ndarray, num_classes: int = 0, depth_range: tuple[float, float] | None = None
) -> np.ndarray:
    """A label map / prediction of ``task`` as an RGB float image in [0, 1] (invalid pixels black)."""
    import matplotlib

    a = _hwc(np.asarray(arr, dtype=np.float32) if task not in ("semseg", "human_parts") else np.asarray(arr))
    if task in ("semseg", "human_parts"):
        lab = a[..., 0] if a.ndim == 3 else a
        lab = lab.astype(np.int64)
        n = max(num_classes, int(lab[lab != IGNORE].max()) + 1 if (lab != IGNORE).any() else 1)
        pal = class_colors(n).astype(np.float32) / 255.0
        out = np.zeros((*lab.shape, 3), np.float32)
        ok = (lab >= 0) & (lab < n)
        out[ok] = pal[lab[ok]]
        return out
    if task == "normals":
        if a.ndim != 3 or a.shape[-1] != 3:  # not a 3-vector field: show an empty (grey) panel
            return np.full((*a.shape[:2], 3), 0.5, np.float32)
        n = a[..., :3]
        valid = np.linalg.norm(n, axis=-1, keepdims=True) > 1e-6
        return np.where(valid, np.clip((n + 1.0) / 2.0, 0.0, 1.0), 0.0)
    x = a[..., 0] if a.ndim == 3 else a
    if task == "depth":
        valid = x > 0
        lo, hi = (
            depth_range
            if depth_range
            else ((float(x[valid].min()), float(x[valid].max())) if valid.any() else (0.0, 1.0))
        )
        t = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        rgb = matplotlib.colormaps["viridis"](t)[..., :3].astype(np.float32)
        return np.where(valid[..., None], rgb, 0.0)
    # edges, saliency and anything else in [0, 1]; 255 (ignore) shown black
    valid = x != IGNORE
    g = np.clip(np.where(valid, x, 0.0), 0.0, 1.0)
    return np.repeat(g[..., None], 3, axis=-1)


def grid(nrow: int, ncol: int, cell: float = 1.6) -> tuple[Figure, Any]:
    """A figure of ``nrow`` x ``ncol`` image panels without ticks or frames."""
    fig = Figure(figsize=(cell * ncol, cell * nrow * 0.8 + 0.3), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
    return fig, axes
