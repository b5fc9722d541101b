"""Transfers: HTTP with resume (pooch; If-Range with the validator the partial bytes came with) and Google
Drive (gdown), always into ``<name>.part``."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mtl3d.data.download.lock import _read_json, _write_json_atomic

log = logging.getLogger(__name__)

_HTTP_CHUNK = 1 << 20
_HTTP_TIMEOUT = 60  # seconds without a byte before a mirror counts as stalled
_MAX_RESUMES = 5


class _MirrorFailed(Exception):
    """One mirror did not deliver; the next one is tried."""


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
