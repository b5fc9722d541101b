"""Evaluation at each image's original resolution (resize and pad modes), against hand-computed values.

A tiny processed dataset with three image sizes is written here; the network is replaced by an oracle
that looks its input image up and outputs the ground truth (or a constant), so no training is needed.
Sizes are chosen so that the resize round trip is exact: 8x12 and 8x24 go up by whole factors to the
16x24 input (nearest labels repeat pixels; bilinear downsampling by 2 averages two equal values).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mtl3d import config as C
from mtl3d.data.registry import create_dataset
from mtl3d.engine import evaluator
from mtl3d.engine.evaluator import evaluate
from mtl3d.engine.inference import collate_eval, score_batch
from mtl3d.engine.trainer import train
from mtl3d.metrics.registry import create_metric
from tests.fakedata import make_fake_dataset

TASKS = ["semseg", "depth", "normals", "edges"]
SIZES = [(8, 12), (16, 24), (8, 24)]
INPUT = (16, 24)
N_CLASSES = 3


def _write_dataset(root: Path, sizes=SIZES, seed: int = 0) -> Path:
    """The processed layout (mtl3d.data.folder), one view per size, labels with ignore/invalid pixels."""
    rng = np.random.default_rng(seed)
    for d in ("images", "semseg", "depth", "normals", "edges", "splits"):
        (root / d).mkdir(parents=True, exist_ok=True)
    views, ids = {}, []
    for i, (h, w) in enumerate(sizes):
        vid = f"img{i}"
        ids.append(vid)
        sem = rng.integers(0, N_CLASSES, (h, w), dtype=np.uint8)
        sem[0, :3] = 255  # ignore
        depth = rng.uniform(1.0, 4.0, (h, w)).astype(np.float32)
        depth[1, :2] = 0.0  # invalid
        nrm = rng.normal(size=(h, w, 3)).astype(np.float32)
        nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
        nrm[2, :2] = 0.0  # invalid
        edges = np.zeros((h, w), np.uint8)
        edges[h // 2, 1 : w - 1] = 255
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{vid}.png")
        Image.fromarray(sem).save(root / "semseg" / f"{vid}.png")
        np.save(root / "depth" / f"{vid}.npy", depth)
        np.save(root / "normals" / f"{vid}.npy", nrm)
        Image.fromarray(edges).save(root / "edges" / f"{vid}.png")
        K = [[w * 0.8, 0, (w - 1) / 2], [0, w * 0.8, (h - 1) / 2], [0, 0, 1]]
        views[vid] = {"scene": f"s{i}", "K": K, "pose": np.eye(4).tolist(), "neighbors": []}
    for split in ("train", "val"):
        (root / "splits" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    manifest = {
        "dataset": "synthrooms",
        "variant": "tiny-sizes",
        "classes": [f"c{i}" for i in range(N_CLASSES)],
        "num_classes": N_CLASSES,
        "tasks": TASKS,
        "near": 0.5,
        "far": 5.0,
        "views": views,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


class Oracle(nn.Module):
    """Finds each input image among the transformed dataset images and outputs that image's ground truth
    (nearest-upsampled into its valid box), or constants where ``const`` says so."""

    main_tasks = TASKS

    def __init__(self, dataset, const: dict[str, float] | None = None) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.table = []
        for i in range(len(dataset)):
            s = dataset[i]
            self.table.append((s["image"], s.get("valid_box"), s["original"]))
        self.const = const or {}

    def load_state_dict(self, *args, **kwargs):  # nothing to load
        return None

    def encode(self, image):
        return image

    def forward(self, x):
        return self.decode(self.encode(x), tuple(x.shape[-2:]))

    def decode(self, image, size):
        B = image.shape[0]
        out = {
            "semseg": torch.zeros(B, N_CLASSES, *size),
            "depth": torch.zeros(B, 1, *size),
            "normals": torch.zeros(B, 3, *size),
            "edges": torch.full((B, 1, *size), -20.0),
        }
        for b in range(B):
            match = [e for e in self.table if e[0].shape == image[b].shape and torch.equal(e[0], image[b])]
            if not match:
                continue
            _, box, orig = match[0]
            top, left, h, w = box.tolist() if box is not None else (0, 0, *size)
            sl = (b, slice(None), slice(top, top + h), slice(left, left + w))

            def up(x, hw=(h, w)):
                return F.interpolate(x[None].float(), size=hw, mode="nearest-exact")[0]

            sem = orig["semseg"].clone()
            sem[sem == 255] = 0
            out["semseg"][sl] = up(F.one_hot(sem, N_CLASSES).permute(2, 0, 1) * 10.0)
            out["depth"][sl] = up(orig["depth"])
            out["normals"][sl] = up(orig["normals"])
            out["edges"][sl] = up(orig["edges"] * 40.0 - 20.0)
        if "semseg" in self.const:
            out["semseg"] = F.one_hot(torch.full((B, *size), int(self.const["semseg"])), N_CLASSES)
            out["semseg"] = out["semseg"].permute(0, 3, 1, 2).float()
        if "depth" in self.const:
            out["depth"] = torch.full((B, 1, *size), float(self.const["depth"]))
        return out


def _make_run(tmp_path: Path, root: Path, mode: str, eval_resolution: str, batch: int = 2) -> Path:
    """A finished run directory (config.yaml, last.pt, done) without training."""
    cfg = C.load(
        None,
        {
            "data": {
                "root": str(root),
                "height": INPUT[0],
                "width": INPUT[1],
                "resize_mode": mode,
                "eval_resolution": eval_resolution,
            },
            "tasks": TASKS,
            "eval_batch_size": batch,
            "n_saved_predictions": 3,
            "device": "cpu",
        },
    )
    run = tmp_path / f"run-{mode}-{eval_resolution}"
    run.mkdir()
    C.save(cfg, run / "config.yaml")
    torch.save({"model": {}, "num_classes": N_CLASSES}, run / "last.pt")
    (run / "done").write_text("")
    return run


def _oracle_eval(monkeypatch, run: Path, root: Path, mode: str, **const) -> dict:
    ds = create_dataset(
        "synthrooms", root, "val", TASKS, train=False, size=INPUT, resize_mode=mode, keep_original=True
    )
    oracle = Oracle(ds, const)
    monkeypatch.setattr(evaluator, "build_model", lambda *a, **k: oracle)
    return evaluate(run, progress=False, boundary_workers=0)


def _hand_depth_rmse(root: Path, c: float, size: tuple[int, int] | None = None) -> float:
    """Pixel-pooled RMSE of the constant ``c`` over valid depth, at original size (or nearest-resized)."""
    se, n = 0.0, 0
    for i in range(len(SIZES)):
        d = np.load(root / "depth" / f"img{i}.npy").astype(np.float64)
        if size is not None:
            d = F.interpolate(torch.from_numpy(d)[None, None], size=size, mode="nearest-exact")[0, 0].numpy()
        v = d > 0
        se += float(((d[v] - c) ** 2).sum())
        n += int(v.sum())
    return math.sqrt(se / n)


def _hand_constant_miou(root: Path, k: int) -> float:
    """Class ``k`` everywhere: IoU_k = (#GT k) / (#valid), every other class 0."""
    n_k = n = 0
    for i in range(len(SIZES)):
        sem = np.asarray(Image.open(root / "semseg" / f"img{i}.png"))
        n_k += int((sem == k).sum())
        n += int((sem != 255).sum())
    return 100.0 * n_k / n / N_CLASSES


@pytest.fixture
def data(tmp_path):
    return _write_dataset(tmp_path / "data")


@pytest.mark.parametrize("mode", ["resize", "pad"])
def test_ground_truth_model_is_perfect_at_original_resolution(tmp_path, monkeypatch, data, mode):
    run = _make_run(tmp_path, data, mode, "original")
    rep = _oracle_eval(monkeypatch, run, data, mode)
    m = rep["metrics"]
    assert m["semseg"]["mIoU"] == pytest.approx(100.0)
    assert m["depth"]["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert m["normals"]["mean"] == pytest.approx(0.0, abs=0.05)
    assert m["edges"]["odsF"] == pytest.approx(100.0)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["eval_resolution"] == "original" and on_disk["resize_mode"] == mode
    assert on_disk["original_sizes"] == {"min": [8, 12], "max": [16, 24], "distinct": 3}
    assert on_disk["run"]["dataset_variant"] == "tiny-sizes"
    assert on_disk["resolution"] == list(INPUT) and on_disk["n_images"] == 3
    # saved predictions are at original size too
    with np.load(run / "predictions" / "img0.npz") as z:
        assert z["image"].shape == (8, 12, 3) and z["pred_semseg"].shape == (8, 12)
        assert z["gt_depth"].shape == (1, 8, 12) and np.array_equal(z["pred_semseg"][1:], z["gt_semseg"][1:])


@pytest.mark.parametrize("mode", ["resize", "pad"])
def test_constant_prediction_matches_hand_computed_values(tmp_path, monkeypatch, data, mode):
    run = _make_run(tmp_path, data, mode, "original")
    m = _oracle_eval(monkeypatch, run, data, mode, depth=2.0, semseg=1)["metrics"]
    assert m["depth"]["rmse"] == pytest.approx(_hand_depth_rmse(data, 2.0), rel=1e-9)
    assert m["semseg"]["mIoU"] == pytest.approx(_hand_constant_miou(data, 1), rel=1e-9)
    # scored at the input size instead: resize mode weights the upsampled images 4x / 2x, so the number
    # changes; pad mode only adds padding, which is ignored, so it does not
    run_in = _make_run(tmp_path, data, mode, "input")
    m_in = _oracle_eval(monkeypatch, run_in, data, mode, depth=2.0, semseg=1)["metrics"]
    if mode == "resize":
        assert m_in["depth"]["rmse"] == pytest.approx(_hand_depth_rmse(data, 2.0, INPUT), rel=1e-9)
        assert m_in["depth"]["rmse"] != pytest.approx(m["depth"]["rmse"], rel=1e-6)
    else:
        assert m_in["depth"]["rmse"] == pytest.approx(m["depth"]["rmse"], rel=1e-12)
    assert json.loads((run_in / "metrics.json").read_text())["eval_resolution"] == "input"


def test_collate_pads_originals_with_ignore_values_and_score_batch_crops_them(data):
    ds = create_dataset("synthrooms", data, "val", TASKS, train=False, size=INPUT, keep_original=True)
    samples = [ds[i] for i in range(3)]
    batch = collate_eval(samples)
    assert batch["image"].shape == (3, 3, *INPUT)
    assert batch["original_size"].tolist() == [list(s) for s in SIZES]
    assert batch["valid_box"].tolist() == [[0, 0, *INPUT]] * 3
    sem, depth, normals = (
        batch["original"]["semseg"],
        batch["original"]["depth"],
        batch["original"]["normals"],
    )
    assert sem.shape == (3, 16, 24) and (sem[0, 8:] == 255).all() and (sem[0, :, 12:] == 255).all()
    assert (depth[2, :, 8:] == 0).all() and (normals[0, :, :, 12:] == 0).all()
    assert torch.equal(sem[0, :8, :12], samples[0]["original"]["semseg"])
    # the network-size labels upsampled from the originals score perfectly after mapping back
    out = {
        "semseg": F.one_hot(batch["semseg"].clamp(max=N_CLASSES - 1), N_CLASSES).permute(0, 3, 1, 2).float(),
        "depth": batch["depth"],
    }
    metrics = {"semseg": create_metric("semseg", num_classes=N_CLASSES), "depth": create_metric("depth")}
    preds = score_batch(out, batch, metrics, "original")
    assert [tuple(p["depth"].shape[-2:]) for p in preds] == SIZES
    assert metrics["semseg"].compute()["mIoU"] == pytest.approx(100.0)
    assert metrics["depth"].compute()["rmse"] == pytest.approx(0.0, abs=1e-9)
    # unpadded network inputs of different sizes (size=None) are batched too
    raw = create_dataset("synthrooms", data, "val", TASKS, train=False, size=None, keep_original=True)
    b = collate_eval([raw[i] for i in range(3)])
    assert b["image"].shape == (3, 3, 16, 24) and b["valid_box"].tolist()[0] == [0, 0, 8, 12]
    assert (b["semseg"][0, 8:] == 255).all() and (b["image"][0, :, 8:] == 0).all()


def test_pad_mode_trains_and_evaluates_on_mixed_sizes(tmp_path, data):
    """Real (tiny) training with random scale/crop/pad on images of three sizes, then both resolutions."""
    cfg = C.load(
        None,
        {
            "data": {"root": str(data), "height": INPUT[0], "width": INPUT[1], "resize_mode": "pad"},
            "model": {"name": "mtl", "backbone": "resnet10t", "head_channels": 8},
            "iters": 2,
            "batch_size": 3,
            "eval_batch_size": 2,
            "n_saved_predictions": 1,
        },
    )
    run = train(cfg, tmp_path / "run", progress=False)
    rep = evaluate(run, progress=False, boundary_workers=2)
    assert rep["n_images"] == 3 and rep["original_sizes"]["max"] == [16, 24]
    assert all(rep["metrics"][t] for t in TASKS)
    rep_in = evaluate(run, progress=False, eval_resolution="input")
    assert rep_in["eval_resolution"] == "input"


def test_input_and_original_agree_on_a_native_size_dataset(tmp_path):
    root = make_fake_dataset(tmp_path / "fake", n=6)
    cfg = C.load(
        None,
        {
            "data": {"root": str(root)},
            "model": {"name": "mtl", "backbone": "resnet10t", "head_channels": 8},
            "iters": 2,
            "batch_size": 2,
            "n_saved_predictions": 1,
        },
    )
    run = train(cfg, tmp_path / "run", progress=False)
    evaluate(run, progress=False, eval_resolution="input")
    a = json.loads((run / "metrics.json").read_text())
    evaluate(run, progress=False, eval_resolution="original")
    b = json.loads((run / "metrics.json").read_text())
    assert (
        a["metrics"] == b["metrics"]
        and a["eval_resolution"] == "input"
        and b["eval_resolution"] == "original"
    )
    assert b["original_sizes"] == {"min": [24, 32], "max": [24, 32], "distinct": 1}
    assert b["run"]["dataset_variant"] is None
    with pytest.raises(Exception, match="eval resolution"):
        evaluate(run, progress=False, eval_resolution="native")
