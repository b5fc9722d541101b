"""Boundary (edge) detection metrics: odsF, oisF and AP with BSDS/SEISM pixel matching, in pure Python.

Protocol (per image, per threshold ``t``), following SEISM's ``edgesEvalImg`` (the code behind the
NYUD/PASCAL odsF numbers of ATRC, InvPT and the MTL survey):

1. binarise the prediction: ``pred >= t`` (thresholds ``k/(K+1)``, k = 1..K; K = 99 gives 0.01..0.99);
2. thin it to one-pixel-wide curves (Guo & Hall two-subiteration thinning = MATLAB
   ``bwmorph(.., 'thin', inf)`` = ``skimage.morphology.thin``; :func:`mtl3d.geometry.thin` works on the active
   border pixels only, which makes it tens of times faster on blurry predictions);
3. match predicted boundary pixels to ground-truth boundary pixels: a pair may match when the squared
   distance between pixel centres is ``<= r * r`` with ``r = max_dist * sqrt(H**2 + W**2)``, no slack,
   as BSDS computes it (:func:`match_radius`); the matching is a
   maximum-cardinality bipartite matching (unit-capacity max-flow, Dinic, ``scipy.sparse.csgraph``;
   see :func:`max_matching_size`), so every pixel is matched at most once;
4. accumulate ``cntR`` (matched GT pixels), ``sumR`` (GT pixels), ``cntP`` (matched predicted pixels),
   ``sumP`` (predicted pixels). With one GT map ``cntR == cntP`` = matching size.

Then over the split: **odsF** = max over t of F(ΣcntR/ΣsumR, ΣcntP/ΣsumP) (no interpolation between
thresholds, as SEISM's ``general_ods``); **oisF** = F of the summed counts at every image's own best
threshold (first maximum on ties, as MATLAB ``max``); **AP** = area under the pooled PR curve, see
:func:`average_precision`. SEISM's own AP formula is reported as ``AP_seism``.

Differences from SEISM, on purpose:
- BSDS' ``correspondPixels`` solves a min-cost assignment (it prefers short matches) in which a pixel
  can stay unmatched only through 6 "outlier" nodes drawn at random (seeded from the clock), plus a
  costly fallback; where those few links cannot be arranged, its optimum drops a real match. Our exact
  maximum matching is therefore an **upper bound** on its counts, not equal to them, and the
  *which-pixel* assignment may differ too. Size (``benchmarks/bench_boundary_reference.py``, which
  rebuilds that assignment graph and solves it exactly; 8 synthetic images, 99 thresholds, 3 seeds):
  about 0.04 % of the matches dropped, odsF +0.06 to +0.08 points above it at NYUD size (425x560,
  0.011) and +0.05 to +0.07 at PASCAL size (375x500, 0.0075); the simulated reference runs differ by
  up to 0.02 between seeds.
- Empty sets: we use vacuous values ``R = 1`` if ``sumR == 0`` and ``P = 1`` if ``sumP == 0`` (and
  ``F = 0`` when ``P + R == 0``). SEISM sets ``R = 1, P = 0`` when ``sumR == 0``, i.e. an image without
  GT boundaries scores F = 0 even for an empty prediction, and its OIS then picks the *lowest*
  threshold (most false positives) for such images. Ours scores empty GT + empty prediction as
  F = 1 and empty GT + any prediction as F = 0 (P = 0). Only images/splits without GT boundary
  pixels are affected.
- The prediction is used as given (no non-maximum suppression; SEISM's newest PNG reader runs NMS,
  the MTL/ATRC reader does not), in float rather than re-read from a uint8 PNG.
- GT value 255 (ignore) counts as non-boundary, as do all values < 0.5.

``thin_gt`` (default True): the GT boundary map is thinned once per image before matching. SEISM does
the same (``bwmorph(seg2bmap(G), 'thin', inf)``). Why: a one-pixel-wide prediction can match at most
one GT pixel per predicted pixel, so a two-pixel-wide GT band (e.g. NYUD edges drawn on both sides of a
label change) would cap recall near 50% even for a perfect detector. PASCAL GT is already thin, and
thinning is idempotent, so it is a no-op there.

Why one file of over 500 lines: thinning, matching, per-threshold counts and their pooling are the
steps of one protocol, and reading them in order is how they are checked against SEISM.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Sequence
from concurrent.futures import Future

import numpy as np
import torch
from scipy import ndimage, sparse
from scipy.sparse.csgraph import maximum_flow
from tqdm import tqdm

from mtl3d.geometry import thin
from mtl3d.metrics.pooling import first_row, index_weights, select, weighted_sum
from mtl3d.workers import WorkerPool


def match_radius(h: int, w: int, max_dist: float) -> float:
    """The tolerance in pixels as BSDS' ``correspondPixels`` computes it: ``maxDist * sqrt(rows² + cols²)``.

    Pairs at squared distance ``d2 > radius * radius`` are out of reach, with no slack: at 400x400 and
    0.0075 the squared radius is 17.999999999999996, so a (3, 3) offset is not matched, as in the reference.
    """
    return max_dist * math.sqrt(h * h + w * w)


def _disk_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer (dy, dx) offsets with dy² + dx² <= radius * radius."""
    r = int(math.floor(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy * dy + dx * dx <= radius * radius
    return dy[keep], dx[keep]


def image_counts(
    prob: np.ndarray,
    gt: np.ndarray,
    thresholds: np.ndarray,
    max_dist: float = 0.011,
    thin_gt: bool = True,
) -> np.ndarray:
    """Counts for one image: int64 array [T, 4] with columns (cntR, sumR, cntP, sumP).

    ``prob``: [H, W] boundary probabilities; ``gt``: [H, W] binary boundary map (already cleaned of
    ignore values). See the module docstring for the protocol.
    """
    prob = np.asarray(prob, dtype=np.float64)
    gt = np.asarray(gt, dtype=bool)
    h, w = prob.shape
    radius = match_radius(h, w, max_dist)
    if thin_gt:
        gt = thin(gt)
    n_t = len(thresholds)
    out = np.zeros((n_t, 4), dtype=np.int64)
    sum_r = int(gt.sum())
    out[:, 1] = sum_r

    # Per-threshold thinned predictions as flat pixel indices; identical binary maps (no pixel between
    # consecutive thresholds) share one thinning and one matching.
    flat_prob = prob.ravel()
    sorted_prob = np.sort(flat_prob)
    n_ge = flat_prob.size - np.searchsorted(sorted_prob, thresholds, side="left")
    thinned: list[np.ndarray] = []
    prev_n = -1
    for k, t in enumerate(thresholds):
        if n_ge[k] != prev_n:
            current = np.flatnonzero(thin(prob >= t)) if n_ge[k] else np.zeros(0, dtype=np.int64)
            prev_n = n_ge[k]
        thinned.append(current)
        out[k, 3] = current.size
    if sum_r == 0:
        return out  # nothing to match: cntR = cntP = 0

    # Candidate pairs are computed once, for the union of predicted pixels within reach of some GT pixel.
    # Squared distances are integers: rounding the transform's sqrt back gives them exactly.
    dist2 = np.rint(ndimage.distance_transform_edt(~gt) ** 2).ravel()
    union = np.unique(np.concatenate(thinned)) if thinned else np.zeros(0, dtype=np.int64)
    union = union[dist2[union] <= radius * radius]
    if union.size == 0:
        return out
    pad = int(math.floor(radius))
    gt_id = np.full((h + 2 * pad, w + 2 * pad), -1, dtype=np.int32)
    gy, gx = np.nonzero(gt)
    gt_id[gy + pad, gx + pad] = np.arange(gy.size, dtype=np.int32)
    dy, dx = _disk_offsets(radius)
    wp = w + 2 * pad
    offsets = dy * wp + dx
    uy, ux = np.divmod(union, w)
    base = (uy + pad) * wp + (ux + pad)
    gt_flat = gt_id.ravel()
    # [pixels, offsets] blocks of GT ids (-1 = none), in chunks so memory stays bounded for big radii
    step = max(1, 4_000_000 // offsets.size)
    cols: list[np.ndarray] = []
    per_row: list[np.ndarray] = []
    for s in range(0, union.size, step):
        neigh = gt_flat[base[s : s + step, None] + offsets[None, :]]
        valid = neigh >= 0
        cols.append(neigh[valid])
        per_row.append(valid.sum(axis=1))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(per_row))])
    pairs = sparse.csr_matrix(
        (np.ones(int(indptr[-1]), dtype=np.int8), np.concatenate(cols), indptr), shape=(union.size, gy.size)
    )

    prev: np.ndarray | None = None
    cnt = 0
    for k, pix in enumerate(thinned):
        if prev is not pix:
            rows = np.searchsorted(union, pix)
            rows = rows[(rows < union.size) & (union[np.minimum(rows, union.size - 1)] == pix)]
            cnt = max_matching_size(pairs[rows]) if rows.size else 0
            prev = pix
        out[k, 0] = cnt
        out[k, 2] = cnt
    return out


