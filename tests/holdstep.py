"""A training launcher that stops for good before one given step, so that a SIGKILL lands between two
checkpoints at a known step however fast the machine is (a fixed sleep after the first checkpoint
raced whole runs on a fast machine). Every rank holds; rank 0 first writes the marker file."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

_PATCH = """
import os as _os
import time as _time
from pathlib import Path as _Path

from mtl3d.engine import trainer as _trainer

_step = _trainer.Run.step


def _held_step(self, batch, step=0):
    if step == int(_os.environ["MTL3D_TEST_HOLD_AT"]):
        if _os.environ.get("RANK", "0") == "0":
            _Path(_os.environ["MTL3D_TEST_HOLD_FILE"]).write_text(str(step))
        _time.sleep(3600)
    return _step(self, batch, step)


_trainer.Run.step = _held_step
from mtl3d.cli import main

main()
"""


def write_cli(path: Path, prelude: str = "") -> Path:
    """A script that runs mtl3d's CLI (after ``prelude``) with the hold in place."""
    path.write_text(prelude + _PATCH)
    return path


def hold_env(env: dict[str, str], step: int, marker: Path) -> dict[str, str]:
    """``env`` plus the step index to stop before (0-based: steps 0..step-1 are trained)."""
    return {**env, "MTL3D_TEST_HOLD_AT": str(step), "MTL3D_TEST_HOLD_FILE": str(marker)}


def wait_for_hold(proc: subprocess.Popen, marker: Path, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), f"the run never reached its hold step (exit code {proc.poll()})"


__all__ = ["hold_env", "wait_for_hold", "write_cli"]
