"""Verified downloads of the real datasets' archives (NYUD-v2, PASCAL-Context) and their safe extraction.

``sources.yaml`` lists, per dataset and variant, the archive(s), their mirrors and what is known about them.
A download goes to ``<name>.part`` and is checked before it takes its final name. HTTP downloads resume
from the .part only with the validator (strong ETag or Last-Modified) its bytes came with, sent as
If-Range, so a file that changed upstream is fetched whole instead of spliced; without one they start
over. Checks, in order: the published size; the whole archive read in one pass with the hash (gzip CRC
and length, the tar read to its end-of-archive blocks, every zip member's CRC, no unsafe member, the
variant's top folder and required entries); the pinned sha256 if there is one, else the hash recorded
in ``raw_dir/mtl3d-sources.lock.json``, else trust on first use (recorded there). The lock only ever
records an archive that passed all of these; a file they prove bad is removed, with the next step.
Transfers use pooch (HTTP) and gdown (Google Drive).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

import yaml

from mtl3d.errors import UserError, unknown_name
from mtl3d.io import atomic_write_text

log = logging.getLogger(__name__)

LOCK_NAME = "mtl3d-sources.lock.json"
SOURCES_ENV = "MTL3D_SOURCES"
KINDS = ("http", "gdrive")
TOFU = "recorded (trust on first use)"
_TMP_PREFIX = ".tmp-extract-"
_HASH_CHUNK = 8 << 20
_HASH_BAR_MIN = 64 << 20  # below this hashing takes well under a second: no bar
_HTTP_CHUNK = 1 << 20
_HTTP_TIMEOUT = 60  # seconds without a byte before a mirror counts as stalled
_MAX_RESUMES = 5
# PEP 706's extraction filters (3.12, backported to 3.10.12 / 3.11.4); without them our own member
# checks, which always run, are the only guard.
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")
# An empty tuple catches nothing: an except clause naming a missing attribute would itself fail.
_FilterError: Any = getattr(tarfile, "FilterError", ())


class SourceUnavailable(UserError):
    """No mirror delivered a file (or none is known): the message says where to put a copy by hand.

    The message spans several lines; it is the one multi-line user error.
    """


class VerificationError(UserError):
    """A file's size or hash disagrees with the pin or the lock."""


@dataclass(frozen=True)
class Mirror:
    url: str
    kind: str  # "http" | "gdrive"


@dataclass(frozen=True)
class FileSpec:
    name: str
    size: int | None
    sha256: str | None
    reported_sha256: str | None  # unconfirmed third-party hash: compared, a mismatch only warns
    mirrors: tuple[Mirror, ...]


@dataclass(frozen=True)
class VariantSpec:
    dataset: str
    variant: str
    description: str
    top_dir: str
    required: tuple[str, ...]  # relative to top_dir; a trailing "/" means a folder
    files: tuple[FileSpec, ...]
    image_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class VerifiedFile:
    name: str
    path: Path
    size: int
    sha256: str
    how: str  # "pinned" | "lock" | TOFU


class _MirrorFailed(Exception):
    """One mirror did not deliver; the next one is tried."""


class _Mismatch(Exception):
    """A check failed; ``against`` says which (size | pinned | lock | format | damaged | refused).

    ``format``, ``damaged`` and ``refused`` (unsafe members, or not the layout the variant needs) prove
    the file is not a good copy of the archive, whatever a lock says.
    """

    def __init__(self, against: str, message: str, sha256: str | None = None) -> None:
        super().__init__(message)
        self.against = against
        self.sha256 = sha256


_BAD_COPY = ("format", "damaged", "refused")


# ---------------------------------------------------------------------------------------------------
# sources.yaml


def _load(sources: str | Path | None) -> tuple[dict[str, Any], str]:
    """The parsed sources file and how to name it in messages."""
    if sources is None and os.environ.get(SOURCES_ENV):
        sources = os.environ[SOURCES_ENV]
    if sources is None:
        where = "the packaged sources.yaml"
        text = resources.files("mtl3d.data").joinpath("sources.yaml").read_text(encoding="utf-8")
    else:
        where = str(sources)
        if not Path(sources).is_file():
            raise UserError(f"sources file {where} not found")
        text = Path(sources).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"{where} is not valid YAML{line}") from None
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
        raise UserError(f"{where}: expected a top-level 'datasets' mapping")
    return data, where


