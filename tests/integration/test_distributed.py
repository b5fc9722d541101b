"""`torchrun --nproc_per_node 2` on CPU (gloo): DDP training equals one process, and resumes exactly."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fakedata import make_fake_dataset
from tests.holdstep import hold_env, wait_for_hold, write_cli

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# Runs mtl3d's CLI with every BatchNorm frozen (eval mode: normalised by its initial running stats).
# Train-mode BN normalises by the statistics of the batch a process sees, so 2 ranks × B (or 2
# micro-batches × B) legitimately differ from one batch of 2B; SyncBatchNorm would fix the DDP case but
# torch runs it on CUDA only, and nothing fixes it for gradient accumulation. Frozen BN makes every
# sample's loss independent of its batch-mates, so equal weights test exactly the gradient averaging,
# the accumulation and the sampler's split of each step's samples.
FREEZE_BN = """
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_BatchNorm.train = lambda self, mode=True: nn.Module.train(self, False)
"""
FROZEN_BN = FREEZE_BN + "from mtl3d.cli import main\n\nmain()\n"

HOLD_AT = 3


def _port() -> int:
    # a fresh port per launch: a killed run's rendezvous port may linger in TIME_WAIT
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:  # exited meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _launch(nproc: int, script: list[str]) -> list[str]:
    if nproc == 1:
        return [sys.executable, *script]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(_port()),
        *script,
    ]


MTL = ("--model", "mtl", "--backbone", "resnet10t", "--set", "model.head_channels=8")


def _train_args(root, out, iters: int, batch: int, *extra: str, model: tuple[str, ...] = MTL) -> list[str]:
    return [
        "train",
        "--dataset",
        "synthrooms",
        "--data-root",
        str(root),
        *model,
        "--iters",
        str(iters),
        "--batch-size",
        str(batch),
        "--seed",
        "3",
        "--device",
        "cpu",
        *extra,
        "--quiet",
        "--out",
        str(out),
    ]


def _run(cmd: list[str]) -> None:
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]


def _run_together(*cmds: list[str]) -> None:
    # one-process runs side by side: each is mostly interpreter start-up, and this machine has 2 cores
    procs = [
        subprocess.Popen(c, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for c in cmds
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def _model(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5, rtol=1e-4), k


ITERS = 6
# sgd + momentum at a high lr, so that a mis-averaged gradient would show; a checkpoint every 2 steps
OPTS = ["--set", "optim.name=sgd", "--set", "optim.lr=0.05", "--set", "ckpt_every=2", "--set", "log_every=1"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One uninterrupted 2-process run, the reference of both tests (a torchrun launch costs ~15 s here)."""
    tmp = tmp_path_factory.mktemp("ddp")
    root = make_fake_dataset(tmp / "data", n=10)
    script = tmp / "frozen_bn_cli.py"
    script.write_text(FROZEN_BN)
    out = tmp / "ddp"
    _run(_launch(2, [str(script), *_train_args(root, out, ITERS, 2, *OPTS)]))
    return root, script, out


def test_ddp_and_grad_accum_equal_one_big_batch(ddp_run, tmp_path):
    root, script, ddp = ddp_run
    assert torch.load(ddp / "last.pt", weights_only=True)["step"] == ITERS and (ddp / "done").is_file()
    info = json.loads((ddp / "run_info.json").read_text())
    assert info == {"world_size": 2, "batch_per_process": 2, "grad_accum": 1, "global_batch": 4}
    accum = ["--set", "grad_accum=2"]
    _run_together(
        _launch(1, [str(script), *_train_args(root, tmp_path / "big", ITERS, 4, *OPTS)]),
        _launch(1, [str(script), *_train_args(root, tmp_path / "acc", ITERS, 2, *OPTS, *accum)]),
    )
    big = _model(tmp_path / "big")
    _assert_close(big, _model(ddp))
    _assert_close(big, _model(tmp_path / "acc"))
    assert json.loads((tmp_path / "acc" / "run_info.json").read_text())["global_batch"] == 4


def test_torchrun_sigkill_and_resume_gives_identical_weights(ddp_run, tmp_path):
    """With the regularizer: its stratified ray samples come from each rank's own random stream, which
    the checkpoint must hold for every rank (rank 0's state restored on every rank would differ)."""
    root, script, _ = ddp_run
    reg = ["--regularizer"]
    ref = tmp_path / "ref"
    _run(_launch(2, [str(script), *_train_args(root, ref, ITERS, 2, *OPTS, *reg)]))
    b = tmp_path / "b"
    held = tmp_path / "held"
    # frozen BN as in the reference; every rank stops before step index HOLD_AT: after the checkpoint
    # of step 2 and the unsaved step 3, so the kill lands between checkpoints at a known step
    script_held = write_cli(tmp_path / "held_cli.py", FREEZE_BN)
    cmd = _launch(2, [str(script_held), *_train_args(root, b, ITERS, 2, *OPTS, *reg)])
    # its own session, so that the kill below cannot reach pytest
    proc = subprocess.Popen(
        cmd,
        env=hold_env(ENV, HOLD_AT, held),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_hold(proc, held)
    # torchrun starts each worker in a session of its own: kill them by pid, then torchrun's group
    for pid in _descendants(proc.pid):
        os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(b / "last.pt", weights_only=True)["step"]
    assert killed_at == 2  # the checkpoint before the held step; step 3 was trained and lost
    assert not (b / "done").exists()

    # resuming with another number of processes would change every later batch: refused
    r = subprocess.run(
        _launch(1, [str(script), *_train_args(root, b, ITERS, 2, *OPTS, *reg)]),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "trained with 2 process(es), now 1" in r.stderr, r.stderr[-2000:]

    _run(_launch(2, [str(script), *_train_args(root, b, ITERS, 2, *OPTS, *reg)]))
    assert (b / "done").exists()
    wa, wb = _model(ref), _model(b)
    assert wa.keys() == wb.keys()
    for k, v in wa.items():
        assert torch.equal(v, wb[k]), k  # gloo's 2-rank sum is deterministic: bit-identical
    log = (b / "train_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == [str(i) for i in range(1, ITERS + 1)]


FAMILIES = {
    # HRNet backbone (PAD-Net/MTI-Net family), a ViT (InvPT), ATRC with its label heads; resnet CNNs above
    "mtinet-hrnet": [
        "--model", "mtinet", "--backbone", "hrnet_w18_small_v2", "--set", "model.options.widths=8,8,16,16",
    ],
    "invpt-vit": [
        "--model", "invpt", "--backbone", "vit_tiny_patch16_224", "--set", "model.options.patch_size=8",
        "--set", "model.options.taps=1,2,3,4", "--set", "model.options.decoder_dim=16",
    ],
    "atrc": [
        "--model", "atrc", "--set", "model.genotype=nyud_hrnet18", "--set", "model.options.widths=8,8,16,16",
    ],
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_model_family_trains_under_torchrun(family, ddp_run, tmp_path):
    """DDP wraps host + branch of each family (find_unused where needed); logs finite losses on both ranks."""
    root, _, _ = ddp_run
    out = tmp_path / family
    args = _train_args(
        root, out, 2, 2, "--regularizer", "--set", "log_every=1", model=tuple(FAMILIES[family])
    )
    _run(_launch(2, ["-m", "mtl3d.cli", *args]))
    assert (out / "done").is_file()
    log = (out / "train_log.csv").read_text().splitlines()
    assert len(log) == 3 and "nan" not in log[-1] and "inf" not in log[-1]
