"""A tiny, exact copy of an extracted PASCAL multi-task archive (PASCALContext/ or PASCAL_MT/).

Same folders, file types and .mat structures as the published archives, with planted values that the
tests can check exactly:

* ``JPEGImages/<id>.jpg``: smooth random RGB, one size per image (:data:`SIZES`, cycled).
* ``semseg/VOC12/<id>.png`` (palette mode 'P', like VOC) for even indices, ``semseg/pascal-context/<id>.png``
  (mode 'L') for odd ones; index 0 has both, with different contents (VOC12 must win). Values: a
  gradient of classes 0..20 and a 255 ignore frame.
* ``pascal-context/trainval/<id>.mat``: ``LabelMap`` (uint16) = :data:`VALID_CLASS` left half,
  :data:`INVALID_CLASS` right half, and a :data:`RECT_CLASS` rectangle at :func:`rect_of`.
* ``human_parts/<id>.mat``: PASCAL-Part ``anno`` structs by :func:`parts_kind` (person with every part
  name; only a non-person object; no file; a person without parts).
* ``normals_distill/<id>.png``: RGB of :func:`planted_normals`; ``sal_distill/<id>.png``: ``(x + y) % 256``.
* ``ImageSets/Context/{train,val}.txt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

TOP_DIRS = {"atrc": "PASCALContext", "survey": "PASCAL_MT"}
SIZES: tuple[tuple[int, int], ...] = ((375, 500), (500, 333), (281, 500))
VALID_CLASS = 440  # 'wall': also an NYU class, so normals are kept there
INVALID_CLASS = 360  # 'sky': not an NYU class, normals masked out
RECT_CLASS = 284  # 'person': valid for normals too
# Every PASCAL-Part person part name; planted as 10x10 squares on a grid (see part_square).
PERSON_PARTS = (
    "hair",
    "head",
    "lear",
    "rear",
    "leye",
    "reye",
    "lebrow",
    "rebrow",
    "mouth",
    "nose",
    "torso",
    "neck",
    "luarm",
    "ruarm",
    "llarm",
    "rlarm",
    "lhand",
    "rhand",
    "luleg",
    "ruleg",
    "llleg",
    "rlleg",
    "lfoot",
    "rfoot",
)
PERSON_BOX = (5, 5, 60, 110)  # rows 5..59, cols 5..109: the person mask (covers every part square)
DOG_BOX = (80, 5, 120, 60)  # a dog (class_ind 12) with a 'head' part, never counted as a person
# parts_kind(i): what human_parts/<id>.mat holds for image i
KINDS = ("person", "object", "missing", "person_no_parts")


def image_ids(n_train: int = 3, n_val: int = 2) -> tuple[list[str], list[str]]:
    ids = [f"2008_{i:06d}" for i in range(n_train + n_val)]
    return ids[:n_train], ids[n_train:]


def size_of(index: int, sizes=None) -> tuple[int, int]:
    sizes = sizes or SIZES
    return tuple(sizes[index % len(sizes)])


def parts_kind(index: int) -> str:
    return KINDS[index % len(KINDS)]


def rect_of(index: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the RECT_CLASS rectangle (bottom/right exclusive)."""
    h, w = size
    top, left = h // 3 + index, w // 4 + 2 * index
    return top, left, top + h // 4, left + w // 3


