"""``mtl3d export``: a finished run as one shareable model file (+ a Markdown model card)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtl3d.engine import modelfile
from mtl3d.engine.checkpoint import atomic_write_text
from mtl3d.engine.predictor import describe_run
from mtl3d.engine.rundir import RunDir, parse_seed
from mtl3d.errors import UserError
from mtl3d.reporting.collect import ALL_TASKS, DELTA, read_summary
from mtl3d.reporting.figures.style import class_colors


def best_seed_run(variant_dir: str | Path, summary_csv: str | Path) -> Path:
    """The seed folder of ``variant_dir`` (``.../DATASET/VARIANT``) whose run has the highest Δm in the
    study's ``summary.csv`` (ties: the lowest seed), for the pipeline's export stage."""
    variant_dir = Path(variant_dir)
    dataset, variant = variant_dir.parent.name, variant_dir.name
    df = read_summary(summary_csv)
    rows = df[
        (df["dataset"] == dataset)
        & (df["variant"] == variant)
        & (df["task"] == ALL_TASKS)
        & (df["metric"] == DELTA)
    ]
    seeds = {int(s) for s in rows["seed"]}
    found = (
        {parse_seed(p.name): p for p in variant_dir.iterdir() if p.is_dir()} if variant_dir.is_dir() else {}
    )
    runs = {s: p for s, p in found.items() if s in seeds and RunDir(p).done.is_file()}
    if not runs:
        raise UserError(
            f"{summary_csv} has no Δm of a finished run of {dataset}/{variant} under {variant_dir}"
        )
    best = rows[rows["seed"].isin(list(runs))].sort_values(["value", "seed"], ascending=[False, True])
    return runs[int(best.iloc[0]["seed"])]


def export_run(
    run_dir: str | Path, out: str | Path, data_root: str | Path | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Write ``out`` (a ``.mtl3d`` model file) from a finished run; returns its metadata, with
    ``file_sha256`` (the hash to publish next to a download link) added."""
    out = Path(out)
    if out.suffix != modelfile.SUFFIX:
        raise UserError(f"--out must end in {modelfile.SUFFIX}, got {out.name}")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; add --overwrite to replace it")
    state, meta = describe_run(run_dir, data_root)
    meta["palettes"] = {t: class_colors(len(names)).tolist() for t, names in meta["class_names"].items()}
    meta["weights_sha256"] = modelfile.write_model_file(out, state, meta)
    meta["file_sha256"] = modelfile.file_sha256(out)
    return meta


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def model_card(meta: dict[str, Any], file_name: str) -> str:
    """A Markdown model card from a model file's metadata: data, recipe, metrics, use and limits."""
    cfg = meta["config"]
    ds = meta.get("dataset") or {}
    run = meta.get("run") or {}
    lines = [
        f"# Model card: {file_name}",
        "",
        f"- **Model**: `{meta['model']}` with backbone `{meta['backbone']}`"
        + (" and the 3D-aware regularizer during training" if cfg["regularizer"]["enabled"] else "")
        + f" (variant `{run.get('variant')}`, seed {run.get('seed')}).",
        f"- **Tasks**: {', '.join(meta['tasks'])}.",
        f"- **Trained on**: `{ds.get('name')}`"
        + (f" ({ds['variant']} variant)" if ds.get("variant") else "")
        + f", split `{cfg['data']['train_split']}`, manifest SHA-256 `{ds.get('manifest_sha256')}`.",
        f"- **Recipe**: {cfg['iters']} iterations, batch {cfg['batch_size']}, "
        f"optimizer {cfg['optim']['name']} "
        f"(lr {cfg['optim']['lr']}, schedule {cfg['optim']['schedule']}), input "
        f"{meta['input']['resize_mode']} {meta['input']['size'][0]}×{meta['input']['size'][1]}.",
        f"- **Code version**: `{meta.get('code_version')}` (mtl3d {meta.get('package_version')}).",
        f"- **Weights SHA-256**: `{meta.get('weights_sha256')}`"
        + (f"; file SHA-256 `{meta['file_sha256']}`" if meta.get("file_sha256") else "")
        + ".",
        "",
        "## Metrics",
        "",
    ]
    m = meta.get("metrics")
    if not m or not m.get("metrics"):
        lines.append("Not evaluated (run `mtl3d evaluate` on the run before exporting to include metrics).")
    else:
        lines += [
            f"One seed (seed {run.get('seed')}), `{m.get('split')}` split, {m.get('n_images')} images, "
            f"scored at {m.get('eval_resolution')} resolution. Intervals over seeds and paired comparisons "
            "are in the study's report (`mtl3d report collect` / `compare`), not in a single run.",
            "",
            "| task | metric | value |",
            "|---|---|---|",
        ]
        for task, vals in m["metrics"].items():
            for k, v in vals.items():
                if isinstance(v, (int, float)) and "/" not in k:
                    lines.append(f"| {task} | {k} | {_fmt(v)} |")
        lines += ["", "Protocols:", ""]
        lines += [f"- {task}: {p}" for task, p in (m.get("protocols") or {}).items()]
    lines += [
        "",
        "## Intended use",
        "",
        f"Research on multi-task dense prediction: reproducing and comparing results on `{ds.get('name')}`, "
        "and looking at predictions on other images with `mtl3d predict` / `mtl3d.load`.",
        "",
        "## Limits",
        "",
        f"- Trained only on `{ds.get('name')}`: images unlike it (other cameras, scenes, resolutions) get "
        "predictions of unknown quality; the metrics above hold for its evaluation split only.",
        f"- Every image is brought to the {meta['input']['size'][0]}×{meta['input']['size'][1]} input "
        f"({meta['input']['resize_mode']}) and the outputs resized back: large images lose fine detail.",
        "- Depth is in the training data's units (metres for NYUD and SynthRooms).",
        "- Not for safety-critical use.",
        "",
    ]
    return "\n".join(lines)


def write_card(meta: dict[str, Any], out: Path) -> Path:
    path = out.with_suffix(".md")
    atomic_write_text(path, model_card(meta, out.name))
    return path
