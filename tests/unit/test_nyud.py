"""NYUD-v2 archive conversion (mtl3d.data.nyud) on exact tiny copies of both extracted archives."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl3d.data import nyud
from mtl3d.errors import UserError
from tests.rawdata.nyud import EDGE_NPY_VALUES, EDGE_PNG_VALUES, SIZES, write_nyud_source

VARIANTS = ("atrc", "survey")
IMG_EXT = {"atrc": ".png", "survey": ".jpg"}
NRM_EXT = {"atrc": ".png", "survey": ".npy"}


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _ids(src: Path, split: str) -> list[str]:
    return (src / "gt_sets" / f"{split}.txt").read_text().split()


def _all_ids(src: Path) -> list[str]:
    return _ids(src, "train") + _ids(src, "val")


def _tree(root: Path) -> dict[str, int]:
    """Relative path -> mtime_ns of every file under root."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """One small source folder per variant; tests that damage a source work on a copy."""
    base = tmp_path_factory.mktemp("nyud_src")
    return {v: write_nyud_source(base / v, v, n_train=2, n_val=1, seed=1) for v in VARIANTS}


@pytest.fixture
def fresh(pristine, tmp_path):
    def make(variant: str) -> Path:
        return Path(shutil.copytree(pristine[variant], tmp_path / "raw" / pristine[variant].name))

    return make


@pytest.fixture(scope="module", params=VARIANTS)
def converted(request, tmp_path_factory):
    """(variant, src, root, manifest) of a full conversion (3 train + 2 val views)."""
    variant = request.param
    base = tmp_path_factory.mktemp(f"nyud_{variant}")
    src = write_nyud_source(base / "raw", variant)
    man = nyud.convert(src, base / "out", variant, workers=0, progress=False)
    return variant, src, base / "out", man


# ---------------------------------------------------------------------------------------------------------
# exact values


def test_semseg_remapped_with_ignore(converted):
    variant, src, root, _ = converted
    for vid in _all_ids(src):
        raw = _png(src / "segmentation" / f"{vid}.png")
        out = _png(root / "semseg" / f"{vid}.png")
        assert out.dtype == np.uint8 and out.shape == SIZES[variant]
        np.testing.assert_array_equal(out[0, :41], [255, *range(40)])  # planted 0..40
        np.testing.assert_array_equal(out, np.where(raw == 0, 255, raw.astype(np.int64) - 1))
        assert set(np.unique(out)) <= {*range(40), 255}


def test_depth_metres_with_invalid_zero(converted):
    _, src, root, _ = converted
    for vid in _all_ids(src):
        raw = np.load(src / "depth" / f"{vid}.npy")
        out = np.load(root / "depth" / f"{vid}.npy")
        assert out.dtype == np.float32 and out.shape == raw.shape
        np.testing.assert_array_equal(out[1, :11], 0.0)  # zeros, NaN, inf and -1 planted there
        valid = np.isfinite(raw) & (raw > 0)
        np.testing.assert_array_equal(out[valid], raw[valid].astype(np.float32))  # metres, unscaled
        assert (out[~valid] == 0).all() and out[valid].min() >= 0.5 and out.max() < 10.0


def test_normals_kept_exactly(converted):
    variant, src, root, man = converted
    assert man["formats"]["normals"] == NRM_EXT[variant]
    for vid in _all_ids(src):
        name = f"{vid}{NRM_EXT[variant]}"
        if variant == "atrc":  # verbatim bytes; the reader decodes 2v/255-1
            assert (root / "normals" / name).read_bytes() == (src / "normals" / name).read_bytes()
            rgb = _png(root / "normals" / name)
            assert tuple(rgb[0, 0]) == (0, 0, 0) and tuple(rgb[0, 1]) == (255, 128, 0)
        else:
            raw, out = np.load(src / "normals" / name), np.load(root / "normals" / name)
            assert out.dtype == np.float32
            np.testing.assert_array_equal(out, raw)
            assert (out[0, 0] == 0).all()  # planted zero vector (invalid) survives
            np.testing.assert_array_equal(out[0, 1], [1, 0, 0])


def test_edges_thresholded_at_half(converted):
    variant, src, root, _ = converted
    for vid in _all_ids(src):
        out = _png(root / "edges" / f"{vid}.png")
        assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 255}
        # planted row: png 0,77,127,128,178,255 (/255 = 0 .. 0.498, 0.502 ..) | npy 0,.3,.4999,.5,.7,1
        np.testing.assert_array_equal(out[2, :6], [0, 0, 0, 255, 255, 255])
        if variant == "atrc":
            value = _png(src / "edge" / f"{vid}.png") / 255.0
            assert set(np.unique(_png(src / "edge" / f"{vid}.png"))) == set(EDGE_PNG_VALUES)
        else:
            value = np.load(src / "edge" / f"{vid}.npy")
            assert set(np.unique(value)) == set(EDGE_NPY_VALUES)
        np.testing.assert_array_equal(out, np.where(value >= 0.5, 255, 0))


def test_images_copied_verbatim_and_splits_in_order(converted):
    variant, src, root, man = converted
    for vid in _all_ids(src):
        name = f"{vid}{IMG_EXT[variant]}"
        assert (root / "images" / name).read_bytes() == (src / "images" / name).read_bytes()
    for split in ("train", "val"):
        assert (root / "splits" / f"{split}.txt").read_text() == (
            src / "gt_sets" / f"{split}.txt"
        ).read_text()
    assert _ids(src, "train") != sorted(_ids(src, "train"))  # the fixture's order is not sorted
    # exactly the expected files, nothing else
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert files == {"manifest.json", *man["checksums"]}
    assert not list(root.glob(".tmp-*"))


def test_manifest(converted):
    variant, src, root, man = converted
    assert json.loads((root / "manifest.json").read_text()) == man
    assert man["dataset"] == "nyud" and man["variant"] == variant and man["format_version"] == 1
    assert man["num_classes"] == 40 and len(man["classes"]) == 40
    assert man["classes"][:3] == ["wall", "floor", "cabinet"] and man["classes"][-1] == "otherprop"
    assert man["classes"][23] == "refridgerator" and man["classes"][19] == "floor mat"
    assert man["tasks"] == ["semseg", "depth", "normals", "edges"]
    assert man["formats"] == {"image": IMG_EXT[variant], "normals": NRM_EXT[variant]}
    assert (man["height"], man["width"]) == SIZES[variant]
    assert man["near"] == 0.1 and man["far"] == 10.0
    assert man["splits"] == {"train": 3, "val": 2} and man["limit"] is None
    assert man["source"] == {"path": str(src.resolve())}
    assert set(man["views"]) == set(_all_ids(src)) and man["prepare_seconds"] >= 0
    # hand-computed: atrc = Gupta crop rows 46.., cols 41.. (1-based) -> cx - 40, cy - 45
    cx, cy = {"atrc": (285.5824, 208.7362), "survey": (325.5824, 253.7362)}[variant]
    for view in man["views"].values():
        np.testing.assert_allclose(view["K"], [[518.8579, 0, cx], [0, 519.4696, cy], [0, 0, 1]], atol=1e-9)
    cam = man["camera"]
    assert (cam["fx"], cam["fy"], cam["cx"], cam["cy"]) == (518.8579, 519.4696, 325.5824, 253.7362)
    assert cam["offset"] == ({"dx": 40, "dy": 45} if variant == "atrc" else {"dx": 0, "dy": 0})


def test_reader_decodes_processed_data(converted):
    from mtl3d.data.folder import FolderDataset

    variant, src, root, _ = converted
    tasks = ["semseg", "depth", "normals", "edges"]
    ds = FolderDataset(root, "val", tasks, dataset="nyud")
    vid = ds.ids[0]
    try:
        s = ds.load_view(vid)
    except UserError as e:  # reader without manifest 'formats' support yet
        pytest.skip(f"FolderDataset cannot read {variant} formats yet: {e}")
    h, w = SIZES[variant]
    image = _png(src / "images" / f"{vid}{IMG_EXT[variant]}")  # the same decoder as the reader's
    assert s["image"].shape == (3, h, w)
    np.testing.assert_allclose(s["image"].permute(1, 2, 0).numpy(), image / 255.0, atol=1e-6)
    np.testing.assert_array_equal(s["semseg"].numpy(), _png(root / "semseg" / f"{vid}.png"))
    np.testing.assert_array_equal(s["depth"][0].numpy(), np.load(root / "depth" / f"{vid}.npy"))
    normals = s["normals"].permute(1, 2, 0).numpy()
    if variant == "atrc":
        rgb = _png(src / "normals" / f"{vid}.png")
        np.testing.assert_allclose(normals[1:], 2 * rgb[1:].astype(np.float64) / 255 - 1, atol=1e-6)
        np.testing.assert_allclose(normals[0, 1], [1, 128 / 127.5 - 1, -1], atol=1e-6)
        assert (normals[0, 0] == 0).all()  # all-zero RGB = invalid
    else:
        np.testing.assert_array_equal(normals, np.load(src / "normals" / f"{vid}.npy"))
    np.testing.assert_array_equal(s["edges"][0].numpy(), _png(root / "edges" / f"{vid}.png") / 255)
    np.testing.assert_allclose(s["K"].numpy(), nyud.intrinsics(variant), rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(("variant", "other"), [("atrc", "survey"), ("survey", "atrc")])
def test_wrong_size_names_the_other_variant(tmp_path, variant, other):
    src = write_nyud_source(tmp_path / "raw", variant, n_train=1, n_val=1, size=SIZES[other])
    h, w = SIZES[other]
    msg = rf"images/\d{{4}}\..*: {h}x{w} images: this is the {other} archive.*use --variant {other}"
    with pytest.raises(UserError, match=msg):
        nyud.convert(src, tmp_path / "out", variant, workers=0, progress=False)
    assert not (tmp_path / "out").exists()


def test_wrong_size_of_a_later_image_and_unknown_size(fresh, tmp_path):
    src = fresh("atrc")
    vid = _ids(src, "val")[0]  # converted last; the up-front check only opens the first image
    Image.new("RGB", (64, 48)).save(src / "images" / f"{vid}.png")
    with pytest.raises(UserError, match=rf"{vid}\.png is 48x64, but the atrc archive has 425x560 images"):
        nyud.convert(src, tmp_path / "out", "atrc", workers=0, progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists() and not list((tmp_path / "out").glob(".tmp-*"))


def test_survey_folder_with_atrc_variant(fresh, tmp_path):
    src = fresh("survey")
    msg = r"images/\d{4}\.png is missing but .*\.jpg exists: this is the survey archive \(NYUD_MT/\)"
    with pytest.raises(UserError, match=msg + ", use --variant survey"):
        nyud.convert(src, tmp_path / "out", "atrc", workers=0, progress=False)


def test_missing_files_are_named(fresh, tmp_path):
    src = fresh("survey")
    vid = _ids(src, "train")[1]
    (src / "depth" / f"{vid}.npy").unlink()
    with pytest.raises(
        UserError, match=rf"missing file .*depth/{vid}\.npy; the survey archive is incomplete"
    ):
        nyud.convert(src, tmp_path / "out", "survey", workers=0, progress=False)
    (src / "gt_sets" / "val.txt").unlink()
    with pytest.raises(UserError, match=r"missing split file .*gt_sets/val\.txt"):
        nyud.convert(src, tmp_path / "out", "survey", workers=0, progress=False)
    with pytest.raises(UserError, match=r"source folder .*nope does not exist"):
        nyud.convert(tmp_path / "nope", tmp_path / "out", "survey", workers=0, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variant", VARIANTS)
def test_corrupt_image_is_named(fresh, tmp_path, variant):
    src = fresh(variant)
    first, last = _ids(src, "train")[0], _ids(src, "val")[0]
    path = src / "images" / f"{last}{IMG_EXT[variant]}"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated: header still fine
    with pytest.raises(UserError, match=rf"corrupt image file .*images/{last}\{IMG_EXT[variant]}"):
        nyud.convert(src, tmp_path / "out", variant, workers=0, progress=False)
    (src / "images" / f"{first}{IMG_EXT[variant]}").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match=rf"corrupt image file .*images/{first}\{IMG_EXT[variant]}"):
        nyud.convert(src, tmp_path / "out", variant, workers=0, progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_corrupt_or_misshaped_labels_are_named(fresh, tmp_path):
    src = fresh("survey")
    vid = _ids(src, "train")[0]
    (src / "edge" / f"{vid}.npy").write_bytes(b"not an npy file")
    with pytest.raises(UserError, match=rf"corrupt array file .*edge/{vid}\.npy"):
        nyud.convert(src, tmp_path / "out", "survey", workers=0, progress=False)
    np.save(src / "edge" / f"{vid}.npy", np.zeros((480, 640)))
    Image.fromarray(np.ones((425, 560), np.uint8)).save(src / "segmentation" / f"{vid}.png")
    msg = rf"label file .*segmentation/{vid}\.png has shape \(425, 560\), but its image is 480x640"
    with pytest.raises(UserError, match=msg):
        nyud.convert(src, tmp_path / "out", "survey", workers=0, progress=False)
    Image.fromarray(np.full((480, 640), 41, np.uint8)).save(src / "segmentation" / f"{vid}.png")
    with pytest.raises(UserError, match=r"values outside 0\.\.40"):
        nyud.convert(src, tmp_path / "out", "survey", workers=0, progress=False)
    np.save(src / "depth" / f"{vid}.npy", np.full((480, 640), 2500.0))  # millimetres
    Image.fromarray(np.ones((480, 640), np.uint8)).save(src / "segmentation" / f"{vid}.png")
    with pytest.raises(UserError, match=rf"depth file .*depth/{vid}\.npy has values up to 2500, not metres"):
        nyud.convert(src, tmp_path / "out", "survey", workers=0, progress=False)


def test_unknown_variant_and_bad_arguments(tmp_path):
    with pytest.raises(UserError, match=r"unknown NYUD variant 'invpt'; valid: atrc, survey"):
        nyud.convert(tmp_path, tmp_path / "out", "invpt")
    with pytest.raises(UserError, match=r"unknown NYUD variant 'nyud'"):
        nyud.prepare(tmp_path / "out", raw=tmp_path, variant="nyud")
    with pytest.raises(UserError, match="limit must be >= 1"):
        nyud.convert(tmp_path, tmp_path / "out", "atrc", limit=0)


# ---------------------------------------------------------------------------------------------------------
# writing: idempotence, overwrite, atomicity, limit, pool


def test_second_call_is_idempotent(converted):
    variant, src, root, man = converted
    before = _tree(root)
    t0 = time.perf_counter()
    again = nyud.convert(src, root, variant, workers=0, progress=False)
    assert time.perf_counter() - t0 < 0.5
    assert again == man and _tree(root) == before


def test_other_variant_refused_without_overwrite(fresh, tmp_path):
    atrc, survey, root = fresh("atrc"), fresh("survey"), tmp_path / "out"
    nyud.convert(atrc, root, "atrc", workers=0, progress=False)
    before = _tree(root)
    with pytest.raises(
        UserError, match=r"manifest\.json describes a different dataset \(nyud atrc.*--overwrite"
    ):
        nyud.convert(survey, root, "survey", workers=0, progress=False)
    assert _tree(root) == before
    man = nyud.convert(survey, root, "survey", workers=0, progress=False, overwrite=True)
    assert man["variant"] == "survey"
    assert {p.suffix for p in (root / "images").iterdir()} == {".jpg"}  # no atrc leftovers
    assert set(_tree(root)) == {"manifest.json", *man["checksums"]}


def test_non_empty_root_without_manifest_refused(fresh, tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    with pytest.raises(
        UserError, match=r"out is not empty and has no manifest\.json; pass --overwrite to write there"
    ):
        nyud.convert(fresh("atrc"), root, "atrc", workers=0, progress=False)


def test_interrupted_run_leaves_no_manifest(fresh, tmp_path, monkeypatch):
    src, root = fresh("atrc"), tmp_path / "out"
    real, calls = nyud._convert_one, []

    def dies_on_second(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a Ctrl-C mid-way looks like
        return real(*args)

    monkeypatch.setattr(nyud, "_convert_one", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        nyud.convert(src, root, "atrc", workers=0, progress=False)
    assert not (root / "manifest.json").exists() and not list(root.glob(".tmp-*"))
    # a hard kill leaves its .tmp-* behind; the next run removes it
    (root / ".tmp-1-dead" / "images").mkdir(parents=True)
    monkeypatch.setattr(nyud, "_convert_one", real)
    man = nyud.convert(src, root, "atrc", workers=0, progress=False)
    assert man["splits"] == {"train": 2, "val": 1} and not list(root.glob(".tmp-*"))


def test_incomplete_same_conversion_is_repaired(fresh, tmp_path):
    src, root = fresh("survey"), tmp_path / "out"
    man = nyud.convert(src, root, "survey", workers=0, progress=False)
    (root / "edges" / f"{_ids(src, 'val')[0]}.png").unlink()
    again = nyud.convert(src, root, "survey", workers=0, progress=False)
    assert set(_tree(root)) == {"manifest.json", *man["checksums"]}
    assert again["checksums"] == man["checksums"]


def test_limit(fresh, tmp_path):
    src, root = fresh("atrc"), tmp_path / "out"
    man = nyud.convert(src, root, "atrc", workers=0, progress=False, limit=1)
    assert man["limit"] == 1 and man["splits"] == {"train": 1, "val": 1}
    assert (root / "splits" / "train.txt").read_text() == _ids(src, "train")[0] + "\n"
    assert sorted(man["views"]) == sorted([_ids(src, "train")[0], _ids(src, "val")[0]])
    assert len(list((root / "images").iterdir())) == 2
    with pytest.raises(UserError, match="different dataset"):  # a full conversion is another dataset
        nyud.convert(src, root, "atrc", workers=0, progress=False)


def test_process_pool_matches_in_process(fresh, tmp_path):
    src = fresh("survey")
    one = nyud.convert(src, tmp_path / "a", "survey", workers=0, progress=False)
    two = nyud.convert(src, tmp_path / "b", "survey", workers=2, progress=False)
    assert one["checksums"] == two["checksums"]
    # a worker's UserError reaches the caller with its message, and nothing is left behind
    vid = _ids(src, "val")[0]
    np.save(src / "normals" / f"{vid}.npy", np.zeros((480, 640, 2), np.float32))
    with pytest.raises(UserError, match=rf"label file .*normals/{vid}\.npy has shape \(480, 640, 2\)"):
        nyud.convert(src, tmp_path / "c", "survey", workers=2, progress=False)
    assert not (tmp_path / "c" / "manifest.json").exists() and not list((tmp_path / "c").glob(".tmp-*"))


def test_prepare_uses_download_source_dir(fresh, tmp_path, monkeypatch):
    download = pytest.importorskip("mtl3d.data.download")
    src = fresh("atrc")
    seen = {}

    def fake_source_dir(dataset, variant, raw_dir, progress=True):
        seen.update(dataset=dataset, variant=variant, raw=raw_dir)
        return src, {"archive": "NYUDv2.tar.gz", "sha256": "ab" * 32}

    monkeypatch.setattr(download, "source_dir", fake_source_dir)
    man = nyud.prepare(tmp_path / "out", raw=tmp_path / "raw", variant="atrc", workers=0, progress=False)
    assert seen == {"dataset": "nyud", "variant": "atrc", "raw": tmp_path / "raw"}
    assert man["source"] == {"archive": "NYUDv2.tar.gz", "sha256": "ab" * 32} and man["variant"] == "atrc"


def test_checksums_match_files(converted):
    import hashlib

    _, _, root, man = converted
    for rel, digest in man["checksums"].items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel
