"""SynthRooms generation speed: views/s of ``prepare`` (render + PNG/npy writing + hashing) on one thread.

Usage: ``python benchmarks/bench_synthrooms.py [--scenes 40] [--views 3] [--height 96] [--width 128]
[--no-shadows] [--profile]``. Target: >= 100 views/s at 96x128 on one core.
"""

from __future__ import annotations

import os

# One thread for every numerical library, set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from mtl3d.data.synthrooms import prepare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--views", type=int, default=3)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--no-shadows", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print the top functions by own time")
    ap.add_argument("--dir", default=None, help="where the temporary dataset goes (default: system temp)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        kwargs = dict(
            scenes=args.scenes,
            views=args.views,
            height=args.height,
            width=args.width,
            shadows=not args.no_shadows,
            progress=False,
        )
        prepare(Path(tmp) / "warmup", scenes=1, views=1, height=args.height, width=args.width, progress=False)
        prof = cProfile.Profile() if args.profile else None
        start, cpu_start = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        prepare(Path(tmp) / "bench", **kwargs)
        if prof:
            prof.disable()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    n = args.scenes * args.views
    shadows = "off" if args.no_shadows else "on"
    # CPU time is reported too: on a loaded machine wall time also counts other processes' turns.
    print(
        f"synthrooms {args.height}x{args.width}, shadows={shadows}: {n} views in {elapsed:.2f} s wall = "
        f"{n / elapsed:.1f} views/s; {cpu:.2f} s CPU = {n / cpu:.1f} views/s per core "
        "(1 thread, including writing)"
    )
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
