# Helpers shared by the rules: the study's grid and the command-line rendering of its options.
# Only this file holds Python functions (snakemake --lint: no rules and functions mixed).
import os
import re
import shutil
import subprocess
from shlex import quote

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
from mtl3d.reporting.study import training_steps

STUDY = config["study"]
DATASETS = {d["name"]: d for d in config["datasets"]}
BY_DATA_DIR = {d["data_dir"]: d for d in config["datasets"]}
# Variants trained as given, then those retrained from a search's voted genotype (key "search").
VARIANTS = {v["name"]: v for v in [*config["variants"], *config.get("searched_variants", [])]}
SEEDS = [int(s) for s in config["seeds"]]
SEARCHES = {x["name"]: x for x in config.get("searches", [])}
SEARCH_SEEDS = [int(s) for s in config.get("search_seeds", [0])]
# Where a run and a search live, as path templates over the wildcards (mtl3d.engine.rundir defines them
# for the trainer, the evaluator and reporting too; a test keeps dvc.yaml's paths equal to them).
RUN = run_path("{study}", "{dataset}", "{variant}", "{seed}")
SEARCH = search_path("{study}", "{dataset}", "{search}", "{seed}")
VOTED_GENOTYPE = voted_genotype_path("{study}", "{dataset}", "{search}")
EXPORTED_MODEL = exported_model_path("{study}", "{dataset}", "{variant}")
# Trainings start longest first (the train rule's priority), so short jobs fill the cores at the end
# instead of one long training running alone while the others idle.
TRAIN_STEPS = training_steps(config, Path(workflow.basedir))
# Variants whose best seed the export stage writes as a model file (none unless the study lists some).
EXPORT = list(config.get("export", []))


def _local_gpu_count():
    """NVIDIA GPUs `nvidia-smi -L` lists here; 0 without the driver or when CUDA_VISIBLE_DEVICES hides them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if (visible is not None and visible.strip() in ("", "-1")) or shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


# Each train/search/evaluate job claims one GPU where the machine has one, and the default profile caps
# the total at 1, so two jobs never share a device; on a CPU-only machine the jobs claim none and
# `--cores N` runs N single-threaded jobs side by side (on small models that is ~1.6x the throughput
# of one job using N threads: docs/pipeline.md). The SLURM profile sets gpu per rule itself.
GPUS_PER_JOB = 1 if _local_gpu_count() else 0
# A training job on a GPU uses one core for its loop and, with data.num_workers unset, up to 8 loader
# workers (one per further core: mtl3d.engine.trainer.loader_workers); Snakemake reserves them all.
TRAIN_THREADS = 1 + min(8, max(1, (os.cpu_count() or 1) - 1)) if GPUS_PER_JOB else 1
# The software of every rule is this project's environment (pip install -e ., or environment.yml for
# conda users); run Snakemake inside it. Relative to workflow/rules/. `--sdm conda` is untested.
PROJECT_ENV = "../../environment.yml"


def _alternatives(names):
    return "|".join(re.escape(str(n)) for n in names)


wildcard_constraints:
    study=re.escape(STUDY),
    dataset=_alternatives(DATASETS),
    data_dir=_alternatives(BY_DATA_DIR),
    variant=_alternatives(VARIANTS),
    seed=_alternatives(sorted(set(SEEDS) | set(SEARCH_SEEDS))),
    search=_alternatives(SEARCHES) if SEARCHES else "(?!)",


def cli_options(options):
    """{'batch-size': 8, 'regularizer': True} -> '--batch-size 8 --regularizer' (as DVC unpacks dicts)."""
    parts = []
    for k, v in options.items():
        if isinstance(v, bool):
            if v:
                parts.append(f"--{k}")
        elif isinstance(v, str):
            parts.append(f"--{k} {quote(v)}")
        else:
            parts.append(f"--{k} {v}")
    return " ".join(parts)


def data_path(wildcards):
    return os.path.join("data", "processed", DATASETS[wildcards.dataset]["data_dir"])


def prepare_name(wildcards):
    return BY_DATA_DIR[wildcards.data_dir]["name"]


def train_launcher(wildcards, resources):
    """`mtl3d` for one GPU; torchrun with one process per GPU when a profile gives a run several
    (set-resources: train: gpu: N). The per-process batch is the run's batch_size (docs/distributed.md)."""
    n = int(getattr(resources, "gpu", 1) or 1)
    return "mtl3d" if n <= 1 else f"torchrun --standalone --nproc_per_node {n} -m mtl3d.cli"