def _sha(value: Any, what: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise UserError(f"{where}: {what} must be 64 hex digits or null")
    return value.lower()


def _parse_file(raw: Any, ctx: str, where: str) -> FileSpec:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise UserError(f"{where}: {ctx}: every file needs a 'name'")
    name = raw["name"]
    if "/" in name or "\\" in name or name in (".", ".."):
        raise UserError(f"{where}: {ctx}: file name {name!r} must be a plain file name")
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise UserError(f"{where}: {ctx}/{name}: size must be a byte count or null")
    mirrors = []
    for m in raw.get("mirrors") or []:
        if not isinstance(m, dict) or not isinstance(m.get("url"), str):
            raise UserError(f"{where}: {ctx}/{name}: every mirror needs a 'url'")
        kind = m.get("kind", "http")
        if kind not in KINDS:
            raise UserError(f"{where}: {ctx}/{name}: mirror kind {kind!r} is not one of {', '.join(KINDS)}")
        mirrors.append(Mirror(m["url"], kind))
    return FileSpec(
        name=name,
        size=size,
        sha256=_sha(raw.get("sha256"), f"{ctx}/{name} sha256", where),
        reported_sha256=_sha(raw.get("reported_sha256"), f"{ctx}/{name} reported_sha256", where),
        mirrors=tuple(mirrors),
    )


def _parse_variant(dataset: str, variant: str, raw: Any, where: str) -> VariantSpec:
    ctx = f"{dataset}/{variant}"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: {ctx} must be a mapping")
    top = raw.get("top_dir")
    if not isinstance(top, str) or not top or "/" in top.strip("/") or top in (".", ".."):
        raise UserError(f"{where}: {ctx}: top_dir must be one folder name")
    files = raw.get("files") or []
    if not isinstance(files, list) or not files:
        raise UserError(f"{where}: {ctx}: 'files' must list at least one file")
    size = raw.get("image_size")
    return VariantSpec(
        dataset=dataset,
        variant=variant,
        description=str(raw.get("description") or ""),
        top_dir=top.strip("/"),
        required=tuple(str(r) for r in raw.get("required") or []),
        files=tuple(_parse_file(f, ctx, where) for f in files),
        image_size=(int(size[0]), int(size[1])) if isinstance(size, list) and len(size) == 2 else None,
    )


def _resolve(dataset: str, variant: str | None, sources: str | Path | None) -> VariantSpec:
    data, where = _load(sources)
    datasets = data["datasets"]
    if dataset not in datasets:
        raise unknown_name("dataset", dataset, list(datasets))
    entry = datasets[dataset] or {}
    variants = entry.get("variants") or {}
    if variant is None:
        variant = entry.get("default")
        if variant is None:
            raise UserError(f"{where}: {dataset} has no default variant; pass --variant")
    if variant not in variants:
        raise unknown_name("variant", variant, list(variants))
    return _parse_variant(dataset, variant, variants[variant], where)


def dataset_names() -> list[str]:
    """Datasets that have download sources (``$MTL3D_SOURCES`` if set, else the packaged file)."""
    return sorted(_load(None)[0]["datasets"])


def variant_names(dataset: str) -> list[str]:
    """The variants of ``dataset``: different datasets of the same name, never mirrors of each other."""
    datasets = _load(None)[0]["datasets"]
    if dataset not in datasets:
        raise unknown_name("dataset", dataset, list(datasets))
    return sorted((datasets[dataset] or {}).get("variants") or {})


def default_variant(dataset: str) -> str:
    """The variant used when none is named."""
    return _resolve(dataset, None, None).variant


def variant_spec(dataset: str, variant: str | None, sources: str | Path | None = None) -> VariantSpec:
    """What to fetch for ``dataset``/``variant`` (None: the default variant) and how to check it.

    ``sources``: a sources YAML; None means ``$MTL3D_SOURCES`` if set, else the packaged one.
    """
    return _resolve(dataset, variant, sources)


# ---------------------------------------------------------------------------------------------------
# JSON files written atomically (lock, markers)


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Lock and marker files: sorted keys (stable diffs), written atomically with the user's umask."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_raw_dir(raw: Path) -> None:
    """The archive folder, or the nearest part of its path that exists, must be a folder."""
    for p in (raw, *raw.absolute().parents):
        if p.exists():
            if not p.is_dir():
                what = "is" if p == raw else f"lies under {p}, which is"
                raise UserError(f"the archive folder {raw} {what} a file, not a folder; pass --raw FOLDER")
            return


def _read_lock(raw: Path) -> dict[str, Any]:
    path = raw / LOCK_NAME
    if not path.exists():
        return {"version": 1, "files": {}}
    lock = _read_json(path)
    if not isinstance(lock, dict) or not isinstance(lock.get("files"), dict):
        raise UserError(f"{path} is not a valid lock file; fix it or delete it (hashes are then re-recorded)")
    return lock


def _key(spec: VariantSpec, f: FileSpec) -> str:
    return f"{spec.dataset}/{spec.variant}/{f.name}"


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record(raw: Path, lock: dict[str, Any], key: str, v: VerifiedFile, url: str | None) -> None:
    """Remember a verified file in the lock (its hash, and its size+mtime so the next call needn't hash)."""
    old = lock["files"].get(key)
    st = v.path.stat()
    if old and old.get("sha256") == v.sha256:
        new = {**old, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "read_to_end": True}
    else:
        new = {
            "sha256": v.sha256,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "url": url,  # None: placed by hand
            "recorded": _utc_now(),
            "pinned": v.how == "pinned",
            "read_to_end": True,  # recorded only after the whole archive was read and checked
        }
    if new != old:
        lock["files"][key] = new
        _write_json_atomic(raw / LOCK_NAME, lock)


# ---------------------------------------------------------------------------------------------------
# checks


class _HashingReader:
    """A read-only file wrapper that hashes (and counts on a bar) every byte read through it."""

    def __init__(self, fh: BinaryIO, bar: Any) -> None:
        self.fh, self.bar, self.hash = fh, bar, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self.fh.read(n)
        self.hash.update(chunk)
        if self.bar is not None:
            self.bar.update(len(chunk))
        return chunk


def _sha256(
    path: Path, progress: bool, check: Callable[[BinaryIO], None] | None = None
) -> tuple[str, _Mismatch | None]:
    """The file's sha256, read once; ``check`` (if given) reads the archive from that same stream.

    What ``check`` raises is returned, once the rest of the file has been hashed.
    """
    size = path.stat().st_size
    bar = None
    if progress and size >= _HASH_BAR_MIN:
        from tqdm import tqdm

        what = "checking" if check is not None else "sha256"
        bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"{what} {path.name}", leave=False)
    problem = None
    try:
        with open(path, "rb") as fh:
            reader = _HashingReader(fh, bar)
            if check is not None:
                try:
                    check(reader)  # type: ignore[arg-type]
                except _Mismatch as e:
                    problem = e
            while reader.read(_HASH_CHUNK):
                pass
    finally:
        if bar is not None:
            bar.close()
    return reader.hash.hexdigest(), problem


