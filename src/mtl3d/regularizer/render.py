"""Volume rendering by alpha compositing (NeRF quadrature), chunked over rays.

For samples i = 1..S along a ray with density σᵢ ≥ 0 and interval δᵢ:

    τᵢ = σᵢ δᵢ,   Tᵢ = exp(−Σ_{j<i} τⱼ),   wᵢ = Tᵢ (1 − exp(−τᵢ))

The exclusive cumulative sum is formed by shifting (not by ``cumsum − τ``, which cancels badly once
the sum is large), ``1 − exp(−τ)`` uses ``expm1``, and everything runs in float32 or wider whatever
the autocast dtype. Then ``Σᵢ wᵢ = 1 − exp(−Σ τᵢ) ≤ 1`` is the accumulated opacity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from mtl3d.errors import UserError


def alpha_composite(sigma: Tensor, delta: Tensor) -> Tensor:
    """Per-sample weights [..., S] from densities σ and intervals δ (both [..., S])."""
    dtype = torch.promote_types(sigma.dtype, torch.float32)
    tau = sigma.to(dtype) * delta.to(dtype)
    excl = torch.cumsum(tau, dim=-1)
    excl = torch.cat([torch.zeros_like(excl[..., :1]), excl[..., :-1]], dim=-1)
    return torch.exp(-excl) * -torch.expm1(-tau)


def composite(weights: Tensor, values: Tensor) -> Tensor:
    """``Σᵢ wᵢ vᵢ``: weights [..., S], values [..., S, C] → [..., C]."""
    return torch.einsum("...s,...sc->...c", weights.to(values.dtype), values)


@dataclass
class Rendered:
    """Rendering of N rays: ``weights`` [B,N,S], ``features`` [B,N,C], ``depth`` and ``opacity`` [B,N]."""

    weights: Tensor
    features: Tensor
    depth: Tensor
    opacity: Tensor


FieldFn = Callable[[int, int], tuple[Tensor, Tensor]]


def _render_chunk(field: FieldFn, start: int, end: int, z: Tensor, delta: Tensor, bg: float | None):
    sigma, values = field(start, end)
    w = alpha_composite(sigma, delta)
    feats = composite(w, values)
    acc = w.sum(dim=-1)
    depth = (w * z.to(w.dtype)).sum(dim=-1)
    if bg is not None:
        depth = depth + (1.0 - acc) * bg
    return w, feats, depth, acc


def render_rays(
    field: FieldFn,
    z: Tensor,
    delta: Tensor,
    *,
    chunk_rays: int = 16384,
    background_depth: float | None = None,
    checkpoint: bool = True,
) -> Rendered:
    """Render rays in chunks.

    ``field(start, end)`` evaluates rays ``start:end`` (of every batch element) and returns densities
    [B, n, S] and per-sample values [B, n, S, C]; ``z``/``delta`` [B, N, S] are the sample depths and
    intervals. ``chunk_rays`` bounds the rays per chunk *summed over the batch*. With more than one chunk
    and autograd on, each chunk is recomputed in backward (activation checkpointing), so memory is
    bounded by one chunk's activations in training too, at the cost of a second field evaluation.

    ``depth`` is the expected termination depth ``Σ wᵢ zᵢ``; with ``background_depth`` the residual
    transmittance terminates there: ``Σ wᵢ zᵢ + (1 − Σ wᵢ)·background_depth``.
    """
    if chunk_rays < 1:
        raise UserError(f"chunk_rays must be >= 1, got {chunk_rays}")
    B, N, _ = z.shape
    per_chunk = max(1, chunk_rays // max(B, 1))
    starts = list(range(0, N, per_chunk))
    use_ckpt = checkpoint and len(starts) > 1 and torch.is_grad_enabled()
    parts = []
    for s in starts:
        e = min(N, s + per_chunk)
        zc, dc = z[:, s:e], delta[:, s:e]
        if use_ckpt:
            parts.append(
                _checkpoint(_render_chunk, field, s, e, zc, dc, background_depth, use_reentrant=False)
            )
        else:
            parts.append(_render_chunk(field, s, e, zc, dc, background_depth))
    if len(parts) == 1:
        w, f, d, a = parts[0]
    else:
        w, f, d, a = (torch.cat(x, dim=1) for x in zip(*parts, strict=True))
    return Rendered(weights=w, features=f, depth=d, opacity=a)
