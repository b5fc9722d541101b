"""benchmarks/gpu_check.py in its CPU dry mode: the script a GPU session runs must not rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_mode_writes_its_report(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry"] is True and report["gpu_tests"]["status"] == "skipped (dry run)"
    timed = [r for r in report["throughput"] if "ms_per_step" in r]
    assert {r["host"] for r in timed} == {"MTI-Net (dry: HRNet-18s narrow)", "InvPT (dry: ViT-Ti)"}
    assert {r["regularizer"] for r in timed} == {False, True} and all(r["images_per_s"] > 0 for r in timed)
    assert set(report["synthrooms"]["beats_constant"]) == {"semseg", "depth", "normals", "edges"}
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| host | 3D reg. |" in md and "constant predictor" in md