class _TailKeeper:
    """A read-only wrapper that keeps the last bytes read through it, by stream offset."""

    def __init__(self, fh: Any, keep: int) -> None:
        self.fh, self.keep, self.pos = fh, keep, 0
        self.chunks: deque[tuple[int, bytes]] = deque()

    def read(self, n: int = -1) -> bytes:
        chunk = self.fh.read(n)
        if chunk:
            self.chunks.append((self.pos, chunk))
            self.pos += len(chunk)
            while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) < self.pos - self.keep:
                self.chunks.popleft()
        return chunk

    def since(self, offset: int) -> bytes | None:
        """The bytes from ``offset`` to what was last read, or None if no longer kept."""
        if not self.chunks or self.chunks[0][0] > offset:
            return None if offset < self.pos else b""
        return b"".join(c for _, c in self.chunks)[offset - self.chunks[0][0] :]


_TAR_BUF = 1 << 20


def _read_tar_stream(stream: Any, name: str) -> list[tarfile.TarInfo]:
    """Read a tar stream to its end; raise ``_Mismatch('damaged')`` unless it ends as a tar should.

    tarfile takes a damaged header after the first one for the end of the archive; an archive ends
    with zero blocks only, so everything from where tarfile stopped must be zeros (at least one block).
    """
    tail = _TailKeeper(stream, keep=4 * _TAR_BUF)
    try:
        with tarfile.open(fileobj=tail, mode="r|", bufsize=_TAR_BUF) as tf:  # type: ignore[call-overload]
            for _ in tf:
                pass
            members, end = tf.members, tf.offset
        rest = tail.since(end)
        if rest is None:
            raise _Mismatch("damaged", f"{name} is damaged (cannot find where its tar data ends)")
        n_after, nonzero = len(rest), bool(rest.strip(b"\0"))
        while not nonzero and (chunk := tail.read(_TAR_BUF)):
            n_after += len(chunk)
            nonzero = bool(chunk.strip(b"\0"))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise _Mismatch("damaged", f"{name} is damaged ({_short(e)})") from None
    if nonzero or n_after < tarfile.BLOCKSIZE:
        what = "a damaged member header" if nonzero else "no end-of-archive block (truncated)"
        raise _Mismatch("damaged", f"{name} is damaged ({what} after {len(members)} members)")
    return members


def _check_layout(spec: VariantSpec, name: str, tops: set[str], paths: dict[tuple[str, ...], bool]) -> None:
    """The archive holds the variant's one top folder and every required entry (``paths``: parts -> is a
    folder), so extracting it gives a complete source folder."""
    if tops != {spec.top_dir}:
        shown = ", ".join(sorted(tops)[:5]) + (", ..." if len(tops) > 5 else "") or "nothing"
        raise _Mismatch("refused", f"{name} should hold the single folder {spec.top_dir}/ but holds: {shown}")
    folders = {p[:i] for p in paths for i in range(1, len(p))} | {p for p, d in paths.items() if d}
    missing = []
    for entry in spec.required:
        parts = (spec.top_dir, *_member_parts(entry))
        ok = parts in folders if entry.endswith("/") else paths.get(parts) is False
        if not ok:
            missing.append(f"{spec.top_dir}/{entry}")
    if missing:
        raise _Mismatch(
            "refused", f"{name} has no {', '.join(missing)}, which {spec.dataset} {spec.variant} needs"
        )


def _inspect_archive(
    spec: VariantSpec | None, f: FileSpec, path: Path, progress: bool
) -> tuple[str, _Mismatch | None]:
    """Hash the file and read the whole archive: gzip CRC, tar to its end, zip CRCs, safe members, and
    (``spec`` given: the variant's archive) its layout. Returns the sha256 and the first problem."""
    kind = _archive_kind(f.name)
    if kind is None:
        return _sha256(path, progress)
    if kind == "zip":
        actual, _ = _sha256(path, progress)
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                if bad is not None:
                    return actual, _Mismatch("damaged", f"{f.name} is damaged (CRC error in {bad})", actual)
                infos = zf.infolist()
            tops = _check_zip_members(path, infos)
            paths = {_member_parts(i.filename): i.is_dir() for i in infos if _member_parts(i.filename)}
            if spec is not None:
                _check_layout(spec, f.name, tops, paths)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
            return actual, _Mismatch("damaged", f"{f.name} is damaged ({_short(e)})", actual)
        except UserError as e:
            return actual, _Mismatch("refused", str(e), actual)
        except _Mismatch as e:
            e.sha256 = actual
            return actual, e
        return actual, None

    def read(raw: BinaryIO) -> None:
        if kind == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:  # type: ignore[call-overload]
                members = _read_tar_stream(gz, f.name)
                # Past the tar's end: the rest of the gzip stream, so its CRC and length are checked.
                try:
                    while gz.read(_TAR_BUF):
                        pass
                except (EOFError, zlib.error, gzip.BadGzipFile) as e:
                    raise _Mismatch("damaged", f"{f.name} is damaged ({_short(e)})") from None
        else:
            members = _read_tar_stream(raw, f.name)
        try:
            tops = _check_tar_members(path, members)
        except UserError as e:
            raise _Mismatch("refused", str(e)) from None
        if spec is not None:
            paths = {_member_parts(m.name): m.isdir() for m in members if _member_parts(m.name)}
            _check_layout(spec, f.name, tops, paths)

    actual, problem = _sha256(path, progress, read)
    if problem is not None:
        problem.sha256 = actual
    return actual, problem


