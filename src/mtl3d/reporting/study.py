"""Study files (params.yaml, config/*.yaml): load, validate against config/schema.yaml, expand the grid.

Snakemake validates the same file with ``snakemake.utils.validate``; DVC validates nothing, so this
module is what ``mtl3d report check-study`` and the tests use to keep every study file valid.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl3d.config import read_yaml
from mtl3d.engine.rundir import REG_SUFFIX, run_path
from mtl3d.errors import UserError, unknown_name

SCHEMA_RELPATH = Path("config") / "schema.yaml"
ABLATION = "@"  # `mtl+3d@sum`: variant `mtl+3d` with one choice changed (config/ablations.yaml)


@dataclass(frozen=True)
class RunSpec:
    """One cell of a study's grid."""

    study: str
    dataset: str
    variant: str
    seed: int

    @property
    def run_dir(self) -> str:
        return run_path(self.study, self.dataset, self.variant, self.seed)


def project_root(start: str | Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) holding a Snakefile and
    dvc.yaml, i.e. this project's root; None outside a checkout."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for d in [here, *here.parents]:
        if (d / "Snakefile").is_file() and (d / "dvc.yaml").is_file():
            return d
    return None


def project_path(path: str | Path, start: str | Path | None = None) -> Path:
    """A path given relative to the project root, wherever the caller runs.

    Snakemake, DVC and papermill run from the root; JupyterLab runs a notebook in ``notebooks/``. Both
    resolve ``results/...`` to the same file this way. Absolute paths are returned unchanged.
    """
    p = Path(path)
    if p.is_absolute():
        return p
    root = project_root(start)
    return root / p if root is not None else p


def find_schema(start: str | Path) -> Path:
    """``config/schema.yaml`` of the project holding ``start`` (searched upwards from it)."""
    start = Path(start).resolve()
    for d in [start, *start.parents] if start.is_dir() else start.parents:
        cand = d / SCHEMA_RELPATH
        if cand.is_file():
            return cand
    raise UserError(f"no {SCHEMA_RELPATH} found above {start}; pass the schema path explicitly")


def _validator(schema: dict[str, Any]):
    """A Draft 2020-12 validator that also fills in ``default`` values (as Snakemake's validate does)."""
    import jsonschema

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    cls = jsonschema.validators.extend(base, {"properties": set_defaults})
    return cls(schema)


