"""PASCAL-Context multi-task conversion: exact decoded values on a planted copy of the archive."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.ndimage as ndi
from PIL import Image
from skimage.morphology import thin as sk_thin

from mtl3d.data import pascal, pascal_labels
from mtl3d.data.encode import png_bytes
from mtl3d.errors import UserError
from mtl3d.geometry import thin
from tests.rawdata import pascal as raw

N_TRAIN, N_VAL = 3, 2
TRAIN, VAL = raw.image_ids(N_TRAIN, N_VAL)
IDS = TRAIN + VAL

# The grouping as the task statement gives it, written out again so the test does not trust the module.
SPEC_GROUPS = {
    1: "hair head lear rear leye reye lebrow rebrow mouth nose",
    2: "torso neck",
    3: "luarm ruarm",
    4: "llarm rlarm lhand rhand",
    5: "luleg ruleg",
    6: "llleg rlleg lfoot rfoot",
}
SPEC_PART_ID = {name: gid for gid, names in SPEC_GROUPS.items() for name in names.split()}


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("pascal")
    src = raw.write_pascal_source(base / "raw", "atrc", N_TRAIN, N_VAL)
    manifest = pascal.convert(src, base / "out", "atrc", workers=0, progress=False)
    return src, base / "out", manifest


@pytest.fixture
def src_copy(data, tmp_path) -> Path:
    """A private copy of the raw folder that a test may damage."""
    return Path(shutil.copytree(data[0], tmp_path / "raw" / "PASCALContext"))


def _no_leftovers(root: Path) -> None:
    assert not (root / "manifest.json").exists()
    assert not list(root.glob(".tmp-*"))


# ------------------------------------------------------------------------------------------ manifest
def test_manifest(data):
    src, root, man = data
    assert man == json.loads((root / "manifest.json").read_text())
    assert man["dataset"] == "pascal" and man["variant"] == "atrc" and man["format_version"] == 1
    assert man["classes"] == [
        "background",
        "aeroplane",
        "bicycle",
        "bird",
        "boat",
        "bottle",
        "bus",
        "car",
        "cat",
        "chair",
        "cow",
        "diningtable",
        "dog",
        "horse",
        "motorbike",
        "person",
        "pottedplant",
        "sheep",
        "sofa",
        "train",
        "tvmonitor",
    ]
    assert man["num_classes"] == 21
    assert man["task_classes"] == {
        "human_parts": ["background", "head", "torso", "upper arm", "lower arm", "upper leg", "lower leg"]
    }
    assert man["tasks"] == ["semseg", "human_parts", "saliency", "normals", "edges"]
    assert man["formats"] == {"image": ".jpg", "normals": ".png"}
    assert man["height"] is None and man["width"] is None
    assert (man["near"], man["far"]) == (1.0, 10.0) and "arbitrary units" in man["depth_range"]
    assert man["camera"] == "default_intrinsics fov 60 deg (PASCAL has no calibration)"
    assert man["splits"] == {"train": N_TRAIN, "val": N_VAL}
    assert man["source"] == {"path": str(src.resolve())} and man["limit"] is None
    assert isinstance(man["prepare_seconds"], float)
    # ids in source order (the val file has trailing spaces and a blank line)
    assert (root / "splits" / "train.txt").read_text() == "".join(v + "\n" for v in TRAIN)
    assert (root / "splits" / "val.txt").read_text() == "".join(v + "\n" for v in VAL)
    assert sorted(man["views"]) == sorted(IDS)


def test_views_size_and_default_camera(data):
    man = data[2]
    for i, vid in enumerate(IDS):
        h, w = raw.SIZES[i % len(raw.SIZES)]
        view = man["views"][vid]
        assert view["size"] == [h, w]
        # 60 degree horizontal FOV: fx = (w / 2) / tan(30 deg) = w * sqrt(3) / 2 (433.0127 for w = 500)
        fx = w * math.sqrt(3) / 2
        K = np.array(view["K"])
        np.testing.assert_allclose(K, [[fx, 0, (w - 1) / 2], [0, fx, (h - 1) / 2], [0, 0, 1]], rtol=1e-6)
    assert man["views"][IDS[0]]["K"][0][0] == pytest.approx(433.0127018922193, rel=1e-6)


def test_has_person_and_counts(data):
    man = data[2]
    kinds = [raw.parts_kind(i) for i in range(len(IDS))]
    assert kinds == ["person", "object", "missing", "person_no_parts", "person"]
    # a person without annotated parts does not count (the loaders ignore such images for parts)
    assert [man["views"][v]["has_person"] for v in IDS] == [True, False, False, False, True]
    assert man["persons"] == {"train": 1, "val": 1}


# ------------------------------------------------------------------------------------------ labels
def test_jpeg_bytes_copied_verbatim(data):
    src, root, _ = data
    for vid in IDS:
        copied = (root / "images" / f"{vid}.jpg").read_bytes()
        assert copied == (src / "JPEGImages" / f"{vid}.jpg").read_bytes()


def test_semseg_prefers_voc12_and_keeps_ignore(data):
    src, root, _ = data
    assert (src / "semseg" / "pascal-context" / f"{IDS[0]}.png").is_file()  # both exist for id 0
    for i, vid in enumerate(IDS):
        out = _png(root / "semseg" / f"{vid}.png")
        assert out.dtype == np.uint8 and out.ndim == 2
        expected = raw.planted_semseg(i, raw.size_of(i))  # VOC12 content (shift 0), not the shift-7 one
        np.testing.assert_array_equal(out, expected)
        assert (out == 255).any() and set(np.unique(out)) <= set(range(21)) | {255}


def test_edges_follow_the_recipe(data):
    src, root, _ = data
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    for vid in IDS:
        lab = scipy.io.loadmat(src / "pascal-context" / "trainval" / f"{vid}.mat")["LabelMap"]
        lap = ndi.convolve(lab.astype(np.int64), kernel, mode="mirror")  # mirror = reflect-101
        expected = sk_thin(np.abs(lap) > 0)
        out = _png(root / "edges" / f"{vid}.png")
        assert set(np.unique(out)) == {0, 255}
        np.testing.assert_array_equal(out == 255, expected)


def _art(rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows.split()])


def test_edges_hand_computed():
    # Vertical step (labels 4 | 9 at column 4): the Laplacian is non-zero on columns 3 and 4. Thinning
    # (first subiteration) removes the east column and the top pixel of the west one in the same pass,
    # leaving column 3 from row 1 down. Rows 0 and 5 see no boundary: reflect-101 mirrors row 1 / row 4.
    lab = np.full((6, 8), 4, np.uint16)
    lab[:, 4:] = 9
    np.testing.assert_array_equal(
        pascal_labels._boundary(lab), _art("...##... ...##... ...##... ...##... ...##... ...##...")
    )
    np.testing.assert_array_equal(
        pascal.edges_from_labelmap(lab), _art("........ ...#.... ...#.... ...#.... ...#.... ...#....")
    )
    # Horizontal step at row 3: rows 2 and 3 are marked; row 3 survives except its last pixel.
    lab = np.full((7, 6), 4, np.uint16)
    lab[3:] = 9
    np.testing.assert_array_equal(
        pascal.edges_from_labelmap(lab), _art("...... ...... ...... #####. ...... ...... ......")
    )
    # Two rectangles: the 2-pixel bands (outer corners have a zero Laplacian) thin to closed 1-pixel rings.
    lab = np.full((12, 16), 1, np.uint16)
    lab[3:8, 3:7] = 5
    lab[4:10, 10:14] = 8
    np.testing.assert_array_equal(
        pascal_labels._boundary(lab),
        _art("""
        ................ ................ ...####......... ..######..####.. ..##..##.######. ..##..##.##..##.
        ..##..##.##..##. ..######.##..##. ...####..##..##. .........######. ..........####.. ................
    """),
    )
    np.testing.assert_array_equal(
        pascal.edges_from_labelmap(lab),
        _art("""
        ................ ................ ................ ...###.......... ..#...#...###... ..#...#..#...#..
        ..#...#..#...#.. ...#..#..#...#.. ....##...#...#.. ..........#..#.. ...........##... ................
    """),
    )


def test_boundary_border_is_reflect101():
    # Top row [1, 2, 1] over 3: with reflect-101 the pixel's upper neighbour is the 3 below it, so its
    # Laplacian is 1 + 1 + 3 + 3 - 4 * 2 = 0 (no boundary). Edge-duplicating ('reflect') or zero padding
    # would mark it.
    lab = np.array([[1, 2, 1], [5, 3, 5], [5, 3, 5]], np.uint16)
    assert not pascal_labels._boundary(lab)[0, 1]
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    assert ndi.convolve(lab.astype(int), kernel, mode="reflect")[0, 1] != 0
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (1, 7), (6, 1), (2, 2), (9, 13)):
        lab = rng.integers(0, 3, shape)
        expected = ndi.convolve(lab, kernel, mode="mirror") != 0
        np.testing.assert_array_equal(pascal_labels._boundary(lab), expected, err_msg=str(shape))


def test_thin_equals_skimage():
    rng = np.random.default_rng(1)
    masks = [np.zeros((4, 5), bool), np.ones((4, 5), bool), np.ones((1, 6), bool), np.ones((6, 1), bool)]
    masks += [rng.random(rng.integers(1, 40, 2)) < rng.random() for _ in range(150)]
    for m in masks:
        np.testing.assert_array_equal(thin(m), sk_thin(m))


def test_human_parts_grouping(data):
    src, root, _ = data
    assert sorted(raw.PERSON_PARTS) == sorted(SPEC_PART_ID)  # the fixture plants every listed name
    vid, size = IDS[0], raw.size_of(0)
    out = _png(root / "human_parts" / f"{vid}.png")
    expected = np.zeros(size, np.uint8)  # person images: every non-part pixel is background 0
    for k, name in enumerate(raw.PERSON_PARTS):
        expected[raw.part_square(k)] = SPEC_PART_ID[name]
    np.testing.assert_array_equal(out, expected)
    top, left, bottom, right = raw.DOG_BOX
    assert (out[top:bottom, left:right] == 0).all()  # the dog's 'head' part is not a person part
    np.testing.assert_array_equal(pascal.human_parts_from_mat(src / "human_parts" / f"{vid}.mat"), expected)


def test_human_parts_ignored_without_person(data):
    src, root, _ = data
    for i in (1, 2, 3):  # only a dog; no parts file; a person without parts
        out = _png(root / "human_parts" / f"{IDS[i]}.png")
        assert out.shape == raw.size_of(i) and (out == 255).all(), raw.parts_kind(i)
    assert pascal.human_parts_from_mat(src / "human_parts" / f"{IDS[1]}.mat") is None
    assert pascal.human_parts_from_mat(src / "human_parts" / f"{IDS[3]}.mat") is None


def _person(mask: np.ndarray, parts: dict[str, np.ndarray]) -> dict:
    fields = ("part_name", "mask")
    recs = [{"part_name": n, "mask": m.astype(np.uint8)} for n, m in parts.items()]
    return {
        "class": "person",
        "class_ind": np.array([[15]], np.uint8),
        "mask": mask.astype(np.uint8),
        "parts": raw._structs(recs, fields) if recs else np.zeros((0, 0)),
    }


def _anno_file(tmp_path: Path, persons: list[dict]) -> Path:
    path = tmp_path / "anno.mat"
    objects = raw._structs(persons, ("class", "class_ind", "mask", "parts"))
    scipy.io.savemat(path, {"anno": {"imname": "x", "objects": objects}})
    return path


def test_human_parts_follow_the_reference_ignore_rules(tmp_path):
    # The MTL loaders list an object as a person only if its object mask is non-empty (area > 0), paint
    # the parts of every person object with parts once the image has such a person, and their ignore
    # step turns a map without any part pixel into all-ignore.
    size = (6, 8)
    empty, body = np.zeros(size, bool), np.zeros(size, bool)
    body[1:5, 2:6] = True
    head = np.zeros(size, bool)
    head[1, 2:4] = True
    torso = np.zeros(size, bool)
    torso[3, 4:6] = True
    # a person whose part masks are all empty: no part pixel -> all-ignore (None), not all-background
    assert pascal.human_parts_from_mat(_anno_file(tmp_path, [_person(body, {"head": empty})])) is None
    # the only person has an empty object mask: not in the loaders' person list -> all-ignore
    assert pascal.human_parts_from_mat(_anno_file(tmp_path, [_person(empty, {"head": head})])) is None
    # with another (non-empty) person the image counts, and the loop paints every person's parts
    got = pascal.human_parts_from_mat(
        _anno_file(tmp_path, [_person(body, {"torso": torso}), _person(empty, {"head": head})])
    )
    expected = np.zeros(size, np.uint8)
    expected[torso], expected[head] = SPEC_PART_ID["torso"], SPEC_PART_ID["head"]
    np.testing.assert_array_equal(got, expected)


def test_normals_masked_to_valid_classes(data):
    _, root, _ = data
    for i, vid in enumerate(IDS):
        size = raw.size_of(i)
        lab = raw.label_map(i, size)
        planted = raw.planted_normals(i, size)
        out = _png(root / "normals" / f"{vid}.png")
        assert out.shape == (*size, 3) and out.dtype == np.uint8
        keep = (lab == raw.VALID_CLASS) | (lab == raw.RECT_CLASS)
        assert keep.any() and (~keep).any()
        np.testing.assert_array_equal(out[keep], planted[keep])
        assert (out[~keep] == 0).all()


def test_normals_classes_file():
    path = Path(pascal.__file__).with_name("pascal_normals_classes.json")
    info = json.loads(path.read_text())
    ids = info["ids"]
    assert info["count"] == 170 and len(ids) == 170 and len(set(ids)) == 170
    assert len(pascal.normals_valid_classes()) == 170
    assert "context_classes.json" in info["source"] and "nyu_classes.json" in info["source"]
    names = info["names"]
    assert names["427"] == "tvmonitor" and 427 in ids  # the one custom addition
    assert 431 not in ids  # 'unknown' is excluded
    assert raw.VALID_CLASS in ids and raw.RECT_CLASS in ids and raw.INVALID_CLASS not in ids
    assert names[str(raw.VALID_CLASS)] == "wall"


def test_saliency_threshold(data):
    _, root, _ = data
    for i, vid in enumerate(IDS):
        planted = raw.planted_saliency(raw.size_of(i))
        out = _png(root / "saliency" / f"{vid}.png")
        np.testing.assert_array_equal(out, np.where(planted >= 128, 255, 0))
        assert (out[planted == 127] == 0).all() and (out[planted == 128] == 255).all()


def test_reads_back_through_folder_dataset(data):
    from mtl3d.data import folder

    if not hasattr(folder.FolderDataset, "load_arrays") or not hasattr(folder.FolderDataset, "class_names"):
        pytest.skip("FolderDataset does not read manifest 'formats' / 'task_classes' yet")
    _, root, _ = data
    ds = folder.FolderDataset(root, "train", list(pascal.TASKS), dataset="pascal")
    assert ds.class_names("human_parts")[3] == "upper arm" and ds.num_classes == 21
    arrays = ds.load_arrays(IDS[0])
    size = raw.size_of(0)
    assert arrays["image"].shape == (*size, 3)
    np.testing.assert_array_equal(arrays["semseg"], raw.planted_semseg(0, size))
    np.testing.assert_array_equal(arrays["human_parts"], _png(root / "human_parts" / f"{IDS[0]}.png"))
    np.testing.assert_array_equal(arrays["saliency"], raw.planted_saliency(size) >= 128)
    lab = raw.label_map(0, size)
    keep = (lab == raw.VALID_CLASS) | (lab == raw.RECT_CLASS)
    expected = raw.planted_normals(0, size).astype(np.float32) * (2 / 255) - 1
    np.testing.assert_allclose(arrays["normals"][keep], expected[keep], atol=1e-6)
    assert (arrays["normals"][~keep] == 0).all()
    np.testing.assert_allclose(arrays["K"], data[2]["views"][IDS[0]]["K"])


# ------------------------------------------------------------------------------------------ errors
def test_unknown_variant(data, tmp_path):
    with pytest.raises(UserError, match="unknown PASCAL variant 'voc'; valid: atrc, survey"):
        pascal.convert(data[0], tmp_path / "out", "voc", progress=False)


def test_missing_image_names_the_file(src_copy, tmp_path):
    gone = src_copy / "JPEGImages" / f"{IDS[3]}.jpg"
    gone.unlink()
    with pytest.raises(UserError, match=f"missing file {gone}"):
        pascal.convert(src_copy, tmp_path / "out", "atrc", workers=0, progress=False)
    assert not (tmp_path / "out").exists()  # checked before anything was written


def test_missing_split_file(src_copy, tmp_path):
    (src_copy / "ImageSets" / "Context" / "val.txt").unlink()
    with pytest.raises(UserError, match="missing split file .*val.txt"):
        pascal.convert(src_copy, tmp_path / "out", "atrc", workers=0, progress=False)


@pytest.mark.parametrize("rel", ["pascal-context/trainval/{}.mat", "human_parts/{}.mat"])
def test_corrupt_mat_names_the_file(src_copy, tmp_path, rel):
    bad = src_copy / rel.format(IDS[4])
    bad.write_bytes(b"MATLAB 5.0 MAT-file, but then garbage" * 10)
    with pytest.raises(UserError, match=f"corrupt .*{bad}"):
        pascal.convert(src_copy, tmp_path / "out", "atrc", workers=0, progress=False)
    _no_leftovers(tmp_path / "out")


def test_corrupt_jpeg_names_the_file(src_copy, tmp_path):
    bad = src_copy / "JPEGImages" / f"{IDS[1]}.jpg"
    bad.write_bytes(bad.read_bytes()[:400])  # truncated
    with pytest.raises(UserError, match=f"corrupt image file {bad}"):
        pascal.convert(src_copy, tmp_path / "out", "atrc", workers=0, progress=False)
    _no_leftovers(tmp_path / "out")


def test_label_size_mismatch(src_copy, tmp_path):
    bad = src_copy / "sal_distill" / f"{IDS[2]}.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(bad)
    with pytest.raises(UserError, match=f"label file {bad} is 10x12 but its image is 281x500"):
        pascal.convert(src_copy, tmp_path / "out", "atrc", workers=0, progress=False)


def test_not_an_archive_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not an extracted PASCAL 'atrc' archive"):
        pascal.convert(tmp_path / "empty", tmp_path / "out", "atrc", progress=False)


# ------------------------------------------------------------------------------------------ writing
def test_idempotent_and_overwrite(data, tmp_path):
    src, root, man = data
    stamp = (root / "manifest.json").stat().st_mtime_ns
    again = pascal.convert(src, root, "atrc", workers=0, progress=False)
    assert again == man and (root / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="describes a different dataset"):
        pascal.convert(src, root, "atrc", workers=0, progress=False, limit=1)
    other = tmp_path / "other"
    shutil.copytree(root, other)
    small = pascal.convert(src, other, "atrc", workers=0, progress=False, limit=1, overwrite=True)
    assert small["limit"] == 1 and sorted(p.name for p in (other / "images").iterdir()) == [
        f"{TRAIN[0]}.jpg",
        f"{VAL[0]}.jpg",
    ]


def test_refuses_foreign_folder(data, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and has no manifest.json"):
        pascal.convert(data[0], tmp_path / "out", "atrc", workers=0, progress=False)


def test_interrupted_run_leaves_no_manifest(data, tmp_path, monkeypatch):
    src, root, _ = data
    out = tmp_path / "out"
    shutil.copytree(root, out)  # a complete dataset that an interrupted overwrite must not damage
    (out / ".tmp-1-dead").mkdir()  # left by a killed run
    calls = []
    real = pascal._Converter.__call__

    def dying(self, vid):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(vid)
        return real(self, vid)

    monkeypatch.setattr(pascal._Converter, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        pascal.convert(src, out, "atrc", workers=0, progress=False, limit=2, overwrite=True)
    assert not list(out.glob(".tmp-*"))
    assert json.loads((out / "manifest.json").read_text())["limit"] is None  # the existing dataset, intact
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        pascal.convert(src, fresh, "atrc", workers=0, progress=False)
    assert not (fresh / "manifest.json").exists() and not list(fresh.glob(".tmp-*"))


_KILL_SCRIPT = """
import sys, time
from mtl3d.data import pascal
real = pascal._Converter.__call__
def slow(self, vid):
    out = real(self, vid)
    time.sleep(0.5)  # so that the parent can kill us between two images
    return out
