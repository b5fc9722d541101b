"""CUDA checks (marker ``gpu``; skipped without a GPU; benchmarks/gpu_check.py runs them first)."""

from __future__ import annotations

import math

import pytest
import torch

from mtl3d import config as C
from mtl3d.engine.emulate import TINY, tiny_model_config
from mtl3d.engine.evaluator import evaluate
from mtl3d.engine.sampler import StepSampler
from mtl3d.engine.trainer import Run, loss_values, train
from mtl3d.models import create_model
from tests.fakedata import make_fake_dataset

pytestmark = pytest.mark.gpu
TASKS = ["semseg", "depth", "normals", "edges"]


@pytest.fixture
def no_tf32():
    """TF32 off for one test, then back as it was (it is process-wide: later tests must not inherit it)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_forward_matches_cpu_in_fp32(no_tf32):
    torch.manual_seed(0)
    model = create_model("mtl", TASKS, 5, "resnet18").eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        ref = model(x)
        got = model.cuda()(x.cuda())
    for t in TASKS:
        torch.testing.assert_close(got[t].cpu(), ref[t], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("reg", [False, True])
def test_bf16_train_step_is_finite_and_channels_last(tmp_path, name, reg):
    """Every model (and the ATRC search) ± the regularizer: one real CUDA step, bf16, channels-last."""
    if name == "stl" and reg:
        pytest.skip("stl has no shared encoder")
    root = make_fake_dataset(tmp_path / "data", n=6, h=48, w=64)
    cfg = C.load(
        None,
        {
            "data": {"root": str(root)},
            "model": tiny_model_config(name),
            "device": "cuda",
            "batch_size": 2,
            "iters": 4,
            "regularizer": {"enabled": reg},
        },
    )
    run = Run(cfg)
    assert next(run.model.parameters()).is_cuda and run.fast.amp_dtype == torch.bfloat16
    convs = [p for p in run.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    sampler = StepSampler(len(run.train_set), 2, cfg.iters, cfg.seed)
    batch = torch.utils.data.default_collate([run.train_set[i] for i in sampler.batch_at(0)])
    batch = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    logs = loss_values(run.step(batch, 0))
    assert all(math.isfinite(v) for v in logs.values()), logs
    assert all(p.grad is not None for p in run.model.parameters() if p.requires_grad)


def test_train_and_evaluate_on_cuda(tmp_path):
    root = make_fake_dataset(tmp_path / "data", n=6, h=48, w=64)
    cfg = C.load(
        None,
        {
            "data": {"root": str(root)},
            "device": "cuda",
            "batch_size": 2,
            "iters": 3,
            "regularizer": {"enabled": True},
            "n_saved_predictions": 1,
        },
    )
    run_dir = train(cfg, tmp_path / "run", progress=False)
    rep = evaluate(run_dir, progress=False)
    assert rep["timing"]["device"] == "cuda" and set(rep["metrics"]) == set(TASKS)
