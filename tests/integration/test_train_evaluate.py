"""prepare -> train -> evaluate through the library on tiny SynthRooms."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl3d import config as C
from mtl3d.data.registry import create_dataset
from mtl3d.data.synthrooms import prepare
from mtl3d.engine.evaluator import evaluate
from mtl3d.engine.rundir import RunDir
from mtl3d.engine.trainer import train
from mtl3d.metrics.baselines import constant_baselines

TASKS = ["semseg", "depth", "normals", "edges"]


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    root = tmp_path_factory.mktemp("rooms")
    prepare(root, scenes=5, views=2, height=32, width=48, seed=1, progress=False)
    return root


SMALL = {
    "mtl": {"head_channels": 8},
    "stl": {"head_channels": 8},
    "padnet": {"options": {"head_channels": 2, "widths": [4, 4, 8, 8]}},
    "mtinet": {"options": {"widths": [4, 4, 8, 8]}},
    "padnet3way": {"options": {"decoder_channels": [4, 4, 4, 8, 8], "aspp_channels": 4}},
    "densemtl": {"options": {"decoder_channels": [4, 4, 4, 8, 8], "aspp_channels": 4}},
    "atrc": {"genotype": "nyud_hrnet18", "options": {"widths": [4, 4, 8, 8]}},
    "invpt": {
        "backbone": "vit_tiny_patch16_224",
        "options": {"patch_size": 8, "taps": [1, 2, 3, 4], "decoder_dim": 16},
    },
}
# Every baseline trains and evaluates with the regularizer in the default suite; without it (the same
# trainer and evaluator path minus the branch) in `make test-all`, to keep CI within its time budget.
CASES = [("mtl", False), ("stl", False), ("mtl", True)] + [
    (m, True) if reg else pytest.param(m, False, marks=pytest.mark.slow)
    for m in ("padnet", "mtinet", "padnet3way", "densemtl", "atrc", "invpt")
    for reg in (False, True)
]


@pytest.mark.parametrize("model, reg", CASES)
def test_train_then_evaluate(tmp_path, rooms, model, reg):
    cfg = C.load(
        None,
        {
            "data": {"root": str(rooms)},
            "model": {"name": model, "backbone": "resnet10t", **SMALL[model]},
            "iters": 2,
            "batch_size": 2,
            "n_saved_predictions": 2,
            "regularizer": {"enabled": reg},
        },
    )
    run = train(cfg, tmp_path / "run", progress=False)
    rep = evaluate(run, progress=False)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["metrics"].keys() == set(TASKS)
    assert on_disk["run"]["variant"] == model + ("+3d" if reg else "")
    assert on_disk["n_images"] == rep["n_images"] == 2 and on_disk["params"] > 0 and on_disk["flops"] > 0
    for task in TASKS:
        assert task in on_disk["protocols"]
    preds = sorted((run / "predictions").glob("*.npz"))
    assert len(preds) == 2
    with np.load(preds[0]) as z:
        assert z["image"].dtype == np.uint8 and z["pred_semseg"].shape == (32, 48)
        assert z["pred_normals"].shape == (3, 32, 48) and z["pred_depth"].shape == (1, 32, 48)
        assert ("reg_depth" in z) == reg


@pytest.mark.slow
def test_mtl_beats_constant_predictors_on_every_task_at_the_default_budget(tmp_path):
    """The default study's data and budget (read from params.yaml, so the two cannot drift apart)."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    study = yaml.safe_load((repo / "params.yaml").read_text())["datasets"][0]
    p, t = study["prepare"], study["train"]
    root = tmp_path / "rooms"
    prepare(
        root,
        scenes=p["scenes"],
        views=p["views"],
        height=p["height"],
        width=p["width"],
        seed=p["seed"],
        progress=False,
    )
    cfg = C.load(
        None,
        {
            "data": {"root": str(root)},
            "model": {"backbone": t["backbone"]},
            "iters": t["iters"],
            "batch_size": t["batch-size"],
            "optim": {"lr": t["lr"]},
            "n_saved_predictions": 0,
        },
    )
    torch.set_num_threads(2)
    run = train(cfg, tmp_path / "run", progress=False)
    got = evaluate(run, progress=False)["metrics"]
    splits = (create_dataset("synthrooms", root, s, TASKS, train=False) for s in ("train", "val"))
    const = constant_baselines(*splits, TASKS)
    print({t: (got[t], const[t]) for t in TASKS})
    assert got["semseg"]["mIoU"] > const["semseg"]["mIoU"] + 5
    assert got["depth"]["rmse"] < 0.95 * const["depth"]["rmse"]
    assert got["normals"]["mean"] < 0.8 * const["normals"]["mean"]
    assert got["edges"]["odsF"] > const["edges"]["odsF"] + 5


