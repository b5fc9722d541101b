"""The GPU check: one command, one report a user can paste into an issue. Not a test.

    make gpu-check                                   # = python benchmarks/gpu_check.py (≈ 8 min, one GPU)
    python benchmarks/gpu_check.py --dry             # CPU: the CUDA path emulated for every model
    python benchmarks/gpu_check.py --dry --models mtl invpt

On a GPU, each part bounded by the time budget (``--budget-s``, default 480 s; a part that no longer fits
is reported as skipped, never silently dropped), in this order:

1. the ``gpu``-marked tests (``pytest -m gpu``);
2. every model family at its NYUD recipe's resolution, backbone and batch (the batch halves on
   out-of-memory until it fits), ± the 3D-aware regularizer at paper-scale settings (``PAPER_REGULARIZER``,
   not the CPU defaults), bf16 and fp32, eager: train images/s, peak memory, evaluation images/s;
3. the loader's images/s at the recipes' 448×576 pad-mode augmentation with the workers the trainer
   picks on this machine, beside the steps' images/s;
4. resume on the GPU: a run killed between two checkpoints and resumed ends with the uninterrupted
   run's weights (to float tolerance: cuDNN autotuning and atomic adds in ``grid_sample``'s backward
   are not bit-deterministic on a GPU);
5. ``compile: true`` (inductor, really compiled), bf16 + regularizer: the paper's two hosts first, then
   the other families while the budget lasts;
6. a short SynthRooms ``mtl+3d`` run that must beat the constant predictors on every task.

``--dry`` runs, on a CPU, what a CPU can run of the CUDA path: for each model ± the regularizer (and the
ATRC search), one training step and one evaluation batch with channels-last model and inputs, bf16
autocast and the compiled step (a counting backend), the checks of tests/unit/test_cuda_path.py.

It writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (default OUT: results/gpu_check) and exits 1 if
any row failed (skipped rows are listed, not failures), 2 without CUDA outside ``--dry``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.holdstep (the resume check's launcher)

TASKS = ["semseg", "depth", "normals", "edges"]
# The regularizer as the paper's GPU runs size it (docs/regularizer.md: the method's proposed widths and
# 64 samples per ray; render stride 8 = the reported 56×72 at 448×576), not the CPU study's defaults.
PAPER_REGULARIZER = {"n_samples": 64, "plane_hidden": 256, "hidden": 64, "render_stride": 8}


@dataclass(frozen=True)
class Family:
    name: str
    model: str
    recipe: str  # the NYUD recipe: resolution, backbone, batch, options
    overrides: dict[str, Any] | None = None  # on top of the recipe (the CPU rehearsal's tiny sizes)


FAMILIES = [
    Family("MTI-Net", "mtinet", "config/recipes/nyud/mtinet.yaml"),
    Family("InvPT", "invpt", "config/recipes/nyud/invpt.yaml"),
    Family("shared encoder (MTL)", "mtl", "config/recipes/nyud/mtinet.yaml"),
    Family("single-task (STL)", "stl", "config/recipes/nyud/mtinet.yaml"),
    Family("PAD-Net", "padnet", "config/recipes/nyud/padnet.yaml"),
    Family("3-ways PAD-Net", "padnet3way", "config/recipes/nyud/padnet3way.yaml"),
    Family("DenseMTL", "densemtl", "config/recipes/nyud/densemtl.yaml"),
    Family("ATRC", "atrc", "config/recipes/nyud/atrc.yaml"),
]


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"


# ------------------------------------------------------------------------------------------- dry mode


def emulation_rows(models: list[str], data_root: str) -> list[dict[str, Any]]:
    """tests/unit/test_cuda_path.py's checks for each model ± the regularizer, as report rows."""
    from mtl3d.engine.emulate import BF16_RTOL, MAX_SYNCS_PER_STEP, check_cuda_path

    rows = []
    for name in models:
        for reg in (False, True):
            if name == "stl" and reg:
                continue  # no shared encoder: the regularizer does not apply
            row: dict[str, Any] = {"model": name, "regularizer": reg}
            try:
                r = check_cuda_path(name, data_root, reg)
                problems = []
                worst = max(abs(r["bf16"][k] - v) / max(abs(v), 1e-3) for k, v in r["fp32"].items())
                if worst > BF16_RTOL:
                    problems.append(f"bf16 loss off by {worst:.1%}")
                if not all(math.isfinite(v) for v in r["bf16"].values()):
                    problems.append("non-finite bf16 loss")
                if r["no_grad"]:
                    problems.append(f"{len(r['no_grad'])} parameters without gradient")
                syncs = sum(r["syncs"].values())
                if syncs > MAX_SYNCS_PER_STEP + (name == "atrc-search"):
                    problems.append(f"{syncs} host-device syncs per step")
                if r["host_params_not_captured"]:
                    problems.append(f"{r['host_params_not_captured']} host parameters not compiled")
                if not (r["eval_finite"] and r["eval_max_abs_diff"] < 1e-4):
                    problems.append("channels-last evaluation differs")
                row.update(
                    bf16_rel_diff=round(worst, 4),
                    syncs=syncs,
                    graphs=r["graphs"],
                    seconds=r["seconds"],
                    status="ok" if not problems else "failed: " + "; ".join(problems),
                )
            except Exception as e:  # one failing model must not hide the others
                row["status"] = "failed: " + _error(e)
                traceback.print_exc()
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- GPU mode


