"""A real HTTP upstream on 127.0.0.1 for tests, with fault injection.

Serves the files under a directory (no listings, nothing outside it) with
``Content-Length``, ``Range: bytes=N-`` / ``bytes=N-M`` / ``bytes=-N`` (206 and
``Content-Range``; 416 when unsatisfiable) and HTTP/1.1 keep-alive::

    with serve_directory(root) as srv:
        srv.faults.fail("a/b.txt", 503, times=2, retry_after="0")
        srv.faults.break_after("a/b.txt", 1000)   # next response stops after 1000 body bytes
        srv.faults.ignore_range("a/b.txt")        # always answer 200 with the whole file
        ...fetch srv.url("a/b.txt")...
        assert [r.range for r in srv.requests_for("a/b.txt")] == [None, "bytes=1000-"]

Paths given to ``url()``, ``faults`` and found in :class:`RequestRecord` are
relative to the served directory, without a leading slash, not percent-encoded.

Leaving the ``with`` block stops the server, closes kept-alive connections and
joins every handler thread, so no thread or socket is left behind.
"""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

__all__ = ["FakeServer", "Faults", "RequestRecord", "serve_directory"]

_CHUNK = 256 * 1024
_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it, logged before any byte of the answer is sent."""

    method: str
    path: str
    """Relative to the served directory, unquoted, without a leading slash."""
    range: str | None
    """The raw ``Range`` header, or None."""
    headers: Mapping[str, str]
    status: int
    """The status the server answered with."""


@dataclass
class _Failure:
    status: int
    times: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Break:
    nbytes: int
    times: int


@dataclass
class _Delay:
    seconds: float
    times: int


def _norm(path: str) -> str:
    return path.lstrip("/")


class Faults:
    """Faults to inject, per path, changeable while the server runs (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, deque[_Failure]] = {}
        self._breaks: dict[str, deque[_Break]] = {}
        self._delays: dict[str, deque[_Delay]] = {}
        self._ignore_range: set[str] = set()

    def fail(
        self,
        path: str,
        status: int,
        times: int = 1,
        *,
        retry_after: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests for ``path`` with ``status`` (and a short
        body). Calls queue up: ``fail(p, 500); fail(p, 503)`` fails with 500 then 503."""
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = retry_after
        with self._lock:
            self._failures.setdefault(_norm(path), deque()).append(_Failure(status, times, extra))

    def break_after(self, path: str, nbytes: int, times: int = 1) -> None:
        """For the next ``times`` answers with a body for ``path``, announce the full
        ``Content-Length`` but close the connection after ``nbytes`` body bytes."""
        with self._lock:
            self._breaks.setdefault(_norm(path), deque()).append(_Break(nbytes, times))

    def delay(self, path: str, seconds: float, times: int = 1) -> None:
        """For the next ``times`` requests for ``path``, wait ``seconds`` after logging
        the request and before answering (to hold requests in flight together, or to
        trip a client's read timeout)."""
        with self._lock:
            self._delays.setdefault(_norm(path), deque()).append(_Delay(seconds, times))

    def ignore_range(self, path: str, enabled: bool = True) -> None:
        """Answer 200 with the whole file even when a ``Range`` is asked for."""
        with self._lock:
            if enabled:
                self._ignore_range.add(_norm(path))
            else:
                self._ignore_range.discard(_norm(path))

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()
            self._breaks.clear()
            self._delays.clear()
            self._ignore_range.clear()

    # used by the handler ------------------------------------------------------------

    @staticmethod
    def _take(queues: Mapping[str, deque[Any]], path: str) -> Any:
        queue = queues.get(path)
        if not queue:
            return None
        rule = queue[0]
        rule.times -= 1
        if rule.times <= 0:
            queue.popleft()
        return rule

    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            failure: _Failure | None = self._take(self._failures, path)
            return failure

    def _take_break(self, path: str) -> int | None:
        with self._lock:
            rule: _Break | None = self._take(self._breaks, path)
            return None if rule is None else rule.nbytes

    def _take_delay(self, path: str) -> float:
        with self._lock:
            rule: _Delay | None = self._take(self._delays, path)
            return 0.0 if rule is None else rule.seconds

    def _ignores_range(self, path: str) -> bool:
        with self._lock:
            return path in self._ignore_range


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(first, last) inclusive; ``"unsatisfiable"``; or None to ignore the header
    (malformed or multi-range, as RFC 9110 allows)."""
    match = _RANGE_RE.fullmatch(header)
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first_s, last_s = match.group(1), match.group(2)
    if first_s:
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
        if last_s and last < first:
            return None
        if first >= size:
            return "unsatisfiable"
        return first, min(last, size - 1)
    suffix = int(last_s)
    if suffix == 0 or size == 0:
        return "unsatisfiable"
    return max(0, size - suffix), size - 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: with Nagle's algorithm and the client's
        # delayed ACK, every keep-alive response after the first waited 40 ms (measured).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    timeout = 30  # an idle kept-alive connection gives up eventually
    server: _Server
    _pause = 0.0

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _log(self, rel: str, status: int) -> None:
        self.server.log(
            RequestRecord(
                method=self.command,
                path=rel,
                range=self.headers.get("Range"),
                headers=dict(self.headers.items()),
                status=status,
            )
        )
        if self._pause:  # logged first, so a client that timed out sees it in the log
            time.sleep(self._pause)
            self._pause = 0.0

    def _simple(self, rel: str, status: int, headers: Mapping[str, str] | None = None) -> None:
        self._log(rel, status)
        payload = f"{status} {HTTPStatus(status).phrase}\n".encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _serve(self, *, body: bool) -> None:
        self.server.enter()
        try:
            self._answer(body=body)
        finally:
            self.server.leave()

    def _answer(self, *, body: bool) -> None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        faults = self.server.faults
        self._pause = faults._take_delay(rel)
        failure = faults._take_failure(rel)
        if failure is not None:
            self._simple(rel, failure.status, failure.headers)
            return
        target = self.server.resolve(rel)
        if target is None:
            self._simple(rel, 404)
            return
        size = target.stat().st_size
        first, last, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        if range_header is not None and not faults._ignores_range(rel):
            parsed = _parse_range(range_header, size)
            if parsed == "unsatisfiable":
                self._simple(rel, 416, {"Content-Range": f"bytes */{size}"})
                return
            if isinstance(parsed, tuple):
                first, last = parsed
                status = 206
        length = last - first + 1
        cut = faults._take_break(rel) if body else None

        self._log(rel, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if not body:
            return
        to_send = length if cut is None else min(cut, length)
        with open(target, "rb") as f:
            f.seek(first)
            while to_send > 0:
                chunk = f.read(min(_CHUNK, to_send))
                if not chunk:
                    break
                self.wfile.write(chunk)
                to_send -= len(chunk)
        if cut is not None and cut < length:
            self.close_connection = True
            self.wfile.flush()
            with suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    # Track handler threads so that server_close() joins them all.
    daemon_threads = False
    block_on_close = True

    def __init__(self, root: Path, faults: Faults) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root.resolve()
        self.faults = faults
        self.errors: list[BaseException] = []
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._in_flight = 0
        self.max_in_flight = 0

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def resolve(self, rel: str) -> Path | None:
        candidate = (self.root / rel).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def log(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear_records(self) -> None:
        with self._lock:
            self._records.clear()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads waiting on kept-alive connections."""
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        # A client that hangs up mid-answer is normal here (the fetcher aborting an
        # oversized body, the test closing its session); anything else is kept.
        if exc is not None and not isinstance(exc, ConnectionError | TimeoutError):
            with self._lock:
                self.errors.append(exc)


class FakeServer:
    """Handle to a running server; see :func:`serve_directory`."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.root = server.root
        self.faults = server.faults

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str) -> str:
        return self.base_url + quote(_norm(path))

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request so far, in arrival order."""
        return self._server.records()

    def requests_for(self, path: str) -> list[RequestRecord]:
        return [r for r in self._server.records() if r.path == _norm(path)]

    def clear_requests(self) -> None:
        self._server.clear_records()

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was answering at the same time."""
        return self._server.max_in_flight

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions raised in handler threads (a test may assert none)."""
        return list(self._server.errors)


@contextmanager
def serve_directory(root: Path) -> Iterator[FakeServer]:
    """Serve ``root`` on 127.0.0.1 on a free port for the duration of the block."""
    server = _Server(Path(root), Faults())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-http-server")
    thread.start()
    try:
        yield FakeServer(server)
    finally:
        server.shutdown()  # stop accepting; serve_forever returns
        thread.join()
        server.close_connections()
        server.server_close()  # close the listening socket, join handler threads
