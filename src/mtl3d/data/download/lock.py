"""The lock file ``raw_dir/mtl3d-sources.lock.json``: the hash of every archive that passed all checks
(pinned, or recorded on first use), with its size and mtime, so that an unchanged file is not hashed again."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtl3d.data.download.sources import FileSpec, VariantSpec
from mtl3d.errors import UserError
from mtl3d.io import atomic_write_text

LOCK_NAME = "mtl3d-sources.lock.json"
TOFU = "recorded (trust on first use)"


@dataclass(frozen=True)
class VerifiedFile:
    name: str
    path: Path
    size: int
    sha256: str
    how: str  # "pinned" | "lock" | TOFU


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Lock and marker files: sorted keys (stable diffs), written atomically with the user's umask."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_raw_dir(raw: Path) -> None:
    """The archive folder, or the nearest part of its path that exists, must be a folder."""
    for p in (raw, *raw.absolute().parents):
        if p.exists():
            if not p.is_dir():
                what = "is" if p == raw else f"lies under {p}, which is"
                raise UserError(f"the archive folder {raw} {what} a file, not a folder; pass --raw FOLDER")
            return


def _read_lock(raw: Path) -> dict[str, Any]:
    path = raw / LOCK_NAME
    if not path.exists():
        return {"version": 1, "files": {}}
    lock = _read_json(path)
    if not isinstance(lock, dict) or not isinstance(lock.get("files"), dict):
        raise UserError(f"{path} is not a valid lock file; fix it or delete it (hashes are then re-recorded)")
    return lock


def _key(spec: VariantSpec, f: FileSpec) -> str:
    return f"{spec.dataset}/{spec.variant}/{f.name}"


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record(raw: Path, lock: dict[str, Any], key: str, v: VerifiedFile, url: str | None) -> None:
    """Remember a verified file in the lock (its hash, and its size+mtime so the next call needn't hash)."""
    old = lock["files"].get(key)
    st = v.path.stat()
    if old and old.get("sha256") == v.sha256:
        new = {**old, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "read_to_end": True}
    else:
        new = {
            "sha256": v.sha256,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "url": url,  # None: placed by hand
            "recorded": _utc_now(),
            "pinned": v.how == "pinned",
            "read_to_end": True,  # recorded only after the whole archive was read and checked
        }
    if new != old:
        lock["files"][key] = new
        _write_json_atomic(raw / LOCK_NAME, lock)
