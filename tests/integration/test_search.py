"""ATRC through the command line: two searches -> vote -> retrain from the voted genotype -> evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mtl3d.models.atrc.contexts import CONTEXTS
from tests.fakedata import make_fake_dataset

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SMALL = ["--backbone", "resnet10t", "--batch-size", "2", "--set", "model.options.widths=[4,4,8,8]", "--quiet"]


def mtl3d(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mtl3d.cli", *args], env=ENV, capture_output=True, text=True)


def test_search_vote_retrain_evaluate(tmp_path):
    root = str(make_fake_dataset(tmp_path / "data"))
    searched = []
    for seed in (0, 1):
        out = tmp_path / f"search{seed}"
        r = mtl3d(
            "search",
            "atrc",
            "--data-root",
            root,
            "--iters",
            "6",
            "--seed",
            str(seed),
            "--out",
            str(out),
            *SMALL,
        )
        assert r.returncode == 0, r.stderr
        g = json.loads((out / "genotype.json").read_text())
        assert g["step"] == 6 and set(g["genotype"]) == {"semseg", "depth", "normals", "edges"}
        assert all(c in CONTEXTS for row in g["genotype"].values() for c in row.values())
        # the α probabilities behind each choice are recorded; the diagonal has no S-label candidate
        assert set(g["probabilities"]["depth"]["depth"]) == {"none", "global", "local", "tlabel"}
        log = (out / "train_log.csv").read_text().splitlines()[0]
        assert "loss/search/entropy" in log and "loss/ds/label/depth" in log
        searched.append(str(out / "genotype.json"))
    voted = tmp_path / "atrc.json"
    r = mtl3d("search", "vote", "--out", str(voted), *searched)
    assert r.returncode == 0, r.stderr
    assert json.loads(voted.read_text())["searches"] == 2

    run = tmp_path / "run"
    r = mtl3d(
        "train", "--model", "atrc", "--data-root", root, "--iters", "2", "--regularizer",
        "--set", f"model.genotype={voted}", "--out", str(run), *SMALL,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = mtl3d("evaluate", str(run), "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "metrics.json").read_text())["metrics"].keys() == {
        "semseg",
        "depth",
        "normals",
        "edges",
    }


def test_search_errors_are_one_line(tmp_path):
    root = str(make_fake_dataset(tmp_path / "data"))
    r = mtl3d("search", "atrc", "--data-root", root, "--regularizer", "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "No such option" in r.stderr  # the search has no regularizer flag
    t = tmp_path / "t"
    r = mtl3d(
        "train",
        "--model",
        "atrc",
        "--data-root",
        root,
        "--set",
        "model.genotype=nope",
        "--out",
        str(t),
        *SMALL,
    )
    assert r.returncode == 2 and "'nope' is neither a file nor a known name" in r.stderr
    assert "Traceback" not in r.stderr and not t.exists()
    r = mtl3d("search", "vote", "--out", str(tmp_path / "v.json"), str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "neither a file nor a known name" in r.stderr
