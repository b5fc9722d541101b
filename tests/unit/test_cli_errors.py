"""User mistakes end in one line on stderr and exit code 2 (no traceback)."""

import sys

import pytest

from mtl3d.cli import main
from tests.fakedata import make_fake_dataset


def _run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mtl3d", *args])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    return e.value.code, err


@pytest.fixture()
def data(tmp_path):
    return str(make_fake_dataset(tmp_path / "d"))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--data-root", "{missing}", "--model", "mtl"], "run: mtl3d data prepare synthrooms --root"),
        (
            ["--data-root", "{data}", "--model", "foo"],
            "unknown model 'foo'; valid: atrc, densemtl, invpt, mtinet, mtl, padnet, padnet3way, stl",
        ),
        (
            ["--data-root", "{data}", "--model", "mtinet", "--set", "model.options.width=[1]"],
            "model 'mtinet' has no option 'width'; valid: fpm_softmax, main_tasks, widths",
        ),
        (
            ["--data-root", "{data}", "--model", "mtinet", "--set", "model.options.fpm_softmax=x"],
            "unknown fpm_softmax 'x'; valid: channel_groups, tasks",
        ),
        (["--data-root", "{data}", "--tasks", "semseg,saliency"], "has no labels for task(s) saliency"),
        (["--data-root", "{data}", "--tasks", "semseg,dpth"], "unknown task 'dpth'; valid:"),
        (["--data-root", "{data}", "--backbone", "resnet19"], "unknown backbone 'resnet19'"),
        (["--data-root", "{data}", "--set", "optim.lrr=3"], "unknown config key 'optim.lrr'"),
        (["--data-root", "{data}", "--model", "stl", "--regularizer"], "needs one"),
        (["--data-root", "{data}", "--dataset", "nyu"], "unknown dataset 'nyu'; valid: nyud, pascal, synth"),
    ],
)
def test_train_user_errors(monkeypatch, capsys, tmp_path, data, args, needle):
    args = [a.format(missing=tmp_path / "nope", data=data) for a in args]
    code, err = _run(monkeypatch, capsys, "train", "--out", str(tmp_path / "run"), *args)
    assert code == 2
    assert needle in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "run" / "last.pt").exists()


def test_bad_config_file_and_evaluate_errors(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("optim:\n  lr: [1\n")
    code, err = _run(monkeypatch, capsys, "train", "--out", str(tmp_path / "r"), "--config", str(bad))
    assert code == 2 and "not valid YAML (line" in err
    code, err = _run(monkeypatch, capsys, "evaluate", str(tmp_path / "nothing"))
    assert code == 2 and "not a run directory" in err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["prepare", "nyud", "--scenes", "3"], "nyud does not take --scenes; its options: --raw, --variant"),
        (["prepare", "kitti"], "unknown dataset 'kitti'; valid: nyud, pascal, synthrooms"),
        (["prepare", "nyud", "--variant", "v2"], "unknown NYUD variant 'v2'; valid: atrc, survey"),
        (["download", "nyud", "--variant", "v2"], "'v2'; valid: atrc, survey"),
    ],
)
def test_data_user_errors(monkeypatch, capsys, tmp_path, args, needle):
    monkeypatch.chdir(tmp_path)  # nothing is written into the checkout
    monkeypatch.setattr(sys, "argv", ["mtl3d", "data", *args])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
