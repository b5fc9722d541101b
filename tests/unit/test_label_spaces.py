import math

import pytest
import torch
import torch.nn.functional as F

from mtl3d.errors import UserError
from mtl3d.models.label_spaces import (
    IGNORE_INDEX,
    BinaryLabels,
    ClassLabels,
    DepthBins,
    NormalCodebook,
    label_space_for,
    sample_normals,
)

AXES = torch.tensor(
    [[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float32
)


def _as_map(vectors: torch.Tensor) -> torch.Tensor:
    """[N,3] -> a [1,3,1,N] normal label."""
    return vectors.T[None, :, None, :].contiguous()


def _octahedron(coding: str = "triangular") -> NormalCodebook:
    """A K=6 codebook fitted on exact ±x, ±y, ±z normals: its codewords are exactly the axes."""
    return NormalCodebook(6, coding).fit(AXES.repeat(20, 1), seed=0)


def _code_of(cb: NormalCodebook, direction: list[int]) -> int:
    return int(torch.argmax(cb.codewords @ torch.tensor(direction, dtype=torch.float32)))


# ----------------------------------------------------------------------------------------- depth


def test_depth_bins_hand_computed():
    # alpha=1, beta=16, K=4: bin = floor(4·ln d / ln 16) = floor(log2 d); edges 1, 2, 4, 8, 16.
    space = DepthBins(num_bins=4, alpha=1.0, beta=16.0)
    assert torch.allclose(space.edges(), torch.tensor([1.0, 2, 4, 8, 16], dtype=torch.float64))
    depth = torch.tensor([[[[1.5, 3.0, 5.0, 9.0], [20.0, 0.5, 0.0, 2.5]]]])
    expected = torch.tensor([[[0, 1, 2, 3], [3, 0, IGNORE_INDEX, 1]]])  # 20 > beta clipped, 0.5 < alpha too
    assert torch.equal(space.index(depth), expected)


def test_depth_bins_atrc_defaults_clip_at_the_range_ends():
    space = DepthBins()  # 40 bins on [0.7, 10]
    depth = torch.tensor([[[[0.7, 0.71, 9.99, 10.0, 50.0, -1.0]]]])
    assert space.index(depth).tolist() == [[[0, 0, 39, 39, 39, IGNORE_INDEX]]]


def test_depth_decode_of_a_peaked_logit_is_the_log_space_bin_centre():
    space = DepthBins(num_bins=4, alpha=1.0, beta=16.0)
    logits = torch.full((1, 4, 1, 4), -50.0)
    for k in range(4):
        logits[0, k, 0, k] = 50.0
    centres = [2 ** (k + 0.5) for k in range(4)]  # exp of the mid-point of [ln 2^k, ln 2^(k+1)]
    assert torch.allclose(space.decode(logits)[0, 0, 0], torch.tensor(centres), rtol=1e-5)
    assert space.decode(logits).shape == (1, 1, 1, 4)
    # Uniform scores: the plain mean of the centres (soft-weighted sum, not the median bin).
    assert math.isclose(space.decode(torch.zeros(1, 4, 1, 1)).item(), sum(centres) / 4, rel_tol=1e-6)


def test_depth_loss_is_ce_on_the_hand_made_index_map():
    space = DepthBins(num_bins=4, alpha=1.0, beta=16.0)
    depth = torch.tensor([[[[1.5, 3.0], [0.0, 9.0]]]])
    index = torch.tensor([[[0, 1], [IGNORE_INDEX, 3]]])
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 2, 2)
    expected = F.cross_entropy(logits, index, ignore_index=IGNORE_INDEX)
    assert torch.allclose(space.loss(logits, depth), expected)
    # Lower-resolution logits are upsampled bilinearly (align_corners=False) to the label first.
    small = torch.randn(1, 4, 1, 1)
    up = F.interpolate(small, size=(2, 2), mode="bilinear", align_corners=False)
    assert torch.allclose(space.loss(small, depth), F.cross_entropy(up, index, ignore_index=IGNORE_INDEX))


def test_all_ignored_batch_gives_a_zero_with_grad():
    for space, label in [
        (DepthBins(4, 1.0, 16.0), torch.zeros(1, 1, 2, 2)),
        (BinaryLabels(None), torch.full((1, 1, 2, 2), 255.0)),
        (ClassLabels(4), torch.full((1, 2, 2), 255, dtype=torch.long)),
        (NormalCodebook(6, "triangular"), torch.zeros(1, 3, 2, 2)),
        (NormalCodebook(6, "nearest"), torch.zeros(1, 3, 2, 2)),
    ]:
        logits = torch.randn(1, space.channels, 2, 2, requires_grad=True)
        loss = space.loss(logits, label)
        assert loss.item() == 0.0 and loss.grad_fn is not None, type(space).__name__


# ---------------------------------------------------------------------------------------- binary


def test_binary_labels_fixed_pos_weight_hand_computed():
    space = BinaryLabels(pos_weight=0.95)
    label = torch.tensor([[[[1.0, 0.0], [255.0, 0.0]]]])
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 1] = math.log(3.0)  # p(positive) = 3/4 everywhere
    # positive: 0.95·ln(4/3); two negatives: 0.05·ln 4 each; the ignored pixel drops; / 3 valid pixels
    expected = (0.95 * math.log(4 / 3) + 2 * 0.05 * math.log(4)) / 3
    assert math.isclose(space.loss(logits, label).item(), expected, rel_tol=1e-6)
    # The ignored pixel's logits do not matter.
    logits[0, :, 1, 0] = torch.tensor([7.0, -3.0])
    assert math.isclose(space.loss(logits, label).item(), expected, rel_tol=1e-6)