def run_gpu_tests(budget: Budget) -> dict[str, Any]:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")]
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(30, budget.left() / 4))
    except subprocess.TimeoutExpired:
        return {"status": "failed: timeout", "seconds": round(time.perf_counter() - t0, 1)}
    tail = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    return {
        "status": "ok" if p.returncode == 0 else f"failed (pytest exit {p.returncode})",
        "summary": tail,
        "seconds": round(time.perf_counter() - t0, 1),
    }


# The GPU mode's own code at tiny sizes on a CPU (``--rehearse``; CI runs it): a family, and the compile
# backend that traces without inductor's minutes of C++ compilation.
REHEARSAL = [
    Family(
        "shared encoder (rehearsal: resnet18, 32×48)",
        "mtl",
        "config/recipes/nyud/mtinet.yaml",
        {
            "data": {"height": 32, "width": 48},
            "model": {"backbone": "resnet18", "options": {"head_channels": 8}},
            "batch_size": 2,
        },
    )
]


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _family_config(f: Family, data_root: str, reg: bool, amp: bool, compile_: bool, device: str):
    from mtl3d import config as C

    over: dict[str, Any] = {
        "data": {"dataset": "synthrooms", "root": data_root},
        "model": {"name": f.model, "pretrained": False},
        "tasks": TASKS,
        "iters": 10_000,
        "device": device,
        "amp": amp,
        "compile": compile_,
        "sync_bn": False,
        "regularizer": {"enabled": reg, **(PAPER_REGULARIZER if reg else {})},
    }
    return C.load(ROOT / f.recipe, _merge(over, f.overrides or {}))


def _recipe_size(f: Family) -> tuple[int, int]:
    import yaml

    data = _merge(yaml.safe_load((ROOT / f.recipe).read_text())["data"], (f.overrides or {}).get("data", {}))
    return int(data["height"]), int(data["width"])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_family(
    f: Family, data_root: str, reg: bool, amp: bool, compile_: bool, device: str = "cuda", backend: Any = None
) -> dict[str, Any]:
    from mtl3d.engine.emulate import CpuBf16Gaps
    from mtl3d.engine.fastpath import FastPath
    from mtl3d.engine.inference import infer
    from mtl3d.engine.sampler import StepSampler
    from mtl3d.engine.trainer import Run, loss_values

    row: dict[str, Any] = {
        "family": f.name,
        "model": f.model,
        "regularizer": reg,
        "precision": "bf16" if amp else "fp32",
        "compile": compile_,
    }
    cuda = device == "cuda"
    cfg = _family_config(f, data_root, reg, amp, compile_, device)
    batch_size = cfg.batch_size
    steps, warmup = (5, 3) if compile_ else (6, 2)
    if not cuda:
        steps, warmup = 1, 1
    while True:
        run = None
        try:
            cfg.batch_size = batch_size
            fast = FastPath.for_device(torch.device(device), amp)
            if not cuda:  # the rehearsal: the CUDA path as a CPU runs it
                fast = FastPath.cuda_emulation(amp, compile_backend=backend or "inductor")
            run = Run(cfg, fast=fast)
            sampler = StepSampler(len(run.train_set), batch_size, cfg.iters, cfg.seed)
            batch = torch.utils.data.default_collate([run.train_set[i] for i in sampler.batch_at(0)])
            batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times = []
            for k in range(warmup + steps):
                _sync(device)
                t0 = time.perf_counter()
                with CpuBf16Gaps() if not cuda else contextlib.nullcontext():
                    losses = loss_values(run.step(batch, k))
                _sync(device)
                if k >= warmup:
                    times.append(time.perf_counter() - t0)
            if not all(math.isfinite(v) for v in losses.values()):
                raise RuntimeError(f"non-finite loss {losses}")
            t = statistics.median(times)
            row.update(
                batch=batch_size,
                size=list(batch["image"].shape[-2:]),
                ms_per_step=round(1000 * t, 1),
                images_per_s=round(batch_size / t, 2),
                peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                status="ok",
            )
            if not compile_ and amp:  # evaluation as the evaluator runs it: channels-last, fp32
                run.model.eval()
                fast = FastPath(channels_last=True)
                with torch.no_grad():
                    infer(run.model, batch, fast)
                    _sync(device)
                    t0 = time.perf_counter()
                    for _ in range(3):
                        infer(run.model, batch, fast)
                    _sync(device)
                row["eval_images_per_s"] = round(3 * batch_size / (time.perf_counter() - t0), 2)
            return row
        except torch.cuda.OutOfMemoryError:
            del run
            torch.cuda.empty_cache()
            if batch_size == 1:
                row["status"] = "failed: out of memory at batch 1"
                return row
            batch_size //= 2
        except Exception as e:
            row["status"] = "failed: " + _error(e)
            traceback.print_exc()
            return row
        finally:
            torch._dynamo.reset()


