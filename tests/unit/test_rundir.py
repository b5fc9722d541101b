"""The run folder's one definition (mtl3d.engine.rundir): names, paths, the training log, finding runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mtl3d.engine.rundir import (
    REG_SUFFIX,
    RunDir,
    find_runs,
    parse_seed,
    run_path,
    search_path,
    variant_name,
    voted_genotype_path,
)


def test_paths_and_names() -> None:
    assert run_path("smoke", "synthrooms", "mtl+3d", 0) == "results/runs/smoke/synthrooms/mtl+3d/seed0"
    assert run_path("{study}", "{dataset}", "{variant}", "{seed}") == (
        "results/runs/{study}/{dataset}/{variant}/seed{seed}"
    )
    assert search_path("s", "d", "atrc", 1) == "results/searches/s/d/atrc/seed1"
    assert voted_genotype_path("s", "d", "atrc") == "results/searches/s/d/atrc.json"
    assert variant_name("mtl", True) == "mtl" + REG_SUFFIX == "mtl+3d"
    assert variant_name("stl", False) == "stl"
    assert [parse_seed(n) for n in ("seed0", "seed12", "seed", "seedx", "seed1a", "xseed1")] == [
        0,
        12,
        None,
        None,
        None,
        None,
    ]
    rd = RunDir("results/runs/smoke/synthrooms/mtl+3d/seed3")
    assert (rd.seed, rd.variant, rd.dataset) == (3, "mtl+3d", "synthrooms")
    assert [p.name for p in (rd.config, rd.checkpoint, rd.train_log, rd.done, rd.run_info)] == [
        "config.yaml",
        "last.pt",
        "train_log.csv",
        "done",
        "run_info.json",
    ]
    assert [p.name for p in (rd.metrics, rd.per_image, rd.predictions, rd.genotype)] == [
        "metrics.json",
        "per_image.npz",
        "predictions",
        "genotype.json",
    ]
    assert rd.prediction("0007") == rd.path / "predictions" / "0007.npz"


def test_train_log_is_read_as_numbers_up_to_a_step(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert rd.read_train_log() == [] and rd.train_seconds() is None
    rd.train_log.write_text("step,lr,time_s,loss/total,reg/depth\n1,0.01,0.5,2.5,\n2,0.01,1.25,2,0.5\n")
    assert rd.read_train_log() == [
        {"step": 1.0, "lr": 0.01, "time_s": 0.5, "loss/total": 2.5},
        {"step": 2.0, "lr": 0.01, "time_s": 1.25, "loss/total": 2.0, "reg/depth": 0.5},
    ]
    assert [r["step"] for r in rd.read_train_log(upto=1)] == [1.0]
    assert rd.train_seconds() == 1.25


def test_find_runs_takes_seed_folders_only(tmp_path: Path) -> None:
    for rel in ("d/mtl/seed0", "d/mtl/seed1", "d/mtl/seed_old", "d/stl/seed2", "d/stl/notes"):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "metrics.json").write_text("{}")
    (tmp_path / "d/stl/seed3").mkdir()  # no metrics.json
    found = find_runs(tmp_path, RunDir.METRICS)
    assert [(r.variant, r.seed) for r in found] == [("mtl", 0), ("mtl", 1), ("stl", 2)]


def test_rundir_loads_no_torch() -> None:
    """Snakemake imports it when it reads the workflow: no torch on that path."""
    code = "import sys, mtl3d.engine.rundir; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
