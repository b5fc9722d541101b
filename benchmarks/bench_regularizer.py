"""Training-step cost of the 3D-aware regularizer: (host + regularizer) / host, and peak memory.

Usage::

    python benchmarks/bench_regularizer.py                       # mtl/resnet18, batch 8, 96×128, CPU
    python benchmarks/bench_regularizer.py --device cuda --height 448 --width 576 --batch 2
    python benchmarks/bench_regularizer.py --set n_samples=64 --set render_stride=4

Timing: both variants are built once, warmed up, then **alternated** step by step (host, host+reg,
host, ...) so drifts in clock speed or load hit both alike; the ratio of the medians is reported.
Peak memory of one steady-state step per variant, each in a freshly built model: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the peak of the torch profiler's memory timeline (all live
tensors: parameters, optimizer state, batch, activations, gradients). Process RSS is not used: the
allocator's retained heap makes it noisy to a few 100 MiB, more than the difference being measured.
The batch is synthetic (random image and labels with the data contract's shapes): cost does not depend
on the pixel values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from mtl3d.config import RegularizerConfig
from mtl3d.losses import multitask_loss
from mtl3d.models import create_model
from mtl3d.regularizer import RegularizerBranch, default_intrinsics

TASKS = ["semseg", "depth", "normals", "edges"]


def _parse_set(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for it in items:
        k, _, v = it.partition("=")
        for cast in (int, float):
            try:
                out[k] = cast(v)
                break
            except ValueError:
                continue
        else:
            out[k] = {"true": True, "false": False}.get(v.lower(), v)
    return out


def make_batch(B: int, H: int, W: int, num_classes: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    normals = F.normalize(torch.randn(B, 3, H, W, generator=g), dim=1)
    batch = {
        "image": torch.randn(B, 3, H, W, generator=g),
        "semseg": torch.randint(0, num_classes, (B, H, W), generator=g),
        "depth": 1.0 + 5.0 * torch.rand(B, 1, H, W, generator=g),
        "normals": normals,
        "edges": (torch.rand(B, 1, H, W, generator=g) > 0.9).float(),
        "K": default_intrinsics(H, W).expand(B, 3, 3).clone(),
        "pose": torch.eye(4).expand(B, 4, 4).clone(),
    }
    return {k: v.to(device) for k, v in batch.items()}


def build(args: argparse.Namespace, device: torch.device):
    torch.manual_seed(0)
    model = create_model("mtl", tasks=TASKS, num_classes=args.num_classes, backbone=args.backbone).to(device)
    cfg = replace(RegularizerConfig(enabled=True), **_parse_set(args.set))
    branch = RegularizerBranch(cfg, model.feature_channels, model.out_channels, near=args.near, far=args.far)
    branch = branch.to(device)
    opt_host = torch.optim.Adam(model.parameters(), lr=1e-4)
    opt_reg = torch.optim.Adam(branch.parameters(), lr=1e-4)
    return model, branch, opt_host, opt_reg


def step(model, branch, opt_host, opt_reg, batch, with_reg: bool) -> None:
    size = tuple(batch["image"].shape[-2:])
    opt_host.zero_grad(set_to_none=True)
    opt_reg.zero_grad(set_to_none=True)
    feats = model.encode(batch["image"])
    preds = model.decode(feats, size)
    loss = multitask_loss(preds, batch, {t: 1.0 for t in TASKS})["total"]
    if with_reg:
        out = branch(feats, batch["K"], size, neighbor=branch.neighbor_input(batch))
        loss = loss + branch.loss(out, batch, {t: 1.0 for t in TASKS})["total"]
    loss.backward()
    opt_host.step()
    if with_reg:
        opt_reg.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    model, branch, oh, orr = build(args, device)
    model.train()
    branch.train()
    batch = make_batch(args.batch, args.height, args.width, args.num_classes, device)
    for _ in range(args.warmup):
        step(model, branch, oh, orr, batch, False)
        step(model, branch, oh, orr, batch, True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.steps):
        for with_reg in (False, True):
            _sync(device)
            t0 = time.perf_counter()
            step(model, branch, oh, orr, batch, with_reg)
            _sync(device)
            times[with_reg].append(time.perf_counter() - t0)
    host = statistics.median(times[False])
    reg = statistics.median(times[True])
    return {
        "host_step_s": host,
        "host_reg_step_s": reg,
        "ratio": reg / host,
        "host_params": sum(p.numel() for p in model.parameters()),
        "reg_params": sum(p.numel() for p in branch.parameters()),
    }


def peak_memory(args: argparse.Namespace, device: torch.device, with_reg: bool) -> float:
    """Peak tensor memory (MiB) of one steady-state training step with or without the regularizer.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the torch profiler's memory timeline (every tensor
    allocation and free, by category), whose largest total is the peak; it counts the parameters,
    optimizer state and batch alive during the step as well as activations and gradients.
    """
    model, branch, oh, orr = build(args, device)
    batch = make_batch(args.batch, args.height, args.width, args.num_classes, device)
    for _ in range(2):  # optimizer state exists from here on: a steady-state step is measured
        step(model, branch, oh, orr, batch, with_reg)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(model, branch, oh, orr, batch, with_reg)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    from torch.profiler import ProfilerActivity, profile

    kw = {"profile_memory": True, "record_shapes": True, "with_stack": True}
    with profile(activities=[ProfilerActivity.CPU], **kw) as p:
        step(model, branch, oh, orr, batch, with_reg)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of CUDA-only snapshots
        path = Path(tmp) / "timeline.json"
        p.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return max(sum(s) for s in sizes) / 2**20


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--num-classes", type=int, default=12)  # SynthRooms
    p.add_argument("--near", type=float, default=0.1)  # SynthRooms NEAR/FAR
    p.add_argument("--far", type=float, default=10.5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", action="append", default=[], help="RegularizerConfig override KEY=VALUE")
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result: dict[str, object] = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "size": [args.height, args.width],
        "overrides": _parse_set(args.set),
    }
    result.update(time_steps(args, device))
    if not args.no_memory:
        result["host_peak_mib"] = peak_memory(args, device, False)
        result["host_reg_peak_mib"] = peak_memory(args, device, True)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
