"""Runs use the configuration they say: bad values fail before anything is written, a resumed run is
checked against its checkpoint's config, operating-system errors are one line."""

import json
import os
import stat
import sys

import pytest
import yaml

from mtl3d import config as C
from mtl3d.cli import main
from mtl3d.errors import UserError
from tests.fakedata import make_fake_dataset


def _run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mtl3d", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.err


def _one_line(code, err, needle):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err, err


@pytest.fixture()
def data(tmp_path):
    return str(make_fake_dataset(tmp_path / "d"))


@pytest.mark.parametrize(
    "setting, key",
    [
        ("data.num_workers=-1", "data.num_workers"),
        ("data.height=-8", "data.height"),
        ("data.width=0", "data.width"),
        ("data.train_fraction=0", "data.train_fraction"),
        ("data.train_fraction=1.5", "data.train_fraction"),
        ("optim.lr=.nan", "optim.lr"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.weight_decay=-1e-4", "optim.weight_decay"),
        ("optim.momentum=1.5", "optim.momentum"),
        ("optim.gamma=0", "optim.gamma"),
        ("optim.poly_power=-1", "optim.poly_power"),
        ("model.head_channels=0", "model.head_channels"),
        ("model.aux_weight=-1", "model.aux_weight"),
        ("regularizer.n_samples=0", "regularizer.n_samples"),
        ("regularizer.render_stride=0", "regularizer.render_stride"),
        ("regularizer.plane_res=[0,4]", "regularizer.plane_res"),
        ("regularizer.near=-1", "regularizer.near"),
        ("regularizer.chunk_rays=0", "regularizer.chunk_rays"),
        ("task_weights={semseg: -1}", "task_weights.semseg"),
        ("edge_pos_weight=2", "edge_pos_weight"),
        ("seed=-1", "seed"),
        ("log_every=0", "log_every"),
        ("ckpt_every=0", "ckpt_every"),
        ("eval_batch_size=0", "eval_batch_size"),
        ("n_saved_predictions=-2", "n_saved_predictions"),
    ],
)
def test_out_of_range_values_fail_before_anything_is_written(
    monkeypatch, capsys, tmp_path, data, setting, key
):
    run = tmp_path / "run"
    code, err = _run(
        monkeypatch, capsys, "train", "--out", str(run), "--data-root", data, *TINY, "--set", setting
    )
    _one_line(code, err, f"config key '{key}'")
    assert not run.exists()


def test_far_must_exceed_near():
    with pytest.raises(UserError, match="regularizer.far"):
        C.load(None, {"regularizer": {"near": 2.0, "far": 1.0}})


def _numeric_fields(cls, prefix=""):
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, prefix + f.name + ".")
            continue
        args = typing.get_args(tp)
        leaves = {tp, *args, *(a for arg in args for a in typing.get_args(arg))}
        if leaves & {int, float}:
            yield prefix + f.name


def test_every_numeric_field_has_a_range():
    missing = [k for k in _numeric_fields(C.TrainConfig) if k not in C.RANGES]
    assert not missing, f"numeric config keys without a range in config.RANGES: {missing}"


@pytest.mark.parametrize(
    "setting, needle",
    [
        ("optim.betas=[0.9", "--set 'optim.betas=[0.9': the value is not valid YAML"),
        ("=3", "--set '=3': empty key"),
        ("optim..lr=3", "--set 'optim..lr=3': empty key"),
        ("optim.lr.x=3", "config key 'optim.lr' must be a number"),
        ("optim.lr.x=3 --lr 0.1", "--set 'optim.lr.x=3': optim.lr is not a mapping"),
    ],
)
def test_malformed_set_is_one_line(monkeypatch, capsys, tmp_path, data, setting, needle):
    setting, *more = setting.split(" ")
    code, err = _run(
        monkeypatch,
        capsys,
        "train",
        "--out",
        str(tmp_path / "r"),
        "--data-root",
        data,
        *more,
        "--set",
        setting,
    )
    _one_line(code, err, needle)
    assert not (tmp_path / "r").exists()


def test_config_file_not_utf8(monkeypatch, capsys, tmp_path, data):
    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"optim:\n  lr: 0.1 # \xe9t\xe9\n")
    code, err = _run(monkeypatch, capsys, "train", "--out", str(tmp_path / "r"), "--config", str(bad))
    _one_line(code, err, f"config file {bad} is not UTF-8 text")


