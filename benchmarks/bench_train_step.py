"""Train-step time of a model on SynthRooms (default: mtl/resnet18, batch 8, 96×128) on this machine.

    python benchmarks/bench_train_step.py [--model mtl] [--batch-size 8] [--steps 20] [--threads N]

Prints the median time of a full optimisation step (data already in memory), after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from mtl3d import config as C
from mtl3d.data.synthrooms import prepare
from mtl3d.engine.trainer import Run, StepSampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mtl")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--regularizer", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        prepare(tmp, scenes=6, views=2, height=args.height, width=args.width, progress=False)
        cfg = C.load(
            None,
            {
                "data": {"root": tmp},
                "model": {"name": args.model, "backbone": args.backbone},
                "batch_size": args.batch_size,
                "iters": 10_000,
                "regularizer": {"enabled": args.regularizer},
            },
        )
        run = Run(cfg)
        sampler = StepSampler(len(run.train_set), args.batch_size, cfg.iters, cfg.seed)
        batch = torch.utils.data.default_collate([run.train_set[i] for i in sampler.batch_at(0)])
        times = []
        for k in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            run.step(batch)
            if k >= args.warmup:
                times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(
        f"{args.model}{'+3d' if args.regularizer else ''}/{args.backbone} batch {args.batch_size} "
        f"{args.height}x{args.width}, {args.threads} threads: {1000 * med:.0f} ms/step "
        f"(median of {args.steps}; min {1000 * min(times):.0f}, max {1000 * max(times):.0f})"
    )


if __name__ == "__main__":
    main()
