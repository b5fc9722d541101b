"""Cameras and rays for the 3D-aware regularizer.

Conventions (also in ``docs/regularizer.md``):

* Camera frame is OpenCV (x right, y down, z forward); pixel ``(u, v)`` has its centre at integer
  coordinates, ``K @ [X, Y, Z] / Z = [u, v, 1]``.
* A ray is ``p(z) = o + z·d`` with ``d = R·K⁻¹[u, v, 1]`` (so ``d`` has unit z-component in its *own*
  camera frame) and ``z`` the **z-depth of that camera**: the expected termination ``Σ wᵢ zᵢ`` is then
  directly comparable with a z-depth label, for the reference view and for a neighbour view alike.
* Samples lie in bins between ``near`` and ``far`` (edges linear in z or linear in 1/z); each sample
  stands for its bin, so the quadrature interval ``δᵢ`` is the bin width (times ``|d|`` for a pinhole
  ray, i.e. metric length along the ray) and the last interval ends exactly at ``far``.
* The scene box is [−1, 1]³ in *frustum coordinates* of the reference camera:
  ``x' = (2u + 1)/W − 1``, ``y' = (2v + 1)/H − 1`` (the ``grid_sample(align_corners=False)`` convention
  for the OpenCV pixel centres, so the xy-plane is pixel-aligned with the image features) and ``z'`` the
  normalised depth (linear in z or in 1/z, matching the sample spacing).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mtl3d import geometry
from mtl3d.errors import UserError, unknown_name

CAMERAS = ("pinhole", "ortho")
SPACINGS = ("linear", "inverse")
# Points closer than this to the reference camera plane cannot be projected; they count as outside.
_MIN_Z = 1e-6


def default_intrinsics(
    H: int, W: int, fov_deg: float = 60.0, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Intrinsics for a dataset without calibration: ``fov_deg`` is the **horizontal** field of view.

    Square pixels (fy = fx = (W/2)/tan(fov/2)), no skew, principal point at the image centre
    ((W−1)/2, (H−1)/2) under the OpenCV pixel-centre convention.
    """
    return torch.tensor(geometry.default_intrinsics(H, W, fov_deg).tolist(), dtype=dtype)