def test_binary_labels_balanced_weight_from_the_batch():
    space = BinaryLabels(pos_weight=None)
    label = torch.tensor([[[[1.0, 0.0], [0.0, 255.0]]]])  # 2 negatives of 3 valid: w = 2/3
    assert torch.allclose(space.class_weight(space.index(label)), torch.tensor([1 / 3, 2 / 3]))
    # Zero logits: every CE term is ln 2 -> (2/3 + 2·1/3)·ln 2 / 3 (normalised by n_valid, not by weights).
    expected = (2 / 3 + 2 / 3) * math.log(2) / 3
    assert math.isclose(space.loss(torch.zeros(1, 2, 2, 2), label).item(), expected, rel_tol=1e-6)
    # Another batch, another weight: 1 negative of 4 -> w = 1/4.
    other = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])
    assert torch.allclose(space.class_weight(space.index(other)), torch.tensor([3 / 4, 1 / 4]))


def test_class_labels_is_plain_ce_with_ignore_255():
    space = ClassLabels(5)
    label = torch.tensor([[[0, 4, 255], [2, 255, 1]]])
    torch.manual_seed(1)
    logits = torch.randn(1, 5, 2, 3)
    assert torch.allclose(space.loss(logits, label), F.cross_entropy(logits, label, ignore_index=255))
    onehot = space.targets(label)
    assert onehot.shape == (1, 5, 2, 3)
    assert onehot[0, :, 0, 2].sum() == 0 and onehot[0, 4, 0, 1] == 1


# ------------------------------------------------------------------------------------- codebook


def test_fit_recovers_planted_directions_and_is_deterministic():
    gen = torch.Generator().manual_seed(3)
    pts = torch.cat([F.normalize(a + 0.08 * torch.randn(300, 3, generator=gen), dim=1) for a in AXES])
    pts = torch.cat((pts, torch.zeros(50, 3)))  # invalid rows are ignored
    cb = NormalCodebook(6).fit(pts, seed=0)
    cos = AXES @ cb.codewords.T  # [planted, codeword]
    assert (cos.max(dim=1).values > math.cos(math.radians(2.0))).all()
    assert sorted(cos.argmax(dim=1).tolist()) == list(range(6))  # one codeword per planted direction
    again = NormalCodebook(6).fit(pts, seed=0)
    assert torch.equal(cb.codewords, again.codewords) and torch.equal(cb.triangles, again.triangles)


def _check_triangulation(cb: NormalCodebook) -> None:
    k = cb.channels
    tri, c = cb.triangles, cb.codewords.double()
    assert tri.shape == (2 * k - 4, 3) and tri.dtype == torch.long
    assert sorted(set(tri.flatten().tolist())) == list(range(k))  # every codeword is a vertex
    a, b, d = c[tri[:, 0]], c[tri[:, 1]], c[tri[:, 2]]
    normal = torch.linalg.cross(b - a, d - a)
    assert ((normal * a).sum(dim=1) > 0).all()  # counter-clockwise seen from outside
    # Closed oriented surface: every directed edge once, its reverse in the neighbouring face.
    edges = [(int(f[i]), int(f[(i + 1) % 3])) for f in tri for i in range(3)]
    assert len(set(edges)) == len(edges) and all((v, u) in set(edges) for u, v in edges)
    # Spherical Delaunay: the circumcap of every face (outer side of its plane) holds no codeword.
    unit = F.normalize(normal, dim=1)
    side = unit @ c.T - (unit * a).sum(dim=1, keepdim=True)  # signed distance of every codeword
    assert (side <= 1e-9).all()


