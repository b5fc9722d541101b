"""``mtl3d report ...``: collect a study's runs, render its tables and figures, check study files."""

from __future__ import annotations

from pathlib import Path

import typer

from mtl3d.errors import UserError

app = typer.Typer(
    help="Study reports: summary.csv, tables, figures.", no_args_is_help=True, add_completion=False
)


def _fail(e: UserError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)


@app.command()
def collect(
    runs_root: Path = typer.Option(..., "--runs-root", help="results/runs/STUDY"),
    study: str = typer.Option(..., "--study", help="study name written into every row"),
    out: Path = typer.Option(..., "--out", help="summary.csv to write"),
    reference: str = typer.Option("stl", "--reference", help="variant used as the Δm reference"),
    json_out: Path | None = typer.Option(
        None, "--json", help="also write mean metrics as JSON (dvc metrics)"
    ),
    delta_out: Path | None = typer.Option(
        None, "--delta-csv", help="also write the Δm per variant (dvc plots)"
    ),
    comparisons_out: Path | None = typer.Option(
        None,
        "--comparisons",
        help="also write every host vs host+3d paired comparison (bootstrap CI, p) as CSV",
    ),
    resamples: int = typer.Option(2000, "--resamples", help="bootstrap resamples for --comparisons"),
    curves_out: Path | None = typer.Option(
        None, "--curves", help="also write every run's learning curves (train_log.csv series) as CSV"
    ),
) -> None:
    """Read every RUNS_ROOT/DATASET/VARIANT/seedK/metrics.json into one tidy summary.csv, with Δm rows."""
    from mtl3d.engine.checkpoint import atomic_write_text
    from mtl3d.reporting.collect import collect as do_collect
    from mtl3d.reporting.collect import warn, write_outputs
    from mtl3d.reporting.compare import compare_hosts

    try:
        df, warnings = do_collect(runs_root, study, reference)
        warn(warnings)
        write_outputs(df, out, json_out, delta_out)
        if comparisons_out is not None:
            comp, warnings = compare_hosts(runs_root.parent, runs_root.name, reference, resamples)
            warn(warnings)
            comparisons_out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(comparisons_out, comp.to_csv(index=False, float_format="%.6g"))
            typer.echo(f"{comparisons_out}: {len(comp)} rows")
        if curves_out is not None:
            from mtl3d.reporting.curves import write_learning_curves

            curves_out.parent.mkdir(parents=True, exist_ok=True)
            curves = write_learning_curves(runs_root, curves_out)
            typer.echo(f"{curves_out}: {len(curves)} rows")
    except UserError as e:
        _fail(e)
    n_runs = df.drop_duplicates(["dataset", "variant", "seed"]).shape[0]
    typer.echo(f"{out}: {len(df)} rows from {n_runs} runs")


@app.command()
def tables(
    summary: Path = typer.Option(..., "--summary", help="summary.csv from `mtl3d report collect`"),
    out_dir: Path = typer.Option(..., "--out-dir", help="folder for the .md and .tex tables"),
    reference: str = typer.Option("stl", "--reference"),
    reported: Path | None = typer.Option(
        None, "--reported", help="reported-numbers CSV (default: the shipped one)"
    ),
    comparisons: Path | None = typer.Option(
        None, "--comparisons", help="comparisons.csv (collect --comparisons): mark significant differences"
    ),
) -> None:
    """Markdown + LaTeX tables of a study (the results_tables notebook does the same)."""
    from mtl3d.reporting.collect import read_summary
    from mtl3d.reporting.compare import read_comparisons
    from mtl3d.reporting.reported import load_reported
    from mtl3d.reporting.tables import write_all_tables

    try:
        comp = read_comparisons(comparisons) if comparisons is not None else None
        paths = write_all_tables(read_summary(summary), out_dir, reference, load_reported(reported), comp)
    except UserError as e:
        _fail(e)
    typer.echo(f"{out_dir}: {len(paths)} files")


@app.command()
def figures(
    summary: Path = typer.Option(..., "--summary"),
    out_dir: Path = typer.Option(..., "--out-dir"),
    runs_root: Path | None = typer.Option(None, "--runs-root", help="for training curves (train_log.csv)"),
    reference: str = typer.Option("stl", "--reference"),
    comparisons: Path | None = typer.Option(
        None, "--comparisons", help="comparisons.csv (collect --comparisons): the forest plot"
    ),
) -> None:
    """PNG + PDF figures of a study: Δm, per-task gains, training curves, the regularizer's forest plot."""
    from mtl3d.reporting.collect import read_summary
    from mtl3d.reporting.compare import read_comparisons
    from mtl3d.reporting.figures import write_study_figures

    try:
        comp = read_comparisons(comparisons) if comparisons is not None else None
        paths = write_study_figures(read_summary(summary), runs_root, out_dir, reference, comp)
    except UserError as e:
        _fail(e)
    typer.echo(f"{out_dir}: {len(paths)} files")


