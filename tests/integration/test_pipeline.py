"""The study pipeline end to end on the smoke study (SynthRooms 6 scenes x 2 views, 32x48, 5 iterations).

Runs in temporary copies of the pipeline files (never in the checkout): Snakemake front to back, a
second Snakemake run that has nothing to do, the executed notebooks, DVC reproducing the same metrics,
a killed Snakemake run resumed from last.pt, Snakefile/dvc.yaml declaring the same outputs and
commands for every study, and `snakemake --lint` with the SLURM profile.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PIPELINE_FILES = [
    "Snakefile",
    "dvc.yaml",
    ".dvcignore",
    "params.yaml",
    "environment.yml",
    "config",
    "workflow",
    "profiles",
    "notebooks",
    "src",
]
# every study file of the project (config/*.yaml but the schema), and params.yaml
STUDIES = ["params.yaml"] + sorted(
    f"config/{p.name}" for p in (REPO / "config").glob("*.yaml") if p.name != "schema.yaml"
)
_SMOKE = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
_SMOKE_VARIANTS = _SMOKE["variants"] + _SMOKE["searched_variants"]
N_SMOKE_RUNS = len(_SMOKE_VARIANTS) * len(_SMOKE["seeds"]) * len(_SMOKE["datasets"])
# ATRC searches (one per search seed) and one vote per search, per dataset
N_SMOKE_SEARCH_OUTPUTS = len(_SMOKE["searches"]) * (len(_SMOKE["search_seeds"]) + 1) * len(_SMOKE["datasets"])

_MISSING = [t for t in ("snakemake", "dvc", "papermill") if shutil.which(t, path=str(BIN)) is None]
# Skipped only outside CI: `make test` installs the pipeline tools, so CI must never skip these.
pytestmark = pytest.mark.skipif(
    bool(_MISSING) and not os.environ.get("CI"), reason=f"not installed here: {', '.join(_MISSING)}"
)


def env(threads: int = 2) -> dict[str, str]:
    e = os.environ.copy()
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["OMP_NUM_THREADS"] = str(threads)  # Snakemake sets it per job; DVC runs must match for equal floats
    e.pop("SNAKEMAKE_PROFILE", None)
    e["DVC_NO_ANALYTICS"] = "1"
    return e


def copy_pipeline(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
    for name in PIPELINE_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, dst / name)
    return dst


def run(
    cmd: list[str], cwd: Path, timeout: float = 600, check: bool = True, **kw
) -> subprocess.CompletedProcess:
    p = subprocess.run(
        cmd, cwd=cwd, env=kw.pop("env", env()), capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
        )
    return p


def snakemake(*args: str) -> list[str]:
    return [str(BIN / "snakemake"), *args]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The smoke study run once by Snakemake (2 cores) and, at the same time, by `dvc repro` in a git
    repo, each in its own copy of the pipeline (running side by side fills the idle time of either)."""
    work = copy_pipeline(tmp_path_factory.mktemp("smoke"))
    dvc_dir = copy_pipeline(tmp_path_factory.mktemp("dvc"))
    shutil.copy2(dvc_dir / "config/smoke.yaml", dvc_dir / "params.yaml")
    run(["git", "init", "-q"], dvc_dir)
    run([str(BIN / "dvc"), "init", "-q"], dvc_dir)
    t0 = time.perf_counter()
    dvc = subprocess.Popen(
        [str(BIN / "dvc"), "repro"],
        cwd=dvc_dir,
        # Snakemake's train/evaluate rules are single-threaded (threads: 1 sets OMP_NUM_THREADS=1);
        # the same thread count is what makes the two pipelines' floats equal.
        env=env(threads=1),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        p = run(snakemake("--cores", "2", "--configfile", "config/smoke.yaml"), work)
        smk_seconds = time.perf_counter() - t0
        dvc_out, _ = dvc.communicate(timeout=600)
    finally:
        if dvc.poll() is None:
            dvc.kill()
    return {
        "dir": work,
        "seconds": smk_seconds,
        "log": p.stdout + p.stderr,
        "dvc_dir": dvc_dir,
        "dvc_rc": dvc.returncode,
        "dvc_log": dvc_out,
        "dvc_seconds": time.perf_counter() - t0,
    }


def dry_run_jobs(cwd: Path, configfile: str) -> tuple[set[str], set[str]]:
    """(outputs, shell commands) of every job Snakemake plans for a study, from a dry run."""
    p = run(snakemake("-n", "-p", "--configfile", configfile), cwd)
    outputs: set[str] = set()
    commands: set[str] = set()
    for line in p.stdout.splitlines():
        s = line.strip()
        if s.startswith("output: "):
            outputs.update(x.strip() for x in s[len("output: ") :].split(","))
        elif s.startswith("Shell command: ") and s != "Shell command: None":
            commands.add(normalise_command(s[len("Shell command: ") :]))
    return outputs, commands


def normalise_command(cmd: str) -> str:
    """The command itself: no log redirection (Snakemake) or output-folder creation (DVC)."""
    cmd = re.sub(r"\s*>\s*\S+\s+2>&1\s*$", "", cmd)
    cmd = re.sub(r"^mkdir -p \S+ &&\s*", "", cmd.strip())
    return " ".join(cmd.split())


def dvc_stages(cwd: Path) -> tuple[set[str], set[str]]:
    """(outputs, commands) of every stage dvc.yaml generates from the study in params.yaml."""
    from dvc.repo import Repo

    with Repo(str(cwd)) as repo:
        stages = list(repo.index.stages)
        outs = {str(o.def_path) for s in stages for o in s.outs}
        cmds = {normalise_command(s.cmd) for s in stages}
    return outs, cmds


def test_smoke_study_outputs(smoke: dict) -> None:
    work = smoke["dir"]
    print(f"smoke study: {smoke['seconds']:.1f} s")
    outputs, _ = dry_run_jobs(copy_pipeline(work.parent / "plan"), "config/smoke.yaml")
    n = N_SMOKE_RUNS
    # download record + prepare, searches + votes, train, evaluate (predictions, metrics),
    # collect (summary.csv/json, delta_m.csv, comparisons.csv, learning_curves.csv), notebooks (each
    # with its outputs), the export stage (model file + card per exported variant)
    n_export = 2 * len(_SMOKE["export"]) * len(_SMOKE["datasets"])
    assert len(outputs) == 2 + N_SMOKE_SEARCH_OUTPUTS + n + n * 2 + 5 + 4 * 2 + n_export
    for rel in sorted(outputs):
        path = work / rel
        assert path.exists(), f"declared output missing: {rel}"
        if path.is_dir():
            assert any(path.iterdir()), f"empty output folder: {rel}"
        else:
            assert path.stat().st_size > 0, f"empty output: {rel}"
    summary = (work / "results/smoke/summary.csv").read_text().splitlines()
    assert summary[0] == "study,dataset,model,variant,regularizer,backbone,seed,task,metric,value"
    assert any(",all,delta_m," in line for line in summary)
    tables = work / "results/smoke/tables"
    md = (tables / "synthrooms.md").read_text()
    for variant_row in ("| stl | – |", "| mtl | – |", "| mtl | ✓ |"):
        assert variant_row in md
    assert r"\begin{tabular}" in (tables / "synthrooms.tex").read_text()
    assert "reported" in (tables / "reported.md").read_text()
    # the export stage: the exported variant's best seed loads and predicts like a model file
    import mtl3d

    model = mtl3d.load(work / "results/smoke/models/synthrooms/mtl+3d.mtl3d")
    assert set(model.predict(np.zeros((20, 30, 3), np.uint8))) == {"semseg", "depth", "normals", "edges"}
    assert "mtl+3d" in (work / "results/smoke/models/synthrooms/mtl+3d.md").read_text()
    figs = work / "results/smoke/figures"
    stems = (
        "delta_m_synthrooms",
        "task_gains_synthrooms",
        "training_curves_synthrooms",
        "learning_curves_synthrooms",
    )
    for stem in stems:
        for ext in (".png", ".pdf"):
            assert (figs / (stem + ext)).stat().st_size > 5000
    qual = {p.name for p in (work / "results/smoke/qualitative").iterdir()}
    assert "grid_synthrooms_mtl_plus_3d.png" in qual and any(n.startswith("compare_") for n in qual)
    assert {"samples.png", "label_stats.png", "multiview_pairs.png", "stats.json"} <= {
        p.name for p in (work / "results/smoke/dataset/synthrooms").iterdir()
    }


def test_published_results_regenerate_from_their_runs(smoke: dict, tmp_path: Path) -> None:
    """mtl3d report publish copies the study's small outputs with their provenance; the project's code
    rebuilds the same summary, curves and Markdown tables from the copied per-run files."""
    from mtl3d.reporting.publish import read_provenance, regenerate, same_tables

    work, out = smoke["dir"], tmp_path / "published"
    cmd = ["report", "publish", "--study", "smoke", "--out", str(out), "--command", "snakemake --cores 2"]
    res = run([str(BIN / "mtl3d"), *cmd, "--wall-time", "1 min"], work)
    assert "files" in res.stdout
    info = read_provenance(out)
    assert info["command"] == "snakemake --cores 2" and info["runs"] == N_SMOKE_RUNS and info["code_version"]
    assert (out / "runs/synthrooms/mtl+3d/seed0/metrics.json").is_file()
    assert not list(out.rglob("*.pt")) and not list(out.rglob("per_image.npz"))
    assert (out / "figures/learning_curves_synthrooms.png").is_file()
    readme = (out / "README.md").read_text()
    assert "snakemake --cores 2" in readme and info["code_version"] in readme
    links = re.findall(r"\]\(([^)]+)\)", readme)
    assert "figures/learning_curves_synthrooms.png" in links and "tables/synthrooms.md" in links
    assert all((out / link).is_file() for link in links)
    regenerated = regenerate(out, tmp_path / "again", "smoke", _SMOKE["reference"])
    assert same_tables(out, regenerated, tmp_path / "again") == []
    # a changed metric is caught
    metrics = out / "runs/synthrooms/mtl/seed0/metrics.json"
    metrics.write_text(metrics.read_text().replace('"mIoU": ', '"mIoU": 1', 1))
    regenerated = regenerate(out, tmp_path / "third", "smoke", _SMOKE["reference"])
    assert "summary.csv" in same_tables(out, regenerated, tmp_path / "third")


def test_notebooks_ran_with_smoke_parameters(smoke: dict) -> None:
    import nbformat

    executed = sorted((smoke["dir"] / "results/smoke/notebooks").glob("*.ipynb"))
    assert [p.name for p in executed] == [
        "dataset_synthrooms.ipynb",
        "figures.ipynb",
        "qualitative.ipynb",
        "results_tables.ipynb",
    ]
    for p in executed:
        nb = nbformat.read(p, as_version=4)
        meta = nb.metadata["papermill"]
        assert not meta["exception"] and "smoke" in json.dumps(meta["parameters"]), p.name
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1 and "smoke" in injected[0].source, p.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), p.name
        assert not any(o.get("output_type") == "error" for c in code for o in c.outputs), p.name
    # the committed notebooks stay clean
    for p in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert all(not c.get("outputs") for c in nbformat.read(p, as_version=4).cells), p.name


