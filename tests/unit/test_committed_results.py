"""The study results committed under docs/results/ are what this project's code computes from the
per-run files committed beside them (summary, learning curves and every Markdown table, byte for byte),
and they say where they came from."""

from pathlib import Path

import pytest
import yaml

from mtl3d.reporting.publish import README, index_markdown, read_provenance, regenerate, same_tables

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = ["evidence"]


@pytest.mark.parametrize("study", PUBLISHED)
def test_committed_tables_regenerate_from_the_committed_runs(study: str, tmp_path: Path) -> None:
    published = REPO / "docs" / "results" / study
    spec = yaml.safe_load((REPO / "config" / f"{study}.yaml").read_text())
    info = read_provenance(published)
    assert {"command", "code_version", "machine", "date", "wall_time"} <= set(info)
    assert info["runs"] == len(spec["datasets"]) * len(spec["variants"]) * len(spec["seeds"])
    regenerated = regenerate(published, tmp_path, study, spec["reference"])
    assert same_tables(published, regenerated, tmp_path) == []
    assert (published / README).read_text() == index_markdown(info, published)


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def test_readme_quotes_the_committed_evidence() -> None:
    """The README's answer is the committed study's: each host's `+3d − host` Δm with its interval, and
    the range of the capacity controls' Δm, as the committed comparisons give them."""
    import pandas as pd

    readme = (REPO / "README.md").read_text()
    comp = pd.read_csv(REPO / "docs" / "results" / "evidence" / "comparisons.csv")
    dm = comp[comp["metric"] == "delta_m"]
    effects = dm[dm["b"] == dm["a"] + "+3d"]
    controls = dm[dm["b"] == dm["a"] + "@flat"]
    assert len(effects) == len(controls) == 4
    for r in effects.itertuples():
        assert f"{_signed(r.diff)} [{_signed(r.ci_low)}, {_signed(r.ci_high)}]" in readme, r.host
    assert f"{_signed(controls['diff'].min())} to {_signed(controls['diff'].max())}" in readme