def _archive_kind(name: str) -> str | None:
    low = name.lower()
    if low.endswith((".tar.gz", ".tgz", ".gz")):
        return "gzip"
    if low.endswith(".zip"):
        return "zip"
    if low.endswith(".tar"):
        return "tar"
    return None


def _check_format(path: Path, name: str) -> None:
    """Reject what is obviously not the archive (a sharing site's HTML page) before it can be recorded."""
    kind = _archive_kind(name)
    if kind is None:
        return
    with open(path, "rb") as fh:
        head = fh.read(512)
    ok = {
        "gzip": head[:2] == b"\x1f\x8b",
        "zip": head[:4] in (b"PK\x03\x04", b"PK\x05\x06"),
        "tar": head[257:262] == b"ustar",
    }[kind]
    if not ok:
        html = head.lstrip()[:1] == b"<"
        hint = "it looks like an HTML page" if html else f"it starts with {head[:8].hex()}"
        raise _Mismatch("format", f"{name} is not a {kind} archive ({hint})")


def _check(
    spec: VariantSpec,
    f: FileSpec,
    path: Path,
    lock: dict[str, Any],
    lock_path: Path,
    *,
    progress: bool,
    cache_ok: bool,
) -> VerifiedFile:
    """Check ``path`` (the final file or a finished .part) against size, then pin / lock / nothing."""
    st = path.stat()
    entry = lock["files"].get(_key(spec, f))
    if f.size is not None and st.st_size != f.size:
        raise _Mismatch("size", f"{f.name}: size mismatch: expected {f.size:,} bytes, got {st.st_size:,}")
    if f.sha256:
        expected, how = f.sha256, "pinned"
    elif entry:
        expected, how = entry.get("sha256"), "lock"
        if entry.get("size") is not None and st.st_size != entry["size"]:
            raise _Mismatch(
                "lock",
                f"{f.name} does not match the lock {lock_path} ({_key(spec, f)}: sha256 "
                f"{entry.get('sha256')}, {entry['size']:,} bytes, recorded {entry.get('recorded', '?')}; "
                f"this file has {st.st_size:,} bytes)",
            )
    else:
        expected, how = None, TOFU
    if (
        cache_ok
        and entry
        and expected is not None
        and entry.get("sha256") == expected
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
        and entry.get("read_to_end") is True
    ):
        # Unchanged since it was last read through: re-reading 4 GB on every call would make re-runs slow.
        return VerifiedFile(f.name, path, st.st_size, expected, how)
    _check_format(path, f.name)
    # Only the variant's archive (its first file) must hold the top folder; more files are side data.
    actual, problem = _inspect_archive(spec if f is spec.files[0] else None, f, path, progress)
    if f.sha256 and actual != f.sha256:
        raise _Mismatch(
            "pinned", f"{f.name}: sha256 mismatch: expected {f.sha256} (pinned), got {actual}", actual
        )
    if problem is not None:
        raise problem
    if how == "lock" and actual != expected:
        raise _Mismatch(
            "lock",
            f"{f.name} does not match the lock {lock_path} ({_key(spec, f)}: sha256 {expected} recorded "
            f"{entry.get('recorded', '?')} from {entry.get('url') or 'a copy placed by hand'}, "
            f"this file has {actual})",
        )
    if f.reported_sha256 and actual != f.reported_sha256:
        log.warning(
            "%s: sha256 %s differs from the hash a third party reported, %s (unconfirmed; file kept)",
            f.name,
            actual,
            f.reported_sha256,
        )
    return VerifiedFile(f.name, path, st.st_size, actual, how)


def _verify_present(
    spec: VariantSpec, f: FileSpec, path: Path, raw: Path, lock: dict[str, Any], progress: bool
) -> VerifiedFile:
    """Verify a file under its final name; remove it only when a published size/pin or its own content
    (damaged, unsafe, not the variant's layout) proves it wrong. A lock entry that recorded such a file
    (written before whole archives were read) is dropped with it."""
    lock_path = raw / LOCK_NAME
    try:
        v = _check(spec, f, path, lock, lock_path, progress=progress, cache_ok=True)
    except _Mismatch as e:
        if e.against in ("size", "pinned"):
            path.unlink(missing_ok=True)
            raise VerificationError(f"{e}; the file was removed") from None
        if e.against in _BAD_COPY:
            path.unlink(missing_ok=True)
            entry = lock["files"].get(_key(spec, f))
            if entry and not entry.get("pinned") and e.sha256 and entry.get("sha256") == e.sha256:
                del lock["files"][_key(spec, f)]
                _write_json_atomic(lock_path, lock)
            raise VerificationError(f"{e}; {path} was removed: {_next_step(spec, raw)}") from None
        raise VerificationError(
            f"{e}. Delete {path} to download it again, or delete the entry {_key(spec, f)!r} "
            f"from the lock if upstream really changed the archive"
        ) from None
    entry = lock["files"].get(_key(spec, f)) or {}
    _record(raw, lock, _key(spec, f), v, entry.get("url"))
    return v


# ---------------------------------------------------------------------------------------------------
# transfers