def test_triangulation_of_default_and_fitted_codebooks():
    _check_triangulation(NormalCodebook(40))
    _check_triangulation(_octahedron())
    gen = torch.Generator().manual_seed(0)
    _check_triangulation(NormalCodebook(17).fit(torch.randn(2000, 3, generator=gen), seed=1))


def test_nearest_coding_of_a_codeword_is_its_index():
    cb = NormalCodebook(40)
    label = _as_map(cb.codewords)
    assert torch.equal(cb.index(label)[0, 0], torch.arange(40))
    assert torch.equal(cb.targets(label)[0, :, 0].T, torch.eye(40))
    # Nearest coding loss = CE on that index map.
    logits = torch.randn(1, 40, 1, 40)
    assert torch.allclose(cb.loss(logits, label), F.cross_entropy(logits, torch.arange(40)[None, None]))


def test_triangular_coding_of_a_codeword_puts_weight_one_on_it():
    cb = NormalCodebook(40, "triangular")
    soft = cb.targets(_as_map(cb.codewords))[0, :, 0]  # [K codes, K pixels]
    assert torch.allclose(soft, torch.eye(40), atol=1e-5)


def test_triangular_coding_inside_a_face_is_barycentric():
    cb = _octahedron()
    assert torch.allclose(cb.codewords.abs().sum(dim=1), torch.ones(6))  # exactly the axes
    # The ray of (1,2,3) crosses face {x,y,z} (plane x+y+z=1) at (1,2,3)/6.
    # The ray of (-1,2,0.5) crosses face {-x,y,z} (plane -x+y+z=1) at (-1,2,0.5)/3.5.
    normals = F.normalize(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 2.0, 0.5]]), dim=1)
    soft = cb.targets(_as_map(normals))[0, :, 0].T  # [2 pixels, 6]
    expected = torch.zeros(2, 6)
    for (pix, axis), w in {
        (0, (1, 0, 0)): 1 / 6,
        (0, (0, 1, 0)): 2 / 6,
        (0, (0, 0, 1)): 3 / 6,
        (1, (-1, 0, 0)): 2 / 7,
        (1, (0, 1, 0)): 4 / 7,
        (1, (0, 0, 1)): 1 / 7,
    }.items():
        expected[pix, _code_of(cb, list(axis))] = w
    assert torch.allclose(soft, expected, atol=1e-6)
    # The weights reconstruct the direction: normalise(sum_j w_j c_j) = n.
    assert torch.allclose(F.normalize(soft @ cb.codewords, dim=1), normals, atol=1e-6)


@pytest.mark.parametrize("k", [6, 40])
def test_decode_of_soft_targets_reconstructs_the_normal(k):
    cb = _octahedron() if k == 6 else NormalCodebook(k, "triangular")
    gen = torch.Generator().manual_seed(k)
    normals = F.normalize(torch.randn(1, 3, 190, 190, generator=gen), dim=1)  # > one chunk of pixels
    normals[0, :, 0, 0] = 0.0  # invalid pixel: zero target
    soft = cb.targets(normals)
    assert soft[0, :, 0, 0].sum() == 0
    valid = soft.sum(dim=1)[0] > 0
    assert torch.allclose(soft.sum(dim=1)[0][valid], torch.ones(()), atol=1e-5)
    assert (soft >= 0).all() and ((soft > 0).sum(dim=1) <= 3).all()
    decoded = cb.decode(torch.log(soft.clamp(min=1e-12)))
    assert decoded.shape == normals.shape
    err = (decoded - normals).abs().amax(dim=1)[0]
    assert err[valid].max() < 1e-4


