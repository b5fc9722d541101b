"""Sample transforms that keep the intrinsics ``K`` and the normals consistent with the pixels.

Pixel convention (OpenCV): pixel ``(u, v)`` has its centre at integer coordinates, so resizing by a
factor ``s`` maps ``c -> (c + 0.5)·s − 0.5`` and flipping a width ``W`` maps ``cx -> (W − 1) − cx``;
cropping at ``(top, left)`` maps ``c -> c − offset`` and padding by ``(top, left)`` maps ``c -> c + offset``.
Labels are resized with nearest neighbour (no invented classes, no blended depths); the image with
bilinear interpolation; normals bilinearly and then renormalised.

Two resolution pipelines (:func:`build_transform`; docs/datasets.md, "Training at the published resolutions"):

- ``mode="resize"`` (MTL survey ``FixedResize``): every image is resized to ``size``, aspect ratio not
  preserved; training adds a random horizontal flip.
- ``mode="pad"`` (ATRC / InvPT): training = random scale in ``scale_range`` -> random crop to ``size``
  -> flip -> normalise -> centred pad to ``size``; evaluation = normalise -> centred pad (never resized,
  so the valid box of the padded input is the image at its original resolution).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtl3d.errors import UserError, unknown_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Sample = dict[str, Any]
Transform = Callable[[Sample, torch.Generator | None], Sample]

_NEAREST = ("semseg", "depth", "edges", "human_parts", "saliency")
# Pad values of InvPT's PadImage: labels get their ignore value (255, or 0 = invalid for depth and
# normals); the image gets 0, which is the mean colour because padding comes after normalisation.
PAD_FILL: dict[str, float] = {
    "image": 0.0,
    "semseg": 255,
    "human_parts": 255,
    "edges": 255,
    "saliency": 255,
    "depth": 0.0,
    "normals": 0.0,
}
RESIZE_MODES = ("resize", "pad")
DEFAULT_SCALE_RANGE = (0.5, 2.0)  # ATRC / InvPT RandomScaling
_GEOMETRY = ("K", "pose", "valid_box")  # tensors that are not pixel maps


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
        if not isinstance(val, Tensor) or val.dim() < 2 or key in _GEOMETRY:
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
        if isinstance(val, Tensor) and val.dim() >= 2 and key not in _GEOMETRY:
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
        if isinstance(val, Tensor) and val.dim() >= 2 and key not in _GEOMETRY:
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


def _dense_items(sample: Sample) -> list[tuple[str, Tensor]]:
    return [
        (k, v) for k, v in sample.items() if isinstance(v, Tensor) and v.dim() >= 2 and k not in _GEOMETRY
    ]


def pad(sample: Sample, size: Sequence[int], fill: dict[str, float] | None = None) -> Sample:
    """Pad every dense entry to ``size`` (H, W), centred like InvPT's ``PadImage``.

    The image sits at offset ``((H − h) // 2, (W − w) // 2)``; padded pixels get ``fill[key]`` (default
    :data:`PAD_FILL`: image 0, semseg/human_parts/edges/saliency 255, depth and normals 0, anything else
    0). The principal point shifts by the offset. ``sample["valid_box"]`` = ``(top, left, h, w)`` (int64)
    is the crop that undoes the padding (composed with an earlier one, if any).
    """
    H, W = int(size[0]), int(size[1])
    h, w = sample["image"].shape[-2:]
    if h > H or w > W:
        raise UserError(
            f"image of size {h}x{w} is larger than the pad size {H}x{W}; set data.height/width to at "
            "least the largest image of the dataset (pad mode never resizes at evaluation)"
        )
    top, left = (H - h) // 2, (W - w) // 2
    fills = {**PAD_FILL, **(fill or {})}
    out = dict(sample)
    for key, val in _dense_items(sample):
        canvas = val.new_full((*val.shape[:-2], H, W), fills.get(key, 0))
        canvas[..., top : top + h, left : left + w] = val
        out[key] = canvas
    if "K" in sample:
        K = sample["K"].clone()
        K[0, 2] += left
        K[1, 2] += top
        out["K"] = K
    box = sample.get("valid_box")
    if box is None:
        out["valid_box"] = torch.tensor([top, left, h, w], dtype=torch.int64)
    else:
        out["valid_box"] = box + torch.tensor([top, left, 0, 0], dtype=box.dtype)
    return out


def scale(sample: Sample, factor: float, depth_scale: bool = True) -> Sample:
    """Resize by ``factor`` (both axes; rounded to whole pixels, ``K`` follows the exact ratios).

    ``depth_scale``: divide depth by ``factor``, as the published ATRC/InvPT (``RandomScaling``) and MTL
    (``ScaleNRotate``) code does. With ``K`` rescaled, the undivided depth is already geometrically
    right (the same scene seen by a camera with a ``factor`` times longer focal length); dividing it
    instead describes the scene shrunk by ``1/factor`` and seen by the new ``K``, which keeps the
    "apparent size <-> depth" relation of the original focal length that a monocular depth network
    learns. That shrunk world is still self-consistent: the camera translation in ``pose`` is divided
    by the same factor, so depth, ``K`` and the poses of all views of a scene agree (cross-view losses).
    """
    h, w = sample["image"].shape[-2:]
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    out = resize(sample, (nh, nw))
    if depth_scale and factor != 1.0:
        if "depth" in out:
            out["depth"] = out["depth"] / factor
        if "pose" in out:
            pose = out["pose"].clone()
            pose[:3, 3] = pose[:3, 3] / factor
            out["pose"] = pose
    return out


def random_scale(
    sample: Sample, lo: float, hi: float, gen: torch.Generator | None = None, depth_scale: bool = True
) -> Sample:
    """:func:`scale` by a factor drawn uniformly from ``[lo, hi]`` (one draw from ``gen``)."""
    return scale(sample, _draw_scale(lo, hi, gen), depth_scale)


def _draw_scale(lo: float, hi: float, gen: torch.Generator | None) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=gen, dtype=torch.float64).item())


def _draw_crop(
    hw: tuple[int, int], size: Sequence[int], gen: torch.Generator | None
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a uniformly placed crop; only what exists where the image is smaller."""
    h, w = hw
    ch, cw = min(int(size[0]), h), min(int(size[1]), w)
    # two draws whatever the sizes, so later decisions do not depend on the image size
    top = int(torch.randint(0, h - ch + 1, (), generator=gen).item())
    left = int(torch.randint(0, w - cw + 1, (), generator=gen).item())
    return top, left, ch, cw


