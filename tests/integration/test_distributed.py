"""`torchrun --nproc_per_node 2` on CPU (gloo): ranks train their shards in sync, rank 0 saves."""

import os
import subprocess
import sys

import torch

from tests.fakedata import make_fake_dataset


def test_torchrun_two_processes(tmp_path):
    root = make_fake_dataset(tmp_path / "data", n=8)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "mtl3d.cli",
        "train",
        "--dataset",
        "synthrooms",
        "--data-root",
        str(root),
        "--model",
        "mtl",
        "--backbone",
        "resnet10t",
        "--iters",
        "3",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--set",
        "model.head_channels=8",
        "--quiet",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 3 and (out / "done").is_file()
    assert len((out / "train_log.csv").read_text().splitlines()) == 2  # header + the last step
