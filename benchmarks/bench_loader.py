"""Benchmark: does the data loader limit training? Loader images/s per worker count vs the step. Not a test.

    python benchmarks/bench_loader.py [--model mtl] [--regularizer] [--steps 20] [--workers 0 2]
    python benchmarks/bench_loader.py --paper --workers 0 1 2      # 448x576, the recipes' augmentation

Default: the default study's setting (SynthRooms as params.yaml prepares it, its batch). ``--paper``: the
setting of the paper's GPU recipes (config/recipes/nyud/invpt.yaml: 448×576 pad mode, random scale
0.5–2.0, crop, flip, pad; batch 8) on SynthRooms rendered at NYUD's 480×640. Both use the trainer's own
DataLoader (step-determined batches, seeded augmentation). It times (a) fetching batches from the loader
alone for each worker count, as images/s, and (b) the train step on an in-memory batch in the same
process (default setting only: a CPU step at paper resolution says nothing about a GPU's, which
benchmarks/gpu_check.py measures), and prints the loader's share of a step (ratios measured in one run;
absolute times depend on the machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from mtl3d import config as C
from mtl3d.data.synthrooms import prepare
from mtl3d.engine.runtime import train_loader
from mtl3d.engine.sampler import StepSampler
from mtl3d.engine.trainer import Run

ROOT = Path(__file__).resolve().parents[1]
PAPER_RECIPE = ROOT / "config" / "recipes" / "nyud" / "invpt.yaml"


def loader_rate(dataset, sampler: StepSampler, workers: int, steps: int) -> float:
    """Images/s of the trainer's loader with ``workers`` processes (start-up excluded)."""
    loader = train_loader(dataset, sampler, workers, torch.device("cpu"), 0)
    it = iter(loader)
    next(it)  # worker start-up is paid once per run, not per step
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * sampler.batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mtl")
    ap.add_argument("--regularizer", action="store_true")
    ap.add_argument(
        "--paper", action="store_true", help="448x576 with the GPU recipes' pad-mode augmentation"
    )
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.paper:
            recipe = yaml.safe_load(PAPER_RECIPE.read_text())
            prepare(tmp, scenes=8, views=3, height=480, width=640, seed=0, progress=False)
            data = {**recipe["data"], "dataset": "synthrooms", "root": tmp}
            batch_size, what = 8, "SynthRooms 480x640 -> 448x576 pad mode (scale 0.5-2, crop, flip), batch 8"
        else:
            ds = yaml.safe_load((ROOT / "params.yaml").read_text())["datasets"][0]
            p, batch_size = ds["prepare"], ds["train"]["batch-size"]
            prepare(
                tmp,
                scenes=p["scenes"],
                views=p["views"],
                height=p["height"],
                width=p["width"],
                seed=p["seed"],
                progress=False,
            )
            data = {"root": tmp}
            what = f"SynthRooms {p['height']}x{p['width']}, batch {batch_size}"
        cfg = C.load(
            None,
            {
                "data": data,
                "model": {"name": args.model},
                "batch_size": batch_size,
                "iters": 10_000,
                "device": "cpu",
                "regularizer": {"enabled": args.regularizer},
            },
        )
        run = Run(cfg)
        sampler = StepSampler(len(run.train_set), cfg.batch_size, cfg.iters, cfg.seed)
        rates = {w: loader_rate(run.train_set, sampler, w, args.steps) for w in args.workers}
        step = None
        if not args.paper:
            batch = torch.utils.data.default_collate([run.train_set[i] for i in sampler.batch_at(0)])
            times = []
            for k in range(args.steps + 2):
                t0 = time.perf_counter()
                run.step(batch, k)
                if k >= 2:
                    times.append(time.perf_counter() - t0)
            step = statistics.median(times)
    reg = "+3d" if args.regularizer else ""
    print(f"# loader: {what}; {os.cpu_count()} cores, {args.threads} threads; {args.steps} batches")
    if step is not None:
        print(f"# train step of {args.model}{reg} on one in-memory batch: {1000 * step:.0f} ms (median)")
    print(
        "| num_workers | loader images/s | per worker | loader ms/batch |"
        + (" loader / step |" if step else "")
    )
    print("|---:|---:|---:|---:|" + ("---:|" if step else ""))
    for w, r in rates.items():
        ms = 1000 * batch_size / r
        share = f" {100 * (ms / 1000) / step:.1f} % |" if step else ""
        print(f"| {w} | {r:.1f} | {r / max(w, 1):.1f} | {ms:.0f} |{share}")


if __name__ == "__main__":
    main()
