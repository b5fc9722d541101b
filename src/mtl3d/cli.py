"""The ``mtl3d`` command: data / train / search / evaluate / report / models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mtl3d.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-task dense prediction with a 3D-aware regularizer.",
)
data_app = typer.Typer(no_args_is_help=True, help="Download and prepare datasets.")
app.add_typer(data_app, name="data")


def _set_nested(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


@data_app.command("prepare")
def data_prepare(
    dataset: Annotated[str, typer.Argument(help="dataset name, e.g. synthrooms")],
    root: Annotated[Path, typer.Option(help="output directory")] = Path("data/processed/synthrooms"),
    scenes: Annotated[int, typer.Option(help="number of scenes")] = 200,
    views: Annotated[int, typer.Option(help="views per scene")] = 3,
    height: Annotated[int, typer.Option()] = 96,
    width: Annotated[int, typer.Option()] = 128,
    seed: Annotated[int, typer.Option()] = 0,
    val_fraction: Annotated[float, typer.Option(help="fraction of scenes in the val split")] = 0.2,
    overwrite: Annotated[bool, typer.Option(help="replace an existing different dataset")] = False,
) -> None:
    """Write the processed layout + manifest.json (SynthRooms is generated here, deterministically)."""
    from mtl3d.data.registry import prepare_dataset

    man = prepare_dataset(
        dataset,
        root,
        scenes=scenes,
        views=views,
        height=height,
        width=width,
        seed=seed,
        val_fraction=val_fraction,
        overwrite=overwrite,
    )
    counts = ", ".join(f"{k} {v}" for k, v in man.get("splits", {}).items())
    typer.echo(f"{dataset} ready at {root} ({counts} views)")


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="run directory (re-running resumes it)")],
    dataset: Annotated[str | None, typer.Option(help="dataset name")] = None,
    data_root: Annotated[str | None, typer.Option(help="prepared dataset directory")] = None,
    model: Annotated[str | None, typer.Option(help="model name (mtl3d models lists them)")] = None,
    backbone: Annotated[str | None, typer.Option(help="timm backbone")] = None,
    tasks: Annotated[str | None, typer.Option(help="comma-separated tasks")] = None,
    regularizer: Annotated[
        bool | None, typer.Option("--regularizer/--no-regularizer", help="add the 3D-aware regularizer")
    ] = None,
    iters: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config; options given here override it")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override any key: --set optim.lr=0.01")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Train one run (or resume it, or do nothing if it is finished)."""
    from mtl3d.engine.trainer import train as run_train

    cfg = _load_config(
        config,
        set_,
        {
            "model.name": model,
            "regularizer.enabled": regularizer,
            **_run_options(dataset, data_root, backbone, tasks, iters, batch_size, lr, seed, device),
        },
    )
    run_train(cfg, out, progress=not quiet)


def _run_options(
    dataset: str | None,
    data_root: str | None,
    backbone: str | None,
    tasks: str | None,
    iters: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    device: str | None,
) -> dict[str, Any]:
    """The config keys of the command-line options that `train` and `search` share."""
    return {
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
        _set_nested(over, k.strip(), yaml.safe_load(v))
    return C.load(config, over)


search_app = typer.Typer(no_args_is_help=True, help="Architecture search (ATRC) and voting over searches.")
app.add_typer(search_app, name="search")


@search_app.command("atrc")
def search_atrc(
    out: Annotated[Path, typer.Option(help="search directory (re-running resumes it)")],
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
        Path | None, typer.Option(help="YAML config (an atrc recipe); options here override it")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override any key: --set optim.lr=0.01")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Search ATRC's context types (Gumbel-softmax supergraph, resumable); writes OUT/genotype.json."""
    from mtl3d.engine.trainer import train as run_train
    from mtl3d.models.atrc_search import search_genotype

    cfg = _load_config(
        config,
        set_,
        {
            "model.name": "atrc",
            **_run_options(dataset, data_root, backbone, tasks, iters, batch_size, lr, seed, device),
        },
    )
    if cfg.regularizer.enabled:
        raise UserError(
            "the search runs without the 3D-aware regularizer; add it when retraining the genotype"
        )
    if cfg.model.genotype is not None or "genotype" in cfg.model.options:
        # An ATRC recipe names a default genotype for retraining; the search finds its own.
        typer.echo(f"search: not using the config's genotype ({cfg.model.genotype}); searching one", err=True)
        cfg.model.genotype = None
        cfg.model.options = {k: v for k, v in cfg.model.options.items() if k != "genotype"}
    cfg.model.options = {**cfg.model.options, "search": True}
    run_train(cfg, out, progress=not quiet)
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
    from mtl3d.models.atrc_search import vote_files

    path = vote_files(genotypes, out)
    typer.echo(f"voted genotype written to {path}")


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a trained run directory")],
    split: Annotated[
        str | None, typer.Option(help="split to evaluate (default: the config's eval split)")
    ] = None,
    data_root: Annotated[str | None, typer.Option(help="override the dataset location")] = None,
    device: Annotated[str | None, typer.Option()] = None,
    quiet: Annotated[bool, typer.Option()] = False,
) -> None:
    """Write RUN_DIR/metrics.json and a few predictions under RUN_DIR/predictions/."""
    from mtl3d.engine.evaluator import evaluate as run_eval

    rep = run_eval(run_dir, split=split, data_root=data_root, device=device, progress=not quiet)
    for task, vals in rep["metrics"].items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in vals.items() if isinstance(v, float) and "/" not in k)
        typer.echo(f"{task:8s} {shown}")


@app.command("models")
def models_cmd(
    options: Annotated[
        str | None, typer.Option("--options", help="show the options (--set model.options.K=V) of a model")
    ] = None,
) -> None:
    """List the registered models, one line each (docs/models.md has the details)."""
    from mtl3d.models import list_models, model_summary
    from mtl3d.models.registry import model_options

    if options is not None:
        for name, p in model_options(options).items():
            typer.echo(f"{name} = {p.default!r}")
        return
    names = list_models()
    width = max(len(n) for n in names)
    for n in names:
        typer.echo(f"{n:{width}s}  {model_summary(n)}")


from mtl3d.reporting.cli import app as report_app  # noqa: E402  (after the app it extends)

app.add_typer(report_app, name="report", help="Collect results into tables and figures.")


def main() -> None:
    """Entry point: a user mistake is one line on stderr and exit code 2, never a traceback."""
    try:
        app()  # standalone mode: click reports usage errors itself and exits
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
