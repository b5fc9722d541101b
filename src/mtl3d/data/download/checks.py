"""Checking an archive: its size, then one pass that hashes it and reads it whole (gzip CRC and length, the
tar to its end-of-archive blocks, every zip member's CRC, no unsafe member, the variant's layout), then
the pinned sha256, else the lock, else trust on first use."""

from __future__ import annotations

import gzip
import hashlib
import logging
import tarfile
import zipfile
import zlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from mtl3d.data.download.extract import _check_tar_members, _check_zip_members, _member_parts
from mtl3d.data.download.lock import LOCK_NAME, TOFU, VerifiedFile, _key, _record, _write_json_atomic
from mtl3d.data.download.sources import FileSpec, VariantSpec, VerificationError, _next_step
from mtl3d.data.download.transfer import _short
from mtl3d.errors import UserError

log = logging.getLogger(__name__)

_HASH_CHUNK = 8 << 20
_HASH_BAR_MIN = 64 << 20  # below this hashing takes well under a second: no bar


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