def _short(e: BaseException) -> str:
    """requests' messages run to several hundred characters; keep the errno part."""
    m = re.search(r"\[Errno -?\d+\] [^'\")]+", str(e))
    return m.group(0).strip() if m else f"{type(e).__name__}: {str(e)[:160]}"


def _content_range(value: str | None) -> tuple[int, int | None]:
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if m is None:
        raise _MirrorFailed(f"bad Content-Range {value!r} in a 206 answer")
    return int(m.group(1)), None if m.group(2) == "*" else int(m.group(2))


def _validator_path(part: Path) -> Path:
    return part.with_name(f"{part.name}.validator.json")


def _drop_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _validator_path(part).unlink(missing_ok=True)


def _read_validator(part: Path, url: str) -> str | None:
    """The validator (strong ETag or Last-Modified) the .part's bytes were sent with from ``url``, if any."""
    rec = _read_json(_validator_path(part))
    if isinstance(rec, dict) and rec.get("url") == url and isinstance(rec.get("validator"), str):
        return rec["validator"]
    return None


class _PartWriter:
    """The file object handed to pooch: appends to the .part, or starts it over on a full (200) answer.

    Its ``on_response`` is a requests hook: it sees the status before pooch streams the body. The .part
    is opened only then, so a mirror that answers 404 leaves no empty file behind. A full answer's
    validator is written next to the .part first, so a later resume can ask for the same file (If-Range).
    """

    def __init__(self, part: Path, offset: int, url: str) -> None:
        self.part = part
        self.url = url
        self.offset = offset
        self.written = 0
        self.total: int | None = None
        self.responded = False
        self._fh: Any = None

    def on_response(self, r: Any, *args: Any, **kwargs: Any) -> None:
        if r.is_redirect or not 200 <= r.status_code < 300:
            return
        self.responded = True
        if r.status_code == 206:
            start, total = _content_range(r.headers.get("Content-Range"))
            if start != self.offset:
                _drop_part(self.part)
                raise _MirrorFailed(f"asked to resume at byte {self.offset}, the server sent {start}")
            self.total = total
            self._fh = open(self.part, "r+b")  # noqa: SIM115  (closed by close())
            self._fh.seek(self.offset)
            self._fh.truncate()
        else:
            # The server ignored Range (or none was sent): the body is the whole file.
            if self.offset:
                log.info("%s: the server ignored the Range request; downloading from the start", r.url)
            self.offset = 0
            length = r.headers.get("Content-Length", "")
            self.total = int(length) if length.isdigit() else None
            etag = r.headers.get("ETag")
            # If-Range takes a strong ETag or a date; a weak ETag cannot tell byte-identical files.
            validator = etag if etag and not etag.startswith("W/") else r.headers.get("Last-Modified")
            if validator:
                _write_json_atomic(_validator_path(self.part), {"url": self.url, "validator": validator})
            else:
                _validator_path(self.part).unlink(missing_ok=True)
            self._fh = open(self.part, "wb")  # noqa: SIM115  (closed by close())

    def write(self, chunk: bytes) -> int:
        self.written += len(chunk)
        return self._fh.write(chunk)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()

    @property
    def size(self) -> int:
        return self.offset + self.written


def _http_get(url: str, part: Path, size: int | None, progress: bool) -> None:
    """Fetch ``url`` into ``part``, resuming what is there (only from the same file: If-Range with the
    validator it was sent with; without one it starts over); interrupted transfers resume in place."""
    import pooch
    import requests

    resumes = 0
    restarted = False
    while True:
        offset = part.stat().st_size if part.exists() else 0
        validator = _read_validator(part, url) if offset else None
        if offset and (validator is None or (size is not None and offset > size)):
            log.info("%s: cannot tell whether %s is still the same file; starting over", url, part.name)
            _drop_part(part)
            offset = 0
        writer = _PartWriter(part, offset, url)
        # identity: requests would otherwise un-gzip a .tar.gz served with Content-Encoding: gzip.
        headers = {"Accept-Encoding": "identity"}
        if offset and validator is not None:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = validator
        fetch = pooch.HTTPDownloader(
            progressbar=progress,
            chunk_size=_HTTP_CHUNK,
            headers=headers,
            hooks={"response": writer.on_response},
            timeout=_HTTP_TIMEOUT,
        )
        try:
            try:
                fetch(url, writer, None)
            finally:
                writer.close()
        except requests.HTTPError as e:
            code = e.response.status_code if e.response is not None else "error"
            if code == 416 and offset and e.response.headers.get("Content-Range") == f"bytes */{offset}":
                return  # the .part already holds the whole file (interrupted while being checked)
            if code == 416 and offset and not restarted:
                # The .part does not fit the file the server has now: start over once.
                _drop_part(part)
                restarted = True
                continue
            raise _MirrorFailed(f"HTTP {code}") from None
        except requests.RequestException as e:
            if writer.responded and resumes < _MAX_RESUMES:
                resumes += 1
                log.info("%s: transfer interrupted at byte %d (%s); resuming", url, writer.size, _short(e))
                continue
            raise _MirrorFailed(_short(e)) from None
        if writer.total is not None and writer.size != writer.total:
            if writer.written and resumes < _MAX_RESUMES:
                resumes += 1
                continue
            raise _MirrorFailed(f"incomplete: {writer.size:,} of {writer.total:,} bytes")
        return


