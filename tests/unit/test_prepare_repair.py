"""Preparing data: repair means repair, old formats are refused, pools end their workers."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mtl3d.cli import main
from mtl3d.data import nyud, pascal
from mtl3d.data import synthrooms as sr
from mtl3d.data.folder import open_dataset
from mtl3d.errors import UserError
from tests.rawdata import nyud as raw_nyud
from tests.rawdata import pascal as raw_pascal

KW = {"scenes": 2, "views": 2, "height": 8, "width": 12, "val_fraction": 0.5, "progress": False}
OPTS = ["--scenes", "2", "--views", "2", "--height", "8", "--width", "12", "--val-fraction", "0.5"]


def _cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mtl3d", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != ".damaged"}


def test_a_damaged_file_found_by_a_reader_is_repaired_by_prepare(monkeypatch, capsys, tmp_path):
    root = tmp_path / "sr"
    sr.prepare(root, **KW)
    good = (root / "images" / "s00001_v0.png").read_bytes()
    (root / "images" / "s00001_v0.png").write_bytes(good[:40])  # truncated PNG
    ds = (
        open_dataset(root, "train")
        if "s00001_v0" in open_dataset(root, "train").ids
        else open_dataset(root, "val")
    )
    with pytest.raises(
        UserError,
        match=r"corrupt image file .*s00001_v0.png .*mtl3d data prepare synthrooms "
        r"--root .* --verify",
    ):
        ds.load_arrays("s00001_v0")
    before = _mtimes(root)
    time.sleep(0.01)
    # the same settings, no --verify: the reader's note makes prepare verify, and it repairs that file only
    code, out, err = _cli(monkeypatch, capsys, "data", "prepare", "synthrooms", "--root", str(root), *OPTS)
    assert code == 0, err
    assert "repaired 1 damaged or missing files: images/s00001_v0.png" in out
    assert (root / "images" / "s00001_v0.png").read_bytes() == good
    after = _mtimes(root)
    changed = sorted(p.relative_to(root).as_posix() for p in after if after[p] != before.get(p))
    assert changed == ["images/s00001_v0.png"]
    assert not (root / ".damaged").exists() and sr.verify(root) == []


def test_verify_finds_silent_damage_and_repairs_only_it(monkeypatch, capsys, tmp_path):
    root = tmp_path / "sr"
    sr.prepare(root, **KW)
    depth = root / "depth" / "s00000_v1.npy"
    good = depth.read_bytes()
    depth.write_bytes(good[:-4] + b"\0\0\0\0")  # still a valid .npy: no reader notices
    split = root / "splits" / "train.txt"
    good_split = split.read_bytes()
    split.write_bytes(b"")
    code, out, _ = _cli(monkeypatch, capsys, "data", "prepare", "synthrooms", "--root", str(root), *OPTS)
    assert code == 0 and "repaired" not in out  # without --verify: existence only
    code, out, err = _cli(
        monkeypatch, capsys, "data", "prepare", "synthrooms", "--root", str(root), *OPTS, "--verify"
    )
    assert code == 0, err
    assert "repaired 2 damaged or missing files: depth/s00000_v1.npy, splits/train.txt" in out
    assert depth.read_bytes() == good and split.read_bytes() == good_split
    # a missing file is repaired without --verify
    (root / "edges" / "s00001_v1.png").unlink()
    code, out, _ = _cli(monkeypatch, capsys, "data", "prepare", "synthrooms", "--root", str(root), *OPTS)
    assert "repaired 1 damaged or missing files: edges/s00001_v1.png" in out and sr.verify(root) == []


def test_nyud_repair_reconverts_only_the_damaged_view(tmp_path):
    src = raw_nyud.write_nyud_source(tmp_path / "raw", "atrc", n_train=2, n_val=1)
    root = tmp_path / "out"
    man = nyud.convert(src, root, "atrc", workers=0, progress=False)
    rel = next(r for r in man["checksums"] if r.startswith("depth/"))
    good = (root / rel).read_bytes()
    (root / rel).write_bytes(good[:100])
    assert "repaired" not in nyud.convert(src, root, "atrc", workers=0, progress=False)  # no verify
    again = nyud.convert(src, root, "atrc", workers=0, progress=False, verify=True)
    assert again["repaired"] == [rel] and (root / rel).read_bytes() == good


def test_pascal_manifest_has_checksums_and_repairs(tmp_path):
    src = raw_pascal.write_pascal_source(tmp_path / "raw", "atrc", 2, 1)
    root = tmp_path / "out"
    man = pascal.convert(src, root, "atrc", workers=0, progress=False)
    assert set(man["checksums"]) == {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"
    }
    rel = next(r for r in man["checksums"] if r.startswith("saliency/"))
    good = (root / rel).read_bytes()
    (root / rel).write_bytes(b"garbage")
    again = pascal.convert(src, root, "atrc", workers=0, progress=False, verify=True)
    assert again["repaired"] == [rel] and (root / rel).read_bytes() == good


def test_older_format_is_refused_with_the_upgrade_command(monkeypatch, capsys, tmp_path):
    root = tmp_path / "sr"
    sr.prepare(root, **KW)
    man = json.loads((root / "manifest.json").read_text())
    man["format_version"] = 0
    (root / "manifest.json").write_text(json.dumps(man))
    upgrade = (
        f"mtl3d data prepare synthrooms --root {root} --scenes 2 --views 2 --height 8 --width 12 --seed 0"
    )
    with pytest.raises(UserError, match="older format 0") as e:
        open_dataset(root, "train")
    assert f"upgrade it: {upgrade} --val-fraction 0.5 --overwrite" in str(e.value)
    code, _, err = _cli(monkeypatch, capsys, "data", "prepare", "synthrooms", "--root", str(root), *OPTS)
    assert code == 2 and "older format 0" in err and "--overwrite" in err
    code, _, err = _cli(
        monkeypatch, capsys, "data", "prepare", "synthrooms", "--root", str(root), *OPTS, "--overwrite"
    )
    assert code == 0, err
    assert json.loads((root / "manifest.json").read_text())["format_version"] == sr.FORMAT_VERSION
    man["format_version"] = sr.FORMAT_VERSION + 1
    (root / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(UserError, match="newer than this mtl3d reads"):
        open_dataset(root, "train")


def test_messages_name_the_overwrite_flag(monkeypatch, capsys, tmp_path):
    root = tmp_path / "sr"
    sr.prepare(root, **KW)
    code, _, err = _cli(
        monkeypatch, capsys, "data", "prepare", "synthrooms", "--root", str(root), *OPTS, "--seed", "3"
    )
    assert code == 2 and "pass --overwrite" in err and "overwrite=True" not in err
    src = raw_pascal.write_pascal_source(tmp_path / "raw", "atrc", 1, 1)
    with pytest.raises(UserError) as e:
        pascal.convert(src, root, "atrc", workers=0, progress=False)
    assert "pass --overwrite" in str(e.value) and "overwrite=True" not in str(e.value)


def _die(x):
    os._exit(3)


def test_a_dead_worker_is_one_line_with_the_way_round(tmp_path):
    from mtl3d.workers import WorkerPool

    msg = r"^test pool: a worker process died \(.*\); use --workers 0$"
    with pytest.raises(UserError, match=msg), WorkerPool(2, "test pool", "use --workers 0") as pool:
        pool.result(pool.submit(_die, 1))


_POOL_SCRIPT = """
import sys, time
from mtl3d.workers import WorkerPool
from mtl3d.cli import main
from mtl3d.errors import Terminated
pool = WorkerPool(2, "test", "none")
futs = [pool.submit(time.sleep, 60) for _ in range(2)]
time.sleep(1.0)
try:  # the test signals as soon as it reads the line: the handler may run before print returns
    print(" ".join(str(p) for p in pool._pool._processes), flush=True)
    pool.result(futs[0])