def loader_row(data_root: str, device: str = "cuda") -> dict[str, Any]:
    """The trainer's loader at the recipes' augmentation, with the workers it picks here for CUDA."""
    from mtl3d import config as C
    from mtl3d.data.registry import create_dataset
    from mtl3d.engine.runtime import loader_workers, train_loader
    from mtl3d.engine.sampler import StepSampler

    over: dict[str, Any] = {"data": {"dataset": "synthrooms", "root": data_root}}
    if device != "cuda":  # the rehearsal's tiny images
        over["data"].update(height=32, width=48)
    d = C.load(ROOT / "config/recipes/nyud/invpt.yaml", over).data
    ds = create_dataset(
        "synthrooms", data_root, "train", TASKS, train=True, size=(d.height, d.width), hflip=d.hflip,
        resize_mode=d.resize_mode, scale_range=d.scale_range, depth_scale=d.depth_scale_aug,
    )  # fmt: skip
    workers = loader_workers(None, torch.device("cuda"))
    batch = 8
    sampler = StepSampler(len(ds), batch, 10_000, 0)
    loader = train_loader(ds, sampler, workers, torch.device(device), 0)
    it = iter(loader)
    next(it)
    n = 3 * max(workers, 1)
    t0 = time.perf_counter()
    for _ in range(n):
        next(it)
    rate = n * batch / (time.perf_counter() - t0)
    return {"workers": workers, "size": [d.height, d.width], "images_per_s": round(rate, 1), "status": "ok"}


