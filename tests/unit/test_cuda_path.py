"""The CUDA path on a CPU: every model trains and evaluates under channels-last, bf16 autocast and compile.

None of these settings is on in a CPU run, so without a GPU they would never run at all. Each model (±
the regularizer, and the ATRC search supergraph) takes one training step and one evaluation batch as the
CUDA path runs them (``mtl3d.engine.emulate.check_cuda_path``); the same check is
``benchmarks/gpu_check.py --dry``.
"""

from __future__ import annotations

import math

import pytest
import torch

from mtl3d import config as C
from mtl3d.engine.checkpoint import gather_rng_states, restore_rng_state
from mtl3d.engine.distributed import DistInfo, rank_seed
from mtl3d.engine.emulate import (
    BF16_RTOL,
    MAX_SYNCS_PER_STEP,
    TINY,
    CaptureBackend,
    SyncCounter,
    check_cuda_path,
)
from mtl3d.engine.fastpath import FastPath
from mtl3d.engine.trainer import Run, loss_values
from mtl3d.models import create_model
from tests.fakedata import make_fake_dataset

TASKS = ["semseg", "depth", "normals", "edges"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_fake_dataset(tmp_path_factory.mktemp("emu") / "data", n=6, h=32, w=48))


CASES = [(n, r) for n in sorted(TINY) for r in (False, True) if not (n == "stl" and r)]


def _id(case: tuple[str, bool]) -> str:
    return f"{case[0]}{'+3d' if case[1] else ''}"


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=[pytest.mark.slow] if c == ("atrc-search", True) else []) for c in CASES],
    ids=_id,
)
def test_one_step_and_one_eval_batch_on_the_cuda_path(case, data):
    name, reg = case
    # Compiling traces the whole step; with the regularizer the trace holds the host too, so one compiled
    # case per model asserts the host is captured. The search supergraph's trace takes minutes: slow.
    compile_step = reg or name == "stl" or (name == "atrc-search" and reg)
    r = check_cuda_path(name, data, reg, compile_step=compile_step)
    fp32, bf16 = r["fp32"], r["bf16"]
    assert fp32.keys() == bf16.keys() and "total" in fp32
    assert all(math.isfinite(v) for v in bf16.values()), bf16
    assert r["loss_dtypes"] == ["torch.float32"]  # logged losses are float32 under bf16 autocast
    for k in fp32:
        assert bf16[k] == pytest.approx(fp32[k], rel=BF16_RTOL, abs=1e-3), k
    assert r["no_grad"] == []
    assert r["channels_last"]
    syncs = sum(r["syncs"].values())
    # one read of the losses; the search reads its early-fixing decisions once more per step
    assert syncs <= MAX_SYNCS_PER_STEP + (name == "atrc-search"), r["syncs"]
    assert r["eval_finite"] and r["eval_max_abs_diff"] < 1e-4  # channels-last eval: fp32, same numbers
    if compile_step:
        assert r["host_params_not_captured"] == 0 and r["host_params"] > 0
        assert r["graphs"] == 1  # no graph break: one graph for host, branch and losses


def _config(data: str, **over) -> C.TrainConfig:
    """A tiny mtl run on the fake data (CPU); ``over`` sets top-level keys."""
    base = {"data": {"root": data}, "model": {"options": {"head_channels": 8}}, "batch_size": 2, "iters": 2}
    return C.load(None, {**base, **over})


def test_invpt_trains_from_channels_last_maps():
    """On CUDA the trainer makes the model channels-last; InvPT's attention reshapes scores of those maps."""
    torch.manual_seed(0)
    m = create_model("invpt", TASKS, 5, "vit_tiny_patch16_224", **TINY["invpt"]["options"]).train()
    m = m.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 48).contiguous(memory_format=torch.channels_last)
    out = m(x)
    assert out["semseg"].shape == (2, 5, 32, 48)


