"""``mtl3d report publish``: the small outputs of a finished study, copied where they can be committed
(e.g. ``docs/results/STUDY/``), with where they came from; and :func:`regenerate`, which rebuilds the
summary, the learning curves and the tables from the copied per-run files with this project's code, so
a test can check that the committed tables are what the committed runs give.

What is copied: ``summary.csv``, ``comparisons.csv``, ``learning_curves.csv``, ``delta_m.csv``, the
Markdown tables, the PNG figures, and per run ``metrics.json``, ``train_log.csv`` and ``config.yaml``
(a few kB each). Not copied: checkpoints, predictions and ``per_image.npz`` (the image-level statistics
behind the comparisons' intervals; ``comparisons.csv`` keeps their result). A ``README.md`` (the
provenance, links to the tables, the figures inline) makes the folder readable on a code host.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

from mtl3d.engine.modelfile import code_version
from mtl3d.engine.rundir import RunDir, find_runs
from mtl3d.errors import UserError
from mtl3d.io import atomic_write_text
from mtl3d.reporting.collect import collect, read_summary, write_outputs
from mtl3d.reporting.compare import read_comparisons
from mtl3d.reporting.curves import write_learning_curves
from mtl3d.reporting.reported import load_reported
from mtl3d.reporting.tables import write_all_tables

RUN_FILES = (RunDir.METRICS, RunDir.TRAIN_LOG, RunDir.CONFIG)
RUNS, TABLES, FIGURES = "runs", "tables", "figures"
PROVENANCE = "provenance.json"
README = "README.md"
# The study's files that are published, and what a reader finds in each.
STUDY_FILES = {
    "summary.csv": "one row per run x metric, with Δm and per-task gains against the reference",
    "comparisons.csv": "paired differences of variants (per task and in Δm), 95 % intervals, p-values",
    "learning_curves.csv": "the validation metrics and train vs validation loss per run and step",
    "delta_m.csv": "Δm per run",
}


def publish(
    study_dir: str | Path, runs_root: str | Path, out: str | Path, provenance: dict[str, Any]
) -> list[Path]:
    """Copy a study's small outputs (module docstring) from ``study_dir`` (``results/STUDY``) and
    ``runs_root`` (``results/runs/STUDY``) into ``out``, replacing what was there; ``provenance`` (the
    command, the wall time, ...) is written to ``provenance.json`` with the code version, the machine
    and the number of runs added."""
    study_dir, runs_root, out = Path(study_dir), Path(runs_root), Path(out)
    missing = [n for n in STUDY_FILES if not (study_dir / n).is_file()]
    if missing:
        raise UserError(f"{study_dir} lacks {', '.join(missing)}; run the study to its end first")
    runs = find_runs(runs_root, RunDir.METRICS)
    if not runs:
        raise UserError(f"no evaluated run under {runs_root}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    written = [Path(shutil.copy2(study_dir / name, out / name)) for name in STUDY_FILES]
    for src_dir, pattern, sub in ((TABLES, "*.md", TABLES), (FIGURES, "*.png", FIGURES)):
        for f in sorted((study_dir / src_dir).glob(pattern)):
            (out / sub).mkdir(exist_ok=True)
            written.append(Path(shutil.copy2(f, out / sub / f.name)))
    for rd in runs:
        dest = out / RUNS / rd.dataset / rd.variant / rd.path.name
        dest.mkdir(parents=True)
        for name in RUN_FILES:
            if (rd.path / name).is_file():
                written.append(Path(shutil.copy2(rd.path / name, dest / name)))
    info = {
        **provenance,
        "code_version": code_version(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "runs": len(runs),
    }
    atomic_write_text(out / PROVENANCE, json.dumps(info, indent=1) + "\n")
    atomic_write_text(out / README, index_markdown(info, out))
    return [*written, out / PROVENANCE, out / README]


def index_markdown(info: dict[str, Any], out: Path) -> str:
    """The published folder's README: where the results came from, then links to its tables and its
    figures shown inline, so the folder reads on a code host without opening the CSVs."""
    machine = info["machine"]
    lines = [
        f"# Results of the `{info['study']}` study",
        "",
        "Written by `mtl3d report publish`; `provenance.json` holds the same record. The summary, the "
        "learning curves and every table below are rebuilt from the per-run files in `runs/` by "
        "`mtl3d.reporting.publish.regenerate` (for the studies published in the repository, "
        "`tests/unit/test_committed_results.py` checks that they come out the same).",
        "",
        "| | |",
        "|---|---|",
        f"| command | `{info['command']}` |",
        f"| code version | `{info['code_version']}` |",
        f"| date | {info['date']} |",
        f"| machine | {machine['platform']}, {machine['processor']}, Python {machine['python']} |",
        f"| wall time | {info['wall_time']} |",
        f"| runs | {info['runs']} |",
    ]
    if info.get("note"):
        lines += ["", f"Note: {info['note']}"]
    lines += ["", "## Tables", ""]
    lines += [f"- [{p.stem}]({TABLES}/{p.name})" for p in sorted((out / TABLES).glob("*.md"))]
    lines += ["", "## Figures", ""]
    for p in sorted((out / FIGURES).glob("*.png")):
        lines += [f"### {p.stem}", "", f"![{p.stem}]({FIGURES}/{p.name})", ""]
    lines += ["## Files", ""]
    lines += [f"- [`{name}`]({name}): {text}" for name, text in STUDY_FILES.items()]
    lines += [
        f"- `{RUNS}/DATASET/VARIANT/seedN/`: each run's `metrics.json` (test metrics, parameters, timing), "
        "`train_log.csv` (losses and validation metrics per step) and `config.yaml` (the resolved config)",
        "",
    ]
    return "\n".join(lines)


def regenerate(published: str | Path, out: str | Path, study: str, reference: str) -> list[Path]:
    """Rebuild ``summary.csv``, ``learning_curves.csv`` and the tables from a published folder's runs
    (and its ``comparisons.csv``, whose intervals need the image-level statistics left out) into
    ``out``; returns the written files, named as in ``published``."""
    published, out = Path(published), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = published / RUNS
    summary, _ = collect(runs, study, reference)
    write_outputs(summary, out / "summary.csv", out_delta=out / "delta_m.csv")
    write_learning_curves(runs, out / "learning_curves.csv")
    comparisons = read_comparisons(published / "comparisons.csv")
    tables = write_all_tables(
        read_summary(out / "summary.csv"), out / TABLES, reference, load_reported(), comparisons
    )
    return [out / "summary.csv", out / "delta_m.csv", out / "learning_curves.csv", *tables]


def same_tables(published: str | Path, regenerated: list[Path], root: str | Path) -> list[str]:
    """Names (relative to ``root``) of the regenerated files that differ from, or are missing in,
    ``published``."""
    published, root = Path(published), Path(root)
    differ = []
    for path in regenerated:
        rel = path.relative_to(root)
        if path.suffix == ".tex":
            continue  # only the Markdown tables are published
        mine = published / rel
        if not mine.is_file() or mine.read_bytes() != path.read_bytes():
            differ.append(str(rel))
    return differ


def read_provenance(published: str | Path) -> dict[str, Any]:
    p = Path(published) / PROVENANCE
    if not p.is_file():
        raise UserError(f"{p} not found")
    return json.loads(p.read_text())
