"""Discrete label spaces of ATRC's auxiliary heads (Bruggemann et al., ICCV'21, §3.2.3 and App. D).

One module of about 500 lines on purpose: the five spaces share one interface and one loss, and the
normals codebook's fitting and triangulation only serve that space.

Every task is predicted by an auxiliary head in a label space of ``channels`` = R_n regions; the
model spatially soft-maxes those logits into region maps for label context, and trains them with
cross-entropy against the ground truth mapped into the label space (:meth:`LabelSpace.loss`).

- :class:`ClassLabels`: the task's own classes (semseg, human_parts).
- :class:`BinaryLabels`: 2 classes with weighted CE (edges: fixed positive weight; saliency: the
  batch's balance, as ATRC's code).
- :class:`DepthBins`: ``num_bins`` logarithmic depth bins; decoding is the soft-weighted sum of the
  bin centres (App. D).
- :class:`NormalCodebook`: ``num_codewords`` k-means codewords on the sphere. ``coding="nearest"``
  trains on the nearest codeword (ATRC's released code); ``coding="triangular"`` trains on soft
  barycentric targets over the spherical Delaunay triangle containing the normal (the paper, after
  Wang et al.). Decoding always follows the paper: the triangle of maximum total probability and the
  probability-weighted, unit-normalised combination of its three codewords.

All losses upsample logits bilinearly (``align_corners=False``) to the label size first, as
``mtl3d.losses`` does, and average over the valid pixels (sum / n_valid, as ATRC's code).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl3d.errors import unknown_name

IGNORE_INDEX = -100  # internal ignore index of hard targets (any class count fits, unlike 255)
NORMAL_CODINGS = ("nearest", "triangular")
LABEL_SPACE_TASKS = ("semseg", "human_parts", "depth", "normals", "edges", "saliency")

# A face whose plane passes closer than this to the origin is degenerate for central projection
# (its cone is flat): it is never used for coding nor, while another face exists, for decoding.
_FACE_MIN_OFFSET = 1e-4
# Barycentric weights this far below 0 still count as inside (float32 round-off on shared edges).
_INSIDE_TOL = 1e-5
# Codewords closer than this cosine are duplicates (an empty or collapsed k-means cluster).
_DUPLICATE_COS = 1.0 - 1e-6
_CHUNK = 1 << 15  # pixels per chunk of the [P, M, 3] barycentric computation (bounded memory)


def _zero_loss(logits: Tensor) -> Tensor:
    # All-ignored batch: a zero that still has a grad_fn, like ``mtl3d.losses.cross_entropy``.
    return logits.sum() * 0.0


def _to_label_size(logits: Tensor, label: Tensor) -> Tensor:
    size = label.shape[-2:]
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits.float()  # CE in float32 even under autocast


def _squeeze_channel(label: Tensor) -> Tensor:
    """``[B,1,H,W]`` or ``[B,H,W]`` -> ``[B,H,W]``."""
    return label[:, 0] if label.dim() == 4 else label


class LabelSpace(nn.Module):
    """A discrete label space of ``channels`` regions, with its training loss.

    Hard label spaces implement :meth:`index` (class per pixel, :data:`IGNORE_INDEX` where ignored);
    :meth:`targets` gives the dense per-region target maps (zero where ignored), e.g. to form ATRC's
    ground-truth label regions (App. E).
    """

    channels: int

    def index(self, label: Tensor) -> Tensor:
        """Hard class index ``[B,H,W]`` (long) of a label; :data:`IGNORE_INDEX` where ignored."""
        raise NotImplementedError

    def class_weight(self, index: Tensor) -> Tensor | None:
        """Per-class CE weights ``[channels]`` for this batch's index map, or ``None``."""
        return None

    def targets(self, label: Tensor) -> Tensor:
        """Dense target maps ``[B,channels,H,W]`` (one-hot, or soft for triangular normals)."""
        idx = self.index(label)
        valid = idx != IGNORE_INDEX
        onehot = F.one_hot(idx.clamp(min=0), self.channels).permute(0, 3, 1, 2).float()
        return onehot * valid[:, None]

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of ``logits [B,R,h,w]`` against ``target`` mapped into the label space."""
        logits = _to_label_size(logits, target)
        idx = self.index(target)
        n_valid = (idx != IGNORE_INDEX).sum()
        weight = self.class_weight(idx)
        ce = F.cross_entropy(logits, idx, weight=weight, ignore_index=IGNORE_INDEX, reduction="none")
        # Normalised by the number of valid pixels, not by the weight sum (ATRC's CrossEntropyLoss);
        # with none, ce is all zero: a zero loss with a gradient, and no branch for the host to wait on.
        return ce.sum() / n_valid.clamp(min=1)


class ClassLabels(LabelSpace):
    """The task's classes as the label space: plain CE (semseg, human_parts)."""

    def __init__(self, num_classes: int, ignore: int = 255) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.channels = int(num_classes)
        self.ignore = int(ignore)

    def index(self, label: Tensor) -> Tensor:
        label = _squeeze_channel(label).long()
        return torch.where(label == self.ignore, torch.full_like(label, IGNORE_INDEX), label)

    def extra_repr(self) -> str:
        return f"num_classes={self.channels}, ignore={self.ignore}"


