"""NYUD-v2 and PASCAL-Context end to end on tiny copies of their archives (built by the tests):
a local HTTP server plays the mirror, then Snakemake runs download -> prepare -> train -> evaluate ->
collect -> tables exactly as for the real data, and the results say which dataset variant they used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.httpserver import LocalHTTPServer
from tests.integration.test_pipeline import BIN, copy_pipeline, env, run, snakemake
from tests.rawdata.archive import make_targz
from tests.rawdata.nyud import write_nyud_source
from tests.rawdata.pascal import write_pascal_source

# The archives, as the sources file names them (atrc variants), and each dataset's tiny study.
CASES = {
    "nyud": {
        "archive": "NYUDv2.tar.gz",
        "write": lambda parent: write_nyud_source(parent, "atrc", n_train=3, n_val=2),
        "tasks": "semseg,depth,normals,edges",
        # 425x560 images resized for speed (the survey's FixedResize); scored at 425x560
        "recipe": {"data": {"height": 64, "width": 80}},
    },
    "pascal": {
        "archive": "PASCALContext.tar.gz",
        # VOC-like aspect ratios, small for speed: the variable sizes are what matters here
        "write": lambda parent: write_pascal_source(
            parent, "atrc", n_train=3, n_val=2, sizes=[(90, 120), (120, 90), (96, 128), (75, 100), (110, 80)]
        ),
        "tasks": "semseg,human_parts,saliency,normals,edges",
        # images of several sizes: padded to one size as InvPT/ATRC do, scored at each original size
        "recipe": {"data": {"height": 128, "width": 128, "resize_mode": "pad", "scale_range": [0.5, 1.5]}},
    },
}


def _sources(dataset: str, url: str) -> dict:
    """A sources file like the packaged one, whose only mirror is the local server."""
    from mtl3d.data.download import variant_spec

    spec = variant_spec(dataset, "atrc")
    return {
        "version": 1,
        "datasets": {
            dataset: {
                "default": "atrc",
                "variants": {
                    "atrc": {
                        "description": spec.description,
                        "image_size": list(spec.image_size) if spec.image_size else None,
                        "top_dir": spec.top_dir,
                        "required": list(spec.required),
                        "files": [
                            {
                                "name": CASES[dataset]["archive"],
                                "size": None,
                                "sha256": None,
                                "reported_sha256": None,
                                "mirrors": [{"url": url, "kind": "http"}],
                            }
                        ],
                    }
                },
            }
        },
    }


@pytest.mark.parametrize("dataset", list(CASES))
def test_study_from_download_to_tables(dataset: str, tmp_path: Path) -> None:
    case = CASES[dataset]
    work = copy_pipeline(tmp_path / "p")
    served = tmp_path / "mirror"
    make_targz(case["write"](tmp_path / "src"), served / case["archive"])
    recipe = work / "config" / f"tiny-{dataset}.yaml"
    recipe.write_text(yaml.safe_dump(case["recipe"]))
    study = {
        "study": f"tiny-{dataset}",
        "seeds": [0],
        "reference": "mtl",  # Δm against mtl: one run fewer than an STL reference
        "eval_split": "val",
        "datasets": [
            {
                "name": dataset,
                "data_dir": dataset,
                "download": {"variant": "atrc"},
                "prepare": {"variant": "atrc", "workers": 0},
                "train": {
                    "backbone": "resnet18",
                    "tasks": case["tasks"],
                    "iters": 2,
                    "batch-size": 2,
                    "config": f"config/tiny-{dataset}.yaml",
                },
            }
        ],
        "variants": [
            {"name": "mtl", "args": {"model": "mtl", "regularizer": False}},
            {"name": "mtl+3d", "args": {"model": "mtl", "regularizer": True}},
        ],
        "search_seeds": [0],
        "searches": [],
        "searched_variants": [],
    }
    (work / "config" / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    with LocalHTTPServer(served) as server:
        sources = tmp_path / "sources.yaml"
        sources.write_text(yaml.safe_dump(_sources(dataset, server.url(case["archive"]))))
        e = env()
        e["MTL3D_SOURCES"] = str(sources)
        targets = [
            f"results/tiny-{dataset}/summary.csv",
            f"results/tiny-{dataset}/notebooks/results_tables.ipynb",
        ]
        run(snakemake(*targets, "--cores", "2", "--configfile", "config/study.yaml"), work, env=e)
        assert [r.path for r in server.requests if r.method == "GET"] == [case["archive"]]

    # the download stage recorded the archive's hash (trust on first use) and extracted it
    marker = json.loads((work / "data/raw/.verified" / f"{dataset}.json").read_text())
    assert marker["variant"] == "atrc" and case["archive"] in marker["files"]
    lock = json.loads((work / "data/raw" / dataset / "mtl3d-sources.lock.json").read_text())
    assert any(k.endswith(case["archive"]) for k in lock["files"])
    manifest = json.loads((work / "data/processed" / dataset / "manifest.json").read_text())
    assert manifest["dataset"] == dataset and manifest["variant"] == "atrc"
    assert manifest["source"]["sha256"] == marker["files"][case["archive"]]["sha256"]

    # every run scored every task at the images' original resolution and names the data variant
    for variant in ("mtl", "mtl+3d"):
        m = json.loads(
            (work / f"results/runs/tiny-{dataset}/{dataset}/{variant}/seed0/metrics.json").read_text()
        )
        assert m["run"]["dataset_variant"] == "atrc"
        assert m["eval_resolution"] == "original"
        assert set(m["metrics"]) == set(case["tasks"].split(","))
    summary = pd.read_csv(work / f"results/tiny-{dataset}/summary.csv")
    assert set(summary["variant"]) == {"mtl", "mtl+3d"}
    assert summary["value"].notna().any()
    tables = work / f"results/tiny-{dataset}/tables"
    paper = (tables / f"{dataset}_paper.md").read_text()
    assert "reported: 3daware-iclr24" in paper and "InvPT" in paper


def test_offline_download_says_what_to_place_where(tmp_path: Path) -> None:
    """With no mirror reachable the download stage fails with the placement instructions."""
    sources = tmp_path / "sources.yaml"
    spec = _sources("nyud", "http://127.0.0.1:9/NYUDv2.tar.gz")  # port 9: nothing listens
    sources.write_text(yaml.safe_dump(spec))
    p = run(
        [
            str(BIN / "mtl3d"),
            "data",
            "download",
            "nyud",
            "--raw",
            str(tmp_path / "raw"),
            "--sources",
            str(sources),
        ],
        tmp_path,
        check=False,
    )
    assert p.returncode == 1
    assert "NYUDv2.tar.gz" in p.stderr and str(tmp_path / "raw" / "NYUDv2.tar.gz") in p.stderr
    assert "mtl3d data prepare nyud" in p.stderr
