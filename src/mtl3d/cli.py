"""The ``mtl3d`` command: data / train / search / evaluate / report / models."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mtl3d.errors import Terminated, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-task dense prediction with a 3D-aware regularizer.",
)
data_app = typer.Typer(no_args_is_help=True, help="Download and prepare datasets.")
app.add_typer(data_app, name="data")


def _set_nested(d: dict[str, Any], dotted: str, value: Any) -> None:
    """A mapping merges into what is already there (``--regularizer --set regularizer={cross_view: true}``
    keeps the regularizer on), as overrides merge into the config file."""
    from mtl3d.config import deep_merge

    keys = dotted.split(".")
    if not all(keys):
        raise UserError(f"empty key in {dotted!r}")
    for i, k in enumerate(keys[:-1]):
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise UserError(f"{'.'.join(keys[: i + 1])} is not a mapping ({d!r})")
    old = d.get(keys[-1])
    d[keys[-1]] = deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value


@data_app.command("prepare")
def data_prepare(
    dataset: Annotated[str, typer.Argument(help="dataset name: synthrooms, nyud, pascal")],
    root: Annotated[Path | None, typer.Option(help="output [data/processed/DATASET]")] = None,
    raw: Annotated[Path | None, typer.Option(help="nyud/pascal: archives [data/raw/DATASET]")] = None,
    variant: Annotated[str | None, typer.Option(help="nyud/pascal: which archive (atrc | survey)")] = None,
    limit: Annotated[int | None, typer.Option(help="nyud/pascal: only the first N images per split")] = None,
    workers: Annotated[int | None, typer.Option(help="nyud/pascal: conversion processes")] = None,
    scenes: Annotated[int | None, typer.Option(help="synthrooms: number of scenes [200]")] = None,
    views: Annotated[int | None, typer.Option(help="synthrooms: views per scene [3]")] = None,
    height: Annotated[int | None, typer.Option(help="synthrooms [96]")] = None,
    width: Annotated[int | None, typer.Option(help="synthrooms [128]")] = None,
    seed: Annotated[int | None, typer.Option(help="synthrooms [0]")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="synthrooms: val scenes [0.2]")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing different dataset")] = False,
    verify: Annotated[
        bool, typer.Option(help="check every file's checksum and repair the damaged ones")
    ] = False,
) -> None:
    """Write the processed layout + manifest.json (SynthRooms is generated here, deterministically;
    NYUD/PASCAL are converted from the archives of `mtl3d data download`)."""
    from mtl3d.data.registry import prepare_dataset

    given = {
        "raw": raw,
        "variant": variant,
        "limit": limit,
        "workers": workers,
        "scenes": scenes,
        "views": views,
        "height": height,
        "width": width,
        "seed": seed,
        "val_fraction": val_fraction,
    }
    options = {k: v for k, v in given.items() if v is not None}
    root = root or Path("data/processed") / dataset
    man = prepare_dataset(dataset, root, overwrite=overwrite, verify=verify, **options)
    if man.get("repaired"):
        typer.echo(
            f"repaired {len(man['repaired'])} damaged or missing files: {', '.join(man['repaired'][:5])}"
            + (" ..." if len(man["repaired"]) > 5 else "")
        )
    counts = ", ".join(f"{k} {v}" for k, v in man.get("splits", {}).items())
    what = f" ({man['variant']} variant)" if man.get("variant") else ""
    typer.echo(f"{dataset}{what} ready at {root} ({counts} images)")


@data_app.command("download")
def data_download(
    dataset: Annotated[str, typer.Argument(help="dataset name: nyud or pascal")],
    variant: Annotated[
        str | None, typer.Option(help="which archive: atrc (default) or survey (different data)")
    ] = None,
    raw: Annotated[Path | None, typer.Option(help="archive folder (default: data/raw/DATASET)")] = None,
    sources: Annotated[
        Path | None,
        typer.Option(envvar="MTL3D_SOURCES", help="a sources YAML to use instead of the packaged one"),
    ] = None,
    extract: Annotated[
        bool, typer.Option("--extract/--no-extract", help="also extract the archive (prepare is then fast)")
    ] = True,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
    marker: Annotated[
        Path | None, typer.Option(help="also write the verified-files record here (the workflow's output)")
    ] = None,
) -> None:
    """Fetch a dataset's archive into RAW and verify it (pinned sha256, lock file, or trust on first use)."""
    from mtl3d.data import download as dl
    from mtl3d.data.registry import get_dataset_info
    from mtl3d.engine.checkpoint import atomic_write_json

    get_dataset_info(dataset)  # an unknown name lists the valid ones
    if dataset not in dl.dataset_names():
        # SynthRooms: generated by `prepare`; the workflow's download stage still gets its record.
        if marker is not None:
            atomic_write_json(marker, {"dataset": dataset, "download": None, "note": "generated by prepare"})
        typer.echo(f"{dataset} needs no download (mtl3d data prepare {dataset} generates it)")
        return
    raw_dir = raw if raw is not None else Path("data/raw") / dataset
    try:
        files = dl.download_verified(dataset, variant, raw_dir, sources=sources, progress=not quiet)
        top = None
        if extract:
            top, _ = dl.source_dir(dataset, variant, raw_dir, sources=sources, progress=not quiet)
    except dl.SourceUnavailable as e:
        # Several lines (what to fetch by hand and where to put it), not main()'s one-line error.
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    record = dl.write_marker(dataset, variant, raw_dir, files, extracted=top, sources=sources)
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, json.loads(record.read_text()))
    for f in files:
        typer.echo(f"{f.name}  {f.size:,} bytes  sha256 {f.sha256}  {f.how}")
    where = f"extracted to {top}" if top is not None else f"archive in {raw_dir}"
    typer.echo(f"{dataset} data {where} (record {marker or record})")


