"""The extracted folder a variant's ``prepare`` reads: used as it is (checked), or extracted from the
verified archive, or a message that says where to put a copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtl3d.data.download.checks import _verify_present
from mtl3d.data.download.extract import safe_extract
from mtl3d.data.download.lock import _check_raw_dir, _read_json, _read_lock, _utc_now, _write_json_atomic
from mtl3d.data.download.sources import SourceUnavailable, VariantSpec, _next_step, _placement, _resolve
from mtl3d.errors import UserError


def _missing(spec: VariantSpec, top: Path) -> list[str]:
    missing = []
    for entry in spec.required:
        p = top / entry.rstrip("/")
        if not (p.is_dir() if entry.endswith("/") else p.is_file()):
            missing.append(entry)
    return missing


def _require(spec: VariantSpec, top: Path, hint: str) -> None:
    missing = _missing(spec, top)
    if missing:
        raise UserError(f"{top} is missing {', '.join(missing)} ({spec.dataset} {spec.variant}); {hint}")


def source_dir(
    dataset: str,
    variant: str | None,
    raw_dir: str | Path,
    *,
    sources: str | Path | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """The extracted top folder of the variant's data, and what to record about it in a manifest.

    Uses ``<raw_dir>/<top_dir>/`` if it exists (checking the archive too when present), else verifies
    and extracts the archive, else raises :class:`SourceUnavailable` with the placement message.
    """
    spec = _resolve(dataset, variant, sources)
    raw = Path(raw_dir)
    top = raw / spec.top_dir
    archive = spec.files[0]  # a variant is one archive; more files would be side data
    apath = raw / archive.name
    record = raw / f"{spec.top_dir}.extracted.json"
    info: dict[str, Any] = {
        "dataset": spec.dataset,
        "variant": spec.variant,
        "top_dir": spec.top_dir,
        "archive": None,
        "sha256": None,
        "extracted_by_user": True,
    }
    _check_raw_dir(raw)
    if top.is_dir():
        if apath.is_file():
            # The archive first: only a verified one (which holds every required entry) can fix the folder.
            v = _verify_present(spec, archive, apath, raw, _read_lock(raw), progress)
            info.update(archive=archive.name, sha256=v.sha256)
            hint = f"delete the folder to extract {archive.name} (which has them all) again"
        else:
            hint = f"complete it from {archive.name}, or delete it and {_next_step(spec, raw)}"
        _require(spec, top, hint)
        rec = _read_json(record)
        if (
            isinstance(rec, dict)
            and rec.get("archive") == archive.name
            and info["sha256"] in (None, rec.get("sha256"))
        ):
            # We extracted it ourselves from a verified archive (which may since have been deleted).
            info.update(archive=archive.name, sha256=rec.get("sha256"), extracted_by_user=False)
        return top, info
    if apath.is_file():
        v = _verify_present(spec, archive, apath, raw, _read_lock(raw), progress)
        safe_extract(apath, raw, expected_top=spec.top_dir)
        _write_json_atomic(record, {"archive": archive.name, "sha256": v.sha256, "extracted": _utc_now()})
        _require(spec, top, f"{archive.name} does not have the expected layout")
        info.update(archive=archive.name, sha256=v.sha256, extracted_by_user=False)
        return top, info
    raise SourceUnavailable(_placement(spec, raw, None))