def test_html_report_has_the_figures(smoke: dict) -> None:
    import zipfile

    out = smoke["dir"] / "report.zip"
    run(snakemake("--report", str(out), "--configfile", "config/smoke.yaml"), smoke["dir"])
    names = zipfile.ZipFile(out).namelist()
    assert any(n.endswith("report.html") for n in names)
    for stem in ("delta_m_synthrooms", "grid_synthrooms_mtl_plus_3d", "samples"):
        assert any(n.endswith(stem + ".png") for n in names), stem


def test_second_run_has_nothing_to_do(smoke: dict) -> None:
    p = run(snakemake("-n", "--configfile", "config/smoke.yaml"), smoke["dir"])
    assert "Nothing to be done" in p.stdout + p.stderr, p.stdout[-2000:]


def _metrics(root: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(root)): json.loads(p.read_text())
        for p in sorted(root.glob("results/runs/*/*/*/seed*/metrics.json"))
    }


def _assert_same_metrics(a: dict, b: dict, rel: float = 1e-4) -> None:
    for key in ("run", "split", "n_images", "params", "flops", "protocols"):
        assert a[key] == b[key], key
    assert set(a["metrics"]) == set(b["metrics"])
    for task, vals in a["metrics"].items():
        for name, v in vals.items():
            w = b["metrics"][task][name]
            if isinstance(v, float) and isinstance(w, float):
                assert math.isclose(v, w, rel_tol=rel, abs_tol=1e-6), (task, name, v, w)
            else:
                assert v == w, (task, name)