def _gdrive_id(url: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme:
        return url  # a bare file id
    ids = parse_qs(parts.query).get("id")
    if ids:
        return ids[0]
    m = re.search(r"/d/([A-Za-z0-9_-]+)", parts.path)
    if m is None:
        raise _MirrorFailed(f"cannot find a Google Drive file id in {url}")
    return m.group(1)


def _gdrive_get(url: str, part: Path, size: int | None, progress: bool) -> None:
    import gdown

    if part.exists():
        if size is not None and part.stat().st_size == size:
            return
        # gdown takes an existing output for a finished download; a partial one from an http mirror
        # is not (gdown resumes from its own partial file, <output><random>.part).
        _drop_part(part)
    try:
        out = gdown.download(id=_gdrive_id(url), output=str(part), quiet=not progress, resume=True)
    except Exception as e:  # gdown raises its own, requests' and OS errors: all mean "this mirror failed"
        raise _MirrorFailed(_short(e)) from None
    if not out or not part.is_file():
        raise _MirrorFailed("Google Drive delivered no file")


# ---------------------------------------------------------------------------------------------------
# download / verify


def _fetch(spec: VariantSpec, f: FileSpec, raw: Path, lock: dict[str, Any], progress: bool) -> VerifiedFile:
    final = raw / f.name
    part = raw / f"{f.name}.part"
    lock_path = raw / LOCK_NAME
    failed: list[tuple[str, str]] = []
    rejected: list[str] = []
    for m in f.mirrors:
        try:
            if m.kind == "gdrive":
                _gdrive_get(m.url, part, f.size, progress)
            else:
                _http_get(m.url, part, f.size, progress)
        except _MirrorFailed as e:
            failed.append((m.url, str(e)))
            continue
        try:
            v = _check(spec, f, part, lock, lock_path, progress=progress, cache_ok=False)
        except _Mismatch as e:
            _drop_part(part)
            tail = " (if upstream really changed, delete that lock entry)" if e.against == "lock" else ""
            if e.against in _BAD_COPY:
                tail = f" (run the download again, or put a good copy at {final})"
            rejected.append(f"{e}; the download from {m.url} was removed{tail}")
            continue
        os.replace(part, final)
        _validator_path(part).unlink(missing_ok=True)
        v = VerifiedFile(v.name, final, v.size, v.sha256, v.how)
        _record(raw, lock, _key(spec, f), v, m.url)
        return v
    if rejected:
        others = "".join(f"; {url}: {why}" for url, why in failed)
        raise VerificationError("; ".join(rejected) + others)
    raise SourceUnavailable(_placement(spec, raw, failed))


def download_verified(
    dataset: str,
    variant: str | None,
    raw_dir: str | Path,
    *,
    sources: str | Path | None = None,
    progress: bool = True,
) -> list[VerifiedFile]:
    """Like :func:`download`, with each file's size and how it was verified (pinned / lock / TOFU)."""
    spec = _resolve(dataset, variant, sources)
    raw = Path(raw_dir)
    _check_raw_dir(raw)
    raw.mkdir(parents=True, exist_ok=True)
    lock = _read_lock(raw)
    out = []
    for f in spec.files:
        final = raw / f.name
        if final.exists() and not final.is_file():
            raise UserError(f"{final} is not a file; move it away so that {f.name} can be downloaded there")
        if final.is_file():
            try:
                out.append(_verify_present(spec, f, final, raw, lock, progress))
                continue
            except VerificationError as e:
                if final.exists():
                    raise  # kept (a lock mismatch): the user decides which side is right
                log.warning("%s; downloading it again", e)
        out.append(_fetch(spec, f, raw, lock, progress))
    return out


def download(
    dataset: str,
    variant: str | None,
    raw_dir: str | Path,
    *,
    sources: str | Path | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Fetch the variant's files into ``raw_dir`` (unless already there and verified): name -> sha256.

    Raises :class:`SourceUnavailable` (a :class:`UserError` whose message is the placement message)
    when no mirror delivers, and :class:`VerificationError` when what was delivered fails the checks.
    """
    files = download_verified(dataset, variant, raw_dir, sources=sources, progress=progress)
    return {v.name: v.sha256 for v in files}


def verify(
    dataset: str,
    variant: str | None,
    raw_dir: str | Path,
    *,
    sources: str | Path | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Check the variant's archives present in ``raw_dir``: read through, against the pin, else the lock,
    else record them."""
    spec = _resolve(dataset, variant, sources)
    raw = Path(raw_dir)
    _check_raw_dir(raw)
    lock = _read_lock(raw)
    return {
        f.name: _verify_present(spec, f, raw / f.name, raw, lock, progress).sha256
        for f in spec.files
        if (raw / f.name).is_file()
    }


def write_marker(
    dataset: str,
    variant: str | None,
    raw_dir: str | Path,
    files: list[VerifiedFile],
    *,
    extracted: str | Path | None = None,
    sources: str | Path | None = None,
) -> Path:
    """Write ``<raw_dir>/<variant>.verified.json`` (the download stage's output for the workflow).

    Rewritten only when its content changes, so an idempotent re-run leaves its mtime alone.
    """
    spec = _resolve(dataset, variant, sources)
    raw = Path(raw_dir)
    marker = raw / f"{spec.variant}.verified.json"
    content = {
        "dataset": spec.dataset,
        "variant": spec.variant,
        "files": {v.name: {"sha256": v.sha256, "size": v.size} for v in files},
        "top_dir": spec.top_dir,
        "extracted": extracted is not None and Path(extracted).is_dir(),
    }
    if _read_json(marker) != content:
        _write_json_atomic(marker, content)
    return marker


# ---------------------------------------------------------------------------------------------------
# messages


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n:,} bytes ({n / 2**30:.2f} GiB)" if n >= 2**30 else f"{n:,} bytes"


def _raw_opt(spec: VariantSpec, raw: Path) -> str:
    return "" if Path(raw) == Path("data/raw") / spec.dataset else f" --raw {raw}"


def _next_step(spec: VariantSpec, raw: Path) -> str:
    """How to get a good copy of the variant's archive, in one line."""
    f = spec.files[0]
    where = f" (from {f.mirrors[0].url})" if f.mirrors else ""
    return (
        f"run `mtl3d data download {spec.dataset} --variant {spec.variant}{_raw_opt(spec, raw)}` to fetch "
        f"{f.name} again{where}, or put a good copy at {Path(raw) / f.name}"
    )


def _placement(spec: VariantSpec, raw: Path, failed: list[tuple[str, str]] | None) -> str:
    raw_abs = Path(raw).absolute()
    names = ", ".join(f.name for f in spec.files)
    head = f"{spec.dataset} (variant {spec.variant}: {spec.description})"
    if failed is None:
        lines = [f"{head} needs {names}, which is not in {raw_abs}."]
    else:
        lines = [f"{head}: no mirror delivered {names}."]
    reasons = dict(failed or [])
    for f in spec.files:
        if f.sha256:
            hashes = f"sha256 {f.sha256}"
        else:
            hashes = "sha256 not published; recorded on first use"
            if f.reported_sha256:
                hashes += f" (a third party reports {f.reported_sha256}, unconfirmed)"
        lines.append(f"  {f.name}: {_fmt_size(f.size)}; {hashes}")
        if not f.mirrors:
            lines.append("    no public mirror is known")
        for m in f.mirrors:
            why = f" -> {reasons[m.url]}" if m.url in reasons else ""
            lines.append(f"    {'tried' if failed is not None else 'mirror'} ({m.kind}): {m.url}{why}")
    required = ", ".join(spec.required) if spec.required else "its contents"
    lines.append("Get it by hand (a browser can open these links) and put it at:")
    lines.extend(f"  {raw_abs / f.name}" for f in spec.files)
    lines.append(f"or extract it yourself so that this folder exists (with {required}):")
    lines.append(f"  {raw_abs / spec.top_dir}/")
    lines.append(f"then run: mtl3d data prepare {spec.dataset} --variant {spec.variant}{_raw_opt(spec, raw)}")
    return "\n".join(lines)


def placement_message(
    dataset: str, variant: str | None, raw_dir: str | Path, *, sources: str | Path | None = None
) -> str:
    """Where to put a copy obtained by hand: files with size and hash, mirrors, target paths, next step."""
    return _placement(_resolve(dataset, variant, sources), Path(raw_dir), None)


# ---------------------------------------------------------------------------------------------------
# extraction


def _member_parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in (".", ""))


