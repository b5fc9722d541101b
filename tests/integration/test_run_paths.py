"""The study's paths are mtl3d.engine.rundir's: dvc.yaml spells each the same, and the Snakemake rules
spell none themselves (they import them), so both front doors and the code agree on every run folder.
(test_pipeline.py checks that Snakemake and DVC declare the same outputs on real studies.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mtl3d.engine.rundir import (
    RunDir,
    exported_model_path,
    run_path,
    runs_root,
    search_path,
    searches_of,
    variant_path,
    voted_genotype_path,
)

REPO = Path(__file__).resolve().parents[2]
STUDY, DATASET, SEED = "${study}", "${item.dataset.name}", "${item.seed}"
RUN = run_path(STUDY, DATASET, "${item.variant.name}", SEED)
SEARCH = search_path(STUDY, DATASET, "${item.search.name}", SEED)
RUN_FILES = (RunDir.DONE, RunDir.METRICS, RunDir.PREDICTIONS)


def _stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _outs(stage: dict) -> set[str]:
    entries = [o for key in ("outs", "metrics") for o in stage.get(key, [])]
    return {next(iter(o)) if isinstance(o, dict) else o for o in entries}


def test_dvc_run_and_search_outputs_are_the_rundir_paths() -> None:
    stages = _stages()
    for name in ("train", "train_searched"):
        assert _outs(stages[name]) == {f"{RUN}/{RunDir.DONE}"}, name
        assert f"--out {RUN} " in stages[name]["cmd"], name
    for name in ("evaluate", "evaluate_searched"):
        assert _outs(stages[name]) == {f"{RUN}/{RunDir.PREDICTIONS}", f"{RUN}/{RunDir.METRICS}"}, name
        assert stages[name]["deps"][0] == f"{RUN}/{RunDir.DONE}"
        assert stages[name]["cmd"].startswith(f"mtl3d evaluate {RUN} "), name
    assert _outs(stages["search"]) == {f"{SEARCH}/{RunDir.GENOTYPE}"}
    voted = voted_genotype_path(STUDY, DATASET, "${item.search.name}")
    assert _outs(stages["vote"]) == {voted}
    assert stages["vote"]["deps"] == [searches_of(STUDY, DATASET, "${item.search.name}")]
    retrained = voted_genotype_path(STUDY, DATASET, "${item.variant.search}")
    assert f"model.genotype={retrained} " in stages["train_searched"]["cmd"]
    assert f"--runs-root {runs_root(STUDY)} " in stages["collect"]["cmd"]
    model = exported_model_path(STUDY, DATASET, "${item.variant}")
    assert _outs(stages["export"]) == {model, model.removesuffix(".mtl3d") + ".md"}
    assert stages["export"]["cmd"].startswith(
        f"mtl3d export {variant_path(STUDY, DATASET, '${item.variant}')} "
    )


def test_every_run_path_in_dvc_yaml_is_one_of_the_rundir_paths() -> None:
    """No stage spells a run or search path another way (a new stage included)."""
    allowed = {
        RUN,
        *(f"{RUN}/{f}" for f in RUN_FILES),
        SEARCH,
        f"{SEARCH}/{RunDir.GENOTYPE}",
        runs_root(STUDY),
        variant_path(STUDY, DATASET, "${item.variant}"),
        searches_of(STUDY, DATASET, "${item.search.name}"),
        voted_genotype_path(STUDY, DATASET, "${item.search.name}"),
        voted_genotype_path(STUDY, DATASET, "${item.variant.search}"),
    }
    text = (REPO / "dvc.yaml").read_text()
    found = {m.rstrip(":") for m in re.findall(r"results/(?:runs|searches)[^\s'\"]*", text)}
    assert found and found <= allowed, sorted(found - allowed)


def test_snakemake_rules_take_run_paths_from_mtl3d() -> None:
    for f in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        text = f.read_text()
        for spelled in ("results/runs", "results/searches", "seed{seed}/", '"+3d"'):
            assert spelled not in text, (f.name, spelled)
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert "from mtl3d.engine.rundir import" in common
