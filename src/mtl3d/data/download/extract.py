"""Safe extraction: every member checked (no absolute path, no escape from the top folder, no unsafe link
or special file), PEP 706's data filter where Python has it, into a temporary folder moved into place."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from mtl3d.data.download.transfer import _short
from mtl3d.errors import UserError

_TMP_PREFIX = ".tmp-extract-"
# PEP 706's extraction filters (3.12, backported to 3.10.12 / 3.11.4); without them our own member
# checks, which always run, are the only guard.
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")
# An empty tuple catches nothing: an except clause naming a missing attribute would itself fail.
_FilterError: Any = getattr(tarfile, "FilterError", ())


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
