"""`mtl3d data download`: mirrors, resume, pin / lock / trust on first use, safe extraction (127.0.0.1)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import shutil
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mtl3d.data import download as D
from mtl3d.data.download import checks, extract, transfer
from mtl3d.errors import UserError
from tests.httpserver import LocalHTTPServer, http_server  # noqa: F401  (http_server is a fixture)
from tests.rawdata.archive import make_targz

NAME = "NYUDv2.tar.gz"
TOP = "NYUDv2"
REQUIRED = ["images/", "segmentation/", "depth/", "normals/", "edge/", "gt_sets/train.txt", "gt_sets/val.txt"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    # The packaged sources, not a redirect from the calling shell; small chunks so a cut transfer
    # leaves bytes on disk at a known offset.
    monkeypatch.delenv(D.SOURCES_ENV, raising=False)
    monkeypatch.setattr(transfer, "_HTTP_CHUNK", 1024)


def _tree(root: Path, top: str = TOP, seed: int = 0) -> Path:
    """A folder with the NYUD layout and some incompressible bytes (so the archive spans many chunks)."""
    d = root / top
    for sub in ("images", "segmentation", "depth", "normals", "edge", "gt_sets"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "gt_sets" / "train.txt").write_text("0001\n")
    (d / "gt_sets" / "val.txt").write_text("0002\n")
    (d / "images" / "0001.png").write_bytes(bytes(range(256)) * 4)
    (d / "depth" / "noise.bin").write_bytes(hashlib.shake_256(str(seed).encode()).digest(24_000))
    return d


def _archive(tmp_path: Path, top: str = TOP, seed: int = 0, name: str = NAME) -> Path:
    src = tmp_path / f"src{seed}-{top}"
    return make_targz(_tree(src, top, seed), tmp_path / f"a{seed}" / name)


def _sha(p: Path | bytes) -> str:
    return hashlib.sha256(p if isinstance(p, bytes) else p.read_bytes()).hexdigest()


def _sources(
    tmp_path: Path,
    mirrors: list[str | dict],
    *,
    size: int | None = None,
    sha256: str | None = None,
    reported: str | None = None,
    name: str = NAME,
) -> Path:
    spec = {
        "version": 1,
        "datasets": {
            "nyud": {
                "default": "atrc",
                "variants": {
                    "atrc": {
                        "description": "test data",
                        "image_size": [4, 4],
                        "top_dir": TOP,
                        "required": REQUIRED,
                        "files": [
                            {
                                "name": name,
                                "size": size,
                                "sha256": sha256,
                                "reported_sha256": reported,
                                "mirrors": [
                                    m if isinstance(m, dict) else {"url": m, "kind": "http"} for m in mirrors
                                ],
                            }
                        ],
                    },
                    "bare": {
                        "description": "no mirror known",
                        "top_dir": "Bare",
                        "required": [],
                        "files": [{"name": "Bare.tgz", "size": 1234, "mirrors": []}],
                    },
                },
            }
        },
    }
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _dead_url() -> str:
    """A URL on a port nobody listens on: the connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{NAME}"


def _serve(srv: LocalHTTPServer, archive: Path, path: str = NAME) -> str:
    (srv.root / path).parent.mkdir(parents=True, exist_ok=True)
    (srv.root / path).write_bytes(archive.read_bytes())
    return srv.url(path)


def _lock(raw: Path) -> dict:
    return json.loads((raw / D.LOCK_NAME).read_text())


def _leftovers(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir() if p.name.endswith(".part") or p.name == NAME)


# ---------------------------------------------------------------------------------------------------
# the packaged sources


def test_packaged_sources():
    assert D.dataset_names() == ["nyud", "pascal"]
    assert D.variant_names("nyud") == ["atrc", "survey"] and D.variant_names("pascal") == ["atrc", "survey"]
    assert D.default_variant("nyud") == "atrc" and D.default_variant("pascal") == "atrc"
    survey = D.variant_spec("nyud", "survey")
    (f,) = survey.files
    assert (f.name, f.size, f.sha256) == ("NYUD_MT.tgz", 4_215_751_725, None)
    assert f.reported_sha256 == "33338d895404a9144a2c6892a8b0d6d5c26b02021f945b12e36c431fb369fcb2"
    assert [m.kind for m in f.mirrors] == ["gdrive"] and "14EAEMXmd3zs2hIMY63UhHPSFPDAkiTzw" in f.mirrors[
        0
    ].url
    assert survey.top_dir == "NYUD_MT" and survey.image_size == (480, 640)
    atrc = D.variant_spec("nyud", "atrc")
    assert atrc.top_dir == "NYUDv2" and atrc.image_size == (425, 560) and "gt_sets/val.txt" in atrc.required
    urls = [
        m.url
        for v in ("atrc", "survey")
        for s in ("nyud", "pascal")
        for m in D.variant_spec(s, v).files[0].mirrors
    ]
    assert not any(
        "brdavid" in u or "1iLBaDBBOkcS9wH8rd3PboLRPLm5NsGgi" in u for u in urls
    )  # dead / incomplete
    assert (
        D.variant_spec("pascal", "survey")
        .files[0]
        .mirrors[0]
        .url.endswith("kmaninis/share/MTL/PASCAL_MT.tgz")
    )
    assert "sal_distill/" in D.variant_spec("pascal", "atrc").required
    with pytest.raises(UserError, match="unknown dataset 'nyu'; valid: nyud, pascal"):
        D.variant_spec("nyu", "atrc")
    with pytest.raises(UserError, match="unknown variant 'invpt'; valid: atrc, survey"):
        D.download("nyud", "invpt", "unused")


