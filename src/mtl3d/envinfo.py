"""``mtl3d info``: what a bug report needs (versions, torch build, CPU/GPU, and the lock file check)."""

from __future__ import annotations

import hashlib
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

LOCK_NAME = "requirements.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def default_lock() -> Path | None:
    """The lock file of the source tree this package runs from (an editable or repository install)."""
    here = Path(__file__).resolve()
    for parent in here.parents[:4]:
        if (parent / LOCK_NAME).is_file():
            return parent / LOCK_NAME
    return None


def read_lock(path: str | Path) -> dict[str, str]:
    """``{normalised name: version}`` of every ``name==version`` line of a pip-compile lock file."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[normalise(m.group(1))] = m.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_mismatches(pins: dict[str, str]) -> list[tuple[str, str, str | None]]:
    """``(name, locked, installed or None)`` for every locked package installed at another version."""
    out = []
    for name, want in sorted(pins.items()):
        try:
            have: str | None = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have is None or have.split("+")[0] != want.split("+")[0]:
            out.append((name, want, have))
    return out


def collect(lock: str | Path | None = None) -> dict[str, Any]:
    import torch

    from mtl3d._version import __version__

    info: dict[str, Any] = {
        "mtl3d": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "gpus": [
            {
                "name": torch.cuda.get_device_name(i),
                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
            }
            for i in range(torch.cuda.device_count())
        ]
        if torch.cuda.is_available()
        else [],
    }
    for pkg in ("timm", "numpy", "scipy", "safetensors", "pooch", "snakemake", "dvc"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    path = Path(lock) if lock is not None else default_lock()
    if path is None or not path.is_file():
        info["lock"] = None
    else:
        pins = read_lock(path)
        info["lock"] = {
            "path": str(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "packages": len(pins),
            "mismatches": [{"package": n, "locked": w, "installed": h} for n, w, h in lock_mismatches(pins)],
        }
    return info


def format_info(info: dict[str, Any]) -> str:
    lines = []
    for k, v in info.items():
        if k == "gpus":
            v = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in v) or "none"
        if k == "lock":
            if v is None:
                lines.append("lock: no requirements.lock found (pass --lock PATH)")
                continue
            bad = v["mismatches"]
            state = "installed versions match it" if not bad else f"{len(bad)} package(s) differ from it"
            lines.append(f"lock: {v['path']} sha256 {v['sha256'][:16]}… ({v['packages']} packages; {state})")
            lines += [f"  {m['package']}: locked {m['locked']}, installed {m['installed']}" for m in bad]
            continue
        lines.append(f"{k}: {v}")
    return "\n".join(lines)