def download_options(wildcards):
    return cli_options(BY_DATA_DIR[wildcards.data_dir].get("download", {}))


def prepare_options(wildcards):
    return cli_options(BY_DATA_DIR[wildcards.data_dir]["prepare"])


def genotype_file(study, dataset, search):
    """A search's voted genotype (dvc.yaml's vote and train_searched stages spell the same path)."""
    return voted_genotype_path(study, dataset, search)


def train_priority(wildcards):
    return TRAIN_STEPS[(wildcards.dataset, wildcards.variant)]


def train_options(wildcards):
    """The dataset's train options, then the variant's (later flags win on the command line); a
    searched variant then names its voted genotype."""
    variant = VARIANTS[wildcards.variant]
    parts = [cli_options(DATASETS[wildcards.dataset]["train"]), cli_options(variant["args"])]
    if "search" in variant:
        genotype = genotype_file(wildcards.study, wildcards.dataset, variant["search"])
        parts.append(f"--set model.genotype={genotype}")
    return " ".join(s for s in parts if s)


def train_genotype(wildcards):
    """The voted genotype a searched variant trains (an input: the vote runs first); none otherwise."""
    variant = VARIANTS[wildcards.variant]
    if "search" not in variant:
        return []
    return [genotype_file(wildcards.study, wildcards.dataset, variant["search"])]


def search_options(wildcards):
    """The dataset's train options, then the search's (later flags win)."""
    parts = (cli_options(DATASETS[wildcards.dataset]["train"]), cli_options(SEARCHES[wildcards.search]["args"]))
    return " ".join(s for s in parts if s)


def search_model(wildcards):
    return SEARCHES[wildcards.search]["model"]


def search_configs(wildcards):
    blocks = (DATASETS[wildcards.dataset].get("train", {}), SEARCHES[wildcards.search]["args"])
    return [b["config"] for b in blocks if "config" in b]


def search_genotypes(wildcards):
    return expand(
        f"{SEARCH}/{RunDir.GENOTYPE}",
        study=wildcards.study,
        dataset=wildcards.dataset,
        search=wildcards.search,
        seed=SEARCH_SEEDS,
    )


def search_dir_of(wildcards):
    return searches_of(wildcards.study, wildcards.dataset, wildcards.search)


def train_configs(wildcards):
    """The recipe files (`config:` of the dataset's train options or the variant's args) a run reads,
    so that editing a recipe re-runs the runs that use it."""
    blocks = (DATASETS[wildcards.dataset].get("train", {}), VARIANTS[wildcards.variant]["args"])
    return [b["config"] for b in blocks if "config" in b]


def run_dir_of(wildcards, output):
    return os.path.dirname(output[0])


def run_dir_in(wildcards, input):
    return os.path.dirname(input.done)


def runs_root_of(wildcards):
    return runs_root(wildcards.study)


def study_metrics(wildcards):
    return expand(
        f"{RUN}/{RunDir.METRICS}",
        study=wildcards.study,
        dataset=list(DATASETS),
        variant=list(VARIANTS),
        seed=SEEDS,
    )


def study_predictions(wildcards):
    return expand(
        f"{RUN}/{RunDir.PREDICTIONS}",
        study=wildcards.study,
        dataset=list(DATASETS),
        variant=list(VARIANTS),
        seed=SEEDS,
    )


def study_dones(wildcards):
    return expand(
        f"{RUN}/{RunDir.DONE}",
        study=wildcards.study,
        dataset=list(DATASETS),
        variant=list(VARIANTS),
        seed=SEEDS,
    )


def all_outputs():
    """The final products of the study (everything else is upstream of them)."""
    base = f"results/{STUDY}"
    return [
        f"{base}/summary.csv",
        f"{base}/summary.json",
        f"{base}/delta_m.csv",
        f"{base}/notebooks/results_tables.ipynb",
        f"{base}/tables",
        f"{base}/notebooks/figures.ipynb",
        f"{base}/figures",
        f"{base}/notebooks/qualitative.ipynb",
        f"{base}/qualitative",
    ] + [f"{base}/notebooks/dataset_{d}.ipynb" for d in DATASETS] + [f"{base}/dataset/{d}" for d in DATASETS] + [
        exported_model_path(STUDY, d, v) for d in DATASETS for v in EXPORT
    ]


def variant_dir_of(wildcards):
    return variant_path(wildcards.study, wildcards.dataset, wildcards.variant)