def test_placement_message_packaged(tmp_path):
    msg = D.placement_message("nyud", "survey", tmp_path)
    assert "NYUD_MT.tgz: 4,215,751,725 bytes" in msg
    assert "33338d895404a9144a2c6892a8b0d6d5c26b02021f945b12e36c431fb369fcb2" in msg and "unconfirmed" in msg
    assert (
        "drive.google.com" in msg
        and str(tmp_path / "NYUD_MT.tgz") in msg
        and str(tmp_path / "NYUD_MT") in msg
    )
    assert msg.rstrip().endswith(f"mtl3d data prepare nyud --variant survey --raw {tmp_path}")


def test_sources_env_redirects(tmp_path, monkeypatch):
    monkeypatch.setenv(D.SOURCES_ENV, str(_sources(tmp_path, [])))
    assert D.variant_names("nyud") == ["atrc", "bare"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        D.variant_spec("nyud", None, bad)


# ---------------------------------------------------------------------------------------------------
# downloads


def test_download_first_mirror_and_tofu_lock(tmp_path, http_server):  # noqa: F811
    arc = _archive(tmp_path)
    url1, url2 = _serve(http_server, arc, "one/" + NAME), _serve(http_server, arc, "two/" + NAME)
    raw = tmp_path / "raw"
    got = D.download("nyud", None, raw, sources=_sources(tmp_path, [url1, url2]), progress=False)
    assert got == {NAME: _sha(arc)}
    assert (raw / NAME).read_bytes() == arc.read_bytes() and _leftovers(raw) == [NAME]
    assert [r.path for r in http_server.requests] == ["one/" + NAME]
    entry = _lock(raw)["files"][f"nyud/atrc/{NAME}"]
    assert entry["sha256"] == _sha(arc) and entry["size"] == arc.stat().st_size and entry["url"] == url1
    assert entry["recorded"].endswith("Z") and entry["pinned"] is False


def test_mirror_fallback(tmp_path, http_server):  # noqa: F811
    arc = _archive(tmp_path)
    url1, url2 = _serve(http_server, arc, "one/" + NAME), _serve(http_server, arc, "two/" + NAME)
    http_server.fail_404("one/" + NAME)
    raw = tmp_path / "raw"
    D.download(
        "nyud", "atrc", raw, sources=_sources(tmp_path, [url1, url2], sha256=_sha(arc)), progress=False
    )
    assert (raw / NAME).read_bytes() == arc.read_bytes()
    assert [r.path for r in http_server.requests] == ["one/" + NAME, "two/" + NAME]
    assert _lock(raw)["files"][f"nyud/atrc/{NAME}"]["url"] == url2


def test_interrupted_transfer_resumes_with_range(tmp_path, http_server):  # noqa: F811
    arc = _archive(tmp_path)
    url = _serve(http_server, arc)
    http_server.cut_once(NAME, 4096)  # a multiple of the 1 KiB chunk: exactly 4096 bytes reach the disk
    raw = tmp_path / "raw"
    got = D.download("nyud", "atrc", raw, sources=_sources(tmp_path, [url], sha256=_sha(arc)), progress=False)
    assert got == {NAME: _sha(arc)} and _leftovers(raw) == [NAME]
    assert [(r.range, r.if_range) for r in http_server.requests] == [
        (None, None),
        ("bytes=4096-", http_server.etag(NAME)),  # resumed only if the server still has the same file
    ]
    assert not (raw / f"{NAME}.part.validator.json").exists()


def test_interrupted_transfer_without_validator_starts_over(tmp_path, http_server):  # noqa: F811
    arc = _archive(tmp_path)
    url = _serve(http_server, arc)
    http_server.validators = False  # no ETag, no Last-Modified: a resume could splice two files
    http_server.cut_once(NAME, 4096)
    raw = tmp_path / "raw"
    got = D.download("nyud", "atrc", raw, sources=_sources(tmp_path, [url]), progress=False)
    assert got == {NAME: _sha(arc)} and _leftovers(raw) == [NAME]
    assert [r.range for r in http_server.requests] == [None, None]


def _leave_part(raw: Path, data: bytes, url: str, validator: str | None) -> None:
    """What a killed download leaves: the .part and, if the server sent one, its validator."""
    raw.mkdir(parents=True, exist_ok=True)
    (raw / f"{NAME}.part").write_bytes(data)
    if validator is not None:
        (raw / f"{NAME}.part.validator.json").write_text(json.dumps({"url": url, "validator": validator}))


def test_leftover_part_is_resumed(tmp_path, http_server):  # noqa: F811
    arc = _archive(tmp_path)
    url = _serve(http_server, arc)
    raw = tmp_path / "raw"
    _leave_part(raw, arc.read_bytes()[:3000], url, http_server.etag(NAME))
    D.download("nyud", None, raw, sources=_sources(tmp_path, [url]), progress=False)
    assert [(r.range, r.if_range) for r in http_server.requests] == [("bytes=3000-", http_server.etag(NAME))]
    assert _sha(raw / NAME) == _sha(arc) and _leftovers(raw) == [NAME]


def test_leftover_part_of_a_changed_file_is_not_resumed(tmp_path, http_server):  # noqa: F811
    old, new = _archive(tmp_path, seed=0), _archive(tmp_path, seed=1)
    url = _serve(http_server, old)
    raw = tmp_path / "raw"
    old_etag = http_server.etag(NAME)
    _leave_part(raw, old.read_bytes()[:3000], url, old_etag)
    _serve(http_server, new)  # upstream replaced the file since
    D.download("nyud", None, raw, sources=_sources(tmp_path, [url]), progress=False)
    assert [(r.range, r.if_range) for r in http_server.requests] == [("bytes=3000-", old_etag)]  # got a 200
    assert _sha(raw / NAME) == _sha(new) and _leftovers(raw) == [NAME]  # the whole new file, not spliced
    # Without a validator the leftover is never resumed: the request starts at byte 0.
    (raw / NAME).unlink()
    _leave_part(raw, new.read_bytes()[:3000], url, None)
    D.download("nyud", None, raw, sources=_sources(tmp_path, [url]), progress=False)
    assert http_server.requests[-1].range is None and _sha(raw / NAME) == _sha(new)


def test_complete_leftover_part_is_only_checked(tmp_path, http_server):  # noqa: F811
    arc = _archive(tmp_path)
    url = _serve(http_server, arc)
    raw = tmp_path / "raw"
    _leave_part(raw, arc.read_bytes(), url, http_server.etag(NAME))  # finished, killed before the rename
    D.download("nyud", None, raw, sources=_sources(tmp_path, [url]), progress=False)
    assert [r.range for r in http_server.requests] == [f"bytes={arc.stat().st_size}-"]  # answered 416
    assert _sha(raw / NAME) == _sha(arc) and _leftovers(raw) == [NAME]


def test_server_without_range_restarts_from_zero(tmp_path, http_server):  # noqa: F811
    arc = _archive(tmp_path)
    url = _serve(http_server, arc)
    http_server.ranges = False
    raw = tmp_path / "raw"
    _leave_part(raw, b"stale bytes of some other file", url, http_server.etag(NAME))
    D.download("nyud", None, raw, sources=_sources(tmp_path, [url], sha256=_sha(arc)), progress=False)
    assert [r.range for r in http_server.requests] == ["bytes=30-"]  # asked, got a 200 with the whole file
    assert _sha(raw / NAME) == _sha(arc)


def test_pinned_hash_mismatch_is_refused_and_removed(tmp_path, http_server):  # noqa: F811
    good, other = _archive(tmp_path, seed=0), _archive(tmp_path, seed=1)
    url = _serve(http_server, other)
    raw = tmp_path / "raw"
    with pytest.raises(D.VerificationError) as e:
        D.download("nyud", None, raw, sources=_sources(tmp_path, [url], sha256=_sha(good)), progress=False)
    msg = str(e.value)
    assert NAME in msg and _sha(good) in msg and _sha(other) in msg and "removed" in msg and "\n" not in msg
    assert _leftovers(raw) == [] and not (raw / D.LOCK_NAME).exists()


def test_wrong_local_copy_is_replaced(tmp_path, http_server, caplog):  # noqa: F811
    good, other = _archive(tmp_path, seed=0), _archive(tmp_path, seed=1)
    url = _serve(http_server, good)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / NAME).write_bytes(other.read_bytes())  # a copy the pin proves wrong: removed, fetched again
    with caplog.at_level(logging.WARNING, logger=D.__name__):
        D.download("nyud", None, raw, sources=_sources(tmp_path, [url], sha256=_sha(good)), progress=False)
    assert _sha(raw / NAME) == _sha(good) and "downloading it again" in caplog.text