except Terminated as e:
    sys.exit(128 + e.signum)
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _session(sid):
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(d.name))
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_the_pool_workers(sig):
    p = subprocess.Popen(
        [sys.executable, "-c", _POOL_SCRIPT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        workers = [int(x) for x in p.stdout.readline().split()]
        assert len(workers) == 2
        p.send_signal(sig)
        assert p.wait(20) == 128 + sig
        deadline = time.time() + 10
        while any(map(_alive, workers)) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers))
    finally:
        for pid in _session(p.pid):
            os.kill(pid, signal.SIGKILL)


_HOLD = """
import os, time
from pathlib import Path
if os.environ.get("MTL3D_TEST_HOLD_CONVERT"):
    import mtl3d.data.nyud as _n
    _orig = _n._convert_one
    def _held(src, tmp, variant, vid):
        out = _orig(src, tmp, variant, vid)
        Path(os.environ["MTL3D_TEST_HOLD_CONVERT"], str(os.getpid())).write_text(vid)
        time.sleep(3600)
        return out
    _n._convert_one = _held
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prepare_nyud_workers_end_on_signal(tmp_path, sig):
    """`mtl3d data prepare nyud --workers 2` killed mid-way: no process of it survives, nothing is left."""
    src = raw_nyud.write_nyud_source(tmp_path / "raw", "atrc", n_train=3, n_val=2)
    hold = tmp_path / "hold"
    hold.mkdir()
    (tmp_path / "site").mkdir()
    # sitecustomize: spawned workers run it too, so each holds after converting one view
    (tmp_path / "site" / "sitecustomize.py").write_text(textwrap.dedent(_HOLD))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path]),
        "MTL3D_TEST_HOLD_CONVERT": str(hold),
    }
    root = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "mtl3d.cli",
        "data",
        "prepare",
        "nyud",
        "--raw",
        str(src.parent),
        "--root",
        str(root),
        "--workers",
        "2",
    ]
    p = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while len(list(hold.iterdir())) < 2 and time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert len(list(hold.iterdir())) == 2, (
            p.stderr.read() if p.poll() is not None else "workers never held"
        )
        p.send_signal(sig)
        assert p.wait(30) == 128 + sig
        assert f"error: stopped by {sig.name}" in p.stderr.read()
        deadline = time.time() + 10
        while _session(p.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert _session(p.pid) == []  # workers and the resource tracker
        assert not list(root.glob(".tmp-*")) and not (root / "manifest.json").exists()
    finally:
        for pid in _session(p.pid):
            os.kill(pid, signal.SIGKILL)
