"""Train-step time of every registered model at the default study's setting, as ratios to ``mtl``.

    python benchmarks/bench_train_step.py [--models all|mtl,mtinet] [--regularizer both|on|off]
                                          [--batch-size 8] [--steps 10] [--threads 2]

Default setting = the default study (params.yaml: SynthRooms 48×64, batch 8, ResNet-18, or the
backbone the study's variant of that model names, e.g. ViT-Ti for InvPT), each model's CPU recipe
``config/recipes/synthrooms/MODEL.yaml`` when it has one. ``--recipe FILE`` times that recipe's network
instead, at its input size and batch, on SynthRooms data of that size (e.g. the LibMTL-matched
``config/recipes/nyud/mtl-libmtl.yaml``, to compare with LibMTL's own step time). ``atrc-search``
times a step of ATRC's search supergraph (every candidate of every block runs). Every model is timed
in the same process on the same batch (data already in memory), after warm-up; the median step
time and its ratio to ``mtl`` (same regularizer setting) are printed. Peak memory: on CUDA the
allocator's peak; on CPU each model runs in a fresh process and the column is that process's peak
resident set (python + torch + data + model + activations + optimiser state; ~0.5 GiB of it is the
interpreter and libraries). Ratios measured in one run compare; absolute times depend on the machine
and its load.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mtl3d import config as C
from mtl3d.data.synthrooms import prepare
from mtl3d.engine.sampler import StepSampler
from mtl3d.engine.trainer import Run
from mtl3d.models import list_models

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "config" / "recipes" / "synthrooms"
SEARCH = "atrc-search"


def study_backbone(model: str, default: str) -> str:
    """The backbone the default study's variant of ``model`` names (its args), else ``default``."""
    import yaml

    study = yaml.safe_load((ROOT / "params.yaml").read_text())
    for v in study["variants"] + study.get("searched_variants", []):
        if v["args"].get("model") == model and "backbone" in v["args"]:
            return v["args"]["backbone"]
    return default


def study_setting() -> dict[str, Any]:
    """Backbone, batch and image size of the default study (params.yaml's first dataset)."""
    import yaml

    ds = yaml.safe_load((ROOT / "params.yaml").read_text())["datasets"][0]
    return {
        "backbone": ds["train"]["backbone"],
        "batch_size": ds["train"]["batch-size"],
        "height": ds["prepare"]["height"],
        "width": ds["prepare"]["width"],
    }


def time_model(name: str, reg: bool, root: str, args: argparse.Namespace) -> tuple[float, float | None]:
    model = "atrc" if name == SEARCH else name
    if args.recipe is not None:  # the recipe's own network, batch and size; data: SynthRooms at that size
        over = {
            "data": {"dataset": "synthrooms", "root": root, "resize_mode": "resize"},
            "iters": 10_000,
            "device": args.device,
            "regularizer": {"enabled": reg},
            "model": {"pretrained": False},
        }
        cfg = C.load(args.recipe, over)
        cfg.tasks = [t for t in cfg.tasks if t in ("semseg", "depth", "normals", "edges")]
        args.batch_size = cfg.batch_size
        return _time_cfg(cfg, args)
    recipe = RECIPES / f"{model}.yaml"
    cfg = C.load(
        recipe if recipe.is_file() else None,
        {
            "data": {"root": root},
            "model": {"name": model, "backbone": study_backbone(model, args.backbone)},
            "batch_size": args.batch_size,
            "iters": 10_000,
            "device": args.device,
            "regularizer": {"enabled": reg},
        },
    )
    if name == SEARCH:
        cfg.model.genotype = None
        cfg.model.options = {**cfg.model.options, "search": True}
    return _time_cfg(cfg, args)


def _child(name: str, reg: bool, root: str, args: argparse.Namespace, conn: Any) -> None:
    torch.set_num_threads(args.threads)
    t, _ = time_model(name, reg, root, args)
    # ru_maxrss: KiB on Linux; the whole process (python, torch, data, model, activations, optimiser)
    conn.send((t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    conn.close()


def time_isolated(name: str, reg: bool, root: str, args: argparse.Namespace) -> tuple[float, float]:
    """``time_model`` in a fresh process (spawn); returns its step time and the process's peak RSS in MiB
    (torch does not count CPU allocations, the kernel does)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(name, reg, root, args, child))
    proc.start()
    child.close()
    result = parent.recv()
    proc.join()
    return result


def _time_cfg(cfg: C.TrainConfig, args: argparse.Namespace) -> tuple[float, float | None]:
    run = Run(cfg)
    sampler = StepSampler(len(run.train_set), cfg.batch_size, cfg.iters, cfg.seed)
    batch = torch.utils.data.default_collate([run.train_set[i] for i in sampler.batch_at(0)])
    batch = {k: (v.to(run.device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    cuda = run.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for k in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run.step(batch)
        if cuda:
            torch.cuda.synchronize()
        if k >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all", help="comma-separated names, or all")
    ap.add_argument("--regularizer", default="both", choices=["both", "on", "off"])
    default = study_setting()
    ap.add_argument("--backbone", default=default["backbone"])
    ap.add_argument("--batch-size", type=int, default=default["batch_size"])
    ap.add_argument("--height", type=int, default=default["height"])
    ap.add_argument("--width", type=int, default=default["width"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--recipe", type=Path, default=None, help="time this recipe's network (size, batch)")
    args = ap.parse_args()
    if args.recipe is not None:
        rec = C.load(args.recipe)
        args.models, args.height, args.width = rec.model.name, rec.data.height, rec.data.width
        args.batch_size, args.backbone = rec.batch_size, rec.model.backbone
    torch.set_num_threads(args.threads)
    names = [*list_models(), SEARCH] if args.models == "all" else args.models.split(",")
    names = ["mtl"] + [n for n in names if n != "mtl"]  # the reference first
    regs = {"both": [False, True], "on": [True], "off": [False]}[args.regularizer]
    print(
        f"# train step, {args.backbone}, batch {args.batch_size}, {args.height}x{args.width}, "
        f"{args.threads} threads, {args.device}; median of {args.steps} steps"
    )
    mem_col = "peak MiB (CUDA)" if args.device != "cpu" else "peak RSS MiB"
    print(f"| model | 3D reg. | ms/step | × mtl | {mem_col} |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        prepare(tmp, scenes=6, views=2, height=args.height, width=args.width, progress=False)
        for reg in regs:
            ref = None
            for name in names:
                if name == "stl" and reg:
                    continue  # stl has no shared encoder
                if args.device == "cpu":
                    t, peak = time_isolated(name, reg, tmp, args)
                else:
                    t, peak = time_model(name, reg, tmp, args)
                ref = ref or t
                mem = f"{peak:.0f}" if peak is not None else "–"
                mark = "✓" if reg else "–"
                print(f"| {name} | {mark} | {1000 * t:.0f} | {t / ref:.2f} | {mem} |", flush=True)


if __name__ == "__main__":
    main()
