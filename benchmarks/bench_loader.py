"""Benchmark: does the data loader limit training? Loader time per batch vs train-step time. Not a test.

    python benchmarks/bench_loader.py [--model mtl] [--regularizer] [--steps 20] [--workers 0 2]

At the default study's setting (SynthRooms as params.yaml prepares it, its batch, the trainer's own
DataLoader: step-determined batches, the seeded augmentation), it times (a) fetching batches from the
loader alone and (b) the train step on an in-memory batch, in the same process, and prints the
loader's share of a step (a ratio measured in one run; absolute times depend on the machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader

from mtl3d import config as C
from mtl3d.data.synthrooms import prepare
from mtl3d.engine.trainer import Run, StepSampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mtl")
    ap.add_argument("--regularizer", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["datasets"][0]
    p, batch_size = ds["prepare"], ds["train"]["batch-size"]
    with tempfile.TemporaryDirectory() as tmp:
        prepare(
            tmp,
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
                "data": {"root": tmp},
                "model": {"name": args.model},
                "batch_size": batch_size,
                "iters": 10_000,
                "device": "cpu",
                "regularizer": {"enabled": args.regularizer},
            },
        )
        run = Run(cfg)
        sampler = StepSampler(len(run.train_set), cfg.batch_size, cfg.iters, cfg.seed)
        loads = {}
        for workers in args.workers:
            loader = DataLoader(
                run.train_set,
                batch_sampler=sampler,
                num_workers=workers,
                generator=torch.Generator().manual_seed(0),
            )
            it = iter(loader)
            next(it)  # worker start-up is paid once per run, not per step
            times = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                batch = next(it)
                times.append(time.perf_counter() - t0)
            loads[workers] = statistics.median(times)
        step_times = []
        for k in range(args.steps + 2):
            t0 = time.perf_counter()
            run.step(batch, k)
            if k >= 2:
                step_times.append(time.perf_counter() - t0)
        step = statistics.median(step_times)
    reg = "+3d" if args.regularizer else ""
    size = f"{p['height']}x{p['width']}"
    what = f"{args.model}{reg}, SynthRooms {size}, batch {batch_size}"
    print(f"# {what}, {args.threads} threads; medians of {args.steps}")
    print("| num_workers | loader ms/batch | step ms | loader / step |")
    print("|---:|---:|---:|---:|")
    for workers, t in loads.items():
        print(f"| {workers} | {1000 * t:.1f} | {1000 * step:.0f} | {100 * t / step:.1f} % |")


if __name__ == "__main__":
    main()