@dataclass
class RunOptions:
    """What `train` and `search` read from their shared options."""

    overrides: dict[str, Any]  # config key -> value of each named option (None: not given)
    config: Path | None
    set_: list[str] | None
    quiet: bool

    def load(self, more: dict[str, Any]) -> Any:
        """The run config: the YAML file, then ``more`` (the command's own options, by config key) and
        the shared ones, then every ``--set``."""
        return _load_config(self.config, self.set_, {**more, **self.overrides})


def _run_options(
    dataset: Annotated[str | None, typer.Option(help="dataset name")] = None,
    data_root: Annotated[str | None, typer.Option(help="prepared dataset directory")] = None,
    backbone: Annotated[str | None, typer.Option(help="timm backbone")] = None,
    tasks: Annotated[str | None, typer.Option(help="comma-separated tasks")] = None,
    iters: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML config (a recipe); options given here override it")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override any key: --set optim.lr=0.01")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> RunOptions:
    """The options `train` and `search` share, declared once (:func:`_with_run_options`)."""
    overrides = {
        "data.dataset": dataset,
        "data.root": data_root,
        "model.backbone": backbone,
        "tasks": tasks.split(",") if tasks else None,
        "iters": iters,
        "batch_size": batch_size,
        "optim.lr": lr,
        "seed": seed,
        "device": device,
    }
    return RunOptions(overrides, config, set_, quiet)


