"""Benchmark: `mtl3d data prepare` throughput for NYUD-v2 and PASCAL-Context, in ms per image. Not a test.

The sources are the tests' exact-layout fixtures (tests/rawdata) at the real image sizes: NYUD atrc
425x560 (png images and normals, npy depth), PASCAL VOC-like sizes with LabelMap .mat files, PASCAL-Part
structs, distilled normals and saliency. Each dataset is converted in one process (workers=0) and with
a process pool; the report gives ms per image and the projected time for the full dataset.

Usage: python benchmarks/bench_prepare.py [--images 200] [--workers 0 2]

The pool rows include starting the worker processes (about 1 s in all), so they need a few hundred
images to show the speed-up a full dataset gets (at 24 images the start-up dominates).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fixture writers

from tests.rawdata.nyud import write_nyud_source  # noqa: E402
from tests.rawdata.pascal import write_pascal_source  # noqa: E402

FULL = {"nyud": 1449, "pascal": 10103}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200, help="images per dataset (train + val)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = ap.parse_args()
    # Imported here, not at the top: NYUD's pool spawns its workers, which re-import this script's
    # top level, and mtl3d.data.pascal pulls in torch (mtl3d.metrics), ~1.3 s per worker that
    # `mtl3d data prepare` never pays (its entry point imports neither).
    from mtl3d.data import nyud, pascal

    n_val = max(1, args.images // 4)
    n_train = args.images - n_val
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sources = {
            "nyud": (write_nyud_source(tmp / "nyud", "atrc", n_train=n_train, n_val=n_val), nyud),
            "pascal": (write_pascal_source(tmp / "pascal", "atrc", n_train=n_train, n_val=n_val), pascal),
        }
        for name, (src, module) in sources.items():
            for workers in args.workers:
                out = tmp / f"out-{name}-{workers}"
                t0 = time.perf_counter()
                module.convert(src, out, "atrc", workers=workers, progress=False)
                seconds = time.perf_counter() - t0
                ms = 1000 * seconds / args.images
                rows.append((name, workers, ms, FULL[name] * ms / 1000 / 60))
                shutil.rmtree(out)
    print(f"| dataset | workers | ms/image | projected full dataset (min) |  ({args.images} images each)")
    print("|---|---|---|---|")
    for name, workers, ms, minutes in rows:
        print(f"| {name} | {workers} | {ms:.0f} | {minutes:.1f} |")


if __name__ == "__main__":
    main()
