"""Inference as evaluation and ``predict`` run it: batching images of different sizes, the forward
pass, mapping outputs back to each image's original size, post-processing, and the cost of a forward
pass (parameters, FLOPs)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

from mtl3d.engine.fastpath import FastPath
from mtl3d.models import decode_inputs
from mtl3d.tasks import TASKS, get_task


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
    """Head output -> what the metric and the figures consume (the task's own post-processing)."""
    return get_task(task).postprocess(logits)


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

    ``input``: predictions at the network input size against the transformed labels.
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


def infer(model: torch.nn.Module, batch: dict[str, Any], fast: FastPath) -> tuple[Any, dict[str, Tensor]]:
    """Features and outputs of an eval-mode model on one batch, in the path's memory format and precision."""
    image = fast.image(batch["image"])
    size = (int(image.shape[-2]), int(image.shape[-1]))
    with fast.autocast(image.device):
        feats = model.encode(image)
        out = model.decode(feats, size, **decode_inputs(model, batch, size))
    return feats, out
