"""The GPU check: one script, a few minutes on one GPU, from a fresh checkout. Not a test.

    python benchmarks/gpu_check.py                  # on a GPU machine (≈ 8 min on one H100/H200-class GPU)
    python benchmarks/gpu_check.py --dry            # CPU dry mode: tiny models and sizes (CI runs this)

What it does, each part bounded by the time budget (``--budget-s``, default 480 s; parts that no longer
fit are reported as skipped, never silently dropped):

1. the ``gpu``-marked tests (``pytest -m gpu``);
2. train-step throughput of the paper's hosts at paper resolution, with and without the 3D-aware
   regularizer, fp32 vs bf16 autocast, and ``torch.compile`` on/off (bf16 only, to bound the time):
   MTI-Net HRNet-48 at 448×576 batch 4 and InvPT ViT-L/16 at 448×576 batch 2 (the batch halves on
   out-of-memory until it fits); images/s and peak memory;
3. a short SynthRooms ``mtl+3d`` run at 240×320 that must beat the constant predictors on every task.

It writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (default OUT: results/gpu_check). Exit code 1
if a gpu test fails or the short run does not beat the constant predictors (dry mode: reported only).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Host:
    name: str
    model: str
    backbone: str
    recipe: str | None
    size: tuple[int, int]
    batch: int
    options: dict[str, Any]


PAPER_HOSTS = [
    Host("MTI-Net HRNet-48", "mtinet", "hrnet_w48", "config/recipes/nyud/mtinet.yaml", (448, 576), 4, {}),
    Host(
        "InvPT ViT-L/16",
        "invpt",
        "vit_large_patch16_384",
        "config/recipes/nyud/invpt.yaml",
        (448, 576),
        2,
        {},
    ),
]
DRY_HOSTS = [
    Host(
        "MTI-Net (dry: HRNet-18s narrow)",
        "mtinet",
        "hrnet_w18_small_v2",
        None,
        (64, 80),
        2,
        {"widths": [4, 4, 8, 8]},
    ),
    Host(
        "InvPT (dry: ViT-Ti)",
        "invpt",
        "vit_tiny_patch16_224",
        None,
        (64, 80),
        2,
        {"patch_size": 8, "taps": [1, 2, 3, 4], "decoder_dim": 16},
    ),
]


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def run_gpu_tests(budget: Budget, dry: bool) -> dict[str, Any]:
    if dry:
        return {"status": "skipped (dry run)"}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")]
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(30, budget.left() / 3))
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": time.perf_counter() - t0}
    tail = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    return {
        "status": "passed" if p.returncode in (0, 5) else "failed",
        "summary": tail,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _config(host: Host, reg: bool, data_root: str, device: str, amp: bool):
    from mtl3d import config as C

    recipe = ROOT / host.recipe if host.recipe else None
    over: dict[str, Any] = {
        "data": {
            "dataset": "synthrooms",
            "root": data_root,
            "height": host.size[0],
            "width": host.size[1],
            "resize_mode": "resize",
        },
        "model": {"name": host.model, "backbone": host.backbone, "pretrained": False},
        "tasks": ["semseg", "depth", "normals", "edges"],
        "iters": 10_000,
        "device": device,
        "amp": amp,
        "regularizer": {"enabled": reg},
    }
    if host.options:
        over["model"]["options"] = host.options
    if host.model == "invpt":
        over["model"].setdefault("options", {})["img_size"] = list(host.size)
    return C.load(recipe, over)


def time_host(
    host: Host, reg: bool, amp: bool, compile_: bool, data_root: str, device: str, steps: int, warmup: int
) -> dict[str, Any]:
    from mtl3d.engine.trainer import Run, StepSampler

    batch_size = host.batch
    while True:
        try:
            cfg = _config(host, reg, data_root, device, amp)
            cfg.batch_size = batch_size
            cfg.compile = compile_  # the trainer's own path (`--set compile=true`)
            run = Run(cfg)
            step_fn = run.step
            sampler = StepSampler(len(run.train_set), batch_size, cfg.iters, cfg.seed)
            samples = [run.train_set[i] for i in sampler.batch_at(0)]
            batch = torch.utils.data.default_collate(samples)
            batch = {k: (v.to(run.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            cuda = run.device.type == "cuda"
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times = []
            for k in range(warmup + steps):
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                step_fn(batch, k)
                if cuda:
                    torch.cuda.synchronize()
                if k >= warmup:
                    times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            return {
                "host": host.name,
                "regularizer": reg,
                "precision": "bf16" if amp and cuda else "fp32",
                "compile": compile_,
                "batch": batch_size,
                "size": list(host.size),
                "ms_per_step": round(1000 * t, 1),
                "images_per_s": round(batch_size / t, 2),
                "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
            }
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if batch_size == 1:
                return {"host": host.name, "regularizer": reg, "error": "out of memory at batch 1"}
            batch_size //= 2
        except Exception as e:  # one failing configuration must not hide the others
            return {
                "host": host.name,
                "regularizer": reg,
                "compile": compile_,
                "amp": amp,
                "error": f"{type(e).__name__}: {str(e)[:300]}",
            }


def throughput(budget: Budget, dry: bool, device: str) -> list[dict[str, Any]]:
    from mtl3d.data.synthrooms import prepare

    hosts = DRY_HOSTS if dry else PAPER_HOSTS
    steps, warmup = (2, 1) if dry else (10, 3)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for host in hosts:
            root = str(Path(tmp) / f"rooms-{host.size[0]}x{host.size[1]}")
            if not Path(root).exists():
                prepare(root, scenes=2, views=2, height=host.size[0], width=host.size[1], progress=False)
            # fp32 and bf16 without compile for both regularizer settings, then compiled bf16
            plan = [(reg, amp, False) for reg in (False, True) for amp in (False, True)]
            if not dry:  # torch.compile on CPU needs a C++ toolchain and minutes: GPU runs only
                plan += [(False, True, True), (True, True, True)]
            for reg, amp, comp in plan:
                if dry and amp:
                    continue  # bf16 autocast is CUDA-only in the trainer
                if budget.left() < (20 if dry else 60):
                    rows.append({"host": host.name, "regularizer": reg, "skipped": "time budget"})
                    continue
                rows.append(time_host(host, reg, amp, comp, root, device, steps, warmup))
                print(json.dumps(rows[-1]), flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()
    return rows


def synthrooms_run(budget: Budget, dry: bool, device: str) -> dict[str, Any]:
    from mtl3d import config as C
    from mtl3d.data.synthrooms import prepare
    from mtl3d.engine.evaluator import evaluate
    from mtl3d.engine.trainer import train
    from mtl3d.metrics.baselines import constant_baselines

    if budget.left() < (10 if dry else 90):
        return {"skipped": "time budget"}
    tasks = ["semseg", "depth", "normals", "edges"]
    h, w, scenes, iters = (32, 48, 6, 4) if dry else (240, 320, 40, 600)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rooms"
        prepare(root, scenes=scenes, views=2, height=h, width=w, seed=3, progress=False)
        cfg = C.load(
            None,
            {
                "data": {"root": str(root)},
                "iters": iters,
                "batch_size": 8,
                "device": device,
                "optim": {"lr": 2e-3},
                "regularizer": {"enabled": True},
                "n_saved_predictions": 0,
            },
        )
        run_dir = train(cfg, Path(tmp) / "run", progress=False)
        got = evaluate(run_dir, progress=False)["metrics"]
        const = constant_baselines("synthrooms", root, tasks)
    beats = {
        "semseg": got["semseg"]["mIoU"] > const["semseg"]["mIoU"],
        "depth": got["depth"]["rmse"] < const["depth"]["rmse"],
        "normals": got["normals"]["mean"] < const["normals"]["mean"],
        "edges": got["edges"]["odsF"] > const["edges"]["odsF"],
    }
    metric = {"semseg": "mIoU", "depth": "rmse", "normals": "mean", "edges": "odsF"}
    return {
        "size": [h, w],
        "iters": iters,
        "seconds": round(time.perf_counter() - t0, 1),
        "ours": {t: round(got[t][metric[t]], 4) for t in tasks},
        "constant": {t: round(const[t][metric[t]], 4) for t in tasks},
        "beats_constant": beats,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# GPU check ({'dry run, CPU' if report['dry'] else report['device_name']})", ""]
    lines += [f"torch {report['torch']}, CUDA {report['cuda']}, {report['seconds']:.0f} s in all", ""]
    lines += [f"gpu tests: {report['gpu_tests'].get('status')} {report['gpu_tests'].get('summary', '')}", ""]
    lines += [
        "| host | 3D reg. | precision | compile | batch | ms/step | images/s | peak MiB |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in report["throughput"]:
        reg = "✓" if r.get("regularizer") else "–"
        if "ms_per_step" in r:
            lines.append(
                f"| {r['host']} | {reg} | {r['precision']} | {'on' if r['compile'] else 'off'} | "
                f"{r['batch']} | {r['ms_per_step']} | {r['images_per_s']} | {r['peak_mib'] or '–'} |"
            )
        else:
            lines.append(f"| {r['host']} | {reg} | | | | {r.get('error') or r.get('skipped')} | | |")
    s = report["synthrooms"]
    lines += ["", "SynthRooms mtl+3d short run:"]
    if "ours" in s:
        lines += [
            f"{s['size'][0]}×{s['size'][1]}, {s['iters']} iterations, {s['seconds']} s",
            "",
            "| task | ours | constant predictor | beats |",
            "|---|---:|---:|---|",
        ]
        for t, v in s["ours"].items():
            lines.append(f"| {t} | {v} | {s['constant'][t]} | {'yes' if s['beats_constant'][t] else 'NO'} |")
    else:
        lines.append(str(s))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="CPU, tiny models and sizes (what CI runs)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check")
    ap.add_argument("--budget-s", type=float, default=480.0)
    args = ap.parse_args()
    device = "cpu" if args.dry else "cuda"
    if not args.dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry for the CPU dry mode", file=sys.stderr)
        return 2
    budget = Budget(args.budget_s)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "dry": args.dry,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
    }
    report["gpu_tests"] = run_gpu_tests(budget, args.dry)
    report["throughput"] = throughput(budget, args.dry, device)
    report["synthrooms"] = synthrooms_run(budget, args.dry, device)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    failed = report["gpu_tests"].get("status") == "failed" or not all(
        report["synthrooms"].get("beats_constant", {}).values() or [False]
    )
    return 1 if failed and not args.dry else 0


if __name__ == "__main__":
    sys.exit(main())
