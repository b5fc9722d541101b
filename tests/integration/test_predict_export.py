"""Using a trained model: export -> model file -> predict / load / evaluate, on a tiny SynthRooms run."""

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mtl3d
from mtl3d import config as C
from mtl3d.data.synthrooms import prepare
from mtl3d.engine import modelfile
from mtl3d.engine.evaluator import evaluate
from mtl3d.engine.trainer import train
from mtl3d.errors import UserError
from mtl3d.reporting.export import export_run, model_card
from tests.httpserver import http_server  # noqa: F401  (a pytest fixture)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished, evaluated run (with the regularizer, which inference must not need)."""
    base = tmp_path_factory.mktemp("use")
    rooms = base / "rooms"
    prepare(rooms, scenes=5, views=2, height=32, width=48, seed=1, progress=False)
    cfg = C.load(
        None,
        {
            "data": {"root": str(rooms)},
            "model": {"name": "mtl", "backbone": "resnet10t", "head_channels": 8},
            "iters": 2,
            "batch_size": 2,
            "n_saved_predictions": 2,
            "regularizer": {"enabled": True},
        },
    )
    run_dir = train(cfg, base / "run", progress=False)
    evaluate(run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def model_file(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny.mtl3d"
    export_run(run, out)
    return out


def _val_images(run: Path) -> tuple[list[str], list[np.ndarray]]:
    cfg = C.load(run / "config.yaml")
    root = Path(cfg.data.root)
    ids = (root / "splits" / "val.txt").read_text().split()
    return ids, [np.asarray(Image.open(root / "images" / f"{i}.png")) for i in ids]


def test_exported_model_predicts_bit_for_bit_like_its_run_and_the_evaluator(run, model_file):
    from_run, from_file = mtl3d.load(run), mtl3d.load(model_file)
    ids, images = _val_images(run)
    odd = np.random.default_rng(0).integers(0, 256, (45, 101, 3), dtype=np.uint8)  # another size and aspect
    a, b = from_run.predict_batch([*images, odd]), from_file.predict_batch([*images, odd])
    for pa, pb in zip(a, b, strict=True):
        assert pa.keys() == pb.keys() == {"semseg", "depth", "normals", "edges"}
        for t in pa:
            assert pa[t].dtype == pb[t].dtype and np.array_equal(pa[t], pb[t]), t
    assert a[-1]["semseg"].shape == (45, 101) and a[-1]["normals"].shape == (45, 101, 3)
    # the batch `mtl3d evaluate` ran (the whole val split at once): its saved predictions match exactly
    for i, pred in zip(ids, from_file.predict_batch(images), strict=True):
        with np.load(run / "predictions" / f"{i}.npz") as z:
            assert np.array_equal(pred["semseg"], z["pred_semseg"])
            assert np.array_equal(pred["depth"], z["pred_depth"][0])
    meta = modelfile.read_metadata(model_file)
    assert meta["dataset"]["name"] == "synthrooms" and len(meta["dataset"]["manifest_sha256"]) == 64
    assert meta["class_names"]["semseg"][0] and len(meta["palettes"]["semseg"]) == len(
        meta["class_names"]["semseg"]
    )
    assert (
        meta["metrics"]["metrics"]["semseg"]["mIoU"]
        == json.loads((run / "metrics.json").read_text())["metrics"]["semseg"]["mIoU"]
    )
    assert meta["input"] == {"resize_mode": "resize", "size": [32, 48]}
    assert meta["code_version"] and meta["run"]["variant"] == "mtl+3d"
    assert not any(k.startswith("branch") for k in modelfile.read_model_file(model_file)[0])


def _write_inputs(folder: Path, run: Path) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 65536, (30, 61), dtype=np.uint16)).save(folder / "deep.tif")
    Image.fromarray(rng.integers(0, 256, (33, 47, 4), dtype=np.uint8)).save(folder / "rgba.png")
    Image.fromarray(_val_images(run)[1][0]).save(folder / "photo.png")  # same stem as photo.jpg
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from mtl3d.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_predict_cli_writes_every_task_at_each_inputs_size_and_a_gallery(tmp_path, run, model_file):
    _write_inputs(tmp_path / "in", run)
    out = tmp_path / "out"
    res = _cli(
        "predict", str(model_file), str(tmp_path / "in"), str(tmp_path / "missing.png"), "--out", str(out)
    )
    assert res.returncode == 1, res.stderr  # two inputs failed
    assert "broken.jpg" in res.stderr and "missing.png" in res.stderr
    assert "5 image(s) predicted, 2 failed" in res.stdout
    assert re.search(r"deep\.tif: .*16-bit", res.stderr) and re.search(
        r"rgba\.png: alpha channel dropped", res.stderr
    )
    sizes = {"photo": (50, 70), "grey": (40, 40), "deep": (30, 61), "rgba": (33, 47), "photo_png": (32, 48)}
    for name, (h, w) in sizes.items():
        folder = out / name
        for task in ("semseg", "depth", "normals", "edges"):
            with Image.open(folder / f"{task}.png") as im:
                assert im.size == (w, h), (name, task)
                assert im.mode == {"semseg": "P", "depth": "I;16", "normals": "RGB", "edges": "L"}[task]
        assert (folder / "depth_preview.png").is_file() and (folder / "sheet.png").is_file()
    with Image.open(out / "photo_png" / "semseg.png") as im:  # class ids, as the run predicts them
        assert np.array_equal(np.asarray(im), mtl3d.load(run).predict(_val_images(run)[1][0])["semseg"])
    # the gallery references every image written, and every reference exists (relative, opens from disk)
    parser = _Refs()
    parser.feed((out / "index.html").read_text())
    refs = set(parser.refs)
    assert all((out / r).is_file() for r in refs)
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert written <= refs and len(written) == 5 * 6
    assert "broken.jpg" in (out / "index.html").read_text()
    # nothing is overwritten without --overwrite
    before = (out / "grey" / "sheet.png").stat().st_mtime_ns
    again = _cli("predict", str(model_file), str(tmp_path / "in" / "grey.png"), "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr and len(again.stderr.splitlines()) == 1
    assert (out / "grey" / "sheet.png").stat().st_mtime_ns == before


def test_predict_npz_format_holds_the_raw_arrays(tmp_path, model_file):
    from mtl3d.reporting.predictions import predict_images

    img = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    model = mtl3d.load(model_file)
    summary = predict_images(model, [str(tmp_path / "*.png")], tmp_path / "out", fmt="npz", progress=False)
    assert [w["name"] for w in summary.written] == ["x"] and not summary.failed
    with np.load(tmp_path / "out" / "x" / "predictions.npz") as z:
        want = model.predict(img)
        assert set(z.files) == set(want) and all(np.array_equal(z[t], want[t]) for t in want)
    assert not (tmp_path / "out" / "x" / "semseg.png").exists()


def test_evaluate_model_file_reproduces_the_runs_metrics(tmp_path, run, model_file):
    rep = evaluate(tmp_path / "eval", model_file=model_file, progress=False)
    assert rep["metrics"] == json.loads((run / "metrics.json").read_text())["metrics"]
    assert (tmp_path / "eval" / "metrics.json").is_file()


def _rewrite(src: Path, dst: Path, **meta_changes) -> None:
    state, meta = modelfile.read_model_file(src)
    meta = {k: v for k, v in meta.items() if k not in ("format_version", "weights_sha256")}
    for k, v in meta_changes.items():
        meta[k] = v
    modelfile.write_model_file(dst, state, meta)


def test_model_file_errors_are_one_line_and_say_what_to_do(tmp_path, model_file):
    # altered weights: one byte of the tensor data flipped
    data = bytearray(model_file.read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "altered.mtl3d").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"does not match its recorded weights SHA-256.*export it again"):
        mtl3d.load(tmp_path / "altered.mtl3d")
    # a later format version
    from safetensors.torch import load_file, save_file

    meta = modelfile.read_metadata(model_file)
    save_file(
        load_file(str(model_file)),
        str(tmp_path / "newer.mtl3d"),
        metadata={"mtl3d": json.dumps({**meta, "format_version": modelfile.FORMAT_VERSION + 1})},
    )
    with pytest.raises(
        UserError, match=r"newer mtl3d \(model file format 2; this one reads up to 1.*upgrade"
    ):
        mtl3d.load(tmp_path / "newer.mtl3d")
    # a model this installation does not register
    cfg = json.loads(json.dumps(meta["config"]))
    cfg["model"]["name"] = "hydranet"
    _rewrite(model_file, tmp_path / "unknown.mtl3d", config=cfg)
    with pytest.raises(
        UserError, match=r"needs model 'hydranet'.*does not register.*install the mtl3d that wrote it"
    ):
        mtl3d.load(tmp_path / "unknown.mtl3d")
    (tmp_path / "junk.mtl3d").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="is not an mtl3d model file"):
        mtl3d.load(tmp_path / "junk.mtl3d")
    res = _cli("predict", str(tmp_path / "altered.mtl3d"), str(tmp_path), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_url_loading_verifies_the_pinned_sha256_and_caches(tmp_path, model_file, http_server):  # noqa: F811
    (http_server.root / "tiny.mtl3d").write_bytes(model_file.read_bytes())
    url = http_server.url("tiny.mtl3d")
    digest = modelfile.file_sha256(model_file)
    m = mtl3d.load(url, sha256=digest, cache_dir=tmp_path / "cache")
    img = np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    want = mtl3d.load(model_file).predict(img)
    assert all(np.array_equal(m.predict(img)[t], want[t]) for t in want)
    mtl3d.load(url, sha256=digest, cache_dir=tmp_path / "cache")
    assert len(http_server.requests_for("tiny.mtl3d")) == 1  # the second load came from the cache
    with pytest.raises(UserError, match="does not match the pinned SHA-256"):
        mtl3d.load(url, sha256="0" * 64, cache_dir=tmp_path / "other")
    with pytest.raises(UserError, match="needs its published SHA-256"):
        mtl3d.load(url, cache_dir=tmp_path / "other")


def test_model_card_states_data_metrics_and_hashes(run, tmp_path):
    meta = export_run(run, tmp_path / "m.mtl3d")
    card = model_card(meta, "m.mtl3d")
    mIoU = json.loads((run / "metrics.json").read_text())["metrics"]["semseg"]["mIoU"]
    assert f"| semseg | mIoU | {mIoU:.4g} |" in card
    assert meta["file_sha256"] in card and meta["weights_sha256"] in card and "synthrooms" in card
    assert "## Intended use" in card and "## Limits" in card
    with pytest.raises(UserError, match="exists; add --overwrite"):
        export_run(run, tmp_path / "m.mtl3d")