def validate_study(data: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Validate ``data`` (a copy, with schema defaults filled in) and the rules a schema cannot express."""
    out = copy.deepcopy(data)
    errors = sorted(_validator(schema).iter_errors(out), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise UserError(f"study: {where}: {e.message}")
    check_grid(out)
    return out


def all_variants(study: dict[str, Any]) -> list[dict[str, Any]]:
    """The variants trained as given, then those retrained from a search's genotype."""
    return list(study["variants"]) + list(study.get("searched_variants", []))


def check_grid(study: dict[str, Any]) -> None:
    """Unique names, and ``+3d`` in a variant name exactly when its regularizer is on."""
    groups = (
        ("dataset", study["datasets"]),
        ("variant", all_variants(study)),
        ("search", study.get("searches", [])),
    )
    for kind, entries in groups:
        names = [e["name"] for e in entries]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UserError(
                f"study {study['study']}: {kind} names must be unique; repeated: {', '.join(dup)}"
            )
    dirs = [d["data_dir"] for d in study["datasets"]]
    if len(set(dirs)) != len(dirs):
        raise UserError(f"study {study['study']}: two datasets share a data_dir")
    searches = {x["name"] for x in study.get("searches", [])}
    for v in study.get("searched_variants", []):
        if v["search"] not in searches:
            raise UserError(
                f"study {study['study']}: variant {v['name']!r} trains the genotype of search "
                f"{v['search']!r}, which is not among the searches ({', '.join(sorted(searches)) or 'none'})"
            )
    names = {v["name"] for v in all_variants(study)}
    unknown = [n for n in study.get("export", []) if n not in names]
    if unknown:
        raise unknown_name(f"study {study['study']}: export variant", unknown[0], sorted(names))
    for v in all_variants(study):
        reg = bool(v["args"].get("regularizer", False))
        base = v["name"].split(ABLATION, 1)[0]
        if base.endswith(REG_SUFFIX) != reg:
            raise UserError(
                f"study {study['study']}: variant {v['name']!r} has regularizer={str(reg).lower()}; "
                f"names ending in {REG_SUFFIX!r} (before any {ABLATION!r}) are exactly the runs with the "
                "regularizer on"
            )
        if base != v["name"] and base not in names:
            raise UserError(
                f"study {study['study']}: ablation {v['name']!r} needs its default variant {base!r} "
                "in the study"
            )
    if study["reference"] not in names:
        raise UserError(
            f"study {study['study']}: reference variant {study['reference']!r} is not among the variants "
            f"({', '.join(sorted(names))})"
        )


def load_study(path: str | Path, schema: str | Path | None = None) -> dict[str, Any]:
    """Read and validate a study file; ``schema`` defaults to the project's ``config/schema.yaml``."""
    schema_path = Path(schema) if schema is not None else find_schema(Path(path).resolve().parent)
    study = validate_study(read_yaml(path, "study file"), read_yaml(schema_path, "schema"))
    check_study(study, project_root(Path(path).resolve().parent))
    return study


def check_study(study: dict[str, Any], root: Path | None) -> None:
    """What a schema cannot check, before any job runs: the grid's rules, the named config files, and
    the config every run of the grid will train with (model, dataset, ranges such as ``iters: 0``)."""
    check_grid(study)
    check_config_files(study, root)
    check_run_configs(study, root)


# `mtl3d train` / `mtl3d search` options that a study may give, and the config key each sets.
_TRAIN_OPTIONS = {
    "dataset": "data.dataset",
    "data-root": "data.root",
    "model": "model.name",
    "backbone": "model.backbone",
    "tasks": "tasks",
    "iters": "iters",
    "batch-size": "batch_size",
    "lr": "optim.lr",
    "seed": "seed",
    "device": "device",
    "regularizer": "regularizer.enabled",
}
_OTHER_OPTIONS = ("config", "set", "quiet")


def _run_config(option_blocks: list[dict[str, Any]], root: Path | None) -> Any:
    """The config of ``mtl3d train`` given the blocks' options in order on its command line, as the
    workflow writes them (the dataset's train options, then the variant's): a later option wins, and
    every block's ``set`` applies."""
    from mtl3d import config as C

    over: dict[str, Any] = {}
    sets: list[str] = []
    config = None
    for options in option_blocks:
        for k, v in options.items():
            if k not in _TRAIN_OPTIONS and k not in _OTHER_OPTIONS:
                valid = ", ".join(sorted([*_TRAIN_OPTIONS, *_OTHER_OPTIONS]))
                raise UserError(f"mtl3d train has no option --{k}; valid here: {valid}")
            if k in _TRAIN_OPTIONS:
                value = v.split(",") if k == "tasks" and isinstance(v, str) else v
                C.set_nested(over, _TRAIN_OPTIONS[k], value)
            elif k == "set":
                sets.append(str(v))
            elif k == "config":
                config = v
    path = None
    if config is not None:
        path = (root / str(config)) if root is not None else Path(str(config))
    return C.load(path, C.apply_sets(over, sets))


def _option_blocks(dataset: dict[str, Any], args: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's options in the order the workflow writes them: the dataset, its train options, then the
    variant's (or search's) own."""
    return [{"dataset": dataset["name"]}, dataset.get("train", {}), args]


def check_run_configs(study: dict[str, Any], root: Path | None) -> None:
    """Each dataset is a registered one, and each (dataset, variant) and (dataset, search) gives a valid
    config, checked as ``mtl3d train`` checks it."""
    from mtl3d.data.registry import get_dataset_info

    for d in study["datasets"]:
        try:
            get_dataset_info(d["name"])
        except UserError as e:
            raise UserError(f"study {study['study']}: dataset {d['name']!r}: {e}") from None
        entries = [(f"variant {v['name']}", v["args"]) for v in all_variants(study)]
        entries += [
            (f"search {x['name']}", {"model": x["model"], **x["args"]}) for x in study.get("searches", [])
        ]
        for where, args in entries:
            try:
                _run_config(_option_blocks(d, args), root)
            except UserError as e:
                raise UserError(f"study {study['study']}: dataset {d['name']}, {where}: {e}") from None


def training_steps(study: dict[str, Any], root: Path | None) -> dict[tuple[str, str], int]:
    """Each (dataset, variant)'s training steps, from the config its runs train with.

    The workflow starts the longest trainings first (the train rule's priority), so that at the end short
    jobs fill the cores instead of one long training running alone while the others idle.
    """
    return {
        (d["name"], v["name"]): _run_config(_option_blocks(d, v["args"]), root).iters
        for d in study["datasets"]
        for v in all_variants(study)
    }


def check_config_files(study: dict[str, Any], root: Path | None) -> None:
    """Every ``config:`` (a train recipe) that a dataset or variant names exists and is a valid config.

    The rules run from the project root, so that is where the paths are looked up.
    """
    from mtl3d import config as C

    if root is None:
        return
    blocks = [(f"dataset {d['name']}", d.get("train", {})) for d in study["datasets"]]
    blocks += [(f"variant {v['name']}", v["args"]) for v in all_variants(study)]
    blocks += [(f"search {x['name']}", x["args"]) for x in study.get("searches", [])]
    for where, block in blocks:
        if "config" in block:
            path = root / str(block["config"])
            if not path.is_file():
                raise UserError(
                    f"study {study['study']}: {where} names config {block['config']}, not found in {root}"
                )
            try:
                C.load(path)
            except UserError as e:
                raise UserError(f"study {study['study']}: {where}: {path}: {e}") from None


def expand_runs(study: dict[str, Any]) -> list[RunSpec]:
    """The grid dataset x variant x seed, in file order."""
    return [
        RunSpec(study["study"], d["name"], v["name"], int(s))
        for d in study["datasets"]
        for v in all_variants(study)
        for s in study["seeds"]
    ]


def to_cli_options(options: dict[str, Any]) -> str:
    """``{"batch-size": 8, "regularizer": True, "x": False}`` -> ``--batch-size 8 --regularizer``.

    The same rendering as DVC's dict unpacking in ``cmd`` (``parsing.bool: store_true``), so that
    Snakemake and DVC run byte-identical commands from one study file.
    """
    from shlex import quote

    parts: list[str] = []
    for k, v in options.items():
        if isinstance(v, bool):
            if v:
                parts.append(f"--{k}")
        elif isinstance(v, str):
            parts.append(f"--{k} {quote(v)}")
        elif isinstance(v, (list, tuple, dict)):
            raise UserError(f"option {k!r}: lists and mappings cannot be passed on the command line")
        else:
            parts.append(f"--{k} {v}")
    return " ".join(parts)