def resume_row(tmp: Path, device: str = "cuda") -> dict[str, Any]:
    """Train mtl+3d on the GPU uninterrupted, and killed before step 3 and resumed: same weights."""
    from tests.holdstep import hold_env, wait_for_hold, write_cli

    from mtl3d.data.synthrooms import prepare

    root = tmp / "rooms-resume"
    size = (96, 128) if device == "cuda" else (32, 48)
    prepare(root, scenes=4, views=2, height=size[0], width=size[1], seed=5, progress=False)
    script = write_cli(tmp / "held_cli.py")

    def args(out: Path) -> list[str]:
        return [
            "train", "--dataset", "synthrooms", "--data-root", str(root), "--model", "mtl", "--regularizer",
            "--iters", "6", "--batch-size", "4", "--device", device, "--set", "ckpt_every=2",
            "--set", "log_every=1", "--quiet", "--out", str(out),
        ]  # fmt: skip

    mtl3d = [sys.executable, "-c", "from mtl3d.cli import main; main()"]
    env = {**os.environ}
    subprocess.run([*mtl3d, *args(tmp / "ref")], check=True, env=env, capture_output=True, timeout=300)
    marker = tmp / "held"
    proc = subprocess.Popen(
        [sys.executable, str(script), *args(tmp / "b")],
        env=hold_env(env, 3, marker),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_hold(proc, marker)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(tmp / "b" / "last.pt", weights_only=True)["step"]
    subprocess.run([*mtl3d, *args(tmp / "b")], check=True, env=env, capture_output=True, timeout=300)
    a = torch.load(tmp / "ref" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp / "b" / "last.pt", weights_only=True)["model"]
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    scale = max(float(v.float().abs().max()) for v in a.values())
    ok = killed_at == 2 and diff <= 1e-3 * scale
    return {
        "killed_at_step": killed_at,
        "max_abs_weight_diff": diff,
        "status": "ok" if ok else f"failed: resumed weights differ by {diff:.3g} (killed at {killed_at})",
    }


def synthrooms_row(tmp: Path) -> dict[str, Any]:
    from mtl3d import config as C
    from mtl3d.data.registry import create_dataset
    from mtl3d.data.synthrooms import prepare
    from mtl3d.engine.evaluator import evaluate
    from mtl3d.engine.trainer import train
    from mtl3d.metrics.baselines import constant_baselines

    t0 = time.perf_counter()
    root = tmp / "rooms-short"
    prepare(root, scenes=40, views=2, height=240, width=320, seed=3, progress=False)
    cfg = C.load(
        None,
        {
            "data": {"root": str(root)},
            "iters": 600,
            "batch_size": 8,
            "device": "cuda",
            "optim": {"lr": 2e-3},
            "regularizer": {"enabled": True},
            "n_saved_predictions": 0,
        },
    )
    got = evaluate(train(cfg, tmp / "short", progress=False), progress=False)["metrics"]
    splits = (create_dataset("synthrooms", root, s, TASKS, train=False) for s in ("train", "val"))
    const = constant_baselines(*splits, TASKS)
    metric = {"semseg": ("mIoU", 1), "depth": ("rmse", -1), "normals": ("mean", -1), "edges": ("odsF", 1)}
    beats = {t: s * got[t][m] > s * const[t][m] for t, (m, s) in metric.items()}
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "ours": {t: round(got[t][m], 4) for t, (m, _) in metric.items()},
        "constant": {t: round(const[t][m], 4) for t, (m, _) in metric.items()},
        "status": "ok"
        if all(beats.values())
        else "failed: " + ", ".join(t for t, b in beats.items() if not b),
    }


def gpu_parts(budget: Budget, families: list[Family], rehearse: bool = False) -> dict[str, Any]:
    """Parts 1-6 on the GPU; ``rehearse``: the same code on a CPU at tiny sizes, without the gpu tests
    (skipped without CUDA) and the SynthRooms run (minutes on a CPU), compiled with a tracing backend."""
    from mtl3d.data.synthrooms import prepare

    device = "cpu" if rehearse else "cuda"
    backend = "eager" if rehearse else None  # dynamo's tracing without inductor's C++ compilation
    out: dict[str, Any] = {"throughput": []}
    if not rehearse:
        out["gpu_tests"] = run_gpu_tests(budget)
    skipped = {"status": "skipped (time budget)"}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        roots: dict[tuple[int, int], str] = {}

        def root_for(f: Family) -> str:
            size = _recipe_size(f)
            if size not in roots:
                roots[size] = str(tmp / f"rooms-{size[0]}x{size[1]}")
                prepare(roots[size], scenes=3, views=3, height=size[0], width=size[1], seed=0, progress=False)
            return roots[size]

        plan = [(f, reg, amp) for f in families for amp in (True, False) for reg in (True, False)]
        for f, reg, amp in plan:
            if reg and f.model == "stl":
                continue
            if budget.left() < 150:  # keep time for the loader, resume and compile parts
                out["throughput"].append({"family": f.name, "regularizer": reg, **skipped})
                continue
            out["throughput"].append(time_family(f, root_for(f), reg, amp, False, device))
            print(json.dumps(out["throughput"][-1]), flush=True)
        try:
            out["loader"] = loader_row(root_for(families[0] if rehearse else FAMILIES[1]), device)
        except Exception as e:
            out["loader"] = {"status": "failed: " + _error(e)}
        try:
            out["resume"] = resume_row(tmp, device) if budget.left() > 90 else skipped
        except Exception as e:
            out["resume"] = {"status": "failed: " + _error(e)}
        for f in families:
            if f.model == "stl":
                continue
            if budget.left() < 120:
                out["throughput"].append({"family": f.name, "compile": True, **skipped})
                continue
            out["throughput"].append(time_family(f, root_for(f), True, True, True, device, backend))
            print(json.dumps(out["throughput"][-1]), flush=True)
        if rehearse:
            return out
        try:
            out["synthrooms"] = synthrooms_row(tmp) if budget.left() > 60 else skipped
        except Exception as e:
            out["synthrooms"] = {"status": "failed: " + _error(e)}
    return out


