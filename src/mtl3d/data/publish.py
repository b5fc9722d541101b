"""Writing a processed dataset atomically, shared by every dataset's ``prepare``.

Files are written into ``ROOT/.tmp-*`` first; :func:`publish` then removes the previous dataset
(manifest first, so a crash never looks complete) and moves the new folders into place, manifest last.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
