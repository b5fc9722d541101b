"""A local HTTP server for download tests: serves a folder on 127.0.0.1 (random port), with Range support.

It can be told to answer 404 for a path, to cut the connection after N body bytes (once), to serve other
bytes than the file's, to ignore Range headers, or to send no validators (ETag, Last-Modified); it
honours If-Range (a validator that does not match the current bytes gets the whole file, 200) and
records every request it gets.

Use the class as a context manager, or the ``http_server`` fixture from another test module::

    from tests.httpserver import http_server  # noqa: F401  (a pytest fixture)

    def test_x(http_server):  # noqa: F811
        (http_server.root / "a.bin").write_bytes(b"...")
        url = http_server.url("a.bin")
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the leading "/"
    range: str | None  # the Range header as sent
    if_range: str | None = None  # the If-Range header as sent


class LocalHTTPServer:
    """Serves ``root``; the knobs below change its answers for single paths (relative, no leading "/")."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.not_found: set[str] = set()
        self.cut_after: dict[str, int] = {}  # path -> bytes of body sent before the connection drops (once)
        self.overrides: dict[str, bytes] = {}  # path -> bytes served instead of the file
        self.ranges = True  # False: ignore Range and always answer 200 with the whole file
        self.validators = True  # False: send neither ETag nor Last-Modified
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- knobs ------------------------------------------------------------------------------------
    def fail_404(self, path: str) -> None:
        self.not_found.add(path)

    def cut_once(self, path: str, nbytes: int) -> None:
        self.cut_after[path] = nbytes

    def serve_bytes(self, path: str, data: bytes) -> None:
        self.overrides[path] = data

    def etag(self, path: str) -> str:
        """The ETag the server sends for ``path`` now."""
        data = self.overrides[path] if path in self.overrides else (self.root / path).read_bytes()
        return _etag(data)

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def start(self) -> LocalHTTPServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits for it, and tests start many servers.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LocalHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler ----------------------------------------------------------------------
    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def _take_cut(self, path: str) -> int | None:
        with self._lock:
            return self.cut_after.pop(path, None)


def _etag(data: bytes) -> str:
    """A strong ETag from the content, so bytes that change get a new one."""
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


class _Handler(BaseHTTPRequestHandler):
    owner: LocalHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base class's name)
        pass  # keep test output clean

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        srv = self.owner
        path = unquote(urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        srv._record(Request(self.command, path, rng, if_range))
        file = srv.root / path
        if path in srv.not_found or (path not in srv.overrides and not file.is_file()):
            self._empty(404)
            return
        data = srv.overrides[path] if path in srv.overrides else file.read_bytes()
        total = len(data)
        etag = _etag(data)
        last_modified = self.date_time_string(int(file.stat().st_mtime)) if file.is_file() else None
        start, end, status = 0, total - 1, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if if_range is not None and if_range not in (etag, last_modified):
            m = None  # the file changed since the client's copy: the whole file
        if m and srv.ranges:
            start = int(m.group(1))
            end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            if start >= total:
                self._empty(416, {"Content-Range": f"bytes */{total}"})
                return
            status = 206
        payload = data[start : end + 1]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes" if srv.ranges else "none")
        if srv.validators:
            self.send_header("ETag", etag)
            if last_modified is not None:
                self.send_header("Last-Modified", last_modified)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        cut = srv._take_cut(path) if body else None
        if cut is not None and cut < len(payload):
            # Announce the full length, send part of it, then hang up: the client sees a broken transfer.
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture()
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHTTPServer]:
    """A started :class:`LocalHTTPServer` serving a fresh temporary folder (``http_server.root``)."""
    with LocalHTTPServer(tmp_path_factory.mktemp("www")) as srv:
        yield srv