# ------------------------------------------------------------------------------------------------ report


def failures(report: dict[str, Any]) -> list[str]:
    rows = [*report.get("emulation", []), *report.get("throughput", [])]
    rows += [report[k] for k in ("gpu_tests", "loader", "resume", "synthrooms") if k in report]
    return [json.dumps(r) for r in rows if str(r.get("status", "")).startswith("failed")]


def markdown(report: dict[str, Any]) -> str:
    head = report["device_name"]
    if report["dry"]:
        head = "dry run: the CUDA path emulated on a CPU"
    elif report.get("rehearsal"):
        head = "rehearsal on a CPU at tiny sizes: code paths only, no GPU numbers"
    lines = [f"# GPU check ({head})", ""]
    lines += [
        f"mtl3d {report['commit']}, torch {report['torch']}, CUDA {report['cuda']}, "
        f"{report['seconds']:.0f} s in all, {len(failures(report))} failed",
        "",
    ]
    if "emulation" in report:
        lines += [
            "| model | 3D reg. | bf16 vs fp32 (loss, rel.) | syncs / step | graphs | seconds | status |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for r in report["emulation"]:
            reg = "✓" if r["regularizer"] else "–"
            lines.append(
                f"| {r['model']} | {reg} | {r.get('bf16_rel_diff', '')} | {r.get('syncs', '')} | "
                f"{r.get('graphs', '')} | {sum(r.get('seconds', {}).values()):.1f} | {r['status']} |"
            )
    if "gpu_tests" in report:
        g = report["gpu_tests"]
        lines += ["", f"gpu tests: {g['status']} {g.get('summary', '')}", ""]
    if report.get("throughput"):
        lines += [
            "| family | 3D reg. | precision | compile | batch | size | ms/step | train img/s | eval img/s | "
            "peak GiB | status |",
            "|---|---|---|---|---:|---|---:|---:|---:|---:|---|",
        ]
        for r in report["throughput"]:
            reg = "✓" if r.get("regularizer") else "–"
            size = "×".join(map(str, r["size"])) if "size" in r else ""
            comp = "on" if r.get("compile") else "off"
            lines.append(
                f"| {r['family']} | {reg} | {r.get('precision', '')} | {comp} | "
                f"{r.get('batch', '')} | {size} | {r.get('ms_per_step', '')} | {r.get('images_per_s', '')} | "
                f"{r.get('eval_images_per_s', '')} | {r.get('peak_gib') or '–'} | {r['status']} |"
            )
    for key, title in (("loader", "loader (448×576 pad-mode augmentation)"), ("resume", "resume on the GPU"),
                       ("synthrooms", "SynthRooms mtl+3d short run")):  # fmt: skip
        if key in report:
            lines += ["", f"{title}: {json.dumps(report[key])}"]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "describe", "--always", "--dirty"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or "unknown"
        )
    except OSError:
        return "unknown"


def main() -> int:
    from mtl3d.engine.emulate import TINY

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="CPU: emulate the CUDA path for every model")
    ap.add_argument("--models", nargs="+", help="only these (dry: names of TINY; GPU: model names)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check")
    ap.add_argument("--budget-s", type=float, default=480.0)
    ap.add_argument(
        "--rehearse", action="store_true", help="the GPU mode's code on a CPU at tiny sizes (what CI runs)"
    )
    args = ap.parse_args()
    if not (args.dry or args.rehearse) and not torch.cuda.is_available():
        print("no CUDA device: run with --dry for the CPU emulation of the CUDA path", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "dry": args.dry,
        "commit": _commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "rehearsal": args.rehearse,
        "device_name": torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and not (args.dry or args.rehearse)
        else platform.processor() or "cpu",
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.dry:
        from tests.fakedata import make_fake_dataset

        models = args.models or list(TINY)
        unknown = sorted(set(models) - set(TINY))
        if unknown:
            print(f"unknown model(s) {unknown}; valid: {', '.join(TINY)}", file=sys.stderr)
            return 2
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        with tempfile.TemporaryDirectory() as tmp:
            root = make_fake_dataset(Path(tmp) / "data", n=6, h=32, w=48)
            report["emulation"] = emulation_rows(models, str(root))
    elif args.rehearse:
        report.update(gpu_parts(Budget(args.budget_s), REHEARSAL, rehearse=True))
    else:
        families = [f for f in FAMILIES if not args.models or f.model in args.models]
        report.update(gpu_parts(Budget(args.budget_s), families))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["failed"] = len(failures(report))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
