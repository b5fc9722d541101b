"""Docs, docstrings, comments and recipes cite only what a fresh clone has.

The project was written from private working notes that are not part of the repository. A reference
to one of them ("see host-models.md §3") sends the reader to a file they cannot open, so every fact a
reader needs lives in docs/ or cites the paper or the public repository it comes from.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".smk", ".ipynb", ".toml", ".json"}
NAMES = {"Snakefile", "Makefile"}
# The private notes' and design document's file names, their folder, and the "notes §3.3" /
# "notes C.4" way of citing them.
PRIVATE = re.compile(
    r"host-models|method-specs|anchors-data-eval|dataset-sources|compendium-conventions|cvm-spec"
    r"|\bhouse\.md|\bDESIGN\.md|shared/notes|\bnotes/|\bnotes\s*(?:§|[A-D]\.\d)",
    re.IGNORECASE,
)


def _text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        paths = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # an unpacked archive, not a clone
        skip = {".git", ".venv", "node_modules", "build", "dist"}
        paths = [p for p in ROOT.rglob("*") if not skip.intersection(p.relative_to(ROOT).parts)]
    return [p for p in paths if p.is_file() and (p.suffix in SUFFIXES or p.name in NAMES)]


def test_the_scan_sees_the_repository():
    files = {p.relative_to(ROOT).as_posix() for p in _text_files()}
    assert {"docs/models.md", "src/mtl3d/models/invpt.py", "config/recipes/nyud/invpt.yaml"} <= files


def test_no_reference_to_notes_outside_the_repository():
    me = Path(__file__).resolve()
    hits = []
    for path in _text_files():
        if path.resolve() == me:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if PRIVATE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not hits, "references to notes a fresh clone does not have:\n" + "\n".join(hits)


def test_models_doc_lists_each_models_default_backbone() -> None:
    """docs/models.md's default-backbone table says what the registry declares, for every model."""

    from mtl3d.models import list_models
    from mtl3d.models.registry import default_backbone

    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    documented = {}
    for backbone, models in re.findall(r"^\| `([a-z0-9_]+)` \| ((?:`[a-z0-9_]+`(?:, )?)+) \|", text, re.M):
        for name in re.findall(r"`([a-z0-9_]+)`", models):
            documented[name] = backbone
    assert documented == {name: default_backbone(name) for name in list_models()}