def test_bad_mirror_then_good_mirror(tmp_path, http_server):  # noqa: F811
    good, other = _archive(tmp_path, seed=0), _archive(tmp_path, seed=1)
    url1, url2 = _serve(http_server, good, "one/" + NAME), _serve(http_server, good, "two/" + NAME)
    http_server.serve_bytes("one/" + NAME, other.read_bytes())  # wrong bytes from the first mirror
    raw = tmp_path / "raw"
    D.download("nyud", None, raw, sources=_sources(tmp_path, [url1, url2], sha256=_sha(good)), progress=False)
    assert _sha(raw / NAME) == _sha(good) and _leftovers(raw) == [NAME]


def test_changed_file_is_refused_against_the_lock(tmp_path, http_server):  # noqa: F811
    first, changed = _archive(tmp_path, seed=0), _archive(tmp_path, seed=1)
    url = _serve(http_server, first)
    raw = tmp_path / "raw"
    sources = _sources(tmp_path, [url])
    D.download("nyud", None, raw, sources=sources, progress=False)
    recorded = _lock(raw)["files"][f"nyud/atrc/{NAME}"]["sha256"]
    assert recorded == _sha(first)

    # Upstream serves other bytes under the same name: the new download is refused and removed.
    (raw / NAME).unlink()
    _serve(http_server, changed)
    with pytest.raises(D.VerificationError) as e:
        D.download("nyud", None, raw, sources=sources, progress=False)
    msg = str(e.value)
    assert str(raw / D.LOCK_NAME) in msg and recorded in msg and "delete that lock entry" in msg
    assert _leftovers(raw) == []

    # A local copy that changed is refused too, and kept: the user decides which side is right.
    (raw / NAME).write_bytes(changed.read_bytes())
    with pytest.raises(D.VerificationError, match="Delete .* or delete the entry 'nyud/atrc/NYUDv2.tar.gz'"):
        D.verify("nyud", None, raw, sources=sources, progress=False)
    assert (raw / NAME).exists() and _lock(raw)["files"][f"nyud/atrc/{NAME}"]["sha256"] == recorded


