"""Sample transforms that keep the intrinsics ``K`` and the normals consistent with the pixels.

Pixel convention (OpenCV): pixel ``(u, v)`` has its centre at integer coordinates, so resizing by a
factor ``s`` maps ``c -> (c + 0.5)·s − 0.5`` and flipping a width ``W`` maps ``cx -> (W − 1) − cx``.
Labels are resized with nearest neighbour (no invented classes, no blended depths); the image with
bilinear interpolation; normals bilinearly and then renormalised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Sample = dict[str, Any]
Transform = Callable[[Sample, torch.Generator | None], Sample]

_NEAREST = ("semseg", "depth", "edges", "human_parts", "saliency")


def scale_intrinsics(K: Tensor, sx: float, sy: float) -> Tensor:
    K = K.clone()
    K[0, 0] *= sx
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 1] *= sy
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def _resize_map(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    squeeze = x.dim() == 2
    y = x[None, None] if squeeze else x[None]
    dtype = y.dtype
    if mode == "nearest":
        y = F.interpolate(y.float(), size=size, mode="nearest-exact")
    else:
        y = F.interpolate(y.float(), size=size, mode="bilinear", align_corners=False)
    y = y.to(dtype) if mode == "nearest" else y
    return y[0, 0] if squeeze else y[0]


def resize(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize every dense entry to ``size`` (H, W) and rescale ``K``."""
    h0, w0 = sample["image"].shape[-2:]
    if (h0, w0) == tuple(size):
        return sample
    out = dict(sample)
    for key, val in sample.items():
        if not isinstance(val, Tensor) or val.dim() < 2 or key in ("K", "pose"):
            continue
        if key == "image":
            out[key] = _resize_map(val, size, "bilinear")
        elif key == "normals":
            n = _resize_map(val, size, "bilinear")
            valid = _resize_map((val.abs().sum(0) > 0).float(), size, "nearest") > 0
            out[key] = F.normalize(n, dim=0) * valid
        elif key in _NEAREST:
            out[key] = _resize_map(val, size, "nearest")
    if "K" in sample:
        out["K"] = scale_intrinsics(sample["K"], size[1] / w0, size[0] / h0)
    return out


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop every dense entry; the principal point shifts by the crop offset."""
    out = dict(sample)
    for key, val in sample.items():
        if isinstance(val, Tensor) and val.dim() >= 2 and key not in ("K", "pose"):
            out[key] = val[..., top : top + height, left : left + width]
    if "K" in sample:
        K = sample["K"].clone()
        K[0, 2] -= left
        K[1, 2] -= top
        out["K"] = K
    return out


def hflip(sample: Sample) -> Sample:
    """Mirror horizontally: x of the normals changes sign and ``cx`` mirrors.

    The pose becomes ``S·pose·S`` with ``S = diag(−1, 1, 1, 1)``: the view of the mirrored world
    through a mirrored camera. It stays a proper rigid transform, and when every view of a scene is
    flipped together their relative poses stay consistent with the flipped pixels.
    """
    out = dict(sample)
    w = sample["image"].shape[-1]
    for key, val in sample.items():
        if isinstance(val, Tensor) and val.dim() >= 2 and key not in ("K", "pose"):
            out[key] = val.flip(-1)
    if "normals" in out:
        n = out["normals"].clone()
        n[0] = -n[0]
        out["normals"] = n
    if "K" in sample:
        K = sample["K"].clone()
        K[0, 2] = (w - 1) - K[0, 2]
        out["K"] = K
    if "pose" in sample:
        S = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=sample["pose"].dtype))
        out["pose"] = S @ sample["pose"] @ S
    return out


def normalize_image(sample: Sample) -> Sample:
    out = dict(sample)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out["image"] = (sample["image"] - mean) / std
    return out


def denormalize_image(image: Tensor) -> Tensor:
    """Inverse of :func:`normalize_image` for display, values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(-1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(-1, 3, 1, 1)
    return (image * std + mean).clamp(0, 1).reshape(image.shape)


def build_transform(size: Sequence[int] | None, train: bool, flip: bool = True) -> Transform:
    """Resize (if ``size``), random flip in training, ImageNet normalisation.

    The generator is passed in so augmentation is reproducible and resumable.
    """

    def one_view(sample: Sample, flipped: bool) -> Sample:
        if size is not None:
            sample = resize(sample, (int(size[0]), int(size[1])))
        if flipped:
            sample = hflip(sample)
        return normalize_image(sample)

    def apply(sample: Sample, gen: torch.Generator | None = None) -> Sample:
        # one decision for both views, so their relative pose stays right
        flipped = train and flip and torch.rand((), generator=gen).item() < 0.5
        out = one_view({k: v for k, v in sample.items() if k != "neighbor"}, flipped)
        if "neighbor" in sample:
            out["neighbor"] = one_view(sample["neighbor"], flipped)
        return out

    return apply
