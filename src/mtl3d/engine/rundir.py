"""A run's folder and a study's paths: the one definition the trainer, the evaluator, reporting and the
workflow rules (``workflow/rules/common.smk``; ``dvc.yaml`` is kept equal to it by a test) all use.

A study's runs live at ``results/runs/STUDY/DATASET/VARIANT/seedK`` and its searches at
``results/searches/STUDY/DATASET/SEARCH/seedK``; a variant trained with the 3D-aware regularizer is named
with ``REG_SUFFIX`` (``mtl+3d``). One run folder holds:

- ``config.yaml`` the resolved config, ``run_info.json`` what depends on the launch (world size, batches),
  ``last.pt`` the resumable checkpoint, ``train_log.csv`` the training log, ``done`` the end marker
  (``mtl3d train``); ``genotype.json`` for a search (``mtl3d search``);
- ``metrics.json``, ``per_image.npz`` (per-image sufficient statistics) and ``predictions/`` (a few
  saved predictions, one ``ID.npz`` each) (``mtl3d evaluate``).

No torch here: Snakemake imports this module when it reads the workflow.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RUNS_ROOT = "results/runs"
SEARCHES_ROOT = "results/searches"
REG_SUFFIX = "+3d"
SEED_PREFIX = "seed"
SEED_DIR = re.compile(rf"^{SEED_PREFIX}(\d+)$")


def variant_name(model: str, regularizer: bool) -> str:
    """A run's variant as a study names it when it does not choose another name: ``mtl``, ``mtl+3d``."""
    return model + (REG_SUFFIX if regularizer else "")


def seed_dir_name(seed: int | str) -> str:
    """``seed0``; ``seed`` may be a placeholder (``{seed}``, ``${item.seed}``) for a path template."""
    return f"{SEED_PREFIX}{seed}"


def parse_seed(name: str) -> int | None:
    """The seed of a ``seedK`` folder name; None for any other name."""
    m = SEED_DIR.match(name)
    return int(m.group(1)) if m else None


def runs_root(study: str) -> str:
    """``results/runs/STUDY``: every run of a study, ``DATASET/VARIANT/seedK`` below it."""
    return f"{RUNS_ROOT}/{study}"


def run_path(study: str, dataset: str, variant: str, seed: int | str) -> str:
    """``results/runs/STUDY/DATASET/VARIANT/seedK``, relative to the project root. Any argument may be a
    placeholder, which makes the path template of Snakemake (``{study}``) or DVC (``${study}``)."""
    return f"{variant_path(study, dataset, variant)}/{seed_dir_name(seed)}"


def variant_path(study: str, dataset: str, variant: str) -> str:
    """The folder of a variant's seed runs, ``results/runs/STUDY/DATASET/VARIANT``."""
    return f"{runs_root(study)}/{dataset}/{variant}"


def exported_model_path(study: str, dataset: str, variant: str) -> str:
    """Where the pipeline's export stage (a study's ``export`` list) writes a variant's best seed."""
    return f"results/{study}/models/{dataset}/{variant}.mtl3d"


def search_path(study: str, dataset: str, search: str, seed: int | str) -> str:
    """``results/searches/STUDY/DATASET/SEARCH/seedK``: one architecture search (a run folder too)."""
    return f"{searches_of(study, dataset, search)}/{seed_dir_name(seed)}"


def searches_of(study: str, dataset: str, search: str) -> str:
    """``results/searches/STUDY/DATASET/SEARCH``: the searches whose genotypes one vote combines."""
    return f"{SEARCHES_ROOT}/{study}/{dataset}/{search}"


def voted_genotype_path(study: str, dataset: str, search: str) -> str:
    """The voted genotype of a study's search, which its searched variants retrain."""
    return f"{searches_of(study, dataset, search)}.json"


@dataclass(frozen=True)
class RunDir:
    """One run folder and the files in it (see the module docstring)."""

    path: Path

    CONFIG = "config.yaml"
    CHECKPOINT = "last.pt"
    TRAIN_LOG = "train_log.csv"
    DONE = "done"
    RUN_INFO = "run_info.json"
    GENOTYPE = "genotype.json"
    METRICS = "metrics.json"
    PER_IMAGE = "per_image.npz"
    PREDICTIONS = "predictions"

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def train_log(self) -> Path:
        return self.path / self.TRAIN_LOG

    @property
    def done(self) -> Path:
        return self.path / self.DONE

    @property
    def run_info(self) -> Path:
        return self.path / self.RUN_INFO

    @property
    def genotype(self) -> Path:
        return self.path / self.GENOTYPE

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def per_image(self) -> Path:
        return self.path / self.PER_IMAGE

    @property
    def predictions(self) -> Path:
        return self.path / self.PREDICTIONS

    def prediction(self, image_id: str) -> Path:
        """The saved prediction of one image."""
        return self.predictions / f"{image_id}.npz"

    def stale_temporaries(self) -> Iterator[Path]:
        """Files an atomic write leaves (``.NAME.tmp``) when it is killed mid-way."""
        return self.path.glob(".*.tmp")

    @property
    def seed(self) -> int | None:
        """The seed of a ``seedK`` folder (None for a folder named otherwise)."""
        return parse_seed(self.path.name)

    @property
    def variant(self) -> str:
        return self.path.parent.name

    @property
    def dataset(self) -> str:
        return self.path.parent.parent.name

    def read_train_log(self, upto: int | None = None) -> list[dict[str, float]]:
        """The training log's rows as numbers (a cell left empty is absent from its row), up to step
        ``upto`` when given; no rows when there is no log."""
        if not self.train_log.is_file():
            return []
        with self.train_log.open() as f:
            rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
        return rows if upto is None else [r for r in rows if r["step"] <= upto]

    def train_seconds(self) -> float | None:
        """Training wall time at the last logged step (None without a log)."""
        rows = self.read_train_log()
        return rows[-1]["time_s"] if rows else None


def find_runs(root: str | Path, name: str) -> list[RunDir]:
    """Every ``DATASET/VARIANT/seedK`` run under a study's runs root that holds ``name`` (a file or a
    folder of :class:`RunDir`), sorted by path."""
    found = Path(root).glob(f"*/*/{seed_dir_name('*')}/{name}")
    return [RunDir(p.parent) for p in sorted(found) if parse_seed(p.parent.name) is not None]
