"""benchmarks/gpu_check.py in its CPU dry mode: the script a GPU session runs must not rot, and says fail."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _gpu_check(monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_dry_mode_emulates_the_cuda_path_and_writes_its_report(tmp_path: Path) -> None:
    p = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_check.py"),
            "--dry",
            "--models",
            "mtl",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry"] is True and report["failed"] == 0
    rows = report["emulation"]
    assert [(r["model"], r["regularizer"]) for r in rows] == [("mtl", False), ("mtl", True)]
    assert all(r["status"] == "ok" and r["graphs"] == 1 and r["syncs"] <= 1 for r in rows)
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| model | 3D reg. | bf16 vs fp32" in md and "0 failed" in md


def test_a_failing_model_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mtl3d.engine.emulate as emulate

    def broken(name, *args, **kwargs):
        raise RuntimeError("view size is not compatible with input tensor's size and stride")

    monkeypatch.setattr(emulate, "check_cuda_path", broken)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--dry", "--models", "invpt", "--out", str(tmp_path)])
    assert _gpu_check(monkeypatch).main() == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["failed"] == 2 and all(
        r["status"].startswith("failed: RuntimeError") for r in report["emulation"]
    )
    assert "2 failed" in (tmp_path / "gpu_check.md").read_text()


def test_unknown_model_is_a_one_line_error(tmp_path: Path) -> None:
    p = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "gpu_check.py"),
            "--dry",
            "--models",
            "nope",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "unknown model(s) ['nope']; valid: " in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_rehearsal_runs_the_gpu_modes_code_on_a_cpu(tmp_path: Path) -> None:
    """Every part of the GPU mode but the gpu tests and the long run, at tiny sizes: throughput rows
    (bf16/fp32 ± regularizer at the paper-scale settings, compiled), the loader, resume after a kill."""
    p = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--rehearse", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["throughput"]
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in rows)
    combos = {(r["regularizer"], r["precision"], r["compile"]) for r in rows}
    assert combos == {(g, p, False) for g in (True, False) for p in ("bf16", "fp32")} | {(True, "bf16", True)}
    assert all("eval_images_per_s" in r for r in rows if r["precision"] == "bf16" and not r["compile"])
    assert report["loader"]["status"] == "ok" and report["loader"]["images_per_s"] > 0
    assert report["resume"] == {"killed_at_step": 2, "max_abs_weight_diff": 0.0, "status": "ok"}
