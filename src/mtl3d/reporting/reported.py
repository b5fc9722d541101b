"""Numbers the papers report, kept in one data file (``reported_numbers.csv``) with their source.

Each row is one number: ``source`` (a key of :data:`SOURCES`), the paper's ``table``, our ``dataset``
name, the task set (``tasks``), ``backbone``, ``model`` (our registry name where one exists),
``regularizer`` (the 3D-aware regularizer on), ``setting`` (empty for a paper's main comparison,
else the ablation it belongs to), ``task``/``metric`` in our names (``task == "all"``: Δm;
``task == "_run"``: ``params_M``, ``madds_G``), ``value``, ``std`` (when given), ``status`` (primary:
the source's own text; secondary: quoted by a third party; derived: computed from stated numbers)
and a ``note`` for protocol differences. Units: mIoU/maxF/odsF/F1 and Δm in %, depth RMSE in metres,
normals mean angle in degrees.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtl3d.errors import UserError

DATA_FILE = Path(__file__).with_name("reported_numbers.csv")
COLUMNS = [
    "source",
    "table",
    "dataset",
    "tasks",
    "backbone",
    "model",
    "regularizer",
    "setting",
    "task",
    "metric",
    "value",
    "std",
    "status",
    "note",
]
STATUSES = ("primary", "secondary", "derived")

SOURCES: dict[str, str] = {
    "invpt-readme": "InvPT README, github.com/prismformore/Multi-Task-Transformer (InvPT/README.md); "
    "Ye & Xu, Inverted Pyramid Multi-task Transformer, ECCV 2022",
    "taskprompter-readme": "TaskPrompter README, github.com/prismformore/Multi-Task-Transformer "
    "(TaskPrompter/README.md); Ye & Xu, ICLR 2023",
    "3daware-iclr24": "Li, McDonagh, Leonardis, Bilen, Multi-task Learning with 3D-Aware Regularization, "
    "ICLR 2024 (arXiv 2310.00986); numbers as quoted by third-party reviews of OpenReview "
    "TwBY17Hgiy (verify against the PDF)",
    "densemtl": "Lopes, Vu, de Charette, Cross-task Attention Mechanism for Dense Multi-task Learning "
    "(DenseMTL), WACV 2023, Table 2 (NYUDv2, mean±std over 3 runs)",
    "atrc-iccv21": "Bruggemann, Kanakis, Obukhov, Georgoulis, Van Gool, Exploring Relational Context for "
    "Multi-Task Dense Prediction (ATRC), ICCV 2021, Tables 1-5",
}


def load_reported(path: str | Path | None = None) -> pd.DataFrame:
    """Read and check the reported-numbers file (default: the one shipped with the package)."""
    p = Path(path) if path is not None else DATA_FILE
    if not p.is_file():
        raise UserError(f"reported numbers file not found: {p}")
    df = pd.read_csv(p, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{p}: missing columns {', '.join(missing)}")
    unknown = sorted(set(df["source"]) - set(SOURCES))
    if unknown:
        raise UserError(
            f"{p}: unknown source(s) {', '.join(unknown)}; add them to mtl3d.reporting.reported.SOURCES"
        )
    bad_status = sorted(set(df["status"]) - set(STATUSES))
    if bad_status:
        raise UserError(f"{p}: unknown status {', '.join(bad_status)}; valid: {', '.join(STATUSES)}")
    out = df.copy()
    try:
        out["value"] = out["value"].astype(float)
        out["std"] = pd.to_numeric(out["std"].replace("", None), errors="raise")
    except ValueError as e:
        raise UserError(f"{p}: a value or std is not a number ({e})") from None
    bad_reg = sorted(set(out["regularizer"]) - {"true", "false"})
    if bad_reg:
        raise UserError(f"{p}: regularizer must be true or false, got {', '.join(bad_reg)}")
    out["regularizer"] = out["regularizer"] == "true"
    return out


def main_results(reported: pd.DataFrame) -> pd.DataFrame:
    """The rows of each paper's main comparison (no ablation setting)."""
    return reported[reported["setting"] == ""]


def matching(
    reported: pd.DataFrame, dataset: str, model: str, regularizer: bool, tasks: list[str] | None = None
) -> pd.DataFrame:
    """Main-comparison rows for our (dataset, model, regularizer) setting and, if given, the same task set."""
    m = main_results(reported)
    m = m[(m["dataset"] == dataset) & (m["model"] == model) & (m["regularizer"] == bool(regularizer))]
    if tasks is not None:
        want = set(tasks)
        m = m[m["tasks"].map(lambda s: set(s.split(",")) == want)]
    return m


def source_label(row: pd.Series) -> str:
    """'reported: <source> <table>' plus the setting/backbone, for table rows."""
    label = f"reported: {row['source']} {row['table']}"
    if row.get("status") and row["status"] != "primary":
        label += f" ({row['status']})"
    return label