def test_size_mismatch_is_refused(tmp_path, http_server):  # noqa: F811
    arc = _archive(tmp_path)
    url = _serve(http_server, arc)
    raw = tmp_path / "raw"
    wrong = arc.stat().st_size + 1
    with pytest.raises(D.VerificationError, match=f"size mismatch: expected {wrong:,} bytes"):
        D.download("nyud", None, raw, sources=_sources(tmp_path, [url], size=wrong), progress=False)
    assert _leftovers(raw) == []
    # A copy placed by hand with the wrong size is removed as well (the size is published).
    (raw / NAME).write_bytes(arc.read_bytes())
    with pytest.raises(D.VerificationError, match="size mismatch.*removed"):
        D.verify("nyud", None, raw, sources=_sources(tmp_path, [], size=wrong))
    assert not (raw / NAME).exists()


def test_html_page_is_not_recorded(tmp_path, http_server):  # noqa: F811
    http_server.serve_bytes(NAME, b"<!DOCTYPE html><html>Sign in to OneDrive</html>")
    raw = tmp_path / "raw"
    with pytest.raises(D.VerificationError, match="not a gzip archive .it looks like an HTML page"):
        D.download("nyud", None, raw, sources=_sources(tmp_path, [http_server.url(NAME)]), progress=False)
    assert _leftovers(raw) == [] and not (raw / D.LOCK_NAME).exists()


def test_reported_hash_mismatch_only_warns(tmp_path, http_server, caplog):  # noqa: F811
    arc = _archive(tmp_path)
    url = _serve(http_server, arc)
    raw = tmp_path / "raw"
    sources = _sources(tmp_path, [url], size=arc.stat().st_size, reported="0" * 64)
    with caplog.at_level(logging.WARNING, logger=D.__name__):
        assert D.download("nyud", None, raw, sources=sources, progress=False) == {NAME: _sha(arc)}
    assert "a third party reported, " + "0" * 64 in caplog.text


def test_second_call_is_idempotent_and_cheap(tmp_path, http_server, monkeypatch):  # noqa: F811
    arc = _archive(tmp_path)
    url = _serve(http_server, arc)
    raw = tmp_path / "raw"
    sources = _sources(tmp_path, [url])
    first = D.download_verified("nyud", None, raw, sources=sources, progress=False)
    assert [v.how for v in first] == [D.TOFU]
    n = len(http_server.requests)

    def no_hashing(*a, **k):
        raise AssertionError("the unchanged file was hashed again")

    monkeypatch.setattr(checks, "_sha256", no_hashing)
    again = D.download_verified("nyud", None, raw, sources=sources, progress=False)
    assert len(http_server.requests) == n
    assert [(v.sha256, v.how) for v in again] == [(_sha(arc), "lock")]
    assert D.verify("nyud", None, raw, sources=sources) == {NAME: _sha(arc)}