def test_sync_counter_counts_what_makes_the_host_wait():
    x = torch.arange(6.0)
    with SyncCounter() as c:
        if (x > 2).any():
            pass
        float(x.sum())
        x[x > 2]
        x.nonzero()
        x.tolist()
        x.cpu()
        (x * 2).sum(), x.clamp(min=1), torch.where(x > 2, x, 0)  # device-side: none
    assert c.counts == {
        "__bool__": 1,
        "__float__": 1,
        "bool-mask __getitem__": 1,
        "nonzero": 1,
        "tolist": 1,
        "copy to host": 1,
    }


def test_capture_backend_sees_the_parameters_a_compiled_module_runs():
    lin = torch.nn.Linear(3, 2)
    other = torch.nn.Linear(3, 2)
    backend = CaptureBackend()
    f = torch.compile(lambda x: lin(x).sum(), backend=backend)
    f(torch.randn(4, 3))
    torch._dynamo.reset()
    assert backend.graphs == 1
    assert backend.missing(lin.parameters()) == [] and len(backend.missing(other.parameters())) == 2


def test_compile_traces_the_host_the_step_runs(data):
    """compile: true must capture the host as the step calls it (encode/decode), not only Module.__call__."""
    backend = CaptureBackend()
    cfg = _config(data, compile=True, device="cpu")
    run = Run(cfg, fast=FastPath(compile_backend=backend))
    batch = torch.utils.data.default_collate([run.train_set[i] for i in range(2)])
    loss_values(run.step(batch, 0))
    torch._dynamo.reset()
    assert backend.missing(run.model.parameters()) == []


def test_fast_path_of_each_device():
    cuda = FastPath.for_device(torch.device("cuda"))
    assert cuda.channels_last and cuda.amp_dtype == torch.bfloat16 and cuda.fused_optimizer
    assert FastPath.for_device(torch.device("cuda"), amp=False).amp_dtype is None
    cpu = FastPath.for_device(torch.device("cpu"))
    assert not cpu.channels_last and cpu.amp_dtype is None and not cpu.fused_optimizer
    emu = FastPath.cuda_emulation()
    assert emu.channels_last and emu.amp_dtype == torch.bfloat16 and not emu.fused_optimizer


# ------------------------------------------------------------------------------ resume and random state


def test_fused_flag_follows_the_machine_not_the_checkpoint(data):
    """A CPU checkpoint resumed on a GPU runs fused; a GPU checkpoint resumed on a CPU does not."""
    cfg = _config(data, device="cpu")
    plain = Run(cfg)
    fused = Run(cfg, fast=FastPath(fused_optimizer=True))  # torch's fused Adam also runs on a CPU
    assert fused.optimizer.param_groups[0]["fused"] and not plain.optimizer.param_groups[0].get("fused")
    batch = torch.utils.data.default_collate([plain.train_set[i] for i in range(2)])
    plain.step(batch, 0)
    fused.step(batch, 0)
    fused.load_state(plain.state(1))
    assert all(g["fused"] for g in fused.optimizer.param_groups)
    plain.load_state(fused.state(1))
    assert not any(g.get("fused") for g in plain.optimizer.param_groups)


class _FakeCuda:
    """torch.cuda as a machine with ``n`` GPUs would show it, each with its own random state."""

    def __init__(self, n: int, current: int = 0) -> None:
        self.states = [torch.full((16,), i, dtype=torch.uint8) for i in range(n)]
        self.current = current

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: self.states[device].clone())
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])

        def set_state(state, device=None):
            self.states[device] = state.clone()

        def set_all(states):
            for i, s in enumerate(states):
                self.states[i] = s.clone()  # IndexError past the visible GPUs, as torch's

        monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)