def _with_run_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with :func:`_run_options`'s options after its own; it gets them as ``run: RunOptions``.

    Typer reads a command's options from its signature, so the wrapper's is the command's own
    parameters followed by the shared ones.
    """
    shared = inspect.signature(_run_options, eval_str=True).parameters
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "run"]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in [*own, *shared.values()]]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        run = _run_options(**{name: kwargs.pop(name) for name in shared})
        command(run=run, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


@app.command()
@_with_run_options
def train(
    out: Annotated[Path, typer.Option(help="run directory (re-running resumes it)")],
    model: Annotated[str | None, typer.Option(help="model name (mtl3d models lists them)")] = None,
    regularizer: Annotated[
        bool | None, typer.Option("--regularizer/--no-regularizer", help="add the 3D-aware regularizer")
    ] = None,
    *,
    run: RunOptions,
) -> None:
    """Train one run (or resume it, or do nothing if it is finished)."""
    from mtl3d.engine.trainer import train as run_train

    cfg = run.load({"model.name": model, "regularizer.enabled": regularizer})
    run_train(cfg, out, progress=not run.quiet)


def _load_config(config: Path | None, set_: list[str] | None, options: dict[str, Any]) -> Any:
    """The run config: the YAML file, then the named command-line options, then every ``--set``."""
    from mtl3d import config as C

    over: dict[str, Any] = {}
    for key, val in options.items():
        if val is not None:
            _set_nested(over, key, val)
    for item in set_ or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            _set_nested(over, k.strip(), yaml.safe_load(v))
        except yaml.YAMLError as e:
            why = getattr(e, "problem", None) or "bad YAML"
            raise UserError(f"--set {item!r}: the value is not valid YAML ({why})") from None
        except UserError as e:
            raise UserError(f"--set {item!r}: {e}") from None
    return C.load(config, over)


search_app = typer.Typer(no_args_is_help=True, help="Architecture search (ATRC) and voting over searches.")
app.add_typer(search_app, name="search")


@search_app.command("atrc")
@_with_run_options
def search_atrc(
    out: Annotated[Path, typer.Option(help="search directory (re-running resumes it)")],
    *,
    run: RunOptions,
) -> None:
    """Search ATRC's context types (Gumbel-softmax supergraph, resumable); writes OUT/genotype.json."""
    from mtl3d.engine.search_run import search_genotype
    from mtl3d.engine.trainer import train as run_train
    from mtl3d.models.atrc.search import search_config

    cfg = run.load({"model.name": "atrc"})
    note = search_config(cfg)
    if note is not None:
        typer.echo(note, err=True)
    run_train(cfg, out, progress=not run.quiet)
    path = search_genotype(out)
    typer.echo(f"genotype written to {path}")


@search_app.command("vote")
def search_vote(
    out: Annotated[Path, typer.Option(help="the voted genotype.json to write")],
    genotypes: Annotated[
        list[Path], typer.Argument(help="genotype.json files of searches, or a folder of seed*/ searches")
    ],
) -> None:
    """Majority vote per context-pooling block over several searched genotypes (ATRC: 5 searches)."""
    from mtl3d.models.atrc.search import vote_files

    path = vote_files(genotypes, out)
    typer.echo(f"voted genotype written to {path}")


@app.command()
def evaluate(
    run_dir: Annotated[Path | None, typer.Argument(help="a trained run directory")] = None,
    split: Annotated[
        str | None, typer.Option(help="split to evaluate (default: the config's eval split)")
    ] = None,
    data_root: Annotated[str | None, typer.Option(help="override the dataset location")] = None,
    device: Annotated[str | None, typer.Option()] = None,
    quiet: Annotated[bool, typer.Option()] = False,
    model: Annotated[
        Path | None, typer.Option("--model", help="evaluate a .mtl3d model file instead of a run")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="--model: where metrics.json goes [MODEL without .mtl3d]")
    ] = None,
) -> None:
    """Write RUN_DIR/metrics.json and a few predictions under RUN_DIR/predictions/ (or, for --model FILE,
    under --out)."""
    from mtl3d.engine.evaluator import evaluate as run_eval

    if (run_dir is None) == (model is None):
        raise UserError("give a run directory or --model FILE (one of them)")
    target = run_dir if model is None else (out or model.with_suffix(""))
    rep = run_eval(
        target, split=split, data_root=data_root, device=device, progress=not quiet, model_file=model
    )
    for task, vals in rep["metrics"].items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in vals.items() if isinstance(v, float) and "/" not in k)
        typer.echo(f"{task:8s} {shown}")