def test_offline_gives_the_placement_message(tmp_path, http_server):  # noqa: F811
    http_server.fail_404(NAME)
    dead, missing = _dead_url(), http_server.url(NAME)
    raw = tmp_path / "raw"
    with pytest.raises(D.SourceUnavailable) as e:
        D.download(
            "nyud", None, raw, sources=_sources(tmp_path, [missing, dead], size=123_456), progress=False
        )
    msg = str(e.value)
    assert NAME in msg and "123,456 bytes" in msg and str(raw / NAME) in msg and str(raw / TOP) in msg
    assert f"{missing} -> HTTP 404" in msg and dead in msg and "Connection refused" in msg
    assert "recorded on first use" in msg and "mtl3d data prepare nyud --variant atrc" in msg
    assert _leftovers(raw) == []
    with pytest.raises(D.SourceUnavailable, match="no public mirror is known"):
        D.download("nyud", "bare", raw, sources=_sources(tmp_path, []), progress=False)


def test_gdrive_mirror_uses_gdown_with_resume(tmp_path, monkeypatch):
    import gdown

    arc = _archive(tmp_path)
    calls = []

    def fake_download(**kwargs):
        calls.append(kwargs)
        Path(kwargs["output"]).write_bytes(arc.read_bytes())
        return kwargs["output"]

    monkeypatch.setattr(gdown, "download", fake_download)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / f"{NAME}.part").write_bytes(b"partial bytes from an http mirror")
    mirror = {"url": "https://drive.google.com/uc?id=FILE_ID-123", "kind": "gdrive"}
    got = D.download("nyud", None, raw, sources=_sources(tmp_path, [mirror]), progress=False)
    assert got == {NAME: _sha(arc)} and _leftovers(raw) == [NAME]
    assert len(calls) == 1
    assert calls[0]["id"] == "FILE_ID-123" and calls[0]["resume"] is True
    assert calls[0]["output"] == str(raw / f"{NAME}.part") and calls[0]["quiet"] is True

    def failing(**kwargs):
        raise RuntimeError("Too many users have viewed or downloaded this file recently")

    monkeypatch.setattr(gdown, "download", failing)
    with pytest.raises(D.SourceUnavailable, match="Too many users"):
        D.download("nyud", None, tmp_path / "raw2", sources=_sources(tmp_path, [mirror]), progress=False)


# ---------------------------------------------------------------------------------------------------
# safe extraction


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _good_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [
        (_info("T", tarfile.DIRTYPE), None),
        (_info("T/a.txt"), b"hello"),
        (_info("T/sub", tarfile.DIRTYPE), None),
        (_info("T/sub/b.txt"), b"world"),
        (_info("T/link", tarfile.SYMTYPE, "a.txt"), None),  # inside the folder: fine
    ]


BAD = {
    "dotdot": ((_info("../x"), b"x"), "'..' component"),
    "absolute": ((_info("/abs/x"), b"x"), "absolute path"),
    "symlink-abs": ((_info("T/passwd", tarfile.SYMTYPE, "/etc/passwd"), None), "absolute path"),
    "symlink-escape": ((_info("T/sub/up", tarfile.SYMTYPE, "../../x"), None), "links outside"),
    "hardlink-escape": ((_info("T/h", tarfile.LNKTYPE, "../outside"), None), "links outside"),
    "device": ((_info("T/dev", tarfile.CHRTYPE), None), "device file"),
    "fifo": ((_info("T/fifo", tarfile.FIFOTYPE), None), "FIFO"),
}


@pytest.fixture(params=[True, False], ids=["data-filter", "own-checks"])
def data_filter(request, monkeypatch):
    # Python without PEP 706's filters (3.10 < 3.10.12, 3.11 < 3.11.4) relies on our own checks.
    monkeypatch.setattr(extract, "_HAS_DATA_FILTER", request.param and hasattr(tarfile, "data_filter"))
    return request.param


@pytest.mark.parametrize("case", sorted(BAD))
def test_safe_extract_refuses(tmp_path, case, data_filter):
    member, needle = BAD[case]
    arc = _tar(tmp_path / "bad.tar.gz", [*_good_members(), member])
    dest = tmp_path / "dest"
    with pytest.raises(UserError) as e:
        D.safe_extract(arc, dest, expected_top=None if case in ("dotdot", "absolute") else "T")
    msg = str(e.value)
    assert str(arc) in msg and repr(member[0].name) in msg and needle in msg
    assert sorted(p.name for p in dest.iterdir()) == []  # nothing extracted, no temporary folder left
    assert not (tmp_path / "x").exists() and not (tmp_path / "outside").exists()


