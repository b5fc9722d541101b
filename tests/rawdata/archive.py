"""Pack a fixture folder the way the published archives are packed: one top-level folder in a tar.gz."""

from __future__ import annotations

import tarfile
from pathlib import Path


def make_targz(folder: Path, out: Path) -> Path:
    """Write ``out`` (a .tar.gz / .tgz) holding ``folder`` as its single top-level directory."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out
