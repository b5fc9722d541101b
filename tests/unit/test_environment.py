"""The locked environment: requirements.lock, pyproject.toml and environment.yml agree; `mtl3d info`."""

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from mtl3d.envinfo import collect, format_info, lock_mismatches, normalise, read_lock

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"


def _pyproject_requirements() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra if not r.startswith("mtl3d")]
    return reqs


def test_lock_pins_every_pyproject_requirement_within_its_range():
    pins = read_lock(LOCK)
    assert len(pins) > 50
    for req in _pyproject_requirements():
        name = normalise(req.name)
        assert name in pins, f"{name} is in pyproject.toml but not in the lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (name, str(req.specifier), pins[name])


def test_lock_installs_from_the_registry_only():
    """No local paths or the project itself in the lock (pip-compile writes `mtl3d @ file://<checkout>`
    for the dev extra's self-reference unless told not to): a fresh clone elsewhere must install it."""
    text = LOCK.read_text()
    assert "file://" not in text and not re.search(r"^mtl3d\b", text, re.M)


def test_environment_yml_installs_the_lock_with_the_locks_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {re.split(r"[=<>]", d)[0] for d in conda} == {"python", "pip"}  # conda adds no package of its own
    assert "-r requirements.lock" in pip and all(p.startswith(("-r", "-e")) for p in pip)
    python = next(d for d in conda if d.startswith("python")).split("=")[1]
    assert f"pip-compile with Python {python}" in LOCK.read_text()  # the lock was resolved for that Python


def test_lock_mismatches_name_each_differing_package(tmp_path):
    import torch

    lock = tmp_path / "r.lock"
    lock.write_text(f"torch=={torch.__version__}\n    # via x\nno-such-package==1.0\nPyYAML==0.0.1\n")
    pins = read_lock(lock)
    assert pins == {"torch": torch.__version__, "no-such-package": "1.0", "pyyaml": "0.0.1"}
    bad = {n: (w, h) for n, w, h in lock_mismatches(pins)}
    assert set(bad) == {"no-such-package", "pyyaml"} and bad["no-such-package"] == ("1.0", None)
    info = collect(lock)
    text = format_info(info)
    assert "2 package(s) differ" in text and "pyyaml: locked 0.0.1" in text
    assert info["torch"] == torch.__version__ and "torch_threads" in info and info["lock"]["packages"] == 3