@app.command()
def predict(
    model: Annotated[
        str, typer.Argument(help="a run folder, a .mtl3d model file, or its URL (with --sha256)")
    ],
    inputs: Annotated[list[str], typer.Argument(help="image files, folders or glob patterns")],
    out: Annotated[Path, typer.Option(help="output folder (index.html, one folder per image)")],
    format_: Annotated[
        str, typer.Option("--format", help="png (per-task images) | npz (raw arrays)")
    ] = "png",
    device: Annotated[str, typer.Option(help="cpu | cuda | auto (cuda: bf16 autocast)")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="images per forward pass")] = 4,
    sha256: Annotated[str | None, typer.Option(help="the model file's published SHA-256 (URLs)")] = None,
    data_root: Annotated[str | None, typer.Option(help="a run folder's prepared dataset, if moved")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace what OUT already holds")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Predict every task on any images; per-task files, contact sheets and OUT/index.html."""
    from mtl3d.engine.predictor import load
    from mtl3d.reporting.predictions import check_out, predict_images

    check_out(out, overwrite)  # before the model loads: a refusal costs nothing
    net = load(model, device=device, sha256=sha256, data_root=data_root, progress=not quiet)
    summary = predict_images(net, inputs, out, format_, overwrite, batch_size, progress=not quiet)
    for item in summary.written:
        if item["notes"]:
            typer.echo(f"note: {item['source']}: {'; '.join(item['notes'])}", err=True)
    for source, why in summary.failed:
        typer.echo(f"skipped: {source}: {why}", err=True)
    typer.echo(
        f"{len(summary.written)} image(s) predicted, {len(summary.failed)} failed; "
        f"gallery {out / 'index.html'}"
    )
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a finished (and ideally evaluated) run directory")],
    out: Annotated[Path, typer.Option(help="the model file to write, NAME.mtl3d")],
    card: Annotated[bool, typer.Option(help="also write a Markdown model card next to it (NAME.md)")] = False,
    data_root: Annotated[str | None, typer.Option(help="the run's prepared dataset, if moved")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing file")] = False,
) -> None:
    """Write a self-contained model file (safetensors weights, config, classes, metrics, hashes)."""
    from mtl3d.reporting.export import export_run, write_card

    meta = export_run(run_dir, out, data_root=data_root, overwrite=overwrite)
    typer.echo(f"{out}  sha256 {meta['file_sha256']}  (weights sha256 {meta['weights_sha256']})")
    if card:
        typer.echo(f"model card {write_card(meta, out)}")


@app.command()
def info(
    lock: Annotated[
        Path | None, typer.Option(help="the lock file to compare with [the repository's]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """What a bug report needs: versions, torch build, CUDA/cuDNN, threads, GPUs, the lock file check."""
    from mtl3d.envinfo import collect, format_info

    data = collect(lock)
    typer.echo(json.dumps(data, indent=1) if as_json else format_info(data))


@app.command("models")
def models_cmd(
    options: Annotated[
        str | None, typer.Option("--options", help="show the options (--set model.options.K=V) of a model")
    ] = None,
) -> None:
    """List the registered models, one line each (docs/models.md has the details)."""
    from mtl3d.models import list_models, model_summary
    from mtl3d.models.registry import default_backbone, model_options

    if options is not None:
        for name, p in model_options(options).items():
            typer.echo(f"{name} = {p.default!r}")
        return
    names = list_models()
    width = max(len(n) for n in names)
    for n in names:
        typer.echo(f"{n:{width}s}  {model_summary(n)}  [default backbone: {default_backbone(n)}]")


from mtl3d.reporting.cli import app as report_app  # noqa: E402  (after the app it extends)

app.add_typer(report_app, name="report", help="Collect results into tables and figures.")


_debug = False


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of an error")] = False,
) -> None:
    global _debug
    _debug = debug


def main() -> None:
    """Entry point: a user mistake or an operating-system error (permissions, missing folder, disk full)
    is one line on stderr and exit code 2, never a traceback (``mtl3d --debug ...`` shows it)."""
    global _debug
    _debug = False
    try:
        app()  # standalone mode: click reports usage errors itself and exits
    except (UserError, OSError) as e:
        if _debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    except Terminated as e:
        # the work in progress was cleaned up on the way here (temporary folders, worker processes)
        print(f"error: stopped by {e}", file=sys.stderr)
        raise SystemExit(128 + e.signum) from None


def _one_line(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        names = [str(n) for n in (e.filename, e.filename2) if n is not None]
        return f"{e.strerror}: {' -> '.join(names)}" if names else e.strerror
    return " ".join(str(e).split("\n"))


if __name__ == "__main__":
    main()