def _is_absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None


def _refuse(archive: Path, member: str, why: str) -> UserError:
    return UserError(f"refusing to extract {archive}: member {member!r} {why}")


def _escapes(parts: tuple[str, ...], top: str) -> bool:
    """True if a normalised relative path leaves the archive's top folder."""
    return not parts or parts[0] != top or ".." in parts


def _check_tar_members(archive: Path, members: list[tarfile.TarInfo]) -> set[str]:
    """Refuse unsafe members (the checks PEP 706's data filter makes, done ourselves); return top names."""
    tops: set[str] = set()
    links: set[tuple[str, ...]] = set()
    for m in members:
        if _is_absolute(m.name):
            raise _refuse(archive, m.name, "has an absolute path")
        parts = _member_parts(m.name)
        if ".." in parts:
            raise _refuse(archive, m.name, "has a '..' component")
        if m.ischr() or m.isblk():
            raise _refuse(archive, m.name, "is a device file")
        if m.isfifo():
            raise _refuse(archive, m.name, "is a FIFO")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise _refuse(archive, m.name, "is not a file, folder or link")
        if not parts:
            continue  # the archive's "./" entry
        if any(parts[:i] in links for i in range(1, len(parts))):
            raise _refuse(archive, m.name, "lies below a link (it could be written outside)")
        if m.issym() or m.islnk():
            if _is_absolute(m.linkname):
                raise _refuse(archive, m.name, f"links to the absolute path {m.linkname!r}")
            # A symlink is relative to its folder, a hard link to the archive root.
            base = "/".join(parts[:-1]) if m.issym() else ""
            target = os.path.normpath(f"{base}/{m.linkname}" if base else m.linkname)
            if target == ".." or target.startswith("../"):
                raise _refuse(archive, m.name, f"links outside the destination ({m.linkname!r})")
            if _escapes(_member_parts(target), parts[0]):
                raise _refuse(archive, m.name, f"links outside the archive's folder ({m.linkname!r})")
            links.add(parts)
        tops.add(parts[0])
    return tops


def _check_zip_members(archive: Path, infos: list[zipfile.ZipInfo]) -> set[str]:
    tops: set[str] = set()
    for info in infos:
        if _is_absolute(info.filename):
            raise _refuse(archive, info.filename, "has an absolute path")
        parts = _member_parts(info.filename)
        if ".." in parts:
            raise _refuse(archive, info.filename, "has a '..' component")
        # Unix type bits, when the archiver stored them (writers often store only permissions).
        ftype = stat.S_IFMT(info.external_attr >> 16)
        if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(archive, info.filename, "is a link or special file")
        if parts:
            tops.add(parts[0])
    return tops