def test_dvc_repro_gives_the_same_metrics(smoke: dict) -> None:
    work = smoke["dvc_dir"]
    print(f"dvc repro: {smoke['dvc_seconds']:.1f} s (alongside snakemake)")
    assert smoke["dvc_rc"] == 0, smoke["dvc_log"][-4000:]
    ours, theirs = _metrics(smoke["dir"]), _metrics(work)
    assert sorted(ours) == sorted(theirs) and len(ours) == N_SMOKE_RUNS
    for k in ours:
        _assert_same_metrics(ours[k], theirs[k])
    status = run([str(BIN / "dvc"), "status"], work)
    assert "up to date" in status.stdout
    shown = run([str(BIN / "dvc"), "metrics", "show", "--json"], work)
    assert "delta_m" in shown.stdout
    plots = json.loads(run([str(BIN / "dvc"), "plots", "show", "--json"], work).stdout)
    assert not plots.get("errors") and "results/smoke/delta_m.csv" in plots["data"]
    # the learning curves (custom template): validation series of every run, a line per variant
    (curves,) = plots["data"]["results/smoke/learning_curves.csv"]
    rows = curves["content"]["data"]["values"]
    assert {"loss/train", "loss/val", "val/semseg/mIoU"} <= {r["series"] for r in rows}
    assert {r["variant"] for r in rows} >= {"stl", "mtl", "mtl+3d"}
    for rel in (
        "results/smoke/tables/synthrooms.md",
        "results/smoke/figures/delta_m_synthrooms.pdf",
        "results/smoke/notebooks/qualitative.ipynb",
        "results/smoke/dataset/synthrooms/samples.png",
    ):
        assert (work / rel).stat().st_size > 0, rel


