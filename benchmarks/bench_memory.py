"""Benchmark: training memory of every model family at its NYUD recipe's resolution, measured on a CPU,
turned into labelled estimates of GPU memory per batch size. Not a test.

    python benchmarks/bench_memory.py [--models mtinet invpt] [--batches 1 2] > table.md

For each family (benchmarks/gpu_check.py's FAMILIES: recipe resolution and backbone) ± the 3D-aware
regularizer at paper-scale settings, one fp32 training step runs in a fresh process per batch size and
reports its peak resident memory. The per-image slope (peak at batch 2 − peak at batch 1) is what one
more image's activations cost; the GPU estimate at batch B is

    weights, gradients and optimiser moments (4 bytes each per parameter) + B × slope

in fp32, without the CUDA context (≈ 0.5 GiB) and without the allocator's fragmentation; bf16
autocast roughly halves the activation part. These are estimates, labelled as such in
docs/distributed.md; `make gpu-check` measures the real peak on a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

_CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(int(sys.argv[5]))
sys.path.insert(0, sys.argv[1])
from gpu_check import FAMILIES, _family_config
from mtl3d.engine.sampler import StepSampler
from mtl3d.engine.trainer import Run
fam = {f.model: f for f in FAMILIES}[sys.argv[2]]
reg, batch, root = sys.argv[3] == "1", int(sys.argv[4]), sys.argv[6]
cfg = _family_config(fam, root, reg, False, False, "cpu")
cfg.batch_size = batch
run = Run(cfg)
samples = [run.train_set[i] for i in StepSampler(len(run.train_set), batch, 10, 0).batch_at(0)]
b = torch.utils.data.default_collate(samples)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run.step(b, 0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
params = sum(p.numel() for p in run.model.parameters())
branch = sum(p.numel() for p in run.branch.parameters()) if run.branch is not None else 0
moments = sum(len(s) for s in run.optimizer.state.values()) // max(1, len(run.optimizer.state))
print(json.dumps({"before_kib": before, "peak_kib": peak, "params": params, "branch_params": branch,
                  "size": [cfg.data.height, cfg.data.width], "optimizer": cfg.optim.name}))
"""


def measure(model: str, reg: bool, batch: int, root: str, threads: int) -> dict:
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(ROOT / "benchmarks"),
            model,
            str(int(reg)),
            str(batch),
            str(threads),
            root,
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    from gpu_check import FAMILIES, _recipe_size
    from mtl3d.data.synthrooms import prepare

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[f.model for f in FAMILIES])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--estimate-batches", type=int, nargs="+", default=[2, 4, 8])
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        roots: dict[tuple[int, int], str] = {}
        for f in [f for f in FAMILIES if f.model in args.models]:
            size = _recipe_size(f)
            if size not in roots:
                roots[size] = str(Path(tmp) / f"rooms-{size[0]}x{size[1]}")
                prepare(roots[size], scenes=2, views=2, height=size[0], width=size[1], seed=0, progress=False)
            for reg in (False, True) if f.model != "stl" else (False,):
                m1 = measure(f.model, reg, 1, roots[size], args.threads)
                m2 = measure(f.model, reg, 2, roots[size], args.threads)
                row = {"family": f.name, "model": f.model, "regularizer": reg, "b1": m1, "b2": m2}
                if "error" not in m1 and "error" not in m2:
                    slope = max(0, m2["peak_kib"] - m1["peak_kib"]) * 1024
                    copies = 4 if m1["optimizer"] == "adam" else 3  # weights, grads (+ 1 or 2 moments)
                    state = (m1["params"] + m1["branch_params"]) * 4 * copies
                    row.update(
                        size=m1["size"],
                        params_m=round((m1["params"] + m1["branch_params"]) / 1e6, 1),
                        per_image_gib=round(slope / 2**30, 2),
                        state_gib=round(state / 2**30, 2),
                        estimate_gib={
                            b: round((state + b * slope) / 2**30, 1) for b in args.estimate_batches
                        },
                    )
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    minutes = (time.perf_counter() - t0) / 60
    head = " | ".join(f"batch {b}" for b in args.estimate_batches)
    print(f"<!-- bench_memory.py, {args.threads} threads, {minutes:.0f} min; {time.strftime('%Y-%m-%d')} -->")
    print(f"| family | 3D reg. | input | params (M) | state (GiB) | per image (GiB) | {head} |")
    print("|---|---|---|---:|---:|---:|" + "---:|" * len(args.estimate_batches))
    for r in rows:
        reg = "✓" if r["regularizer"] else "–"
        if "estimate_gib" not in r:
            err = r["b1"].get("error") or r["b2"].get("error")
            print(f"| {r['family']} | {reg} | | | | | failed: {err} |")
            continue
        est = " | ".join(f"≈ {r['estimate_gib'][b]}" for b in args.estimate_batches)
        print(
            f"| {r['family']} | {reg} | {r['size'][0]}×{r['size'][1]} | {r['params_m']} | {r['state_gib']} | "
            f"{r['per_image_gib']} | {est} |"
        )


if __name__ == "__main__":
    main()