def test_decode_uses_the_triangle_of_maximum_total_probability():
    cb = NormalCodebook(40, "triangular")
    tri = cb.triangles[0]
    far = int(torch.argmin(cb.codewords @ cb.codewords[tri].sum(dim=0)))  # opposite side of the sphere
    prob = torch.full((40,), 0.25 / 36)
    # The single most likely codeword is ``far`` (0.3), but face ``tri`` has the larger total (0.75).
    prob[far] = 0.3
    prob[tri] = 0.25
    logits = torch.log(prob).view(1, 40, 1, 1)
    expected = F.normalize(cb.codewords[tri].sum(dim=0), dim=0)  # equal weights on its three codewords
    assert torch.allclose(cb.decode(logits)[0, :, 0, 0], expected, atol=1e-6)


def test_soft_target_loss_is_soft_ce_over_valid_pixels():
    cb = NormalCodebook(12, "triangular")
    gen = torch.Generator().manual_seed(2)
    normals = F.normalize(torch.randn(2, 3, 3, 4, generator=gen), dim=1)
    normals[1, :, 2, 3] = 0.0
    logits = torch.randn(2, 12, 3, 4, generator=gen)
    soft = cb.targets(normals)
    valid = normals.abs().sum(dim=1) > 0
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], soft.permute(0, 2, 3, 1)[valid])
    assert torch.allclose(cb.loss(logits, normals), expected, atol=1e-6)


def test_state_dict_round_trip_into_an_unfitted_codebook():
    gen = torch.Generator().manual_seed(5)
    cb = NormalCodebook(12, "triangular").fit(torch.randn(3000, 3, generator=gen), seed=2)
    fresh = NormalCodebook(12, "triangular")
    normals = F.normalize(torch.randn(1, 3, 8, 8, generator=gen), dim=1)
    assert not torch.allclose(fresh.targets(normals), cb.targets(normals))
    fresh.load_state_dict(cb.state_dict())
    assert torch.equal(fresh.targets(normals), cb.targets(normals))
    assert torch.equal(fresh.index(normals), cb.index(normals))


def test_hemisphere_codebook_falls_back_to_the_nearest_codeword_outside_its_hull():
    # Camera-frame normals face the camera: codewords of one hemisphere do not surround the origin.
    gen = torch.Generator().manual_seed(4)
    pts = torch.randn(4000, 3, generator=gen)
    pts[:, 2] = pts[:, 2].abs() + 0.5
    cb = NormalCodebook(10, "triangular").fit(pts, seed=0)
    assert cb.triangles.shape == (16, 3)
    assert (cb.codewords[:, 2] > 0).all()
    down = torch.tensor([[0.1, 0.2, -1.0]])
    soft = cb.targets(_as_map(F.normalize(down, dim=1)))[0, :, 0, 0]
    assert soft[cb.index(_as_map(down))[0, 0, 0]] == 1.0 and soft.sum() == 1.0
    up = F.normalize(torch.tensor([[0.05, -0.03, 1.0]]), dim=1)  # inside the codewords' hull
    soft_up = cb.targets(_as_map(up))
    assert (soft_up > 0).sum() == 3
    assert torch.allclose(cb.decode(torch.log(soft_up.clamp(min=1e-12)))[0, :, 0, 0], up[0], atol=1e-5)
    # Inside the hull a ray enters through a face seen from the origin and leaves through a spherical
    # Delaunay face (origin on the inner side of its outward plane): the code must use the latter.
    c = cb.codewords.double()
    a, b, d = (c[cb.triangles[:, j]] for j in range(3))
    delaunay = (torch.linalg.cross(b - a, d - a) * a).sum(dim=1) > 0
    assert 0 < delaunay.sum() < len(delaunay)  # the origin is outside this hull
    allowed = {frozenset(f) for f in cb.triangles[delaunay].tolist()}
    probes = F.normalize(torch.randn(400, 3, generator=gen) * 0.2 + torch.tensor([0.0, 0.0, 1.0]), dim=1)
    soft = cb.targets(_as_map(probes))[0, :, 0].T  # [400, K]
    inside = (soft > 1e-6).sum(dim=1) == 3
    assert inside.sum() > 100
    for row in soft[inside]:
        assert frozenset(torch.nonzero(row > 1e-6)[:, 0].tolist()) in allowed


