"""``download`` / ``verify``: each of a variant's archives present and verified, or fetched from its mirrors
in order and verified before it takes its final name; the workflow's marker file."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mtl3d.data.download.checks import _BAD_COPY, _check, _Mismatch, _verify_present
from mtl3d.data.download.lock import (
    LOCK_NAME,
    VerifiedFile,
    _check_raw_dir,
    _key,
    _read_json,
    _read_lock,
    _record,
    _write_json_atomic,
)
from mtl3d.data.download.sources import (
    FileSpec,
    SourceUnavailable,
    VariantSpec,
    VerificationError,
    _placement,
    _resolve,
)
from mtl3d.data.download.transfer import _drop_part, _gdrive_get, _http_get, _MirrorFailed, _validator_path
from mtl3d.errors import UserError

log = logging.getLogger(__name__)


def _fetch(spec: VariantSpec, f: FileSpec, raw: Path, lock: dict[str, Any], progress: bool) -> VerifiedFile:
    final = raw / f.name
    part = raw / f"{f.name}.part"
    lock_path = raw / LOCK_NAME
    failed: list[tuple[str, str]] = []
    rejected: list[str] = []
    for m in f.mirrors:
        try:
            if m.kind == "gdrive":
                _gdrive_get(m.url, part, f.size, progress)
            else:
                _http_get(m.url, part, f.size, progress)
        except _MirrorFailed as e:
            failed.append((m.url, str(e)))
            continue
        try:
            v = _check(spec, f, part, lock, lock_path, progress=progress, cache_ok=False)
        except _Mismatch as e:
            _drop_part(part)
            tail = " (if upstream really changed, delete that lock entry)" if e.against == "lock" else ""
            if e.against in _BAD_COPY:
                tail = f" (run the download again, or put a good copy at {final})"
            rejected.append(f"{e}; the download from {m.url} was removed{tail}")
            continue
        os.replace(part, final)
        _validator_path(part).unlink(missing_ok=True)
        v = VerifiedFile(v.name, final, v.size, v.sha256, v.how)
        _record(raw, lock, _key(spec, f), v, m.url)
        return v
    if rejected:
        others = "".join(f"; {url}: {why}" for url, why in failed)
        raise VerificationError("; ".join(rejected) + others)
    raise SourceUnavailable(_placement(spec, raw, failed))


def download_verified(
    dataset: str,
    variant: str | None,
    raw_dir: str | Path,
    *,
    sources: str | Path | None = None,
    progress: bool = True,
) -> list[VerifiedFile]:
    """Like :func:`download`, with each file's size and how it was verified (pinned / lock / TOFU)."""
    spec = _resolve(dataset, variant, sources)
    raw = Path(raw_dir)
    _check_raw_dir(raw)
    raw.mkdir(parents=True, exist_ok=True)
    lock = _read_lock(raw)
    out = []
    for f in spec.files:
        final = raw / f.name
        if final.exists() and not final.is_file():
            raise UserError(f"{final} is not a file; move it away so that {f.name} can be downloaded there")
        if final.is_file():
            try:
                out.append(_verify_present(spec, f, final, raw, lock, progress))
                continue
            except VerificationError as e:
                if final.exists():
                    raise  # kept (a lock mismatch): the user decides which side is right
                log.warning("%s; downloading it again", e)
        out.append(_fetch(spec, f, raw, lock, progress))
    return out


def download(
    dataset: str,
    variant: str | None,
    raw_dir: str | Path,
    *,
    sources: str | Path | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Fetch the variant's files into ``raw_dir`` (unless already there and verified): name -> sha256.

    Raises :class:`SourceUnavailable` (a :class:`UserError` whose message is the placement message)
    when no mirror delivers, and :class:`VerificationError` when what was delivered fails the checks.
    """
    files = download_verified(dataset, variant, raw_dir, sources=sources, progress=progress)
    return {v.name: v.sha256 for v in files}


def verify(
    dataset: str,
    variant: str | None,
    raw_dir: str | Path,
    *,
    sources: str | Path | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Check the variant's archives present in ``raw_dir``: read through, against the pin, else the lock,
    else record them."""
    spec = _resolve(dataset, variant, sources)
    raw = Path(raw_dir)
    _check_raw_dir(raw)
    lock = _read_lock(raw)
    return {
        f.name: _verify_present(spec, f, raw / f.name, raw, lock, progress).sha256
        for f in spec.files
        if (raw / f.name).is_file()
    }


def write_marker(
    dataset: str,
    variant: str | None,
    raw_dir: str | Path,
    files: list[VerifiedFile],
    *,
    extracted: str | Path | None = None,
    sources: str | Path | None = None,
) -> Path:
    """Write ``<raw_dir>/<variant>.verified.json`` (the download stage's output for the workflow).

    Rewritten only when its content changes, so an idempotent re-run leaves its mtime alone.
    """
    spec = _resolve(dataset, variant, sources)
    raw = Path(raw_dir)
    marker = raw / f"{spec.variant}.verified.json"
    content = {
        "dataset": spec.dataset,
        "variant": spec.variant,
        "files": {v.name: {"sha256": v.sha256, "size": v.size} for v in files},
        "top_dir": spec.top_dir,
        "extracted": extracted is not None and Path(extracted).is_dir(),
    }
    if _read_json(marker) != content:
        _write_json_atomic(marker, content)
    return marker