@pytest.mark.parametrize("study", STUDIES)
def test_snakefile_and_dvc_declare_the_same(study: str, tmp_path: Path) -> None:
    work = copy_pipeline(tmp_path / "p")
    smk_outs, smk_cmds = dry_run_jobs(work, study)
    if study != "params.yaml":
        shutil.copy2(work / study, work / "params.yaml")
    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], work)
    dvc_outs, dvc_cmds = dvc_stages(work)
    assert smk_outs == dvc_outs
    assert smk_cmds == dvc_cmds
    spec = yaml.safe_load((work / study).read_text())
    variants = spec["variants"] + spec["searched_variants"]
    n_runs = len(spec["datasets"]) * len(variants) * len(spec["seeds"])
    assert sum(o.endswith("/done") for o in dvc_outs) == n_runs
    n_searches = len(spec["datasets"]) * len(spec["searches"]) * len(spec["search_seeds"])
    assert sum(o.endswith("/genotype.json") for o in dvc_outs) == n_searches


def test_killed_run_resumes_from_checkpoint(tmp_path: Path) -> None:
    """SIGKILL the whole Snakemake process group mid-training; --rerun-incomplete finishes the run from
    last.pt: the log rows written before the kill survive unchanged (a fresh start rewrites them)."""
    work = copy_pipeline(tmp_path / "kill")
    (work / "resume_train.yaml").write_text("ckpt_every: 2\nlog_every: 2\n")
    study = yaml.safe_load((work / "config/smoke.yaml").read_text())
    study["study"] = "resume"
    study["variants"] = [study["variants"][1]]  # mtl
    study["export"] = []  # the smoke study exports mtl+3d, which this one does not train
    study["reference"] = "mtl"  # Δm's reference must be a variant of the study
    study["datasets"][0]["train"].pop("set", None)  # log and checkpoint cadence come from resume_train.yaml
    study["datasets"][0]["train"].update({"iters": 24, "config": "resume_train.yaml"})
    (work / "config/resume.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    target = "results/runs/resume/synthrooms/mtl/seed0/done"
    run_dir = work / "results/runs/resume/synthrooms/mtl/seed0"
    cmd = snakemake(
        target, "--cores", "2", "--configfile", "config/resume.yaml"
    )  # --configfile takes 1+ args
    proc = subprocess.Popen(
        cmd, cwd=work, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            log = run_dir / "train_log.csv"
            if (run_dir / "last.pt").is_file() and log.is_file() and len(log.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "snakemake ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.wait(timeout=30)
    assert not (run_dir / "done").exists()
    before = (run_dir / "train_log.csv").read_text().splitlines()
    assert len(before) >= 2
    run(snakemake("--unlock", "--configfile", "config/resume.yaml"), work)
    run(snakemake(target, "--cores", "2", "--rerun-incomplete", "--configfile", "config/resume.yaml"), work)
    assert (run_dir / "done").read_text().strip() == "24"
    after = (run_dir / "train_log.csv").read_text().splitlines()
    assert after[: len(before)] == before, "log rows before the kill changed: training restarted from scratch"
    assert after[-1].split(",")[0] == "24" and len(after) == 1 + 12


def test_lint_with_slurm_profile(tmp_path: Path) -> None:
    work = copy_pipeline(tmp_path / "lint")
    for args in (
        ("--configfile", "config/smoke.yaml"),
        ("--workflow-profile", "profiles/slurm", "--configfile", "config/nyud.yaml"),
        ("--workflow-profile", "profiles/slurm", "--configfile", "config/synthrooms-gpu.yaml"),
    ):
        p = run(snakemake("--lint", *args), work)
        assert "Congratulations, your workflow is in a good condition" in p.stdout + p.stderr


def test_multi_gpu_runs_go_through_torchrun(tmp_path: Path) -> None:
    """A profile that gives a run several GPUs (SLURM: set-resources train: gpu: N) launches it with
    torchrun, one process per GPU; one GPU keeps the plain command (the one dvc.yaml spells)."""
    work = copy_pipeline(tmp_path / "gpus")
    one = run(snakemake("-n", "-p", "--configfile", "config/nyud.yaml"), work).stdout
    four = run(
        snakemake(
            "-n",
            "-p",
            "--configfile",
            "config/nyud.yaml",
            "--set-resources",
            "train:gpu=4",
            "--resources",
            "gpu=4",
        ),
        work,
    ).stdout
    assert "torchrun" not in one and "mtl3d train --dataset nyud" in one
    assert "torchrun --standalone --nproc_per_node 4 -m mtl3d.cli train --dataset nyud" in four
    assert "mtl3d train --dataset nyud" not in four