class BinaryLabels(LabelSpace):
    """Two classes (0 = negative, 1 = positive), CE weighted ``[1 − w, w]``; 255 = ignore.

    ``pos_weight=w`` fixes the positive weight (edges; ATRC's code uses the edge pos_weight). With
    ``None`` the weight is the fraction of negatives among the batch's valid pixels ("balanced", HED
    style; saliency). A pixel is positive iff its label is exactly 1, as in
    ``mtl3d.losses.balanced_bce`` (the datasets binarise edges and saliency to {0, 1}).
    """

    def __init__(self, pos_weight: float | None, ignore: float = 255) -> None:
        super().__init__()
        if pos_weight is not None and not 0.0 <= pos_weight <= 1.0:
            raise ValueError(f"pos_weight must be in [0, 1], got {pos_weight}")
        self.channels = 2
        self.pos_weight = pos_weight
        self.ignore = ignore

    def index(self, label: Tensor) -> Tensor:
        label = _squeeze_channel(label)
        idx = (label == 1).long()
        return torch.where(label == self.ignore, torch.full_like(idx, IGNORE_INDEX), idx)

    def class_weight(self, index: Tensor) -> Tensor:
        if self.pos_weight is not None:
            w = torch.tensor(self.pos_weight, dtype=torch.float32, device=index.device)
        else:
            valid = index != IGNORE_INDEX
            w = (index == 0).sum().float() / valid.sum().clamp(min=1).float()
        return torch.stack((1.0 - w, w))

    def extra_repr(self) -> str:
        return f"pos_weight={'balanced' if self.pos_weight is None else self.pos_weight}"


class DepthBins(LabelSpace):
    """``num_bins`` logarithmic depth bins between ``alpha`` and ``beta`` metres (ATRC: 40, 0.7, 10).

    Bin of depth d: ``floor(K · log(d/α) / log(β/α))`` clipped to ``[0, K−1]`` (depths outside the
    range fall into the end bins, as ATRC's code); d ≤ 0 (invalid) is ignored. Log bins because the
    depth error grows with depth (App. D, after Liu et al.).
    """

    def __init__(self, num_bins: int = 40, alpha: float = 0.7, beta: float = 10.0) -> None:
        super().__init__()
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        if not 0.0 < alpha < beta:
            raise ValueError(f"depth range needs 0 < alpha < beta, got ({alpha}, {beta})")
        self.channels = int(num_bins)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def edges(self) -> Tensor:
        """The ``K+1`` bin edges in metres (float64): ``α·(β/α)^(k/K)``."""
        k = torch.arange(self.channels + 1, dtype=torch.float64)
        return self.alpha * (self.beta / self.alpha) ** (k / self.channels)

    def centres(self) -> Tensor:
        """The ``K`` bin centres in metres (float64): exp of the mid-point of each bin's log interval."""
        k = torch.arange(self.channels, dtype=torch.float64) + 0.5
        return self.alpha * (self.beta / self.alpha) ** (k / self.channels)

    def index(self, label: Tensor) -> Tensor:
        depth = _squeeze_channel(label).float()
        valid = depth > 0  # also False for NaN
        scale = self.channels / math.log(self.beta / self.alpha)
        raw = torch.floor(torch.log(depth.clamp(min=1e-12) / self.alpha) * scale)
        idx = raw.clamp(0, self.channels - 1).long()
        return torch.where(valid, idx, torch.full_like(idx, IGNORE_INDEX))

    def decode(self, logits: Tensor) -> Tensor:
        """Depth ``[B,1,h,w]`` in metres: softmax-weighted sum of the bin centres (App. D)."""
        prob = torch.softmax(logits.float(), dim=1)
        centres = self.centres().to(device=logits.device, dtype=prob.dtype)
        return (prob * centres.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)

    def extra_repr(self) -> str:
        return f"num_bins={self.channels}, alpha={self.alpha}, beta={self.beta}"


