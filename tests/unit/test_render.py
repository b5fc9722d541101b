"""Volume rendering against analytic answers."""

from __future__ import annotations

import math

import pytest
import torch

from mtl3d.errors import UserError
from mtl3d.regularizer.rays import sample_depths
from mtl3d.regularizer.render import alpha_composite, composite, render_rays


def _field_from(sigma: torch.Tensor, values: torch.Tensor):
    def field(start: int, end: int):
        return sigma[:, start:end], values[:, start:end]

    return field


def test_thin_dense_slab_renders_its_depth_and_full_opacity():
    near, far, S = 1.0, 5.0, 200
    z, delta = sample_depths(near, far, S, (1, 3), dtype=torch.float64)
    d = torch.tensor([1.7, 3.0, 4.43], dtype=torch.float64)
    # Slab of thickness 0.1 m starting at d with σ = 500/m: optical thickness 50, so opacity 1 − e⁻⁵⁰.
    inside = (z[0] >= d[:, None]) & (z[0] < d[:, None] + 0.1)
    sigma = (inside * 500.0).to(torch.float64)[None]
    values = torch.zeros(1, 3, S, 1, dtype=torch.float64)
    r = render_rays(_field_from(sigma, values), z, delta)
    assert torch.allclose(r.opacity[0], torch.ones(3, dtype=torch.float64), atol=1e-12)
    # Continuous answer: d + 1/σ (exponential termination inside the slab); quadrature bins of 0.02 m.
    assert torch.allclose(r.depth[0], d + 1 / 500, atol=0.02)


def test_homogeneous_medium_weights_are_a_geometric_series():
    # σ constant, δ constant: w_i = e^{−σδ(i−1)} (1 − e^{−σδ}) exactly.
    sigma = torch.full((1, 1, 6), 0.5, dtype=torch.float64)
    delta = torch.full((1, 1, 6), 0.4, dtype=torch.float64)
    w = alpha_composite(sigma, delta)[0, 0]
    q = math.exp(-0.2)
    expected = torch.tensor([q**i * (1 - q) for i in range(6)], dtype=torch.float64)
    assert torch.allclose(w, expected, atol=1e-15)
    assert math.isclose(float(w.sum()), 1 - q**6, abs_tol=1e-15)


def test_empty_space_renders_zero_opacity_and_background_depth():
    z, delta = sample_depths(0.5, 8.0, 16, (2, 5))
    sigma = torch.zeros(2, 5, 16)
    values = torch.randn(2, 5, 16, 4)
    r = render_rays(_field_from(sigma, values), z, delta, background_depth=8.0)
    assert torch.equal(r.opacity, torch.zeros(2, 5))
    assert torch.equal(r.features, torch.zeros(2, 5, 4))
    assert torch.allclose(r.depth, torch.full((2, 5), 8.0))
    r2 = render_rays(_field_from(sigma, values), z, delta)  # no background: raw Σ w z = 0
    assert torch.equal(r2.depth, torch.zeros(2, 5))


def test_weights_nonnegative_sum_at_most_one_and_equal_one_minus_transmittance():
    g = torch.Generator().manual_seed(0)
    sigma = torch.rand(4, 7, 32, generator=g) * torch.logspace(-3, 3, 32)
    delta = torch.rand(4, 7, 32, generator=g) * 0.3
    w = alpha_composite(sigma, delta)
    assert (w >= 0).all()
    acc = w.sum(-1)
    assert (acc <= 1 + 1e-6).all()
    assert torch.allclose(acc, 1 - torch.exp(-(sigma * delta).sum(-1)), atol=1e-6)


def test_huge_densities_stay_finite():
    sigma = torch.tensor([[[0.0, 1e30, 1e30, 5.0]]])
    delta = torch.full((1, 1, 4), 0.1)
    w = alpha_composite(sigma, delta)
    assert torch.isfinite(w).all()
    assert torch.allclose(w, torch.tensor([[[0.0, 1.0, 0.0, 0.0]]]))


def test_composite_is_the_weighted_sum():
    w = torch.tensor([[0.2, 0.3, 0.1]])
    v = torch.tensor([[[1.0, 0.0], [2.0, 1.0], [4.0, -1.0]]])
    assert torch.allclose(composite(w, v), torch.tensor([[0.2 + 0.6 + 0.4, 0.3 - 0.1]]))


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    sigma = (torch.rand(2, 3, 5, generator=g, dtype=torch.float64) * 3).requires_grad_()
    delta = (torch.rand(2, 3, 5, generator=g, dtype=torch.float64) * 0.5 + 0.05).requires_grad_()
    values = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64).requires_grad_()
    z = torch.cumsum(delta.detach(), -1)

    def fn(s, d, v):
        w = alpha_composite(s, d)
        return composite(w, v), (w * z).sum(-1), w.sum(-1)

    assert torch.autograd.gradcheck(fn, (sigma, delta, values))


@pytest.mark.parametrize("chunk", [1, 5, 7])
def test_chunked_equals_unchunked_including_gradients(chunk):
    g = torch.Generator().manual_seed(2)
    B, N, S, C = 2, 9, 6, 3
    z, delta = sample_depths(0.5, 4.0, S, (B, N), stratified=True, generator=g, dtype=torch.float64)
    raw = torch.randn(B, N, S, generator=g, dtype=torch.float64, requires_grad=True)
    vals = torch.randn(B, N, S, C, generator=g, dtype=torch.float64, requires_grad=True)

    def field(s, e):
        return torch.nn.functional.softplus(raw[:, s:e]), torch.tanh(vals[:, s:e])

    outs = []
    for c in (10_000, chunk * B):  # chunk_rays counts rays over the whole batch
        r = render_rays(field, z, delta, chunk_rays=c, background_depth=4.0)
        loss = (r.features**2).sum() + r.depth.sum() + r.opacity.sum() + (r.weights**2).sum()
        grads = torch.autograd.grad(loss, (raw, vals))
        outs.append((r, grads))
    (r1, g1), (r2, g2) = outs
    for a, b in [
        (r1.weights, r2.weights),
        (r1.features, r2.features),
        (r1.depth, r2.depth),
        (r1.opacity, r2.opacity),
        *zip(g1, g2, strict=True),
    ]:
        assert torch.allclose(a, b, atol=1e-12)


def test_bad_chunk_is_a_user_error():
    z, delta = sample_depths(0.5, 4.0, 4, (1, 2))
    with pytest.raises(UserError):
        render_rays(_field_from(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4, 1)), z, delta, chunk_rays=0)