def test_checkpoint_holds_only_the_gpu_a_rank_runs_on_and_resumes_with_fewer_visible(monkeypatch):
    saved_on = _FakeCuda(4, current=0)
    saved_on.install(monkeypatch)
    state = gather_rng_states(torch.device("cuda"))
    assert len(state["ranks"]) == 1 and torch.equal(state["ranks"][0]["cuda"], saved_on.states[0])
    resumed_on = _FakeCuda(1)  # CUDA_VISIBLE_DEVICES=0
    resumed_on.states[0].fill_(99)
    resumed_on.install(monkeypatch)
    assert restore_rng_state(state, torch.device("cuda")) is None
    assert torch.equal(resumed_on.states[0], saved_on.states[0])


def test_checkpoint_of_every_visible_gpu_resumes_on_one_gpu(monkeypatch):
    """Checkpoints written before per-rank states hold every visible GPU's state: take the current one's."""
    old = {
        "torch": torch.get_rng_state(),
        "cuda": [torch.full((16,), i, dtype=torch.uint8) for i in range(4)],
    }
    gpu = _FakeCuda(1)
    gpu.install(monkeypatch)
    assert restore_rng_state(old, torch.device("cuda")) is None
    assert torch.equal(gpu.states[0], old["cuda"][0])


def test_resuming_a_gpu_checkpoint_on_the_cpu_says_what_changes(monkeypatch):
    _FakeCuda(2).install(monkeypatch)
    state = gather_rng_states(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    warning = restore_rng_state(state, torch.device("cpu"))
    assert "saved on a GPU and resumes on the CPU" in warning and "\n" not in warning
    assert "not equal an uninterrupted" in warning


def test_rank_streams_differ_and_one_process_keeps_the_seed(data, monkeypatch):
    """Under torchrun each rank draws its own random numbers (dropout, ray samples); weights stay equal."""
    import torch.distributed as dist

    assert len({rank_seed(0, r) for r in range(4)} | {rank_seed(1, r) for r in range(4)}) == 8
    assert rank_seed(3, 1) == rank_seed(3, 1)
    cfg = _config(data, device="cpu", regularizer={"enabled": True})
    one = Run(cfg)
    # a real (one-member) gloo group lets DDP wrap the step; the ranks are what init_distributed reads
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        draws, weights = [], []
        for rank in (0, 1):
            run = Run(cfg, DistInfo(rank=rank, world_size=2))
            draws.append(torch.rand(4))
            weights.append(next(run.model.parameters()).detach().clone())
    finally:
        dist.destroy_process_group()
    assert not torch.equal(draws[0], draws[1])
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], next(one.model.parameters()))


def test_sync_bn_is_converted_before_the_optimiser_and_the_ddp_wrap(data, monkeypatch):
    """sync_bn under torchrun: every BatchNorm of host and branch is a SyncBatchNorm inside the DDP-wrapped
    step, and the optimiser holds the converted layers' parameters. SyncBatchNorm and a DDP holding it run
    on CUDA only, so the layers are built here, not run: DDP is replaced by a recorder of what it wraps."""
    from torch import nn

    from mtl3d.engine import trainer

    class WrapRecorder(nn.Module):
        def __init__(self, module: nn.Module, **kwargs) -> None:
            super().__init__()
            self.module, self.kwargs = module, kwargs
            self.types_at_wrap = [type(m) for m in module.modules()]

    monkeypatch.setattr(trainer, "require_sync_bn_device", lambda device: None)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", WrapRecorder)
    cfg = _config(data, device="cpu", sync_bn=True, regularizer={"enabled": True})
    run = Run(cfg, DistInfo(rank=0, world_size=2))
    assert isinstance(run.ddp, WrapRecorder) and run.train_step is run.ddp
    wrapped = run.ddp.module
    assert wrapped.model is run.model and wrapped.branch is run.branch
    bn_types = [t for t in run.ddp.types_at_wrap if issubclass(t, nn.modules.batchnorm._BatchNorm)]
    assert bn_types and set(bn_types) == {nn.SyncBatchNorm}
    bns = [m for m in wrapped.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    in_optimizer = {id(p) for g in run.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for m in bns for p in m.parameters())