def test_auxiliary_only_tasks_train_and_are_not_scored(tmp_path, rooms):
    """The survey's NYUD setting: semseg, depth main; normals, edges supervised only as deep supervision."""
    cfg = C.load(
        None,
        {
            "data": {"root": str(rooms)},
            "model": {
                "name": "mtinet",
                "backbone": "resnet10t",
                "options": {"widths": [4, 4, 8, 8], "main_tasks": ["semseg", "depth"]},
            },
            "iters": 2,
            "batch_size": 2,
            "n_saved_predictions": 1,
            "log_every": 1,
            "regularizer": {"enabled": True},
        },
    )
    run = train(cfg, tmp_path / "run", progress=False)
    log = (run / "train_log.csv").read_text().splitlines()[0].split(",")
    assert "loss/ds/scale0/edges" in log and "loss/edges" not in log and "loss/reg/edges" in log
    rep = evaluate(run, progress=False)
    assert rep["metrics"].keys() == {"semseg", "depth"}
    assert rep["run"]["tasks"] == ["semseg", "depth"] and rep["run"]["aux_only_tasks"] == ["normals", "edges"]


def test_kill_between_log_and_checkpoint_writes_keeps_every_log_step_once(tmp_path, rooms, monkeypatch):
    """The window a SIGKILL can hit at random (CI caught it once under torchrun), made deterministic."""
    from mtl3d.engine import trainer

    cfg = C.load(
        None,
        {
            "data": {"root": str(rooms)},
            "model": {"head_channels": 8},
            "iters": 6,
            "batch_size": 2,
            "log_every": 1,
            "ckpt_every": 2,
            "n_saved_predictions": 0,
        },
    )
    real_save, real_text = trainer.atomic_torch_save, trainer.atomic_write_text

    # The process dies right after the first of step 4's two writes, whichever the trainer does first.
    def save(path, state):
        real_save(path, state)
        if state["step"] == 4:
            raise KeyboardInterrupt

    def text(path, content):
        real_text(path, content)
        if path.name == "train_log.csv" and content.splitlines()[-1].startswith("4,"):
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "atomic_torch_save", save)
    monkeypatch.setattr(trainer, "atomic_write_text", text)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(trainer, "atomic_torch_save", real_save)
    monkeypatch.setattr(trainer, "atomic_write_text", real_text)
    train(cfg, tmp_path / "run", progress=False)
    steps = [line.split(",")[0] for line in (tmp_path / "run" / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [str(i) for i in range(1, 7)]


def test_compile_flag_compiles_in_place_and_keeps_checkpoint_keys(tmp_path, rooms, monkeypatch):
    """`--set compile=true`: nn.Module.compile on the step's module, which holds host and branch (recorded
    here, not run: inductor on a 2-core CPU takes minutes; the slow test below and benchmarks/gpu_check.py
    run it for real; tests/unit/test_cuda_path.py traces it with a counting backend)."""
    compiled = []
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__)
    )
    cfg = C.load(
        None,
        {
            "data": {"root": str(rooms)},
            "model": {"head_channels": 8},
            "iters": 1,
            "batch_size": 2,
            "compile": True,
            "regularizer": {"enabled": True},
            "n_saved_predictions": 0,
        },
    )
    run = train(cfg, tmp_path / "run", progress=False)
    assert compiled == ["TrainStep"]  # one module: host, branch and losses traced together
    keys = torch.load(run / "last.pt", weights_only=True)["model"].keys()
    assert not any("_orig_mod" in k for k in keys)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, rooms):
    """torch.compile (inductor, CPU) trains to the same weights as eager (float tolerance), same keys."""
    runs = {}
    for flag in (False, True):
        cfg = C.load(
            None,
            {
                "data": {"root": str(rooms)},
                "model": {"head_channels": 8},
                "iters": 2,
                "batch_size": 2,
                "log_every": 1,
                "compile": flag,
                "n_saved_predictions": 0,
            },
        )
        runs[flag] = train(cfg, tmp_path / f"run{flag}", progress=False)
    a, b = (torch.load(runs[f] / "last.pt", weights_only=True)["model"] for f in (False, True))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-4), k


