"""Preparing a processed dataset: one idempotent, atomic step that every dataset's ``prepare`` runs.

1. :func:`existing`: a dataset already in ``ROOT`` that was made the way it is asked for is returned as
   it is, once its missing files (with ``verify``, or after a reader noted damage: also those whose
   checksum differs from the manifest) are written again, only them; data in an older format is
   refused with the command that rewrites it; anything else in ``ROOT`` is replaced only with
   ``overwrite``.
2. :func:`write_atomically`: the files are written into ``ROOT/.tmp-*`` (removing what a killed run
   left there), then :func:`publish` removes the previous dataset (manifest first, so a crash never
   looks complete) and moves the new folders into place, manifest last.
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


# ------------------------------------------------------------------------------------------ the one step
def describe(manifest: dict[str, Any]) -> str:
    """What a manifest holds, for the message that refuses to replace it."""
    what = " ".join(str(manifest[k]) for k in ("dataset", "variant") if manifest.get(k)) or "unknown"
    if "limit" in manifest:
        what += f", limit={manifest['limit']}"
    gen = manifest.get("generator")
    if isinstance(gen, dict):
        what += ", " + ", ".join(f"{k}={v}" for k, v in gen.items())
    return what


def existing(
    name: str,
    root: Path,
    *,
    same: Callable[[dict[str, Any]], bool],
    overwrite: bool,
    verify: bool,
    regenerate: Callable[[Path, list[str]], None],
    expected: Callable[[dict[str, Any]], Iterable[str]] = lambda manifest: (),
) -> dict[str, Any] | None:
    """The dataset already in ``root`` if ``same(manifest)`` says it was made as asked (repaired where
    files are missing or damaged: see :func:`reuse_or_repair`, with ``expected(manifest)`` the files it
    must hold beside its checksums); ``None`` when a new one is to be written. A different dataset, or a
    non-empty folder without a manifest, is an error unless ``overwrite``; with ``overwrite``, the same
    dataset in an older format is rewritten."""
    if root.exists() and not root.is_dir():
        raise UserError(f"{name}: {root} exists and is not a directory; choose another --root")
    man_path = root / "manifest.json"
    if man_path.is_file():
        old = read_existing_manifest(root)
        if same(old) and (not overwrite or old.get("format_version") == FORMAT_VERSIONS.get(name)):
            return reuse_or_repair(root, old, expected(old), verify, regenerate)
        if not overwrite:
            raise UserError(
                f"{name}: {man_path} describes a different dataset ({describe(old)}); "
                "pass --overwrite to replace it"
            )
    elif root.is_dir() and any(not p.name.startswith(".tmp-") for p in root.iterdir()) and not overwrite:
        raise UserError(
            f"{name}: {root} is not empty and has no manifest.json; pass --overwrite to write there"
        )
    return None


def write_atomically(
    root: Path, data_dirs: Sequence[str], write: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """``write(tmp)`` fills the folders ``data_dirs`` (already made) under a fresh ``root/.tmp-*`` and
    returns the manifest; they are then published into ``root`` (:func:`publish`). Returns the manifest
    as a reader will see it. Whatever happens, no temporary folder is left behind."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a crashed or killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        for name in data_dirs:
            (tmp / name).mkdir(parents=True)
        return publish(tmp, root, data_dirs, write(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