pascal._Converter.__call__ = slow
pascal.convert(sys.argv[1], sys.argv[2], "atrc", workers=0, progress=False)
"""


def test_killed_run_leaves_no_manifest(data, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(data[0]), str(out)])
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob(".tmp-*/images/*.jpg")):
            assert proc.poll() is None and time.monotonic() < deadline, "the conversion did not start"
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no cleanup code runs
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "manifest.json").exists() and list(out.glob(".tmp-*"))
    man = pascal.convert(data[0], out, "atrc", workers=0, progress=False)  # removes the stale .tmp-*
    assert not list(out.glob(".tmp-*")) and man["views"] == data[2]["views"]


def test_limit(data, tmp_path):
    man = pascal.convert(data[0], tmp_path / "out", "atrc", workers=0, progress=False, limit=1)
    assert man["splits"] == {"train": 1, "val": 1} and man["limit"] == 1
    assert sorted(man["views"]) == [TRAIN[0], VAL[0]]
    assert man["persons"] == {"train": 1, "val": 0}
    assert (tmp_path / "out" / "splits" / "val.txt").read_text() == VAL[0] + "\n"
    with pytest.raises(UserError, match="limit must be a positive integer"):
        pascal.convert(data[0], tmp_path / "o2", "atrc", progress=False, limit=0)


def test_process_pool_and_survey_variant(data, tmp_path):
    """The survey archive (top dir PASCAL_MT), found from its parent folder, converted by 2 workers,
    gives the same files as the in-process atrc run."""
    src = raw.write_pascal_source(tmp_path / "raw", "survey", N_TRAIN, N_VAL)
    assert src.name == "PASCAL_MT"
    man = pascal.convert(tmp_path / "raw", tmp_path / "out", "survey", workers=2, progress=False)
    assert man["variant"] == "survey" and man["views"] == data[2]["views"]
    for folder in ("images", "semseg", "human_parts", "edges", "normals", "saliency"):
        for vid in IDS:
            ext = ".jpg" if folder == "images" else ".png"
            a = (tmp_path / "out" / folder / f"{vid}{ext}").read_bytes()
            assert a == (data[1] / folder / f"{vid}{ext}").read_bytes(), (folder, vid)


def test_prepare_uses_source_dir(data, tmp_path, monkeypatch):
    download = pytest.importorskip("mtl3d.data.download", reason="mtl3d.data.download not written yet")
    seen = {}

    def fake_source_dir(dataset, variant, raw_dir, **kw):
        seen.update(dataset=dataset, variant=variant, raw_dir=Path(raw_dir))
        return data[0], {"dataset": dataset, "variant": variant, "archive": "PASCALContext.tar.gz"}

    monkeypatch.setattr(download, "source_dir", fake_source_dir)
    man = pascal.prepare(tmp_path / "out", raw=tmp_path / "raw", limit=1, progress=False, workers=0)
    assert seen == {"dataset": "pascal", "variant": "atrc", "raw_dir": tmp_path / "raw"}
    assert man["source"]["archive"] == "PASCALContext.tar.gz"
    with pytest.raises(UserError, match="unknown PASCAL variant"):
        pascal.prepare(tmp_path / "o2", raw=tmp_path / "raw", variant="x")


def test_png_writer_roundtrip():
    rng = np.random.default_rng(2)
    for shape in ((7, 5), (4, 9, 3), (1, 1)):
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        with Image.open(io.BytesIO(png_bytes(arr))) as im:
            np.testing.assert_array_equal(np.asarray(im), arr)


def test_prepare_with_the_real_source_dir(tmp_path):
    pytest.importorskip("mtl3d.data.download", reason="mtl3d.data.download not written yet")
    raw.write_pascal_source(tmp_path / "raw", "survey", 1, 1)  # as if the user had extracted it
    man = pascal.prepare(tmp_path / "out", raw=tmp_path / "raw", variant="survey", progress=False, workers=0)
    assert man["splits"] == {"train": 1, "val": 1}
    assert man["source"]["top_dir"] == "PASCAL_MT" and man["source"]["extracted_by_user"] is True
    again = pascal.prepare(tmp_path / "out", raw=tmp_path / "raw", variant="survey", progress=False)
    assert again == man