def _log(run):
    return RunDir(run).train_log.read_text()


def test_periodic_validation_logs_curves_without_changing_training_and_resumes_exactly(tmp_path, rooms):
    """eval_every adds val/... columns every K steps (and at the end); the weights and training losses
    are those of the same run without it, and a run killed mid-way and resumed writes the same log."""
    base = {
        "data": {"root": str(rooms)},
        "model": {"head_channels": 8},
        "regularizer": {"enabled": True},
        "iters": 6,
        "batch_size": 2,
        "log_every": 1,
        "ckpt_every": 2,
        "n_saved_predictions": 0,
    }
    plain = train(C.load(None, base), tmp_path / "plain", progress=False)
    cfg = C.load(None, {**base, "eval_every": 4, "eval_images": 3})
    curved = train(cfg, tmp_path / "curved", progress=False)
    rows = [r.split(",") for r in _log(curved).splitlines()]
    header = rows[0]
    val_cols = [i for i, k in enumerate(header) if k.startswith("val/")]
    assert {"val/loss/total", "val/semseg/mIoU", "val/depth/rmse", "val/normals/mean"} <= set(header)
    assert not any(k.startswith("val/edges/") for k in header)  # odsF only with eval_edges
    with_val = [r[0] for r in rows[1:] if all(r[i] != "" for i in val_cols)]
    assert with_val == ["4", "6"]
    # training is untouched: the same weights and the same training losses
    a = torch.load(RunDir(plain).checkpoint, weights_only=False)["model"]
    b = torch.load(RunDir(curved).checkpoint, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    loss_cols = [k for k in header if k.startswith("loss/")]
    p_rows = [
        dict(zip(_log(plain).splitlines()[0].split(","), r.split(","), strict=True))
        for r in _log(plain).splitlines()[1:]
    ]
    c_rows = [dict(zip(header, r, strict=True)) for r in rows[1:]]
    assert [[r[k] for k in loss_cols] for r in p_rows] == [[r[k] for k in loss_cols] for r in c_rows]
    # killed after step 4's checkpoint (simulated: the run folder as it was then), resumed: same log
    resumed = tmp_path / "resumed"
    train(C.load(None, {**base, "eval_every": 4, "eval_images": 3, "iters": 6}), resumed, progress=False)
    ckpt = torch.load(RunDir(resumed).checkpoint, weights_only=False)
    assert ckpt["step"] == 6
    partial = tmp_path / "partial"
    cut = C.load(None, {**base, "eval_every": 4, "eval_images": 3, "iters": 6})
    from mtl3d.engine import trainer

    class Stop(Exception):
        pass

    real = trainer.atomic_torch_save

    def save(path, state):
        real(path, state)
        if state["step"] == 4:
            raise Stop

    trainer.atomic_torch_save = save
    try:
        with pytest.raises(Stop):
            train(cut, partial, progress=False)
    finally:
        trainer.atomic_torch_save = real
    train(cut, partial, progress=False)

    def strip(text):
        return [
            ",".join(c for i, c in enumerate(r.split(",")) if header[i] != "time_s")
            for r in text.splitlines()
        ]

    assert strip(_log(partial)) == strip(_log(curved))