def test_safe_extract_good_archive(tmp_path, data_filter):
    arc = _tar(tmp_path / "good.tar.gz", _good_members())
    dest = tmp_path / "dest"
    (dest / ".tmp-extract-stale").mkdir(parents=True)
    (dest / ".tmp-extract-stale" / "junk").write_text("from a killed run")
    out = D.safe_extract(arc, dest, expected_top="T")
    assert out == dest / "T"
    assert (out / "a.txt").read_text() == "hello" and (out / "sub" / "b.txt").read_text() == "world"
    assert (out / "link").is_symlink() and (out / "link").read_text() == "hello"
    assert sorted(p.name for p in dest.iterdir()) == ["T"]  # the stale temporary folder is gone
    with pytest.raises(UserError, match="already exists"):
        D.safe_extract(arc, dest)


def test_safe_extract_plain_tar_and_zip(tmp_path):
    folder = _tree(tmp_path / "src")
    plain = tmp_path / "p.tar"
    with tarfile.open(plain, "w") as tf:
        tf.add(folder, arcname=TOP)
    assert D.safe_extract(plain, tmp_path / "d1", TOP) == tmp_path / "d1" / TOP
    zpath = tmp_path / "z.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, f"{TOP}/{p.relative_to(folder)}")
    out = D.safe_extract(zpath, tmp_path / "d2", TOP)
    assert (out / "gt_sets" / "val.txt").read_text() == "0002\n"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("T/ok.txt", "ok")
        zf.writestr("T/../../evil.txt", "evil")
    with pytest.raises(UserError, match=r"evil.zip: member 'T/\.\./\.\./evil.txt' has a '\.\.' component"):
        D.safe_extract(evil, tmp_path / "d3")


def test_safe_extract_expected_top_mismatch(tmp_path):
    arc = _tar(tmp_path / "other.tar.gz", [(_info("Other/a.txt"), b"a"), (_info("More/b.txt"), b"b")])
    with pytest.raises(UserError, match=r"should hold the single folder NYUDv2/ but holds: More, Other"):
        D.safe_extract(arc, tmp_path / "dest", expected_top=TOP)
    assert not (tmp_path / "dest" / "Other").exists()