def _clean_stale(dest_parent: Path) -> None:
    for stale in dest_parent.glob(f"{_TMP_PREFIX}*"):
        # Left by an extraction that was killed; never a finished folder (those are renamed out).
        shutil.rmtree(stale, ignore_errors=True)


def safe_extract(archive: str | Path, dest_parent: str | Path, expected_top: str | None = None) -> Path:
    """Extract a tar(.gz) or zip holding one top-level folder into ``dest_parent``; return that folder.

    Unsafe members (absolute paths, '..', links leaving the folder, devices, FIFOs) are refused. The
    archive is extracted into ``dest_parent/.tmp-extract-*`` and its folder renamed into place, so an
    interrupted extraction never leaves a folder that looks complete.
    """
    archive, dest_parent = Path(archive), Path(dest_parent)
    if not archive.is_file():
        raise UserError(f"archive {archive} not found")
    dest_parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(dest_parent)
    with _open_archive(archive) as (kind, handle):
        if kind == "tar":
            members = handle.getmembers()
            tops = _check_tar_members(archive, members)
        else:
            tops = _check_zip_members(archive, handle.infolist())
        if expected_top is not None and tops != {expected_top}:
            shown = ", ".join(sorted(tops)[:5]) + (", ..." if len(tops) > 5 else "") or "nothing"
            raise UserError(f"{archive} should hold the single folder {expected_top}/ but holds: {shown}")
        if len(tops) != 1:
            raise UserError(f"{archive} should hold a single top-level folder, not {len(tops)} entries")
        top = next(iter(tops))
        final = dest_parent / top
        if final.exists():
            raise UserError(f"{final} already exists; remove it to extract {archive.name} again")
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=dest_parent))
        try:
            _extract_into(archive, kind, handle, tmp)
            if not (tmp / top).is_dir():
                raise UserError(f"{archive}: its top-level entry {top!r} is not a folder")
            os.replace(tmp / top, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tuple[str, Any]]:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                yield "zip", zf
            return
        with tarfile.open(archive, "r:*") as tf:
            yield "tar", tf
    except (tarfile.ReadError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{archive} is not a readable tar or zip archive ({_short(e)})") from None


def _extract_into(archive: Path, kind: str, handle: Any, tmp: Path) -> None:
    try:
        if kind == "zip":
            handle.extractall(tmp)
        elif _HAS_DATA_FILTER:
            handle.extractall(tmp, filter="data")
        else:
            handle.extractall(tmp)  # members were checked by _check_tar_members
    except _FilterError as e:
        member = getattr(e, "tarinfo", None)
        raise _refuse(archive, member.name if member is not None else "?", f"was refused ({e})") from None
    except (tarfile.TarError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{archive} is damaged ({_short(e)}); delete it and download it again") from None


# ---------------------------------------------------------------------------------------------------
# the raw data folder a variant's preparation reads


def _missing(spec: VariantSpec, top: Path) -> list[str]:
    missing = []
    for entry in spec.required:
        p = top / entry.rstrip("/")
        if not (p.is_dir() if entry.endswith("/") else p.is_file()):
            missing.append(entry)
    return missing


def _require(spec: VariantSpec, top: Path, hint: str) -> None:
    missing = _missing(spec, top)
    if missing:
        raise UserError(f"{top} is missing {', '.join(missing)} ({spec.dataset} {spec.variant}); {hint}")


def source_dir(
    dataset: str,
    variant: str | None,
    raw_dir: str | Path,
    *,
    sources: str | Path | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """The extracted top folder of the variant's data, and what to record about it in a manifest.

    Uses ``<raw_dir>/<top_dir>/`` if it exists (checking the archive too when present), else verifies
    and extracts the archive, else raises :class:`SourceUnavailable` with the placement message.
    """
    spec = _resolve(dataset, variant, sources)
    raw = Path(raw_dir)
    top = raw / spec.top_dir
    archive = spec.files[0]  # a variant is one archive; more files would be side data
    apath = raw / archive.name
    record = raw / f"{spec.top_dir}.extracted.json"
    info: dict[str, Any] = {
        "dataset": spec.dataset,
        "variant": spec.variant,
        "top_dir": spec.top_dir,
        "archive": None,
        "sha256": None,
        "extracted_by_user": True,
    }
    _check_raw_dir(raw)
    if top.is_dir():
        if apath.is_file():
            # The archive first: only a verified one (which holds every required entry) can fix the folder.
            v = _verify_present(spec, archive, apath, raw, _read_lock(raw), progress)
            info.update(archive=archive.name, sha256=v.sha256)
            hint = f"delete the folder to extract {archive.name} (which has them all) again"
        else:
            hint = f"complete it from {archive.name}, or delete it and {_next_step(spec, raw)}"
        _require(spec, top, hint)
        rec = _read_json(record)
        if (
            isinstance(rec, dict)
            and rec.get("archive") == archive.name
            and info["sha256"] in (None, rec.get("sha256"))
        ):
            # We extracted it ourselves from a verified archive (which may since have been deleted).
            info.update(archive=archive.name, sha256=rec.get("sha256"), extracted_by_user=False)
        return top, info
    if apath.is_file():
        v = _verify_present(spec, archive, apath, raw, _read_lock(raw), progress)
        safe_extract(apath, raw, expected_top=spec.top_dir)
        _write_json_atomic(record, {"archive": archive.name, "sha256": v.sha256, "extracted": _utc_now()})
        _require(spec, top, f"{archive.name} does not have the expected layout")
        info.update(archive=archive.name, sha256=v.sha256, extracted_by_user=False)
        return top, info
    raise SourceUnavailable(_placement(spec, raw, None))