def fibonacci_sphere(n: int) -> Tensor:
    """``n`` well-spread unit vectors ``[n,3]`` (float64), deterministic (golden-angle spiral)."""
    i = torch.arange(n, dtype=torch.float64)
    z = 1.0 - (2.0 * i + 1.0) / n
    r = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack((r * torch.cos(phi), r * torch.sin(phi), z), dim=1)


def _nearest(x: Tensor, codewords: Tensor) -> Tensor:
    """Index of the nearest codeword of each row of ``x`` (argmax of the dot product, which is the
    argmin Euclidean distance to unit codewords whatever the length of x), chunked for memory."""
    out = [torch.argmax(xc @ codewords.T, dim=1) for xc in x.split(1 << 18)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def _spherical_kmeans(x: Tensor, k: int, iters: int, generator: torch.Generator) -> Tensor:
    """Spherical k-means (cosine similarity, unit centres) of unit rows ``x`` (float64, CPU).

    Seeded k-means++ initialisation, then Lloyd iterations until the assignment stops changing.
    Returns at most ``k`` centres: fewer when the data has fewer distinct directions than ``k``
    (k-means++ stops when every point coincides with a centre). An empty cluster keeps its centre.
    """
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    dist = (1.0 - x @ x[first]).clamp(min=0.0)  # cosine distance to the nearest centre so far
    while len(centres) < k:
        if float(dist.sum()) <= 1e-12:
            break
        nxt = int(torch.multinomial(dist, 1, generator=generator))
        centres.append(x[nxt])
        dist = torch.minimum(dist, (1.0 - x @ x[nxt]).clamp(min=0.0))
    c = torch.stack(centres)
    assign = None
    for _ in range(iters):
        new_assign = _nearest(x, c)
        if assign is not None and torch.equal(new_assign, assign):
            break
        assign = new_assign
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        norms = sums.norm(dim=1, keepdim=True)
        keep = norms[:, 0] <= 1e-12  # empty cluster (or antipodal members cancelling): keep centre
        c = torch.where(keep[:, None], c, sums / norms.clamp(min=1e-12))
    return c


def _complete_codewords(c: Tensor, k: int) -> Tensor:
    """Drop duplicate centres, then fill up to ``k`` with the Fibonacci directions farthest from the
    codewords so far, so the codebook always has ``k`` distinct unit codewords (and the triangulation
    its fixed 2k−4 faces) even on data with fewer than ``k`` distinct normals (synthetic scenes)."""
    kept: list[Tensor] = []
    for v in c:
        if not kept or float((torch.stack(kept) @ v).max()) < _DUPLICATE_COS:
            kept.append(v)
    out = torch.stack(kept)
    if out.shape[0] < k:
        cand = fibonacci_sphere(max(16 * k, 512))
        closest = (cand @ out.T).max(dim=1).values
        while out.shape[0] < k:
            j = int(torch.argmin(closest))  # the candidate farthest from every codeword
            out = torch.cat((out, cand[j : j + 1]))
            closest = torch.maximum(closest, cand @ cand[j])
    return out


def _triangulate(codewords: Tensor) -> Tensor:
    """Spherical Delaunay triangulation of ``K`` distinct unit codewords: their convex hull.

    Returns ``[2K−4, 3]`` long faces, each ordered counter-clockwise seen from outside the hull.
    Distinct points on a sphere are all hull vertices, and a triangulated hull of K vertices has
    2K−4 faces (Euler), so the shape depends on K only. Degenerate sets (all codewords on one circle,
    where qhull finds no 3D hull, or four co-circular ones it merges) are triangulated with qhull's
    joggle (``QJ``): the faces stay valid index triples; those whose plane passes through the origin
    have flat cones and are skipped by coding and decoding (see :class:`NormalCodebook`).
    """
    from scipy.spatial import ConvexHull, QhullError

    pts = codewords.detach().double().cpu().numpy()
    k = pts.shape[0]
    try:
        hull = ConvexHull(pts)
    except QhullError:  # flat input (all codewords on one circle): joggle below
        hull = None
    if hull is None or len(hull.vertices) != k or len(hull.simplices) != 2 * k - 4:
        try:
            hull = ConvexHull(pts, qhull_options="QJ")
        except QhullError as err:
            raise ValueError(f"cannot triangulate the {k} codewords: {err}") from None
    faces = np.asarray(hull.simplices, dtype=np.int64)
    if len(hull.vertices) != k or faces.shape[0] != 2 * k - 4:
        raise ValueError(
            f"triangulation of {k} codewords has {faces.shape[0]} faces over {len(hull.vertices)} "
            f"vertices (expected {2 * k - 4} over {k}): duplicate codewords?"
        )
    # Orient every face outwards, using qhull's outward facet normals (valid even when joggled).
    a, b, c = pts[faces[:, 0]], pts[faces[:, 1]], pts[faces[:, 2]]
    flip = np.einsum("ij,ij->i", np.cross(b - a, c - a), hull.equations[:, :3]) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return torch.from_numpy(faces)


def sample_normals(labels: Iterable[Tensor], max_points: int, seed: int) -> Tensor:
    """Valid unit normals ``[N,3]`` (float32) from normal labels, a uniform random subset of at most
    ``max_points`` of them, deterministic for a seed and the order of ``labels``.

    ``labels``: ``[3,H,W]`` or ``[B,3,H,W]`` tensors (all-zero = invalid), e.g. a dataset's samples.
    Streams over the labels with one random key per point and keeps the ``max_points`` smallest keys,
    so memory stays bounded by ``max_points`` plus one label whatever the dataset size.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    gen = torch.Generator().manual_seed(seed)
    pool = torch.zeros(0, 3)
    keys = torch.zeros(0, dtype=torch.float64)
    for label in labels:
        lab = label.detach().float().cpu()
        if lab.dim() == 3:
            lab = lab[None]
        if lab.dim() != 4 or lab.shape[1] != 3:
            raise ValueError(f"normal labels must be [3,H,W] or [B,3,H,W], got {tuple(label.shape)}")
        pts = lab.permute(0, 2, 3, 1).reshape(-1, 3)
        pts = pts[pts.abs().sum(dim=1) > 0]
        pts = F.normalize(pts, dim=1)
        pool = torch.cat((pool, pts))
        keys = torch.cat((keys, torch.rand(pts.shape[0], generator=gen, dtype=torch.float64)))
        if pool.shape[0] > max_points:
            keep = torch.argsort(keys)[:max_points]
            pool, keys = pool[keep], keys[keep]
    return pool[torch.argsort(keys)]


class NormalCodebook(LabelSpace):
    """Surface normals as ``num_codewords`` codewords on the unit sphere (ATRC: 40).

    Buffers (saved with the model, shapes fixed by K): ``codewords [K,3]`` unit vectors and
    ``triangles [2K−4,3]`` their spherical Delaunay triangulation. Before :meth:`fit` the codewords
    are a Fibonacci sphere, so a model can be built (and a checkpoint loaded into it) without data.

    ``coding="nearest"``: hard target = nearest codeword (ATRC's released code, the default).
    ``coding="triangular"``: soft target = barycentric weights of the point where the normal's ray
    crosses the triangle it passes through (paper, App. D); CE with soft targets. When the codewords
    do not surround the origin (normals of one hemisphere, as camera-frame normals), only the faces
    with the origin on their inner side — the spherical Delaunay triangles, which tile the codewords'
    spherical hull — are used, and a normal outside that hull falls back to its nearest codeword.
    """

    codewords: Tensor
    triangles: Tensor

    def __init__(self, num_codewords: int = 40, coding: str = "nearest") -> None:
        super().__init__()
        if coding not in NORMAL_CODINGS:
            raise unknown_name("normal coding", coding, NORMAL_CODINGS)
        if num_codewords < 4:
            raise ValueError(f"num_codewords must be >= 4 (a triangulated sphere), got {num_codewords}")
        self.channels = int(num_codewords)
        self.coding = coding
        with torch.device("cpu"):  # computed with numpy/scipy, also when a model is built on "meta"
            cw = fibonacci_sphere(self.channels)
            triangles = _triangulate(cw)
        self.register_buffer("codewords", cw.float())
        self.register_buffer("triangles", triangles)

    def extra_repr(self) -> str:
        return f"num_codewords={self.channels}, coding={self.coding!r}"

    @torch.no_grad()
    def fit(self, normals: Tensor, seed: int = 0, iters: int = 100) -> NormalCodebook:
        """Spherical k-means of ``normals [N,3]`` (all-zero rows ignored) into the codewords, then
        their triangulation; deterministic for a seed. Buffers are updated in place (same shapes)."""
        x = normals.detach().double().cpu().reshape(-1, 3)
        x = x[x.norm(dim=1) > 1e-6]
        if x.shape[0] == 0:
            raise ValueError("no valid (non-zero) normals to fit the codebook on")
        x = x / x.norm(dim=1, keepdim=True)
        gen = torch.Generator().manual_seed(seed)
        c = _complete_codewords(_spherical_kmeans(x, self.channels, iters, gen), self.channels)
        self.codewords.copy_(c.to(self.codewords))
        self.triangles.copy_(_triangulate(c).to(self.triangles.device))
        return self

    def _faces(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Usable-face mask ``[M]`` and inverse vertex matrices ``[M,3,3]`` (zero for unusable faces).

        A face is usable when the origin lies strictly on the inner side of its (outward) plane:
        then its cone is proper and, with the origin inside the hull, the cones tile the sphere.
        """
        c = self.codewords.double()
        a, b, d = (c[self.triangles[:, j]] for j in range(3))
        normal = F.normalize(torch.linalg.cross(b - a, d - a), dim=1)
        usable = (normal * a).sum(dim=1) > _FACE_MIN_OFFSET
        mats = torch.stack((a, b, d), dim=-1)  # columns = vertices: mats @ lam = direction
        inv = torch.zeros_like(mats)
        if usable.any():
            inv[usable] = torch.linalg.inv(mats[usable])
        return usable, inv.to(dtype)

    def index(self, label: Tensor) -> Tensor:
        """Nearest codeword ``[B,H,W]`` of each normal; :data:`IGNORE_INDEX` where all-zero."""
        flat = label.float().permute(0, 2, 3, 1).reshape(-1, 3)
        valid = flat.abs().sum(dim=1) > 0
        # every pixel's nearest codeword, then ignore the invalid: no data-dependent size (no host wait)
        idx = torch.where(valid, _nearest(flat, self.codewords.to(flat)), IGNORE_INDEX)
        b, _, h, w = label.shape
        return idx.view(b, h, w)

    @torch.no_grad()
    def _triangular(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Vertex indices ``[P,3]`` and barycentric weights ``[P,3]`` of unit directions ``x``."""
        near = _nearest(x, self.codewords.to(x))
        out_i = near[:, None].repeat(1, 3)
        out_w = torch.zeros(x.shape[0], 3, dtype=x.dtype, device=x.device)
        out_w[:, 0] = 1.0  # fallback outside every usable face: the nearest codeword
        usable, inv = self._faces(x.dtype)
        if not usable.any():
            return out_i, out_w
        tri, inv = self.triangles[usable].to(x.device), inv[usable].to(x.device)
        for start in range(0, x.shape[0], _CHUNK):
            xc = x[start : start + _CHUNK]
            lam = torch.einsum("mij,pj->pmi", inv, xc)  # cone coordinates in every face [p,M,3]
            total = lam.sum(dim=-1)
            # Most-inside face: largest smallest barycentric weight (ties on shared edges are benign).
            score = lam.min(dim=-1).values / total.clamp(min=1e-12)
            score = torch.where(total > 0, score, torch.full_like(score, -math.inf))
            best_score, best = score.max(dim=1)
            inside = best_score >= -_INSIDE_TOL
            rows = torch.arange(xc.shape[0], device=x.device)
            w = (lam[rows, best] / total[rows, best, None]).clamp(min=0.0)
            w = w / w.sum(dim=1, keepdim=True).clamp(min=1e-12)
            sl = slice(start, start + xc.shape[0])
            out_i[sl] = torch.where(inside[:, None], tri[best], out_i[sl])
            out_w[sl] = torch.where(inside[:, None], w, out_w[sl])
        return out_i, out_w

    def encode(self, label: Tensor) -> tuple[Tensor, Tensor]:
        """Sparse targets of normals ``[B,3,H,W]``: codeword indices and weights, both ``[B,3,H,W]``.

        Nearest coding puts weight 1 on the first index; triangular coding spreads barycentric
        weights over a triangle's three codewords. Ignored (all-zero) pixels have zero weights.
        """
        b, _, h, w = label.shape
        flat = label.float().permute(0, 2, 3, 1).reshape(-1, 3)
        valid = (flat.abs().sum(dim=1) > 0)[:, None]
        # Every pixel is coded, the invalid ones then zeroed: no data-dependent size (no host wait).
        x = F.normalize(flat, dim=1)
        if self.coding == "nearest":
            idx = _nearest(x, self.codewords.to(x))[:, None].repeat(1, 3)
            wt = F.one_hot(torch.zeros_like(idx[:, 0]), 3).to(flat.dtype)
        else:
            idx, wt = self._triangular(x)
        idx = torch.where(valid, idx, 0)
        wt = torch.where(valid, wt, 0.0)
        return idx.view(b, h, w, 3).permute(0, 3, 1, 2), wt.view(b, h, w, 3).permute(0, 3, 1, 2)

    def targets(self, label: Tensor) -> Tensor:
        idx, wt = self.encode(label)
        b, _, h, w = label.shape
        return torch.zeros(b, self.channels, h, w, dtype=wt.dtype, device=wt.device).scatter_add_(1, idx, wt)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.coding == "nearest":
            return super().loss(logits, target)
        logits = _to_label_size(logits, target)
        idx, wt = self.encode(target)
        n_valid = (wt.sum(dim=1) > 0).sum().clamp(min=1)
        # Soft-target CE from the three nonzero targets only: no dense [B,K,H,W] target needed.
        logp = torch.log_softmax(logits, dim=1).gather(1, idx)
        return -(wt * logp).sum() / n_valid

    def decode(self, logits: Tensor) -> Tensor:
        """Unit normals ``[B,3,h,w]``: in the triangle of maximum total probability, the
        probability-weighted combination of its three codewords, normalised (App. D)."""
        prob = torch.softmax(logits.float(), dim=1)
        usable, _ = self._faces(prob.dtype)
        tri = self.triangles[usable] if usable.any() else self.triangles  # degenerate: every face
        tri = tri.to(prob.device)
        total = prob[:, tri].sum(dim=2)  # [B,M,h,w]
        verts = tri[total.argmax(dim=1)].permute(0, 3, 1, 2)  # [B,3,h,w]
        w = prob.gather(1, verts)
        normal = torch.einsum("bjhw,bjhwc->bchw", w, self.codewords.to(prob)[verts])
        return F.normalize(normal, dim=1)


def label_space_for(
    task: str,
    out_channels: int,
    *,
    edge_pos_weight: float = 0.95,
    depth_bins: int = 40,
    depth_range: tuple[float, float] = (0.7, 10.0),
    normal_codewords: int = 40,
    normal_coding: str = "nearest",
) -> LabelSpace:
    """The auxiliary label space of a task (ATRC App. D / its code's defaults).

    ``out_channels`` is the task's number of classes and is used by semseg / human_parts only: the
    other label spaces have their own size (edges and saliency 2, depth ``depth_bins``, normals
    ``normal_codewords``).
    """
    if normal_coding not in NORMAL_CODINGS:
        raise unknown_name("normal coding", normal_coding, NORMAL_CODINGS)
    if task in ("semseg", "human_parts"):
        return ClassLabels(out_channels)
    if task == "depth":
        return DepthBins(depth_bins, *depth_range)
    if task == "normals":
        return NormalCodebook(normal_codewords, normal_coding)
    if task == "edges":
        return BinaryLabels(edge_pos_weight)
    if task == "saliency":
        return BinaryLabels(None)
    raise unknown_name("task", task, LABEL_SPACE_TASKS)