def part_square(k: int) -> tuple[slice, slice]:
    r, c = 7 + (k // 8) * 17, 7 + (k % 8) * 13
    return slice(r, r + 10), slice(c, c + 10)


def label_map(index: int, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    lab = np.full((h, w), VALID_CLASS, np.uint16)
    lab[:, w // 2 :] = INVALID_CLASS
    top, left, bottom, right = rect_of(index, size)
    lab[top:bottom, left:right] = RECT_CLASS
    return lab


def planted_normals(index: int, size: tuple[int, int]) -> np.ndarray:
    """Distilled-normals PNG content: never (0, 0, 0), so every masked-out pixel is recognisable."""
    h, w = size
    y, x = np.mgrid[:h, :w]
    return np.stack([(x + index) % 255 + 1, (y * 3) % 255 + 1, ((x + y) % 200) + 30], -1).astype(np.uint8)


def planted_saliency(size: tuple[int, int]) -> np.ndarray:
    h, w = size
    y, x = np.mgrid[:h, :w]
    return ((x + y) % 256).astype(np.uint8)


def planted_semseg(index: int, size: tuple[int, int], shift: int = 0) -> np.ndarray:
    h, w = size
    x = np.arange(w)
    seg = np.repeat(((x * 21) // w + shift) % 21, h).reshape(w, h).T.astype(np.uint8)
    seg[:3], seg[-3:], seg[:, :3], seg[:, -3:] = 255, 255, 255, 255  # VOC-style ignore border
    return seg


def _voc_palette() -> list[int]:
    """The standard VOC colour map (bit-interleaved), 256 RGB entries."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _structs(records: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    """A 1xN MATLAB struct array for scipy.io.savemat."""
    arr = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
    for j, rec in enumerate(records):
        for f in fields:
            arr[0, j][f] = rec[f]
    return arr


def _box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros(size, np.uint8)
    m[box[0] : box[2], box[1] : box[3]] = 1
    return m


def parts_anno(vid: str, kind: str, size: tuple[int, int]) -> dict | None:
    """The PASCAL-Part ``anno`` struct (as savemat input) of one image, or None for 'missing'."""
    if kind == "missing":
        return None
    obj_fields, part_fields = ("class", "class_ind", "mask", "parts"), ("part_name", "mask")
    dog_head = np.zeros(size, np.uint8)
    dog_head[DOG_BOX[0] : DOG_BOX[0] + 10, DOG_BOX[1] : DOG_BOX[1] + 10] = 1
    dog = {
        "class": "dog",
        "class_ind": np.array([[12]], np.uint8),
        "mask": _box_mask(size, DOG_BOX),
        "parts": _structs([{"part_name": "head", "mask": dog_head}], part_fields),
    }
    objects = [dog]
    if kind in ("person", "person_no_parts"):
        parts = []
        if kind == "person":
            for k, name in enumerate(PERSON_PARTS):
                m = np.zeros(size, np.uint8)
                m[part_square(k)] = 1
                parts.append({"part_name": name, "mask": m})
        person = {
            "class": "person",
            "class_ind": np.array([[15]], np.uint8),
            "mask": _box_mask(size, PERSON_BOX),
            "parts": _structs(parts, part_fields) if parts else np.zeros((0, 0)),
        }
        objects.append(person)
    return {"imname": vid, "objects": _structs(objects, obj_fields)}


def write_pascal_source(
    parent: Path, variant: str = "atrc", n_train: int = 3, n_val: int = 2, seed: int = 0, sizes=None
) -> Path:
    """Writes the extracted archive folder under ``parent`` and returns it (``parent/<top dir>``)."""
    top = Path(parent) / TOP_DIRS[variant]
    rng = np.random.default_rng(seed)
    for d in (
        "JPEGImages",
        "ImageSets/Context",
        "semseg/VOC12",
        "semseg/pascal-context",
        "pascal-context/trainval",
        "human_parts",
        "normals_distill",
        "sal_distill",
    ):
        (top / d).mkdir(parents=True, exist_ok=True)
    train, val = image_ids(n_train, n_val)
    palette = _voc_palette()
    for i, vid in enumerate(train + val):
        h, w = size = size_of(i, sizes)
        coarse = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3)).astype(np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        img.save(top / "JPEGImages" / f"{vid}.jpg", quality=90)
        if i % 2 == 0:
            seg = Image.fromarray(planted_semseg(i, size), mode="L").convert("P")
            seg.putpalette(palette)
            seg.save(top / "semseg" / "VOC12" / f"{vid}.png")
        if i % 2 == 1 or i == 0:  # index 0: a different pascal-context PNG that must lose against VOC12
            Image.fromarray(planted_semseg(i, size, shift=7 if i == 0 else 0)).save(
                top / "semseg" / "pascal-context" / f"{vid}.png"
            )
        scipy.io.savemat(top / "pascal-context" / "trainval" / f"{vid}.mat", {"LabelMap": label_map(i, size)})
        anno = parts_anno(vid, parts_kind(i), size)
        if anno is not None:
            scipy.io.savemat(top / "human_parts" / f"{vid}.mat", {"anno": anno})
        Image.fromarray(planted_normals(i, size)).save(top / "normals_distill" / f"{vid}.png")
        Image.fromarray(planted_saliency(size)).save(top / "sal_distill" / f"{vid}.png")
    (top / "ImageSets" / "Context" / "train.txt").write_text("".join(v + "\n" for v in train))
    # trailing blank line and spaces, as hand-edited split files have
    (top / "ImageSets" / "Context" / "val.txt").write_text("".join(f"{v} \n" for v in val) + "\n")
    return top
