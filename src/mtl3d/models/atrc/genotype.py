"""ATRC genotypes: which context type every (target, source) CP block uses.

Our JSON format (context names, ``mtl3d-atrc-genotype/1``) or the released code's (``{"data": {t: {s:
code}}}``); the genotypes published with ATRC ship in ``mtl3d/models/genotypes/``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from mtl3d.errors import UserError, unknown_name
from mtl3d.models.atrc.contexts import CONTEXTS

PUBLISHED_GENOTYPES = ("nyud_hrnet18", "nyud_hrnet48", "pascal_hrnet18")
# Without a genotype, ATRC takes the first of these published ones that covers its tasks (NYUD's tasks,
# which SynthRooms shares, or PASCAL's), so `mtl3d train --model atrc` needs no search first.
DEFAULT_GENOTYPES = ("nyud_hrnet18", "pascal_hrnet18")
GENOTYPE_FORMAT = "mtl3d-atrc-genotype/1"
# The released code's task names -> ours.
_CODE_TASK_NAMES = {"edge": "edges", "sal": "saliency"}

Genotype = dict[str, dict[str, str]]  # target -> source -> context


def _genotype_dir() -> Any:
    return resources.files("mtl3d.models") / "genotypes"


def uniform_genotype(tasks: list[str], kind: str) -> Genotype:
    """Every CP block of one type (ATRC Table 1's single-context rows); S-label on the diagonal is T-label."""
    if kind not in CONTEXTS:
        raise unknown_name("context", kind, CONTEXTS)
    return {t: {s: ("tlabel" if kind == "slabel" and s == t else kind) for s in tasks} for t in tasks}


def parse_genotype(data: Mapping[str, Any], where: str) -> Genotype:
    """Our JSON format (context names) or the released code's (``{"data": {t: {s: code}}}``)."""
    grid = data.get("genotype", data.get("data"))
    if not isinstance(grid, Mapping):
        raise UserError(f"{where}: not an ATRC genotype (no 'genotype' mapping)")
    out: Genotype = {}
    for t, row in grid.items():
        if not isinstance(row, Mapping):
            raise UserError(f"{where}: row {t!r} is not a mapping")
        tt = _CODE_TASK_NAMES.get(t, t)
        out[tt] = {}
        for s, c in row.items():
            name = CONTEXTS[c] if isinstance(c, int) and 0 <= c < len(CONTEXTS) else c
            if name not in CONTEXTS:
                raise UserError(f"{where}: {t}<-{s} is {c!r}; valid: {', '.join(CONTEXTS)} (or codes 0-4)")
            out[tt][_CODE_TASK_NAMES.get(s, s)] = name
    return out


def load_genotype(spec: str, tasks: list[str]) -> Genotype:
    """A genotype by file path, shipped name (``nyud_hrnet18``, …) or uniform context (``tlabel``, …),
    restricted to ``tasks``."""
    if spec in CONTEXTS:
        return uniform_genotype(tasks, spec)
    if spec in PUBLISHED_GENOTYPES:
        where = f"published genotype {spec}"
        data = json.loads((_genotype_dir() / f"atrc_{spec}.json").read_text())
    else:
        path = Path(spec)
        where = str(path)
        if not path.is_file():
            raise UserError(
                f"genotype {spec!r} is neither a file nor a known name; valid names: "
                f"{', '.join(PUBLISHED_GENOTYPES + CONTEXTS)} (or the genotype.json of `mtl3d search atrc`)"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
    grid = parse_genotype(data, where)
    missing = [(t, s) for t in tasks for s in tasks if s not in grid.get(t, {})]
    if missing:
        t, s = missing[0]
        raise UserError(f"{where} has no block {t}<-{s}; it covers tasks {', '.join(grid)}")
    return {t: {s: grid[t][s] for s in tasks} for t in tasks}


def default_genotype(tasks: list[str]) -> Genotype:
    """The first of :data:`DEFAULT_GENOTYPES` that covers ``tasks``; none covering them is an error."""
    for name in DEFAULT_GENOTYPES:
        with contextlib.suppress(UserError):
            return load_genotype(name, tasks)
    raise UserError(
        f"atrc needs a genotype for tasks {', '.join(tasks)} (no published one covers them): "
        "--set model.genotype=FILE (from `mtl3d search atrc`) or one of "
        f"{', '.join(PUBLISHED_GENOTYPES + CONTEXTS)}"
    )


def genotype_json(genotype: Genotype, **extra: Any) -> str:
    return json.dumps(
        {"format": GENOTYPE_FORMAT, "tasks": list(genotype), "genotype": genotype, **extra}, indent=2
    )