def test_out_naming_a_file_is_refused_first(monkeypatch, capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    # a missing dataset would be found later: --out is checked first
    code, err = _run(monkeypatch, capsys, "train", "--out", str(f), "--data-root", str(tmp_path / "nodata"))
    _one_line(code, err, f"--out {f} is a file")
    code, err = _run(monkeypatch, capsys, "train", "--out", str(f / "run"), "--data-root", str(tmp_path))
    _one_line(code, err, f"--out {f / 'run'}: {f} is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_read_only_folder_is_refused_first(monkeypatch, capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, err = _run(monkeypatch, capsys, "train", "--out", str(ro / "run"), "--data-root", str(tmp_path))
    finally:
        ro.chmod(0o700)
    _one_line(code, err, "not writable")


def _genotype(path, tasks, ctx="global"):
    path.write_text(json.dumps({"tasks": tasks, "genotype": {t: dict.fromkeys(tasks, ctx) for t in tasks}}))
    return path


def test_search_vote_bad_inputs(monkeypatch, capsys, tmp_path):
    a = _genotype(tmp_path / "a.json", ["semseg", "depth"])
    b = _genotype(tmp_path / "b.json", ["semseg", "depth", "normals"])
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    out = tmp_path / "v.json"
    code, err = _run(monkeypatch, capsys, "search", "vote", "--out", str(out), str(lst), str(a))
    _one_line(code, err, f"{lst}: not an ATRC genotype")
    code, err = _run(monkeypatch, capsys, "search", "vote", "--out", str(out), str(a), str(lst))
    _one_line(code, err, f"{lst}: not an ATRC genotype")
    code, err = _run(monkeypatch, capsys, "search", "vote", "--out", str(out), str(a), str(b))
    _one_line(code, err, "different tasks")
    code, err = _run(monkeypatch, capsys, "search", "vote", "--out", str(tmp_path / "no" / "v.json"), str(a))
    _one_line(code, err, f"{tmp_path / 'no'}")
    assert not out.exists() and not (tmp_path / "no").exists()


def test_os_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys, tmp_path):
    a = _genotype(tmp_path / "a.json", ["semseg", "depth"])
    # not caught by any check: the write itself fails
    monkeypatch.setattr(os, "replace", _raise_enospc)
    code, err = _run(monkeypatch, capsys, "search", "vote", "--out", str(tmp_path / "v.json"), str(a))
    _one_line(code, err, "No space left on device")
    monkeypatch.setattr(
        sys, "argv", ["mtl3d", "--debug", "search", "vote", "--out", str(tmp_path / "v.json"), str(a)]
    )
    with pytest.raises(OSError, match="No space left"):
        main()
    assert not list(tmp_path.glob(".v.json*"))


def _raise_enospc(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_atomic_writes_follow_the_umask(tmp_path):
    from mtl3d.engine.checkpoint import atomic_write_text

    old = os.umask(0o002)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o027)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o640


TINY = ["--iters", "2", "--batch-size", "2", "--set", "ckpt_every=1", "--quiet"]


def test_resume_checks_the_checkpoints_config(monkeypatch, capsys, tmp_path, data):
    run = tmp_path / "run"
    base = ["train", "--out", str(run), "--data-root", data, "--model", "mtl", *TINY]
    old = os.umask(0o022)
    try:
        code, err = _run(monkeypatch, capsys, *base)
    finally:
        os.umask(old)
    assert code == 0, err
    for name in ("last.pt", "config.yaml", "train_log.csv", "done"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
    (run / "config.yaml").unlink()
    (run / "done").unlink()
    ckpt = (run / "last.pt").read_bytes()
    code, err = _run(monkeypatch, capsys, *base, "--lr", "0.5")
    _one_line(code, err, "optim.lr: 0.001 there, 0.5 now")
    code, err = _run(monkeypatch, capsys, *base[: -len(TINY) - 2], "--model", "stl", *TINY)
    _one_line(code, err, "model.name: 'mtl' there, 'stl' now")
    assert (run / "last.pt").read_bytes() == ckpt and not (run / "config.yaml").exists()
    # finished runs too: not "already trained" with other options
    (run / "done").write_text("2\n")
    code, err = _run(monkeypatch, capsys, *base[: -len(TINY)], "--iters", "3", *TINY[2:])
    _one_line(code, err, "iters: 2 there, 3 now")
    # the same options resume, and the run gets its config.yaml back
    code, err = _run(monkeypatch, capsys, *base)
    assert code == 0, err
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.001


REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda s: s["variants"][0]["args"].update(model="mtll"), "unknown model 'mtll'"),
        (lambda s: s["datasets"][0].update(name="synthroom"), "unknown dataset 'synthroom'"),
        (lambda s: s["datasets"][0]["train"].update(iters=0), "config key 'iters' must be >= 1, got 0"),
        (lambda s: s["variants"][0]["args"].update({"batch-size": -2}), "config key 'batch_size'"),
        (lambda s: s["variants"][0]["args"].update(lrr=0.1), "mtl3d train has no option --lrr"),
        (lambda s: s.update(reference="stll"), "reference variant 'stll' is not among the variants"),
    ],
)
def test_check_study_refuses_what_a_job_would_fail_on(tmp_path, edit, needle):
    from typer.testing import CliRunner

    from mtl3d.reporting.cli import app

    study = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    edit(study)
    f = REPO / "config" / f".test-{os.getpid()}.yaml"  # in the project: config paths resolve from its root
    f.write_text(yaml.safe_dump(study))
    try:
        res = CliRunner().invoke(app, ["check-study", str(f)])
    finally:
        f.unlink()
    assert res.exit_code == 2, res.output
    assert needle in res.output and res.output.count("\n") == 1, res.output