def render_size(image_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Render grid for an image: ``round(H/stride) × round(W/stride)`` (at least 1×1)."""
    H, W = image_size
    return max(1, round(H / stride)), max(1, round(W / stride))


def render_pixel_centers(
    image_size: tuple[int, int],
    size: tuple[int, int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Image-pixel coordinates ``(u, v)``, each [h, w], of the centres of an h×w render grid.

    Render pixel (i, j) covers the image area [j·W/w, (j+1)·W/w) in edge coordinates, so its centre is
    ``u = (j + 0.5)·W/w − 0.5`` (same rule as resizing, see the data contract).
    """
    H, W = image_size
    h, w = size
    j = torch.arange(w, device=device, dtype=dtype)
    i = torch.arange(h, device=device, dtype=dtype)
    u = (j + 0.5) * (W / w) - 0.5
    v = (i + 0.5) * (H / h) - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return uu, vv


def pixel_directions(K: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Camera-frame directions ``K⁻¹[u, v, 1]`` (z-component 1) for pixels ``u, v`` [...]; K [B,3,3].

    Returns [B, N, 3] with N = u.numel().
    """
    uv1 = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], dim=-1)  # [N,3]
    Kinv = torch.linalg.inv(K.to(torch.float64)).to(u.dtype)  # float64: K has entries ~500 and ~1
    return torch.einsum("bij,nj->bni", Kinv, uv1)


def rigid_inverse(T: Tensor) -> Tensor:
    """Inverse of rigid transforms [..., 4, 4] via Rᵀ, −Rᵀt (exact for rotations, no matrix inverse)."""
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def relative_pose(pose_ref: Tensor, pose_nbr: Tensor) -> Tensor:
    """``T = pose_ref⁻¹ · pose_nbr``: maps neighbour-camera coordinates into the reference camera frame.

    Both poses are camera-to-world [..., 4, 4].
    """
    return rigid_inverse(pose_ref) @ pose_nbr


def bin_edges(near: float, far: float, n: int, spacing: str, *, device=None, dtype=torch.float32) -> Tensor:
    """``n + 1`` bin edges from ``near`` to ``far``, uniform in z (linear) or in 1/z (inverse)."""
    if spacing not in SPACINGS:
        raise unknown_name("ray spacing", spacing, SPACINGS)
    t = torch.linspace(0.0, 1.0, n + 1, device=device, dtype=torch.float64)
    e = _interp(torch.tensor(near, dtype=torch.float64), torch.tensor(far, dtype=torch.float64), t, spacing)
    e[0], e[-1] = near, far  # exact ends, whatever the rounding of 1/(1/x)
    return e.to(dtype)


def _interp(lo: Tensor, hi: Tensor, frac: Tensor, spacing: str) -> Tensor:
    """Point at fraction ``frac`` between depths lo and hi, linear in z or in 1/z."""
    if spacing == "linear":
        return lo + frac * (hi - lo)
    return 1.0 / (1.0 / lo + frac * (1.0 / hi - 1.0 / lo))


def sample_depths(
    near: float,
    far: float,
    n_samples: int,
    shape: tuple[int, ...],
    *,
    spacing: str = "linear",
    stratified: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Sample z-depths ``z`` and bin widths ``δ`` (each [*shape, n_samples]) between near and far.

    One sample per bin: the bin's midpoint (in z for linear, in 1/z for inverse spacing) when
    ``stratified`` is False, else a uniform random position inside the bin (again in the spacing's
    variable). ``δ`` is the bin width in z, so ``Σ δ = far − near`` exactly.
    """
    check_near_far(near, far, spacing)
    e = bin_edges(near, far, n_samples, spacing, device=device, dtype=torch.float64)
    frac_shape = (*shape, n_samples)
    if stratified:
        frac = torch.rand(frac_shape, generator=generator, device=device, dtype=torch.float64)
    else:
        frac = torch.full(frac_shape, 0.5, device=device, dtype=torch.float64)
    lo, hi = e[:-1], e[1:]
    z = _interp(lo, hi, frac, spacing)
    delta = (hi - lo).expand(frac_shape)
    return z.to(dtype), delta.to(dtype).contiguous()


def check_near_far(near: float, far: float, spacing: str = "linear") -> None:
    if not (math.isfinite(near) and math.isfinite(far)) or near < 0 or far <= near:
        raise UserError(f"ray bounds must satisfy 0 <= near < far, got near={near}, far={far}")
    if spacing == "inverse" and near <= 0:
        raise UserError("inverse (1/z) ray spacing needs near > 0")


@dataclass
class Rays:
    """A batch of rays with their samples; all in the **reference** camera frame.

    ``origins``/``dirs`` [B, N, 3]; ``z``/``delta`` [B, N, S]: z-depth of each sample in the ray's own
    camera and its quadrature interval (metric length along the ray); ``size`` is the (h, w) grid.
    """

    origins: Tensor
    dirs: Tensor
    z: Tensor
    delta: Tensor
    size: tuple[int, int]

    def points(self, start: int = 0, end: int | None = None) -> Tensor:
        """Sample positions [B, n, S, 3] of rays ``start:end``."""
        o = self.origins[:, start:end, None, :]
        d = self.dirs[:, start:end, None, :]
        return o + self.z[:, start:end, :, None] * d

    @property
    def n_rays(self) -> int:
        return self.origins.shape[1]


def _no_autocast(fn):
    """Run ``fn`` in full precision even inside autocast: bf16 pixel coordinates are off by pixels."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)

    return wrapper


@_no_autocast
def make_rays(
    K: Tensor,
    image_size: tuple[int, int],
    size: tuple[int, int],
    *,
    near: float,
    far: float,
    n_samples: int,
    camera: str = "pinhole",
    spacing: str = "linear",
    stratified: bool = False,
    transform: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Rays:
    """Rays through the centres of an ``size`` = (h, w) render grid over an image of ``image_size``.

    ``pinhole``: origin at the camera centre, direction ``K⁻¹[u, v, 1]``; ``transform`` [B, 4, 4]
    (e.g. :func:`relative_pose`) maps this camera's frame into the reference frame, for rendering a
    neighbour view from the reference scene. ``ortho``: the paper's "camera orthogonal to the image
    centre" — rays parallel to the optical axis, one per render pixel, starting at the pixel's
    frustum coordinates (x', y', 0) with direction (0, 0, 1); K is not used and no transform is allowed.
    """
    if camera not in CAMERAS:
        raise unknown_name("camera", camera, CAMERAS)
    if n_samples < 1:
        raise UserError(f"n_samples must be >= 1, got {n_samples}")
    B = K.shape[0]
    dtype = K.dtype if K.dtype.is_floating_point else torch.float32
    device = K.device
    u, v = render_pixel_centers(image_size, size, device=device, dtype=dtype)
    N = u.numel()
    if camera == "pinhole":
        dirs = pixel_directions(K.to(dtype), u, v)
        origins = torch.zeros_like(dirs)
        if transform is not None:
            T = transform.to(device=device, dtype=dtype)
            dirs = torch.einsum("bij,bnj->bni", T[:, :3, :3], dirs)
            origins = T[:, None, :3, 3].expand(B, N, 3)
    else:
        if transform is not None:
            raise UserError("the 'ortho' camera cannot render a transformed (neighbour) view; use 'pinhole'")
        H, W = image_size
        x = (2 * u + 1) / W - 1
        y = (2 * v + 1) / H - 1
        origins = torch.stack([x, y, torch.zeros_like(x)], -1).reshape(1, N, 3).expand(B, N, 3)
        dirs = torch.zeros_like(origins)
        dirs[..., 2] = 1.0
    z, delta = sample_depths(
        near,
        far,
        n_samples,
        (B, N),
        spacing=spacing,
        stratified=stratified,
        generator=generator,
        device=device,
        dtype=dtype,
    )
    delta = delta * dirs.norm(dim=-1, keepdim=True)  # metric length along the ray
    return Rays(origins=origins, dirs=dirs, z=z, delta=delta, size=tuple(size))


def normalized_depth(Z: Tensor, near: float, far: float, spacing: str) -> Tensor:
    """Map z-depth to [−1, 1] over [near, far], linear in z or in 1/z (to match the sample spacing)."""
    if spacing == "linear":
        s = (Z - near) / (far - near)
    else:
        s = (1.0 / Z - 1.0 / near) / (1.0 / far - 1.0 / near)
    return 2.0 * s - 1.0


def project(points: Tensor, K: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel coordinates ``(u, v)`` and depth ``Z`` of camera-frame points [B, ..., 3]; K [B, 3, 3].

    Depth is clamped to a tiny positive value before dividing; callers mask ``Z <= 0`` themselves.
    """
    B = points.shape[0]
    flat = points.reshape(B, -1, 3)
    q = torch.einsum("bij,bnj->bni", K.to(points.dtype), flat)
    Z = flat[..., 2]
    Zs = Z.clamp(min=_MIN_Z)
    u = q[..., 0] / Zs
    v = q[..., 1] / Zs
    shape = points.shape[:-1]
    return u.reshape(shape), v.reshape(shape), Z.reshape(shape)


@_no_autocast
def to_box(
    points: Tensor,
    K: Tensor,
    image_size: tuple[int, int],
    near: float,
    far: float,
    *,
    camera: str = "pinhole",
    spacing: str = "linear",
) -> Tensor:
    """Reference-camera points [B, ..., 3] → frustum coordinates [B, ..., 3] in the scene box [−1, 1]³.

    Points outside the reference frustum get coordinates outside [−1, 1] (points at or behind the
    camera plane are sent to 2), so ``grid_sample`` returns zeros there and :func:`inside_box` is False.
    """
    if camera == "ortho":
        x, y = points[..., 0], points[..., 1]
        Z = points[..., 2]
    else:
        H, W = image_size
        u, v, Z = project(points, K)
        x = (2 * u + 1) / W - 1
        y = (2 * v + 1) / H - 1
    zn = normalized_depth(Z.clamp(min=_MIN_Z), near, far, spacing)
    coords = torch.stack([x, y, zn], dim=-1)
    if camera == "pinhole":
        behind = (Z <= _MIN_Z)[..., None]
        coords = torch.where(behind, torch.full_like(coords, 2.0), coords)
    return coords


def inside_box(coords: Tensor, eps: float = 1e-6) -> Tensor:
    """Boolean mask [...] of box coordinates [..., 3] inside [−1, 1]³."""
    return (coords.abs() <= 1.0 + eps).all(dim=-1)


def warp_to_reference(
    depth_a: np.ndarray,
    K_a: np.ndarray,
    pose_a: np.ndarray,
    image_b: np.ndarray,
    K_b: np.ndarray,
    pose_b: np.ndarray,
    depth_b: np.ndarray | None = None,
    rel_tol: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """View b resampled into view a through a's z-depth and both cameras (OpenCV, camera-to-world
    poses); numpy, for figures and data checks.

    Returns (warped image, valid mask); a pixel is valid when it lands inside b and, if ``depth_b`` is
    given, its depth in b agrees with b's own depth within ``rel_tol`` (not occluded there).
    """
    d = np.asarray(depth_a, np.float64)
    d = d[..., 0] if d.ndim == 3 else d
    h, w = d.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3)
    cam_a = (np.linalg.inv(K_a) @ pix.T) * d.reshape(1, -1)
    world = np.asarray(pose_a, np.float64) @ np.vstack([cam_a, np.ones((1, cam_a.shape[1]))])
    cam_b = np.linalg.inv(np.asarray(pose_b, np.float64)) @ world
    z = cam_b[2]
    proj = np.asarray(K_b, np.float64) @ cam_b[:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        ub, vb = proj[0] / z, proj[1] / z
    hb, wb = image_b.shape[:2]
    ui, vi = np.round(ub), np.round(vb)
    valid = (d.reshape(-1) > 0) & (z > 1e-6) & (ui >= 0) & (ui < wb) & (vi >= 0) & (vi < hb)
    ui, vi = np.where(valid, ui, 0).astype(int), np.where(valid, vi, 0).astype(int)
    if depth_b is not None:
        db = np.asarray(depth_b, np.float64)
        db = db[..., 0] if db.ndim == 3 else db
        seen = db[vi, ui]
        valid &= (seen > 0) & (np.abs(seen - z) <= rel_tol * np.maximum(z, 1e-6))
    warped = np.zeros((h * w, image_b.shape[2] if image_b.ndim == 3 else 1), np.float32)
    src = image_b.reshape(hb * wb, -1).astype(np.float32)
    warped[valid] = src[(vi * wb + ui)[valid]]
    return warped.reshape(h, w, -1).squeeze(), valid.reshape(h, w)