def test_degenerate_codebooks_keep_their_shapes():
    # Normals on one great circle (walls only): coplanar codewords, no proper 3D hull.
    gen = torch.Generator().manual_seed(6)
    flat = torch.randn(2000, 3, generator=gen)
    flat[:, 2] = 0.0
    cb = NormalCodebook(6, "triangular").fit(flat, seed=0)
    assert cb.triangles.shape == (8, 3) and sorted(set(cb.triangles.flatten().tolist())) == list(range(6))
    assert torch.equal(cb.triangles, NormalCodebook(6, "triangular").fit(flat, seed=0).triangles)
    probe = _as_map(F.normalize(torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.0, 1.0]]), dim=1))
    soft = cb.targets(probe)
    assert torch.equal(soft, F.one_hot(cb.index(probe), 6).permute(0, 3, 1, 2).float())  # nearest
    dec = cb.decode(torch.randn(1, 6, 2, 2, generator=gen))
    assert torch.allclose(dec.norm(dim=1), torch.ones(1, 2, 2), atol=1e-5)
    # Fewer distinct normals than codewords (a synthetic scene): distinct fillers complete the codebook.
    few = NormalCodebook(10).fit(AXES[:3].repeat(50, 1), seed=0)
    assert ((few.codewords @ few.codewords.T - torch.eye(10)).max() < 0.999).item()
    assert (AXES[:3] @ few.codewords.T).max(dim=1).values.allclose(torch.ones(3))
    assert few.triangles.shape == (16, 3)


def test_sample_normals_is_a_seeded_subset_of_the_valid_unit_normals():
    gen = torch.Generator().manual_seed(7)
    a = F.normalize(torch.randn(3, 4, 5, generator=gen), dim=0)
    a[:, 0, :] = 0.0  # 5 invalid pixels -> 15 valid
    b = F.normalize(torch.randn(2, 3, 2, 3, generator=gen), dim=1) * 2.0  # not unit: normalised
    everything = sample_normals([a, b], max_points=1000, seed=0)
    assert everything.shape == (15 + 12, 3)
    assert torch.allclose(everything.norm(dim=1), torch.ones(27), atol=1e-6)
    valid_a = a.permute(1, 2, 0).reshape(-1, 3)[5:]  # row 0 (the first 5 pixels) is invalid
    pool = torch.cat((valid_a, F.normalize(b, dim=1).permute(0, 2, 3, 1).reshape(-1, 3)))
    assert torch.allclose(torch.sort(everything.sum(1)).values, torch.sort(pool.sum(1)).values, atol=1e-6)
    sub = sample_normals([a, b], max_points=10, seed=0)
    assert sub.shape == (10, 3)
    assert torch.equal(sub, sample_normals([a, b], max_points=10, seed=0))
    assert not torch.equal(sub, sample_normals([a, b], max_points=10, seed=1))
    gap = (sub[:, None] - pool[None]).abs().amax(dim=2).min(dim=1).values
    assert (gap < 1e-6).all()  # a subset of the valid normals
    assert sample_normals([torch.zeros(3, 2, 2)], max_points=5, seed=0).shape == (0, 3)


# -------------------------------------------------------------------------------------- factory


def test_factory_builds_each_tasks_label_space():
    assert label_space_for("semseg", 40).channels == 40
    assert isinstance(label_space_for("human_parts", 7), ClassLabels)
    depth = label_space_for("depth", 1, depth_bins=8, depth_range=(0.5, 20.0))
    assert isinstance(depth, DepthBins) and (depth.channels, depth.alpha, depth.beta) == (8, 0.5, 20.0)
    normals = label_space_for("normals", 3, normal_codewords=20, normal_coding="triangular")
    assert isinstance(normals, NormalCodebook) and normals.channels == 20 and normals.coding == "triangular"
    edges = label_space_for("edges", 1, edge_pos_weight=0.8)
    assert isinstance(edges, BinaryLabels) and edges.channels == 2 and edges.pos_weight == 0.8
    assert label_space_for("saliency", 1).pos_weight is None
    assert label_space_for("normals", 3).coding == "nearest"


def test_factory_errors_name_the_valid_options():
    with pytest.raises(UserError, match="valid: depth, edges, human_parts, normals, saliency, semseg"):
        label_space_for("optical_flow", 2)
    with pytest.raises(UserError, match="'barycentric'; valid: nearest, triangular"):
        label_space_for("normals", 3, normal_coding="barycentric")
    with pytest.raises(UserError, match="valid: nearest, triangular"):
        NormalCodebook(40, "soft")