def test_interrupted_extraction_leaves_nothing(tmp_path, monkeypatch):
    arc = _tar(tmp_path / "good.tar.gz", _good_members())

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", killed)
    with pytest.raises(KeyboardInterrupt):
        D.safe_extract(arc, tmp_path / "dest", "T")
    assert list((tmp_path / "dest").iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# source_dir


def test_source_dir_extracted_folder(tmp_path):
    raw = tmp_path / "raw"
    _tree(raw)
    top, info = D.source_dir("nyud", None, raw, sources=_sources(tmp_path, []), progress=False)
    assert top == raw / TOP
    assert info == {
        "dataset": "nyud",
        "variant": "atrc",
        "top_dir": TOP,
        "archive": None,
        "sha256": None,
        "extracted_by_user": True,
    }
    (raw / TOP / "gt_sets" / "val.txt").unlink()
    with pytest.raises(UserError, match=r"missing gt_sets/val.txt"):
        D.source_dir("nyud", None, raw, sources=_sources(tmp_path, []), progress=False)


def test_source_dir_archive_only_then_both(tmp_path):
    arc = _archive(tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / NAME).write_bytes(arc.read_bytes())
    sources = _sources(tmp_path, [])
    top, info = D.source_dir("nyud", None, raw, sources=sources, progress=False)
    assert top == raw / TOP and (top / "gt_sets" / "train.txt").read_text() == "0001\n"
    assert info["archive"] == NAME and info["sha256"] == _sha(arc) and info["extracted_by_user"] is False
    assert _lock(raw)["files"][f"nyud/atrc/{NAME}"]["url"] is None  # placed by hand, recorded on first use
    # Folder and archive both there: the archive is checked (against the lock), the folder used as is.
    top2, info2 = D.source_dir("nyud", None, raw, sources=sources, progress=False)
    assert (top2, info2) == (top, info)


def test_source_dir_nothing(tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(D.SourceUnavailable) as e:
        D.source_dir("nyud", None, raw, sources=_sources(tmp_path, ["http://127.0.0.1:9/x"]), progress=False)
    assert str(raw / NAME) in str(e.value) and "http://127.0.0.1:9/x" in str(e.value)


# ---------------------------------------------------------------------------------------------------
# the command


def test_cli_download(tmp_path, http_server):  # noqa: F811
    from mtl3d.cli import app

    arc = _archive(tmp_path)
    url = _serve(http_server, arc)
    raw = tmp_path / "raw"
    sources = _sources(tmp_path, [url])
    runner = CliRunner()
    args = ["data", "download", "nyud", "--raw", str(raw), "--quiet"]
    res = runner.invoke(app, [*args, "--sources", str(sources)])
    assert res.exit_code == 0, res.output
    assert (
        f"{NAME}  {arc.stat().st_size:,} bytes  sha256 {_sha(arc)}  recorded (trust on first use)"
        in res.output
    )
    assert (raw / TOP / "gt_sets" / "val.txt").exists()
    marker = json.loads((raw / "atrc.verified.json").read_text())
    assert marker == {
        "dataset": "nyud",
        "variant": "atrc",
        "files": {NAME: {"sha256": _sha(arc), "size": arc.stat().st_size}},
        "top_dir": TOP,
        "extracted": True,
    }
    mtime = (raw / "atrc.verified.json").stat().st_mtime_ns
    # Again, with the sources from the environment: nothing fetched, verified from the lock.
    res = runner.invoke(app, args, env={D.SOURCES_ENV: str(sources)})
    assert res.exit_code == 0, res.output
    assert "sha256 " + _sha(arc) + "  lock" in res.output and len(http_server.requests) == 1
    assert (raw / "atrc.verified.json").stat().st_mtime_ns == mtime


def test_cli_download_offline(tmp_path, http_server):  # noqa: F811
    from mtl3d.cli import app

    http_server.fail_404(NAME)
    raw = tmp_path / "raw"
    sources = _sources(tmp_path, [http_server.url(NAME)], size=4321)
    res = CliRunner().invoke(app, ["data", "download", "nyud", "--raw", str(raw), "--sources", str(sources)])
    assert res.exit_code == 1
    assert NAME in res.output and "4,321 bytes" in res.output and str(raw.absolute() / NAME) in res.output
    assert not (raw / "atrc.verified.json").exists()
    res = CliRunner().invoke(app, ["data", "download", "nyu", "--sources", str(sources)])
    assert isinstance(res.exception, UserError) and "unknown dataset 'nyu'" in str(res.exception)


# ---------------------------------------------------------------------------------------------------
# whole-archive checks: nothing is locked (or reported verified) before the archive was read to its end


def _gz_trailer_crc_changed(arc: Path) -> bytes:
    data = bytearray(arc.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC32: the tar inside reads fine, `gzip -t` rejects it
    return bytes(data)


def _bytes_changed_mid_stream(arc: Path) -> bytes:
    data = bytearray(arc.read_bytes())
    for k in range(5):
        data[len(data) // 2 + 97 * k] ^= 0x55
    return bytes(data)


def _tar_header_damaged_mid_archive(tmp_path: Path) -> bytes:
    """A well-formed gzip stream around a tar whose second half starts with a damaged member header
    (tarfile then stops there silently, as if the archive had ended)."""
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tf:
        tf.add(_tree(tmp_path / "srcp"), arcname=TOP)
    with tarfile.open(plain) as tf:
        members = tf.getmembers()
    data = bytearray(plain.read_bytes())
    data[members[len(members) // 2].offset + 10] ^= 0x41  # a name byte: the header checksum fails
    return gzip.compress(bytes(data))


def _unsafe(tmp_path: Path) -> bytes:
    members = [(_info(f"{TOP}/gt_sets/train.txt"), b"0001\n"), (_info("../escape.txt"), b"x")]
    return _tar(tmp_path / "unsafe.tar.gz", members).read_bytes()


def _lacks_a_folder(tmp_path: Path) -> bytes:
    tree = _tree(tmp_path / "srcm")
    shutil.rmtree(tree / "edge")
    return make_targz(tree, tmp_path / "m" / NAME).read_bytes()


DAMAGED = {
    "truncated": (lambda tp, arc: arc.read_bytes()[: arc.stat().st_size // 2], "damaged"),
    "gzip-crc": (lambda tp, arc: _gz_trailer_crc_changed(arc), "damaged .*CRC check failed"),
    "bytes-changed": (lambda tp, arc: _bytes_changed_mid_stream(arc), "damaged"),
    "tar-header": (lambda tp, arc: _tar_header_damaged_mid_archive(tp), "damaged member header"),
    "unsafe-member": (lambda tp, arc: _unsafe(tp), r"member '\.\./escape\.txt' has a '\.\.' component"),
    "missing-folder": (lambda tp, arc: _lacks_a_folder(tp), f"has no {TOP}/edge/, which nyud atrc needs"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_bad_archive_is_refused_and_never_locked(tmp_path, http_server, case):  # noqa: F811
    good = _archive(tmp_path)
    make, needle = DAMAGED[case]
    bad = make(tmp_path, good)
    http_server.serve_bytes(NAME, bad)
    raw = tmp_path / "raw"
    sources = _sources(tmp_path, [http_server.url(NAME)])  # no published hash: trust on first use
    with pytest.raises(D.VerificationError, match=needle) as e:
        D.download("nyud", None, raw, sources=sources, progress=False)
    assert "removed" in str(e.value) and "\n" not in str(e.value)
    assert _leftovers(raw) == [] and not (raw / D.LOCK_NAME).exists()
    # The good archive is then accepted (nothing of the bad one was recorded), and extracts.
    del http_server.overrides[NAME]
    _serve(http_server, good)
    assert D.download("nyud", None, raw, sources=sources, progress=False) == {NAME: _sha(good)}
    assert D.source_dir("nyud", None, raw, sources=sources, progress=False)[0] == raw / TOP


def test_damaged_zip_is_refused(tmp_path, http_server):  # noqa: F811
    zname = "NYUDv2.zip"
    folder = _tree(tmp_path / "srcz")
    zpath = tmp_path / zname
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, f"{TOP}/{p.relative_to(folder)}")
    data = bytearray(zpath.read_bytes())
    data[data.index(b"\x00\x01\x02\x03\x04\x05") + 100] ^= 0xFF  # inside images/0001.png's stored bytes
    http_server.serve_bytes(zname, bytes(data))
    raw = tmp_path / "raw"
    sources = _sources(tmp_path, [http_server.url(zname)], name=zname)
    with pytest.raises(D.VerificationError, match=r"NYUDv2.zip is damaged \(CRC error in NYUDv2/images/0001"):
        D.download("nyud", None, raw, sources=sources, progress=False)
    assert not (raw / D.LOCK_NAME).exists() and not (raw / zname).exists()
    http_server.serve_bytes(zname, zpath.read_bytes())
    assert D.download("nyud", None, raw, sources=sources, progress=False) == {zname: _sha(zpath)}


def test_damaged_local_copy_and_its_lock_entry_are_dropped(tmp_path, http_server, caplog):  # noqa: F811
    # A lock written before whole archives were read may have recorded a damaged file: the damaged copy
    # is removed with its entry, and the good download is then accepted instead of "not the lock".
    good = _archive(tmp_path)
    bad = _gz_trailer_crc_changed(good)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / NAME).write_bytes(bad)
    st = (raw / NAME).stat()
    entry = {"sha256": _sha(bad), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "url": None}
    (raw / D.LOCK_NAME).write_text(json.dumps({"version": 1, "files": {f"nyud/atrc/{NAME}": entry}}))
    sources = _sources(tmp_path, [_serve(http_server, good)])
    with pytest.raises(D.VerificationError) as e:
        D.verify("nyud", None, raw, sources=sources, progress=False)
    msg = str(e.value)
    assert "CRC check failed" in msg and f"{raw / NAME} was removed" in msg
    assert "mtl3d data download nyud --variant atrc --raw" in msg and "\n" not in msg
    assert not (raw / NAME).exists() and _lock(raw)["files"] == {}
    (raw / NAME).write_bytes(bad)
    (raw / D.LOCK_NAME).write_text(json.dumps({"version": 1, "files": {f"nyud/atrc/{NAME}": entry}}))
    with caplog.at_level(logging.WARNING, logger=D.__name__):
        assert D.download("nyud", None, raw, sources=sources, progress=False) == {NAME: _sha(good)}
    assert "downloading it again" in caplog.text
    assert _lock(raw)["files"][f"nyud/atrc/{NAME}"]["read_to_end"] is True


def test_archive_lacking_a_folder_extracts_nothing(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / NAME).write_bytes(_lacks_a_folder(tmp_path))
    with pytest.raises(UserError) as e:
        D.source_dir("nyud", None, raw, sources=_sources(tmp_path, ["http://example.org/x"]), progress=False)
    msg = str(e.value)
    assert f"{NAME} has no {TOP}/edge/, which nyud atrc needs" in msg and "http://example.org/x" in msg
    assert "mtl3d data download nyud --variant atrc" in msg and "\n" not in msg
    assert sorted(p.name for p in raw.iterdir()) == []  # no partial folder, no lock, no bad archive


def test_raw_naming_a_file_is_a_one_line_error(tmp_path):
    from mtl3d.cli import app

    afile = tmp_path / "notes.txt"
    afile.write_text("not a folder")
    sources = _sources(tmp_path, [])
    for raw in (afile, afile / "sub"):
        res = CliRunner().invoke(
            app, ["data", "download", "nyud", "--raw", str(raw), "--sources", str(sources)]
        )
        assert isinstance(res.exception, UserError), res.exception
        assert f"{afile}" in str(res.exception) and "a file, not a folder" in str(res.exception)
        with pytest.raises(UserError, match="a file, not a folder"):
            D.source_dir("nyud", None, raw, sources=sources, progress=False)
    assert afile.read_text() == "not a folder"
    # a folder where the archive should go
    (tmp_path / "raw" / NAME).mkdir(parents=True)
    with pytest.raises(UserError, match=f"{tmp_path / 'raw' / NAME} is not a file; move it away"):
        D.download("nyud", None, tmp_path / "raw", sources=sources, progress=False)
