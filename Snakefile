# mtl3d study workflow. Thin: the grid comes from the study file, every step is an `mtl3d` command
# (the same commands dvc.yaml runs; tests/integration/test_pipeline.py checks both declare the same
# outputs). Newcomer's guide: docs/pipeline.md.
#
#   snakemake --cores all                                   # default study (params.yaml)
#   snakemake --cores 2 --configfile config/smoke.yaml      # another study: REPLACES params.yaml
#   snakemake --executor slurm --workflow-profile profiles/slurm --configfile config/nyud.yaml
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# A study given with --configfile replaces the default study instead of being merged into it (a
# merge would leak e.g. the default's datasets into the smoke study).
if not workflow.config_settings.configfiles:

    configfile: "params.yaml"


validate(config, "config/schema.yaml")
# What the schema cannot check (models, datasets, value ranges, the reference variant), before any job.
from mtl3d.reporting.study import check_study  # noqa: E402

check_study(config, Path(workflow.basedir))


# `snakemake --report report.html` collects the figures of the notebooks into one HTML page.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/notebooks.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