def max_matching_size(pairs: sparse.csr_matrix) -> int:
    """Cardinality of a maximum matching of the bipartite graph whose edges are the stored entries of
    ``pairs`` (rows = one side, columns = the other).

    Solved as a unit-capacity max-flow with Dinic's algorithm (``scipy.sparse.csgraph.maximum_flow``),
    which is O(E sqrt(V)) like Hopcroft-Karp. ``scipy.sparse.csgraph.maximum_bipartite_matching`` is
    not used: its Hopcroft-Karp DFS does not prune dead ends (scipy issue gh-26147) and takes
    exponential time on ladder-like graphs, which two parallel boundary curves produce (minutes for one
    480x640 image in our tests).
    """
    pairs = sparse.csr_matrix(pairs)
    n, m = pairs.shape
    if pairs.nnz == 0:
        return 0
    # Flow network in CSR form, built directly (no sort): node 0 = source, 1..n = rows,
    # n+1..n+m = columns, n+m+1 = sink; every edge has capacity 1.
    sink = n + m + 1
    row_nnz = np.diff(pairs.indptr)
    # rows: source (n edges), n row nodes, m column nodes (1 edge each), sink (none)
    col_end = n + pairs.nnz + np.arange(1, m + 1)
    indptr = np.concatenate([[0], n + np.concatenate([[0], np.cumsum(row_nnz)]), col_end, col_end[-1:]])
    indices = np.concatenate(
        [np.arange(1, n + 1), pairs.indices.astype(np.int64) + n + 1, np.full(m, sink)]
    ).astype(np.int32)
    graph = sparse.csr_matrix(
        (np.ones(indices.size, np.int32), indices, indptr.astype(np.int32)), shape=(sink + 1, sink + 1)
    )
    return int(maximum_flow(graph, 0, sink, method="dinic").flow_value)