def random_crop(sample: Sample, size: Sequence[int], gen: torch.Generator | None = None) -> Sample:
    """Crop a uniformly placed ``size`` window (two draws from ``gen``).

    In a dimension where the image is smaller than ``size`` the whole extent is kept (pad afterwards).
    InvPT's ``cat_max_ratio`` retries (re-draw crops dominated by one class) are not reproduced.
    """
    top, left, ch, cw = _draw_crop(tuple(sample["image"].shape[-2:]), size, gen)
    return crop(sample, top, left, ch, cw)


def keep_original(transform: Transform, keys: Sequence[str]) -> Transform:
    """Wrap ``transform`` so that the output also holds the *untransformed* labels of ``keys`` under
    ``sample["original"]`` and the original ``(H, W)`` under ``sample["original_size"]`` (evaluation at
    original resolution)."""

    def apply(sample: Sample, gen: torch.Generator | None = None) -> Sample:
        out = transform(sample, gen)
        out["original"] = {k: sample[k] for k in keys if k in sample}
        out["original_size"] = torch.tensor(sample["image"].shape[-2:], dtype=torch.int64)
        return out

    return apply


def build_transform(
    size: Sequence[int] | None,
    train: bool,
    flip: bool = True,
    mode: str = "resize",
    scale_range: Sequence[float] | None = None,
    depth_scale: bool = True,
) -> Transform:
    """The sample transform of one split (see the module docstring for the two ``mode`` pipelines).

    ``size`` (H, W): resize target (``resize``) or crop/pad size (``pad``); ``None`` never resizes,
    crops or pads. ``scale_range`` (pad mode, training): uniform scale range, default [0.5, 2.0].
    ``depth_scale``: divide depth (and camera translations) by the scale factor, see :func:`scale`.

    Augmentation is a pure function of the generator passed in (exact resume). A neighbour view
    (``sample["neighbor"]``, multi-view data) gets the same decisions as the reference view: the same
    flip, the same scale factor and the same crop window (clamped to its own extent). Scaling and
    cropping only change ``K``, and the depth division scales every view's world alike, so relative
    poses stay consistent with the pixels and depths of both views.
    """
    if mode not in RESIZE_MODES:
        raise unknown_name("resize mode", mode, RESIZE_MODES)
    rng = [float(v) for v in (scale_range if scale_range is not None else DEFAULT_SCALE_RANGE)]
    if len(rng) != 2 or not 0 < rng[0] <= rng[1]:
        raise UserError(f"scale range must be two numbers 0 < lo <= hi, got {rng}")
    lo, hi = rng
    hw = (int(size[0]), int(size[1])) if size is not None else None

    def resize_view(sample: Sample, flipped: bool) -> Sample:
        if hw is not None:
            sample = resize(sample, hw)
        if flipped:
            sample = hflip(sample)
        return normalize_image(sample)

    def pad_view(
        sample: Sample, factor: float, box: tuple[int, int, int, int] | None, flipped: bool
    ) -> Sample:
        if factor != 1.0:
            sample = scale(sample, factor, depth_scale)
        if box is not None:
            h, w = sample["image"].shape[-2:]
            top, left = min(box[0], max(h - box[2], 0)), min(box[1], max(w - box[3], 0))
            sample = crop(sample, top, left, box[2], box[3])
        if flipped:
            sample = hflip(sample)
        sample = normalize_image(sample)
        return pad(sample, hw) if hw is not None else sample

    def apply(sample: Sample, gen: torch.Generator | None = None) -> Sample:
        ref = {k: v for k, v in sample.items() if k != "neighbor"}
        if mode == "resize":
            # one decision for both views, so their relative pose stays right
            flipped = train and flip and torch.rand((), generator=gen).item() < 0.5
            out = resize_view(ref, flipped)
            if "neighbor" in sample:
                out["neighbor"] = resize_view(sample["neighbor"], flipped)
            return out
        factor, box, flipped = 1.0, None, False
        if train:
            # all decisions drawn from the reference view, in a fixed order: scale, crop, flip
            factor = _draw_scale(lo, hi, gen)
            if hw is not None:
                h, w = ref["image"].shape[-2:]
                box = _draw_crop((max(1, int(round(h * factor))), max(1, int(round(w * factor)))), hw, gen)
            flipped = flip and torch.rand((), generator=gen).item() < 0.5
        out = pad_view(ref, factor, box, flipped)
        if "neighbor" in sample:
            out["neighbor"] = pad_view(sample["neighbor"], factor, box, flipped)
        return out

    return apply