@app.command()
def floor(
    summary: Path = typer.Option(..., "--summary", help="summary.csv from `mtl3d report collect`"),
    data_root: Path = typer.Option(..., "--data-root", help="the prepared dataset the study trained on"),
    dataset: str = typer.Option("synthrooms", "--dataset"),
    split: str = typer.Option("val", "--split", help="the study's eval split"),
) -> None:
    """Does every run beat the constant predictors (fitted on train) on every task? Exit 1 if not."""
    from mtl3d.data.registry import create_dataset
    from mtl3d.metrics.baselines import SUPPORTED, constant_baselines, runs_vs_constants
    from mtl3d.reporting.collect import read_summary

    try:
        df = read_summary(summary)
        tasks = [t for t in SUPPORTED if t in set(df[df["dataset"] == dataset]["task"])]
        train = create_dataset(dataset, data_root, "train", tasks, train=False)
        evaluation = create_dataset(dataset, data_root, split, tasks, train=False)
        table = runs_vs_constants(df, dataset, constant_baselines(train, evaluation, tasks))
    except UserError as e:
        _fail(e)
    if table.empty:
        _fail(UserError(f"no {dataset} runs with {', '.join(SUPPORTED)} in {summary}"))
    for (task, metric), sub in table.groupby(["task", "metric"], sort=False):
        failing = ", ".join(f"{r.variant} seed {r.seed}" for r in sub[~sub["beats"]].itertuples())
        typer.echo(
            f"{task:8s} {metric:6s} constant {sub['constant'].iloc[0]:.4g}; runs {sub['value'].min():.4g}"
            f"..{sub['value'].max():.4g}; {int(sub['beats'].sum())}/{len(sub)} beat it"
            + (f" (not: {failing})" if failing else "")
        )
    if not table["beats"].all():
        raise typer.Exit(1)


@app.command("check-study")
def check_study(
    files: list[Path] = typer.Argument(..., help="study files (params.yaml, config/*.yaml)"),
    schema: Path | None = typer.Option(None, "--schema", help="default: config/schema.yaml of the project"),
) -> None:
    """Validate study files against the schema (DVC does not; Snakemake does at start)."""
    from mtl3d.reporting.study import expand_runs, load_study

    for f in files:
        try:
            s = load_study(f, schema)
        except UserError as e:
            _fail(UserError(f"{f}: {e}"))
        typer.echo(f"{f}: study {s['study']!r} ok, {len(expand_runs(s))} runs")


@app.command()
def compare(
    a: str = typer.Argument(..., help="variant A (the baseline)"),
    b: str = typer.Argument(..., help="variant B; differences are B - A"),
    study: str = typer.Option(..., "--study", help="study folder under --runs-root"),
    runs_root: Path = typer.Option(
        Path("results/runs"), "--runs-root", help="holds STUDY/DATASET/VARIANT/seedK"
    ),
    dataset: str | None = typer.Option(None, "--dataset", help="needed when several datasets have A and B"),
    reference: str = typer.Option("stl", "--reference", help="variant used as the Δm reference"),
    resamples: int = typer.Option(2000, "--resamples", help="bootstrap resamples (images x paired seeds)"),
    seed: int = typer.Option(0, "--seed", help="seed of the bootstrap"),
    out: Path | None = typer.Option(None, "--out", help="also write the table as CSV"),
    figure: Path | None = typer.Option(None, "--figure", help="also write a forest plot (stem: .png + .pdf)"),
) -> None:
    """Paired B - A differences per task and for Δm, with bootstrap 95 % CIs and p-values (per_image.npz)."""
    from mtl3d.reporting.compare import compare as do_compare
    from mtl3d.reporting.compare import format_table, seed_warning
    from mtl3d.reporting.figures import forest_figure

    try:
        df = do_compare(runs_root, study, a, b, dataset, reference, resamples, seed)
    except UserError as e:
        _fail(e)
    typer.echo(format_table(df))
    if (warning := seed_warning(df)) is not None:
        typer.echo(warning)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False, float_format="%.6g")
        typer.echo(f"{out}: {len(df)} rows")
    if figure is not None:
        from mtl3d.reporting.figures import save_figure

        paths = save_figure(forest_figure(df), figure.with_suffix("") if figure.suffix else figure)
        typer.echo(f"{figure}: {len(paths)} files")


@app.command()
def publish(
    study: str = typer.Option(..., "--study", help="the study whose outputs to copy"),
    out: Path = typer.Option(..., "--out", help="folder to (re)write, e.g. docs/results/STUDY"),
    command: str = typer.Option(..., "--command", help="the command that ran the study (recorded)"),
    wall_time: str = typer.Option(..., "--wall-time", help="how long it took, e.g. '74 min 10 s' (recorded)"),
    results: Path = typer.Option(Path("results"), "--results", help="the project's results folder"),
    note: str = typer.Option("", "--note", help="anything else a reader should know (recorded)"),
) -> None:
    """Copy a finished study's small outputs (CSV, Markdown tables, PNG figures, per-run metrics and
    logs; no checkpoints) into OUT with provenance.json (command, code version, machine, date, wall time)."""
    from datetime import datetime, timezone

    from mtl3d.engine.rundir import runs_root
    from mtl3d.reporting.publish import publish as do_publish

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    info = {"study": study, "command": command, "wall_time": wall_time, "date": when, "note": note}
    try:
        written = do_publish(results / study, results.parent / runs_root(study), out, info)
    except UserError as e:
        _fail(e)
    typer.echo(f"{out}: {len(written)} files")
