"""The training-only 3D-aware regularizer branch (Li et al., ICLR 2024), as a plug-in module.

Encoder features → tri-plane → rays through the render grid → shared density MLP + per-task feature
MLPs → volume rendering → light per-task decoders g_t → logits upsampled to image size. Its loss is
``Σ_t w_t·α_t·L_t(rendered_t, y_t)`` (+ optional expected-depth and cross-view terms). The branch is a
separate ``nn.Module``: the host model's parameters, FLOPs and inference outputs do not change, and
at inference the trainer simply does not call it.

Usage in a training step::

    feats = model.encode(img)
    preds = model.decode(feats, size)
    reg = branch(feats, batch["K"], size, neighbor=branch.neighbor_input(batch))
    loss = host_loss + branch.loss(reg, batch, task_weights)["total"]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d.config import RegularizerConfig
from mtl3d.errors import UserError, unknown_name
from mtl3d.losses import task_loss
from mtl3d.regularizer.rays import (
    CAMERAS,
    SPACINGS,
    check_near_far,
    inside_box,
    make_rays,
    relative_pose,
    render_size,
    to_box,
)
from mtl3d.regularizer.render import Rendered, render_rays
from mtl3d.regularizer.triplane import AGGREGATIONS, PlaneEncoder, aggregated_channels, sample_triplane


def _check_cfg(cfg: RegularizerConfig, tasks: list[str]) -> None:
    if cfg.plane_agg not in AGGREGATIONS:
        raise unknown_name("regularizer.plane_agg", cfg.plane_agg, AGGREGATIONS)
    if cfg.camera not in CAMERAS:
        raise unknown_name("regularizer.camera", cfg.camera, CAMERAS)
    if cfg.spacing not in SPACINGS:
        raise unknown_name("regularizer.spacing", cfg.spacing, SPACINGS)
    for key in ("plane_ch", "hidden", "feat_dim", "n_samples", "render_stride", "chunk_rays", "plane_hidden"):
        if getattr(cfg, key) < 1:
            raise UserError(f"config key 'regularizer.{key}' must be >= 1, got {getattr(cfg, key)}")
    if cfg.plane_res is not None and (len(cfg.plane_res) != 2 or min(cfg.plane_res) < 1):
        raise UserError(f"config key 'regularizer.plane_res' must be [H, W] >= 1, got {cfg.plane_res}")
    if cfg.mode not in ("render", "flat"):
        raise unknown_name("regularizer.mode", cfg.mode, ("render", "flat"))
    if cfg.cross_view:
        if cfg.mode != "render":
            raise UserError("regularizer.cross_view needs regularizer.mode = 'render'")
        if cfg.camera != "pinhole":
            raise UserError("regularizer.cross_view needs regularizer.camera = 'pinhole'")
        for t in cfg.cross_view_tasks:
            if t not in tasks:
                raise UserError(f"regularizer.cross_view_tasks names {t!r}, not a task ({', '.join(tasks)})")


def downsample_depth(depth: Tensor, size: tuple[int, int]) -> Tensor:
    """Masked area average of a z-depth label [B,1,H,W] (0 = invalid) to ``size``; 0 where nothing valid.

    Each render pixel covers a block of image pixels (the same area its ray's pixel centre stands for),
    so the average of the valid depths in that block is the target; nearest sampling would pick one
    arbitrary pixel and drop valid data next to holes.
    """
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    valid = (depth > 0).to(depth.dtype)
    num = F.adaptive_avg_pool2d(depth * valid, size)
    den = F.adaptive_avg_pool2d(valid, size)
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))


def expected_depth_loss(rendered: Tensor, label: Tensor) -> Tensor:
    """L1 between the expected termination depth [B,1,h,w] and the label, masked to valid pixels."""
    target = downsample_depth(label.float(), tuple(rendered.shape[-2:]))
    mask = (target > 0).to(rendered.dtype)
    # clamp, not a branch on mask.any(): no valid pixel gives 0 without the host waiting for the device
    return ((rendered.float() - target).abs() * mask).sum() / mask.sum().clamp(min=1)


class RegularizerBranch(nn.Module):
    """The 3D-aware regularizer: a separate, training-only module fed with the host's encoder features.

    ``near``/``far`` are z-depth bounds in the label's unit (metres); ``task_channels`` maps each task
    to its output channels (as the host's heads).
    """

    def __init__(
        self,
        cfg: RegularizerConfig,
        feature_channels: list[int],
        task_channels: dict[str, int],
        near: float,
        far: float,
    ) -> None:
        super().__init__()
        self.tasks = list(task_channels)
        _check_cfg(cfg, self.tasks)
        check_near_far(near, far, cfg.spacing)
        self.cfg = cfg
        self.near = float(near)
        self.far = float(far)
        self.encoder = PlaneEncoder(
            feature_channels, cfg.plane_ch, cfg.plane_hidden, cfg.feat_source, cfg.plane_agg
        )
        c_point = aggregated_channels(cfg.plane_ch, cfg.plane_agg)
        hd = cfg.hidden
        # The first layers of the density MLP and of every task MLP, fused into one Linear (same maths
        # as separate MLPs, one matmul): output = [density hidden | task_1 hidden | ... | task_T hidden].
        self.first = nn.Linear(c_point, hd * (1 + len(self.tasks)))
        self.density_out = nn.Linear(hd, 1)
        # Second (linear) layers of the task MLPs. They are applied *after* compositing:
        # Σᵢ wᵢ (W hᵢ + b) = W (Σᵢ wᵢ hᵢ) + b·Σᵢ wᵢ exactly, which saves S× work and memory.
        self.task_out = nn.ModuleDict({t: nn.Linear(hd, cfg.feat_dim) for t in self.tasks})
        fd = cfg.feat_dim
        self.decoders = nn.ModuleDict(
            {
                t: nn.Sequential(
                    nn.Conv2d(fd, fd, 3, padding=1, bias=False),
                    nn.BatchNorm2d(fd),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(fd, c, 1),
                )
                for t, c in task_channels.items()
            }
        )

    # ------------------------------------------------------------------ forward
    def neighbor_input(self, batch: Mapping[str, Any]) -> dict[str, Tensor] | None:
        """The ``neighbor`` argument of :meth:`forward` from a batch (None unless cross-view is usable)."""
        nb = batch.get("neighbor")
        if not self.cfg.cross_view or nb is None or "pose" not in batch:
            return None
        return {"K": nb["K"], "pose": nb["pose"], "ref_pose": batch["pose"]}

    def forward(
        self,
        features: list[Tensor],
        K: Tensor,
        image_size: tuple[int, int],
        neighbor: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Any]:
        """Render every task from the tri-plane of ``features`` for the camera ``K`` [B,3,3].

        ``neighbor`` (cross-view only): ``{"K": [B,3,3], "pose": [B,4,4], "ref_pose": [B,4,4]}`` with
        camera-to-world poses of the neighbour and of the reference view; the neighbour view is
        rendered from the reference tri-plane (only its ``cross_view_tasks`` are decoded).
        """
        image_size = (int(image_size[0]), int(image_size[1]))
        size = render_size(image_size, self.cfg.render_stride)
        plane_size = tuple(self.cfg.plane_res) if self.cfg.plane_res is not None else size
        planes = self.encoder(features, plane_size)
        K = K.float()
        out = self._render_view(planes, K, K, image_size, size, None, self.tasks)
        if self.cfg.cross_view and neighbor is not None:
            missing = [k for k in ("K", "pose", "ref_pose") if k not in neighbor]
            if missing:
                raise UserError(
                    f"cross-view rendering needs neighbor keys {missing}; "
                    "build the argument with branch.neighbor_input(batch)"
                )
            T = relative_pose(neighbor["ref_pose"].float(), neighbor["pose"].float())
            out["neighbor"] = self._render_view(
                planes, K, neighbor["K"].float(), image_size, size, T, list(self.cfg.cross_view_tasks)
            )
        return out

    def _render_view(
        self,
        planes: Tensor,
        K_ref: Tensor,
        K_view: Tensor,
        image_size: tuple[int, int],
        size: tuple[int, int],
        transform: Tensor | None,
        tasks: list[str],
    ) -> dict[str, Any]:
        cfg = self.cfg
        rays = make_rays(
            K_view,
            image_size,
            size,
            near=self.near,
            far=self.far,
            n_samples=cfg.n_samples,
            camera=cfg.camera,
            spacing=cfg.spacing,
            stratified=self.training and cfg.stratified,
            transform=transform,
        )
        hd = cfg.hidden

        def field(start: int, end: int) -> tuple[Tensor, Tensor]:
            coords = to_box(
                rays.points(start, end),
                K_ref,
                image_size,
                self.near,
                self.far,
                camera=cfg.camera,
                spacing=cfg.spacing,
            )
            h = F.relu(self.first(sample_triplane(planes, coords, cfg.plane_agg)))
            # split, not slicing: a slice's backward zero-fills a full-size gradient per slice
            h_density, values = h.split([hd, h.shape[-1] - hd], dim=-1)
            sigma = F.softplus(self.density_out(h_density)).squeeze(-1)
            if transform is not None:
                # Outside the reference frustum the reference image says nothing: empty space.
                sigma = sigma * inside_box(coords).to(sigma.dtype)
            return sigma, values

        if cfg.mode == "flat":
            r = self._flat(planes, rays, K_ref, image_size)
        else:
            r = render_rays(field, rays.z, rays.delta, chunk_rays=cfg.chunk_rays, background_depth=self.far)
        B = planes.shape[0]
        h, w = size
        acc = r.opacity[..., None].to(r.features.dtype)
        preds = {}
        for t in tasks:
            k = self.tasks.index(t)
            lin = self.task_out[t]
            hid = r.features[..., k * hd : (k + 1) * hd]
            feat = F.linear(hid, lin.weight) + lin.bias * acc  # [B, N, feat_dim]
            feat = feat.transpose(1, 2).reshape(B, -1, h, w)
            logits = self.decoders[t](feat)
            preds[t] = F.interpolate(logits, size=image_size, mode="bilinear", align_corners=False)
        return {
            "tasks": preds,
            "depth": r.depth.reshape(B, 1, h, w),
            "opacity": r.opacity.reshape(B, 1, h, w),
        }

    def _flat(self, planes: Tensor, rays: Any, K_ref: Tensor, image_size: tuple[int, int]) -> Rendered:
        """The capacity control: each ray's mid-depth point only, opacity 1, no compositing. The same
        parameters learn from the same losses; only the 3D structure (density, depth) is gone, so
        density_out gets no gradient and the returned depth is the constant mid-depth."""
        S = rays.z.shape[-1]
        mid = S // 2
        coords = to_box(
            rays.points(0, rays.z.shape[1])[..., mid : mid + 1, :],
            K_ref,
            image_size,
            self.near,
            self.far,
            camera=self.cfg.camera,
            spacing=self.cfg.spacing,
        )
        h = F.relu(self.first(sample_triplane(planes, coords, self.cfg.plane_agg)))[..., 0, :]
        ones = torch.ones(h.shape[:-1], dtype=h.dtype, device=h.device)
        return Rendered(
            weights=ones[..., None], features=h[..., self.cfg.hidden :], depth=rays.z[..., mid], opacity=ones
        )

    # ------------------------------------------------------------------ loss
    def loss(
        self,
        out: Mapping[str, Any],
        batch: Mapping[str, Any],
        task_weights: Mapping[str, float],
        losses: Mapping[str, str] | None = None,
        edge_pos_weight: float = 0.95,
    ) -> dict[str, Tensor]:
        """``{"reg/<task>": L_t, ..., "total": Σ_t w_t·α_t·L_t + extras}`` (per-task values unweighted).

        Extras: ``reg/depth_exp`` (L1 of the expected depth, weight ``depth_supervision``) and, when the
        forward pass rendered a neighbour, ``reg/xview/<task>`` (weight ``w_t·cross_view_alpha``) and
        ``reg/xview/depth_exp`` (weight ``depth_supervision·cross_view_alpha``).
        """
        cfg = self.cfg
        losses = losses or {}
        res: dict[str, Tensor] = {}
        terms: list[Tensor] = []
        for t, pred in out["tasks"].items():
            value = task_loss(t, pred, batch[t], loss=losses.get(t), edge_pos_weight=edge_pos_weight)
            res[f"reg/{t}"] = value
            terms.append(task_weights.get(t, 1.0) * cfg.task_alpha.get(t, cfg.alpha) * value)
        if cfg.depth_supervision > 0 and "depth" in batch:
            value = expected_depth_loss(out["depth"], batch["depth"])
            res["reg/depth_exp"] = value
            terms.append(cfg.depth_supervision * value)
        if "neighbor" in out:
            nb_out, nb = out["neighbor"], batch["neighbor"]
            for t, pred in nb_out["tasks"].items():
                value = task_loss(t, pred, nb[t], loss=losses.get(t), edge_pos_weight=edge_pos_weight)
                res[f"reg/xview/{t}"] = value
                terms.append(task_weights.get(t, 1.0) * cfg.cross_view_alpha * value)
            if cfg.depth_supervision > 0 and "depth" in nb:
                value = expected_depth_loss(nb_out["depth"], nb["depth"])
                res["reg/xview/depth_exp"] = value
                terms.append(cfg.depth_supervision * cfg.cross_view_alpha * value)
        res["total"] = torch.stack(terms).sum() if terms else out["depth"].sum() * 0.0
        return res
