"""Writing a processed dataset atomically, shared by every dataset's ``prepare``.

Files are written into ``ROOT/.tmp-*`` first; :func:`publish` then removes the previous dataset
(manifest first, so a crash never looks complete) and moves the new folders into place, manifest last.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mtl3d.errors import UserError


def dump_manifest(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, sort_keys=True, indent=1) + "\n"


def read_existing_manifest(root: Path) -> dict[str, Any]:
    """The manifest already in ``root`` ({} if missing or unreadable: it is then replaced)."""
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def clear(root: Path, data_dirs: Sequence[str]) -> None:
    """Removes what a previous run wrote (manifest first, so a crash never looks complete)."""
    (root / "manifest.json").unlink(missing_ok=True)
    for name in data_dirs:
        if (root / name).is_dir():
            shutil.rmtree(root / name)


def publish(tmp: Path, root: Path, data_dirs: Sequence[str], manifest: dict[str, Any]) -> dict[str, Any]:
    """Moves the folders written under ``tmp`` into ``root``, manifest last; returns the manifest as
    a reader will see it (JSON round trip)."""
    text = dump_manifest(manifest)
    (tmp / "manifest.json").write_text(text)
    clear(root, data_dirs)
    for name in data_dirs:
        os.replace(tmp / name, root / name)
    os.replace(tmp / "manifest.json", root / "manifest.json")
    return json.loads(text)


# ------------------------------------------------------------------------------ format, verify, repair
# The processed layout's version per dataset: a reader refuses older data (with the command that
# rewrites it) instead of reading it as if current. Raise it when the meaning of a file changes.
FORMAT_VERSIONS = {"synthrooms": 1, "nyud": 1, "pascal": 1}
# Files that a reader found damaged, one relative path a line: the next `prepare` verifies every
# checksum (not only that the files exist) and repairs what is damaged.
DAMAGED = ".damaged"


def prepare_command(manifest: dict[str, Any], root: Path, overwrite: bool = False) -> str:
    """The ``mtl3d data prepare`` command that rebuilds ``manifest``'s dataset at ``root``."""
    name = manifest.get("dataset", "DATASET")
    parts = ["mtl3d data prepare", str(name), "--root", str(root)]
    gen = manifest.get("generator") or {}
    for key in ("scenes", "views", "height", "width", "seed", "val_fraction"):
        if key in gen:
            parts += ["--" + key.replace("_", "-"), str(gen[key])]
    if manifest.get("variant"):
        parts += ["--variant", str(manifest["variant"])]
    if manifest.get("limit"):
        parts += ["--limit", str(manifest["limit"])]
    return " ".join(parts + (["--overwrite"] if overwrite else []))


def check_format(manifest: dict[str, Any], root: Path) -> None:
    """A ``UserError`` for data written in another format than this version of mtl3d reads (a manifest
    without ``format_version``, e.g. one made by hand, is taken as current)."""
    name = manifest.get("dataset")
    have, want = manifest.get("format_version"), FORMAT_VERSIONS.get(str(name))
    if have is None or want is None or have == want:
        return
    if isinstance(have, int) and have > want:
        raise UserError(
            f"{root} holds {name} data in format {have}, newer than this mtl3d reads ({want}); "
            "update mtl3d, or prepare the data again with this version into another --root"
        )
    raise UserError(
        f"{root} holds {name} data in the older format {have} (this mtl3d reads {want}); "
        f"upgrade it: {prepare_command(manifest, root, overwrite=True)}"
    )


def mark_damaged(root: Path, rel: str) -> None:
    """Notes a file that failed to read, so that the next ``prepare`` verifies the whole dataset.
    Best effort: the data may be read-only, and the reader's error names ``--verify`` anyway."""
    try:
        with open(root / DAMAGED, "a") as f:
            f.write(rel + "\n")
    except OSError:
        pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def damaged_files(root: Path, manifest: dict[str, Any], expected: Iterable[str], verify: bool) -> list[str]:
    """Relative paths that are missing, and with ``verify`` (or after a reader noted damage) those whose
    SHA-256 differs from the manifest's checksums."""
    sums = manifest.get("checksums") or {}
    verify = verify or (root / DAMAGED).is_file()
    if verify and not sums:
        raise UserError(
            f"{root}/manifest.json has no checksums (prepared by an older mtl3d), so damage cannot be "
            f"found; rebuild it: {prepare_command(manifest, root, overwrite=True)}"
        )
    files = sorted(set(expected) | set(sums))
    bad = [
        rel
        for rel in tqdm(files, desc="verify", unit="file", disable=not verify or len(files) < 1000)
        if not (root / rel).is_file() or (verify and rel in sums and _sha256(root / rel) != sums[rel])
    ]
    if not bad:
        (root / DAMAGED).unlink(missing_ok=True)
    return bad


def repair(
    root: Path, manifest: dict[str, Any], bad: Sequence[str], regenerate: Callable[[Path, list[str]], None]
) -> dict[str, Any]:
    """Rewrites only the files ``bad``: ``regenerate(tmp, bad)`` writes them (and possibly more) under
    ``tmp`` at their relative paths; each must match the manifest's checksum before it replaces the
    damaged one (atomically, one by one). Returns the manifest with ``repaired`` (not stored)."""
    sums = manifest.get("checksums") or {}
    tmp = root / f".tmp-repair-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        regenerate(tmp, list(bad))
        for rel in bad:
            new = tmp / rel
            if not new.is_file():
                raise UserError(f"cannot repair {root / rel}: it is not part of this dataset's conversion")
            if rel in sums and _sha256(new) != sums[rel]:
                raise UserError(
                    f"cannot repair {root / rel}: converting it again gives other bytes than the manifest "
                    f"records (changed source or software); rebuild: {prepare_command(manifest, root, True)}"
                )
        for rel in bad:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, root / rel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (root / DAMAGED).unlink(missing_ok=True)
    return {**manifest, "repaired": list(bad)}


def reuse_or_repair(
    root: Path,
    manifest: dict[str, Any],
    expected: Iterable[str],
    verify: bool,
    regenerate: Callable[[Path, list[str]], None],
) -> dict[str, Any]:
    """An existing dataset converted as asked: refused if in an older format, else returned as is once
    its files are there (``verify``: and intact), after repairing the damaged ones."""
    check_format(manifest, root)
    bad = damaged_files(root, manifest, expected, verify)
    return repair(root, manifest, bad, regenerate) if bad else manifest
