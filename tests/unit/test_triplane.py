"""Tri-plane sampling and the plane encoder against analytic values."""

from __future__ import annotations

import pytest
import torch

from mtl3d.errors import UserError
from mtl3d.regularizer.triplane import PlaneEncoder, aggregated_channels, sample_planes, sample_triplane

Rh, Rw, C = 6, 10, 2
# Plane k, channel c holds a·(grid x) + b·(grid y) + c0 (grid coords of grid_sample, align_corners=False).
COEF = torch.tensor(
    [
        [[0.5, -1.0, 2.0], [1.5, 0.25, -1.0]],  # xy: reads (x, y)
        [[-0.75, 0.5, 1.0], [0.2, 2.0, 0.5]],  # xz: reads (x, z)
        [[1.0, 1.0, 3.0], [-2.0, 0.3, 0.1]],  # yz: reads (z, y)
    ],
    dtype=torch.float64,
)


def ramp_planes() -> torch.Tensor:
    gx = (2 * torch.arange(Rw, dtype=torch.float64) + 1) / Rw - 1  # pixel-centre grid coordinates
    gy = (2 * torch.arange(Rh, dtype=torch.float64) + 1) / Rh - 1
    planes = torch.empty(1, 3, C, Rh, Rw, dtype=torch.float64)
    for k in range(3):
        for c in range(C):
            a, b, c0 = COEF[k, c]
            planes[0, k, c] = a * gx[None, :] + b * gy[:, None] + c0
    return planes


def expected(points: torch.Tensor) -> torch.Tensor:
    """[n, 3] box points → per-plane values [3, C, n] of the linear ramps."""
    x, y, z = points.unbind(-1)
    out = torch.empty(3, C, len(points), dtype=torch.float64)
    for k, (u, v) in enumerate([(x, y), (x, z), (z, y)]):
        for c in range(C):
            out[k, c] = COEF[k, c, 0] * u + COEF[k, c, 1] * v + COEF[k, c, 2]
    return out


# Inside the hull of the pixel centres ([-0.9, 0.9] in x, [-5/6, 5/6] in y) bilinear = linear exactly.
POINTS = torch.tensor(
    [[0.0, 0.0, 0.0], [0.3, -0.5, 0.7], [-0.85, 0.8, -0.8], [0.55, 0.12, -0.33]], dtype=torch.float64
)


def test_each_plane_reads_its_two_coordinates():
    s = sample_planes(ramp_planes(), POINTS[None, :, None, :])  # [1,3,C,n,1]
    assert torch.allclose(s[0, ..., 0], expected(POINTS), atol=1e-12)


@pytest.mark.parametrize("agg", ["prod", "sum", "concat"])
def test_aggregations(agg):
    f = sample_triplane(ramp_planes(), POINTS[None, :, None, :], agg)[0, :, 0]  # [n, C']
    e = expected(POINTS)  # [3, C, n]
    if agg == "prod":
        want = (e[0] * e[1] * e[2]).T
    elif agg == "sum":
        want = (e[0] + e[1] + e[2]).T
    else:
        want = e.reshape(3 * C, -1).T  # xy channels, then xz, then yz
    assert f.shape == (len(POINTS), aggregated_channels(C, agg))
    assert torch.allclose(f, want, atol=1e-12)


def test_outside_the_box_samples_zero():
    pts = torch.tensor([[[[3.0, 0.0, 0.0]], [[0.0, 0.0, -3.0]]]], dtype=torch.float64)  # [1,2,1,3]
    s = sample_planes(ramp_planes(), pts)
    # x = 3: xy and xz read outside -> 0; yz (z=0, y=0) is inside.
    assert torch.equal(s[0, :2, :, 0, 0], torch.zeros(2, C, dtype=torch.float64))
    assert torch.allclose(s[0, 2, :, 0, 0], COEF[2, :, 2], atol=1e-12)
    assert torch.equal(s[0, :, :, 1, 0][1:], torch.zeros(2, C, dtype=torch.float64))  # z = -3: xz, yz
    zeros = torch.zeros(2, C, dtype=torch.float64)
    assert torch.equal(sample_triplane(ramp_planes(), pts, "prod")[0, :, 0], zeros)


def test_unknown_aggregation_is_a_user_error():
    with pytest.raises(UserError, match="valid: concat, prod, sum"):
        sample_triplane(ramp_planes(), POINTS[None, :, None, :], "max")


def test_plane_encoder_shapes_sources_and_prod_offset():
    torch.manual_seed(0)
    chans = [4, 8, 16]
    feats = [torch.randn(2, c, 16 // 2**i, 24 // 2**i) for i, c in enumerate(chans)]
    enc = PlaneEncoder(chans, plane_ch=5, hidden=7, feat_source="fused", agg="prod").eval()
    p = enc(feats, (3, 5))
    assert p.shape == (2, 3, 5, 3, 5)
    enc_sum = PlaneEncoder(chans, plane_ch=5, hidden=7, feat_source="fused", agg="sum").eval()
    enc_sum.load_state_dict(enc.state_dict())
    # Same weights: the multiplicative planes are the additive ones plus 1.
    assert torch.allclose(p, enc_sum(feats, (3, 5)) + 1.0, atol=1e-6)
    last = PlaneEncoder(chans, plane_ch=5, hidden=7, feat_source="last").eval()
    a = last(feats, (4, 6))
    feats2 = [torch.randn_like(feats[0]), torch.randn_like(feats[1]), feats[2]]
    assert torch.equal(a, last(feats2, (4, 6)))  # only the coarsest scale matters
    assert not torch.allclose(p, enc(feats2, (3, 5)))  # fused uses the others too
    with pytest.raises(UserError):
        PlaneEncoder(chans, feat_source="middle")
