"""Image geometry without torch: camera intrinsics and binary-image thinning.

The lowest layer beside ``errors`` and ``io``: the data layer (dataset preparation), the metrics and
the regularizer all read these definitions, so none of them has to import another for them.
"""

from __future__ import annotations

import math

import numpy as np

from mtl3d.errors import UserError

# ------------------------------------------------------------------------------------------ intrinsics
# The NYU Depth v2 RGB camera at 640x480 (the dataset toolbox's camera_params.m). Taken as 0-based pixel
# coordinates (the Bouguet calibration toolbox convention: the centre of the top-left pixel is (0, 0)), so
# they go into K as they are. Lens distortion (k1 0.208, k2 -0.586, ...) is not modelled: the labelled
# frames are taken to be undistorted by the toolbox (an inference, not stated by the archive authors).
NYU_FX, NYU_FY, NYU_CX, NYU_CY = 518.8579, 519.4696, 325.5824, 253.7362
NYU_SIZE = (480, 640)  # (height, width) at which the parameters above hold


def default_intrinsics(height: int, width: int, fov_deg: float = 60.0) -> np.ndarray:
    """Intrinsics (float64 3x3) for an image without calibration: ``fov_deg`` is the **horizontal** field
    of view.

    Square pixels (fy = fx = (W/2)/tan(fov/2)), no skew, principal point at the image centre
    ((W-1)/2, (H-1)/2) under the OpenCV pixel-centre convention.
    """
    if not 0.0 < fov_deg < 180.0:
        raise UserError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------------------- thinning
# Neighbour order x1..x8 of Guo & Hall (1989): E, NE, N, NW, W, SW, S, SE; bit k of the code is x_{k+1}
# (the same bit layout as skimage's correlation mask, so the lookup tables are interchangeable).
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _guo_hall_lut(first_subiteration: bool) -> np.ndarray:
    """Deletion lookup table (256 neighbourhood codes) for one Guo-Hall subiteration (algorithm A1)."""
    lut = np.zeros(256, dtype=bool)
    for code in range(256):
        x = [(code >> k) & 1 for k in range(8)]  # x[0] = x1 ... x[7] = x8
        # G1: exactly one 8-connected foreground run around the pixel (crossing number X_H = 1).
        x_h = sum(1 for i in range(4) if x[2 * i] == 0 and (x[2 * i + 1] or x[(2 * i + 2) % 8]))
        # G2: 2 <= min(N1, N2) <= 3 (keeps end points, removes only border pixels).
        n1 = sum(1 for k in range(4) if x[2 * k] or x[2 * k + 1])
        n2 = sum(1 for k in range(4) if x[2 * k + 1] or x[(2 * k + 2) % 8])
        g2 = 2 <= min(n1, n2) <= 3
        # G3 / G3': delete from the south-east border first, then from the north-west border.
        if first_subiteration:
            g3 = not ((x[1] or x[2] or not x[7]) and x[0])
        else:
            g3 = not ((x[5] or x[6] or not x[3]) and x[4])
        lut[code] = x_h == 1 and g2 and g3
    lut.setflags(write=False)
    return lut


_LUT1 = _guo_hall_lut(True)
_LUT2 = _guo_hall_lut(False)
_STABLE = ~(_LUT1 | _LUT2)  # codes that neither subiteration deletes
_STABLE.setflags(write=False)


def thin(mask: np.ndarray) -> np.ndarray:
    """Thin a binary image to one-pixel-wide curves (identical output to ``skimage.morphology.thin``).

    Parallel two-subiteration algorithm (Guo & Hall 1989, algorithm A1 of Lam et al. 1992, which is
    MATLAB's ``bwmorph(bw, 'thin', inf)``). Each subiteration decides on the neighbourhoods *before* it
    deletes anything, exactly like the full-image version; only pixels whose neighbourhood could allow
    a deletion are examined, so the cost scales with the border length, not the image area.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"thin expects a 2-D mask, got shape {mask.shape}")
    h, w = mask.shape
    wp = w + 2
    img = np.zeros((h + 2, wp), dtype=np.uint8)
    img[1:-1, 1:-1] = mask
    flat = img.ravel()
    offsets = np.array([dy * wp + dx for dy, dx in _NEIGHBOURS], dtype=np.int64)
    weights = (1 << np.arange(8)).astype(np.int64)

    cand = np.flatnonzero(flat)
    slot = np.zeros(flat.size, dtype=np.int64)  # scratch for O(n) de-duplication of candidates
    luts = (_LUT1, _LUT2)
    idle = 0  # consecutive subiterations without a deletion
    sub = 0
    while cand.size and idle < 2:
        codes = flat[cand[:, None] + offsets] @ weights
        delete = luts[sub % 2][codes]
        gone = cand[delete]
        keep = cand[~delete]
        # A survivor stays a candidate only if some subiteration could still delete it as it is now;
        # pixels whose neighbourhood changes are re-added below as neighbours of deleted pixels.
        keep = keep[~_STABLE[codes[~delete]]]
        if gone.size:
            flat[gone] = 0
            nb = (gone[:, None] + offsets).ravel()
            nb = nb[flat[nb] == 1]
            both = np.concatenate([keep, nb])
            order = np.arange(both.size)
            slot[both] = order
            cand = both[slot[both] == order]
            idle = 0
        else:
            cand = keep
            idle += 1
        sub += 1
    return img[1:-1, 1:-1].astype(bool)