def precision_recall(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision from counts [..., 4]; vacuous value 1 where the denominator is 0."""
    counts = np.asarray(counts, dtype=np.float64)
    cnt_r, sum_r, cnt_p, sum_p = (counts[..., i] for i in range(4))
    rec = np.divide(cnt_r, sum_r, out=np.ones_like(cnt_r), where=sum_r > 0)
    prec = np.divide(cnt_p, sum_p, out=np.ones_like(cnt_p), where=sum_p > 0)
    return rec, prec


def f_measure(rec: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """Harmonic mean 2PR/(P+R), 0 where P + R = 0."""
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    den = prec + rec
    return np.divide(2 * prec * rec, den, out=np.zeros_like(den), where=den > 0)


def average_precision(rec: np.ndarray, prec: np.ndarray) -> float:
    """Area under the PR curve given per-threshold (R, P) points, in [0, 1].

    The curve is the piecewise-linear interpolation over recall (BSDS/SEISM style) through the points
    sorted by recall, keeping the highest precision when several thresholds share a recall; it is
    extended flat to R = 0 at the precision of its lowest-recall point and is 0 beyond its highest
    recall; the area is the exact trapezoidal integral. A perfect detector (one point R = P = 1)
    therefore has AP = 1, where SEISM's formula (:func:`average_precision_seism`) gives 0.
    """
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if rec.size == 0:
        return math.nan
    ur = np.unique(rec)
    up = np.array([prec[rec == r].max() for r in ur])
    if ur[0] > 0:
        ur = np.concatenate([[0.0], ur])
        up = np.concatenate([[up[0]], up])
    return float(np.sum((ur[1:] - ur[:-1]) * (up[1:] + up[:-1]) / 2))


def average_precision_seism(rec: np.ndarray, prec: np.ndarray) -> float:
    """SEISM's ``general_ap``: linear interpolation of P at R = 0:0.01:1 inside the observed recall range
    (first threshold per distinct recall), summed and divided by 100; 0 if fewer than 2 distinct recalls."""
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    ur, first = np.unique(rec, return_index=True)
    if ur.size < 2:
        return 0.0
    up = prec[first]
    grid = np.arange(101) / 100.0
    inside = (grid >= ur[0]) & (grid <= ur[-1])
    return float(np.interp(grid[inside], ur, up).sum() / 100.0)


class BoundaryMetric:
    """odsF / oisF / AP (%) of boundary predictions, accumulated over a split (see module docstring).

    ``update(pred, target)``: pred probabilities [B, 1, H, W] in [0, 1]; target [B, 1, H, W] in {0, 1}
    with 255 = ignore (treated as non-boundary). ``compute()`` returns ``odsF``, ``oisF``, ``AP``,
    ``AP_seism`` (%), and ``ods_threshold``, ``ods_recall`` / ``ods_precision`` (%). With no image
    accumulated every value is NaN.

    ``workers > 0``: ``update`` only queues each image's :func:`image_counts` in a pool of that many
    worker processes (created on first use), so the caller (the network) keeps running while boundaries
    are scored; ``compute()`` waits for them, in submission order, so the numbers are identical to
    ``workers=0``. At most ``4 * workers`` images wait in the queue (``update`` blocks beyond that), which
    bounds memory when the network is faster than the scoring. ``progress``: a progress bar while
    ``compute()`` waits. The pool is shut down by ``compute``, ``reset``, ``close`` and on deletion.
    """

    def __init__(
        self,
        n_thresholds: int = 99,
        max_dist: float = 0.011,
        thin_gt: bool = True,
        thresholds: Sequence[float] | None = None,
        workers: int = 0,
        progress: bool = False,
    ) -> None:
        if thresholds is None:
            if n_thresholds < 1:
                raise ValueError("n_thresholds must be >= 1")
            thresholds = np.arange(1, n_thresholds + 1) / (n_thresholds + 1)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        if self.thresholds.ndim != 1 or self.thresholds.size == 0:
            raise ValueError("thresholds must be a non-empty 1-D sequence")
        if max_dist <= 0:
            raise ValueError("max_dist must be > 0")
        if workers < 0:
            raise ValueError("workers must be >= 0")
        self.max_dist = float(max_dist)
        self.thin_gt = bool(thin_gt)
        self.workers = int(workers)
        self.progress = bool(progress)
        self.protocol = (
            f"SEISM/BSDS fb: {self.thresholds.size} thresholds pred>=t "
            f"({self.thresholds[0]:.3g}..{self.thresholds[-1]:.3g}), pred thinned (bwmorph thin), "
            f"GT {'thinned' if self.thin_gt else 'as is'}, max bipartite matching within "
            f"{self.max_dist:g}*diagonal; odsF/oisF from pooled counts, AP trapezoid over recall "
            "(AP_seism = SEISM formula); empty sets: R=1 if no GT, P=1 if no prediction; %"
        )
        self._counts: list[np.ndarray] = []
        self._pending: deque[Future[np.ndarray]] = deque()
        self._pool: WorkerPool | None = None

    def reset(self) -> None:
        self.close()
        self._counts = []

    def close(self) -> None:
        """Drop queued work and shut the worker pool down (a later ``update`` starts a new one)."""
        for fut in self._pending:
            fut.cancel()
        self._shutdown()
        self._pending.clear()

    def _shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._pending:
            pool.kill()  # work that nobody will collect: end the workers now
        else:
            pool.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.kill(wait=False)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        p = _as_numpy(pred, keep_float32=self.workers > 0)
        g = _as_numpy(target)
        if p.ndim == 4:
            p = p[:, 0] if p.shape[1] == 1 else p
        if g.ndim == 4:
            g = g[:, 0] if g.shape[1] == 1 else g
        if p.ndim != 3 or p.shape != g.shape:
            raise ValueError(
                f"boundary metric expects pred and target [B,1,H,W] of equal size, got {pred.shape} "
                f"and {target.shape}"
            )
        if p.size and (np.nanmin(p) < -1e-6 or np.nanmax(p) > 1 + 1e-6):
            raise ValueError("boundary metric expects probabilities in [0, 1] (apply sigmoid first)")
        gt = (g >= 0.5) & (g != 255)
        for i in range(p.shape[0]):
            if self.workers == 0:
                self._counts.append(image_counts(p[i], gt[i], self.thresholds, self.max_dist, self.thin_gt))
                continue
            if self._pool is None:
                self._pool = WorkerPool(
                    self.workers,
                    "boundary scoring",
                    "score in this process: boundary_workers=0",
                    preload=[__name__],
                )
            self._pending.append(
                self._pool.submit(
                    image_counts, p[i].copy(), gt[i].copy(), self.thresholds, self.max_dist, self.thin_gt
                )
            )
            # back-pressure: collect the oldest results (in order) once too many images wait
            while len(self._pending) > 4 * self.workers:
                self._counts.append(self._pool.result(self._pending.popleft()))

    def _gather(self) -> None:
        if not self._pending:
            self._shutdown()
            return
        with tqdm(
            total=len(self._pending), desc="boundaries (odsF)", disable=not self.progress, dynamic_ncols=True
        ) as bar:
            while self._pending:
                self._counts.append(self._pool.result(self._pending.popleft()))
                bar.update(1)
        self._shutdown()

    def compute(self) -> dict[str, float]:
        self._gather()
        counts = np.stack(self._counts) if self._counts else np.zeros((0, self.thresholds.size, 4))
        return first_row(
            self.from_weights({"counts": counts}, np.ones((1, len(counts))), None, self.thresholds)
        )

    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image sufficient statistics: ``counts`` [N, T, 4] (cntR, sumR, cntP, sumP per threshold,
        int32), in the order the images were given (waits for queued worker results first)."""
        self._gather()
        t = self.thresholds.size
        counts = np.stack(self._counts) if self._counts else np.zeros((0, t, 4))
        return {"counts": counts.astype(np.int32)}

    @staticmethod
    def from_weights(
        stats: dict[str, np.ndarray],
        weights: np.ndarray,
        keys: Collection[str] | None = None,
        thresholds: Sequence[float] | None = None,
    ) -> dict[str, np.ndarray]:
        """The values [R] for each row of image weights [R, N] (:mod:`mtl3d.metrics.pooling`): the pooling
        that ``compute``, :meth:`from_per_image` and the bootstrap share (integer counts, so exact).
        ``keys``: only these (None: all; AP and AP_seism, one curve per row, only when asked for).
        ``thresholds``: default the uniform grid of ``T`` thresholds (``BoundaryMetric(n_thresholds=T)``),
        which only ``ods_threshold`` reads."""
        counts = np.asarray(stats["counts"])
        n_img, n_thr = counts.shape[0], counts.shape[1]
        if thresholds is None:
            thresholds = np.arange(1, n_thr + 1) / (n_thr + 1)
        thresholds = np.asarray(thresholds, dtype=np.float64)
        weights = np.asarray(weights, dtype=np.float64)
        if n_img == 0:
            return select(dict.fromkeys(_KEYS, np.full(len(weights), np.nan)), keys)
        pooled = weighted_sum(weights, counts)  # [R, T, 4]
        rec, prec = precision_recall(pooled)
        f = f_measure(rec, prec)
        best = np.argmax(f, axis=-1)
        rows = np.arange(len(f))
        out = {"odsF": 100.0 * f[rows, best]}
        if keys is None or "oisF" in keys:
            # OIS: each image at its own best threshold (first maximum), counts summed over images
            rec_i, prec_i = precision_recall(counts)
            best_i = np.argmax(f_measure(rec_i, prec_i), axis=1)
            r_ois, p_ois = precision_recall(weighted_sum(weights, counts[np.arange(n_img), best_i]))
            out["oisF"] = 100.0 * f_measure(r_ois, p_ois)
        if keys is None or "AP" in keys:
            out["AP"] = 100.0 * np.array([average_precision(r, p) for r, p in zip(rec, prec, strict=True)])
        if keys is None or "AP_seism" in keys:
            out["AP_seism"] = 100.0 * np.array(
                [average_precision_seism(r, p) for r, p in zip(rec, prec, strict=True)]
            )
        out["ods_threshold"] = thresholds[best]
        out["ods_recall"] = 100.0 * rec[rows, best]
        out["ods_precision"] = 100.0 * prec[rows, best]
        return select(out, keys)

    @staticmethod
    def from_per_image(
        stats: dict[str, np.ndarray],
        index: np.ndarray | None = None,
        thresholds: Sequence[float] | None = None,
    ) -> dict[str, float]:
        """``compute()``'s values from :meth:`per_image` statistics of the images ``index`` (default all;
        repeats count twice, as a bootstrap resample needs). ``thresholds``: see :meth:`from_weights`."""
        weights = index_weights(index, len(stats["counts"]))
        return first_row(BoundaryMetric.from_weights(stats, weights, None, thresholds))


_KEYS = ("odsF", "oisF", "AP", "AP_seism", "ods_threshold", "ods_recall", "ods_precision")


def _as_numpy(x: torch.Tensor | np.ndarray, keep_float32: bool = False) -> np.ndarray:
    """float64 array; ``keep_float32`` leaves float32 input as is (half the bytes to send to a worker;
    :func:`image_counts` converts to float64 exactly, so the counts do not change)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if keep_float32 and x.dtype in (torch.float32, torch.float16, torch.bfloat16):
            return x.float().numpy()
        return x.to(torch.float64).numpy()
    x = np.asarray(x)
    if keep_float32 and x.dtype in (np.float32, np.float16):
        return x.astype(np.float32, copy=False)
    return x.astype(np.float64, copy=False)
