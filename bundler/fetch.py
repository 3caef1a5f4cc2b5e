"""The one HTTP downloader every content kind uses.

Every file bundler carries is fetched by :class:`Fetcher` into a content-addressed
cache (``cache_dir/sha256/<first2>/<sha256>``). A file is only ever placed there
after its size and sha256 were checked while it streamed in, so anything found in
the cache is trusted without network access.

How a download works:

* bytes stream into ``cache_dir/partial/<sha256>`` in 1 MiB reads, hashed as they
  arrive; the file is never held in memory;
* a partial file left by a broken connection or an interrupted run is resumed with
  an HTTP ``Range`` request (its bytes are hashed first); a server that ignores
  ``Range`` (answers 200) is read from the start, a 416 answer or a partial longer
  than the declared size discards the partial;
* connection errors, timeouts, mid-stream breaks, 408, 429 and 5xx are retried
  with exponential backoff (``Retry-After`` honoured when it is a number); other
  4xx answers fail at once;
* bodies are taken exactly as sent on the wire: ``Accept-Encoding: identity`` is
  asked for and a ``Content-Encoding`` is never decoded (a ``.gz`` file that a
  misconfigured server labels ``Content-Encoding: gzip`` still hashes right).

Errors: :class:`~bundler.errors.UpstreamDigestError` when upstream content does not
match the size or digest it was declared with (retrying cannot help), and
:class:`~bundler.errors.FetchError` when the server refuses the request or the
network keeps failing. Local file-system errors (disk full, permissions) are not
wrapped and propagate as :class:`OSError`.

Store-addressed content (used by the ``snap`` kind; one documented addition): the Snap
Store names a file by its **sha3-384** and size, not its sha256, and answers its API
with custom headers and JSON error bodies. :meth:`Fetcher.fetch_sha3_384` downloads such
a file with the same resume/retry rules, checks size and sha3-384 while streaming
(computing the sha256 on the way), stores it in the sha256 cache like any other file and
records the mapping as a symlink ``sha3-384/<first2>/<hex>`` -> the sha256 file, so a
later run finds it (and its sha256) without network access or re-hashing.
:meth:`Fetcher.request` sends one small API request (any method, headers, JSON body)
over the same session, retrying network failures, 408, 429 and 5xx, and returns every
other answer (2xx-4xx) for the caller to interpret.

The cache is not fsynced (measured: 2,000 small .debs took 23 s of wall time for 3.5 s of
CPU with a file and a directory fsync each). A power cut can therefore leave a short or
damaged cache file: a size that differs from the declared one is fetched again, and the
exporter hashes every downloaded file again while compressing it, refusing one whose
sha256 changed (with "delete it from the cache") before anything is signed.

Only one process is expected to use a cache directory at a time (the state lock
guarantees that); threads within one process are coordinated here.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import urlsplit

from bundler.errors import FetchError, UpstreamDigestError
from bundler.events import Advance, NullReporter, Reporter

if TYPE_CHECKING:
    from _hashlib import HASH

    import requests

__all__ = ["CHUNK_SIZE", "MAX_DELAY", "Answer", "Fetcher", "StoreFile", "Want"]

CHUNK_SIZE: Final = 1 << 20
"""Bytes asked for per read, and per hash update."""

MAX_DELAY: Final = 30.0
"""Longest wait between two attempts, in seconds (also caps ``Retry-After``)."""

_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
_SHA3_384_RE: Final = re.compile(r"[0-9a-f]{96}")
_CONTENT_RANGE_RE: Final = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*")

# requests (35 ms to import) loads with the first request: an export of local files, or an
# import, never pays for it.


@cache
def _network_errors() -> tuple[type[BaseException], ...]:
    """Network failures worth another attempt. ``urllib3`` errors show up because the body is
    read from ``response.raw`` (so that it is never content-decoded)."""
    import requests
    import urllib3

    return (requests.RequestException, urllib3.exceptions.HTTPError)


@cache
def _request_fatal() -> tuple[type[BaseException], ...]:
    """Request errors that another attempt cannot fix."""
    import requests

    return (
        requests.exceptions.URLRequired,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidHeader,
        requests.exceptions.TooManyRedirects,
    )


_T = TypeVar("_T")


@dataclass(frozen=True)
class Want:
    """One file to download: where it is and what it must be.

    Raises :class:`ValueError` when built with a malformed digest, a negative size
    or a URL that is not ``http(s)://``: those are programming errors, callers
    validate upstream metadata before building a ``Want``.
    """

    url: str
    sha256: str
    size: int | None = None

    def __post_init__(self) -> None:
        if not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"Want.sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.size is not None and self.size < 0:
            raise ValueError(f"Want.size must not be negative, got {self.size}")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"Want.url must be an http(s) URL, got {self.url!r}")


@dataclass(frozen=True)
class StoreFile:
    """A file fetched by its sha3-384 (:meth:`Fetcher.fetch_sha3_384`): where it is in the
    cache and its sha256, both checked."""

    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Answer:
    """One HTTP answer to :meth:`Fetcher.request`, body read in full (bounded)."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Retryable(Exception):
    """This attempt failed in a way another attempt may fix."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


class _Restart(Exception):
    """The partial file cannot be resumed: discard it and start from byte zero."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class _Cancelled(Exception):
    """A sibling download failed hard or the caller was interrupted."""


class _Progress:
    """Advances a reporter task by bytes newly on disk, never counting a byte twice
    (a restarted download re-reads bytes that were already reported)."""

    def __init__(self, advance: Advance) -> None:
        self._advance = advance
        self._high = 0

    def to(self, position: int) -> None:
        if position > self._high:
            self._advance(position - self._high)
            self._high = position


@dataclass
class _Attempts:
    """What one :meth:`Fetcher.fetch` learnt across its attempts."""

    free_restart: bool = True
    """A discarded partial (416, foreign partial content) gets one extra attempt."""
    retried_mismatch: bool = False
    """A digest mismatch on a file assembled from several responses was retried."""


class Fetcher:
    """Downloads files into a verified, content-addressed cache.

    ``retries`` is the number of attempts after the first one. ``timeout`` is
    ``(connect, read)`` in seconds; the read timeout applies to each socket read,
    not the whole download. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        reporter: Reporter | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        retries: int = 5,
        backoff: float = 0.5,
        workers: int = 4,
        user_agent: str = "bundler/0.1",
    ) -> None:
        if retries < 0 or workers < 1 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0 and workers >= 1")
        self._cache_dir = Path(cache_dir)
        self._store = self._cache_dir / "sha256"
        self._partial_dir = self._cache_dir / "partial"
        self._store.mkdir(parents=True, exist_ok=True)
        self._partial_dir.mkdir(parents=True, exist_ok=True)
        self._reporter: Reporter = reporter if reporter is not None else NullReporter()
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._workers = workers
        self._user_agent = user_agent
        self._session: requests.Session | None = None  # made by the first request (_http)
        self._session_guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # --- public API -----------------------------------------------------------------

    def fetch(self, want: Want) -> Path:
        """Return the cache path of ``want``'s verified file, downloading it if needed.

        A file already in the cache is returned without any network access.
        """
        cached = self._cached(want)
        if cached is not None:
            return cached
        with self._reporter.task("download", want.size, "B") as advance:
            return self._fetch(want, _Progress(advance), None)

    def fetch_many(self, wants: Sequence[Want]) -> dict[str, Path]:
        """Fetch many files in parallel; return their cache paths keyed by sha256.

        Duplicates (same sha256) are fetched once, from the first URL given. One
        reporter task ``"download"`` covers the bytes not cached yet (its total is
        ``None`` when a size is unknown). When a download fails the others still
        finish, so the cache fills as far as it can, then the first error (in the
        order of ``wants``) is raised.
        """
        unique: dict[str, Want] = {}
        for want in wants:
            seen = unique.get(want.sha256)
            if seen is None or (seen.size is None and want.size is not None):
                unique[want.sha256] = want
            elif want.size is not None and want.size != seen.size:
                raise UpstreamDigestError(
                    f"sha256 {want.sha256} is declared with two sizes: {seen.size} bytes "
                    f"({seen.url}) and {want.size} bytes ({want.url})",
                    remedy="the upstream metadata is inconsistent; refresh it and re-run",
                )

        found: dict[str, Path] = {}
        todo: list[Want] = []
        for sha, want in unique.items():
            cached = self._cached(want)
            if cached is not None:
                found[sha] = cached
            else:
                todo.append(want)
        if todo:
            sizes = [w.size for w in todo]
            total = None if None in sizes else sum(s for s in sizes if s is not None)
            cancel = threading.Event()
            errors: list[BaseException] = []
            with self._reporter.task("download", total, "B") as advance:
                advance_lock = threading.Lock()

                def locked_advance(n: int) -> None:
                    with advance_lock:
                        advance(n)

                pool = ThreadPoolExecutor(max_workers=min(self._workers, len(todo)), thread_name_prefix="bundler-fetch")
                try:
                    futures: list[tuple[str, Future[Path]]] = [
                        (w.sha256, pool.submit(self._fetch, w, _Progress(locked_advance), cancel)) for w in todo
                    ]
                    for sha, future in futures:
                        try:
                            found[sha] = future.result()
                        except Exception as exc:
                            errors.append(exc)
                except BaseException:
                    # Interrupted (Ctrl-C): stop the workers at their next read, keep
                    # their partial files for the next run.
                    cancel.set()
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
                finally:
                    pool.shutdown(wait=True)
            if errors:
                raise errors[0]
        return {sha: found[sha] for sha in unique}

    def get_bytes(self, url: str, *, max_size: int) -> bytes:
        """Download small metadata whose digest is not known in advance. Not cached.

        Same retries as :meth:`fetch` (a broken transfer restarts from zero). A body
        larger than ``max_size`` is refused with
        :class:`~bundler.errors.UpstreamDigestError` as soon as the ``Content-Length``
        or the bytes received exceed it, so a huge answer never fills memory.
        """
        if max_size < 0:
            raise ValueError(f"max_size must not be negative, got {max_size}")
        body = self._retrying(url, lambda: self._get_once(url, max_size, missing_ok=False))
        assert body is not None
        return body

    def get_bytes_if_present(self, url: str, *, max_size: int) -> bytes | None:
        """:meth:`get_bytes`, but None when the server answers 404 or 410 (an optional file,
        such as ``InRelease`` where an archive offers only ``Release``)."""
        if max_size < 0:
            raise ValueError(f"max_size must not be negative, got {max_size}")
        return self._retrying(url, lambda: self._get_once(url, max_size, missing_ok=True))

    def _retrying(self, url: str, once: Callable[[], _T]) -> _T:
        """Run one small request, retrying what is retryable with backoff."""
        failures = 0
        while True:
            try:
                return once()
            except _Retryable as exc:
                cause, delay = exc.cause, self._delay(failures, exc.retry_after)
            failures += 1
            if failures > self._retries:
                raise self._exhausted(url, failures, cause)
            time.sleep(delay)

    # --- store-addressed content (sha3-384; see the module docstring) -----------------

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: object = None,
        max_size: int,
    ) -> Answer:
        """Send one API request; return its answer unless the network or the server keeps failing.

        Connection errors, 408, 429 and 5xx are retried like downloads; any other status
        (including 4xx) is returned, so the caller can read a JSON error body. A body above
        ``max_size`` is refused with :class:`~bundler.errors.UpstreamDigestError`.
        """
        return self._retrying(url, lambda: self._request_once(method, url, headers or {}, json_body, max_size))

    def fetch_sha3_384(self, url: str, sha3_384: str, size: int) -> StoreFile:
        """Download ``url``, which must have exactly ``size`` bytes and this (lowercase hex)
        sha3-384; return the cached file and its sha256. Resumes a partial download with
        ``Range``; a cached copy is returned without network access. A mismatch raises
        :class:`~bundler.errors.UpstreamDigestError` and caches nothing."""
        if not _SHA3_384_RE.fullmatch(sha3_384) or size < 0 or urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"fetch_sha3_384 needs an http(s) URL, 96 lowercase hex digits and a size: {url!r}")
        link = self._cache_dir / "sha3-384" / sha3_384[:2] / sha3_384
        with self._lock_for("sha3-384:" + sha3_384):
            found = self._sha3_cached(link, size)
            if found is not None:
                return found
            partial = self._partial_dir / f"sha3-384-{sha3_384}"
            with self._reporter.task("download", size, "B") as advance:
                progress = _Progress(advance)
                sha256 = self._resuming(
                    url, partial, lambda _state: self._sha3_attempt(url, sha3_384, size, partial, progress)
                )
            final = self._commit(partial, sha256)
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(os.path.relpath(final, link.parent), tmp)
            os.replace(tmp, link)
            return StoreFile(final, sha256, size)

    def _sha3_cached(self, link: Path, size: int) -> StoreFile | None:
        try:
            target = link.resolve(strict=True)
            actual = target.stat().st_size
        except (FileNotFoundError, RuntimeError):
            link.unlink(missing_ok=True)
            return None
        if actual != size or not _SHA256_RE.fullmatch(target.name):
            link.unlink(missing_ok=True)
            return None
        return StoreFile(target, target.name, size)

    def _sha3_attempt(self, url: str, sha3_384: str, size: int, partial: Path, progress: _Progress) -> str:
        """One request for a sha3-384-addressed file; returns its sha256 once complete and right."""
        sha3, sha2 = hashlib.sha3_384(), hashlib.sha256()
        offset = 0
        if partial.exists():
            if partial.stat().st_size > size:
                partial.unlink()
            else:
                with open(partial, "rb") as f:
                    while chunk := f.read(CHUNK_SIZE):
                        sha3.update(chunk)
                        sha2.update(chunk)
                        offset += len(chunk)
        progress.to(offset)
        if offset < size or size == 0:
            (sha3, sha2), _start, position = self._receive(
                url,
                partial,
                offset,
                size,
                lambda: [hashlib.sha3_384(), hashlib.sha256()],
                [sha3, sha2],
                progress,
            )
            if position < size:
                raise _Retryable(f"the connection closed after {position} of {size} bytes")
        elif not partial.exists():
            partial.touch()
        if sha3.hexdigest() != sha3_384:
            raise UpstreamDigestError(
                f"{url} does not match its declared sha3-384: expected {sha3_384}, got {sha3.hexdigest()}",
                remedy="the store's file changed or is corrupt, or a proxy altered it; re-run the export "
                "(the store is asked again). Nothing was cached.",
            )
        return sha2.hexdigest()

    def _request_once(self, method: str, url: str, headers: dict[str, str], json_body: object, max_size: int) -> Answer:
        try:
            resp = self._http().request(
                method, url, headers=headers, json=json_body, stream=True, timeout=self._timeout
            )
        except _request_fatal() as exc:
            raise FetchError(f"could not request {url}: {exc}", remedy="check the store URL") from exc
        except _network_errors() as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        with resp:
            code = resp.status_code
            if code in (408, 429) or 500 <= code <= 599:
                raise _Retryable(f"the server answered HTTP {code} {resp.reason or ''}".rstrip(), _retry_after(resp))
            return Answer(code, dict(resp.headers), _read_capped(resp, url, max_size, decode=True))

    def close(self) -> None:
        """Release the network connections."""
        if self._session is not None:
            self._session.close()

    def _http(self) -> requests.Session:
        """The one Session shared by all worker threads, made on first use. Its connection pool
        (urllib3's PoolManager) is thread-safe, and we only ever issue requests with per-call
        headers, never mutating Session state once it is made, so the parts of Session that
        are not thread-safe are not exercised. One session keeps connection reuse across
        workers and lets close() release everything. pool_maxsize >= workers so that no
        worker's connection is thrown away; max_retries=0 because retrying is done here, with
        resume."""
        with self._session_guard:
            if self._session is None:
                import requests
                from requests.adapters import HTTPAdapter

                session = requests.Session()
                session.headers["User-Agent"] = self._user_agent
                session.headers["Accept-Encoding"] = "identity"
                adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(self._workers, 10), max_retries=0)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._session = session
            return self._session

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- cache layout -----------------------------------------------------------------

    def _final_path(self, sha256: str) -> Path:
        return self._store / sha256[:2] / sha256

    def _partial_path(self, sha256: str) -> Path:
        return self._partial_dir / sha256

    def _cached(self, want: Want) -> Path | None:
        final = self._final_path(want.sha256)
        try:
            size = final.stat().st_size
        except FileNotFoundError:
            return None
        if want.size is not None and size != want.size:
            # Only verified files are ever renamed into place, so this is damage
            # done outside bundler. Fetch it again.
            self._reporter.warn(f"cached file {final} has {size} bytes, expected {want.size}: downloading it again")
            final.unlink(missing_ok=True)
            return None
        return final

    def _lock_for(self, sha256: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(sha256, threading.Lock())

    # --- one file -----------------------------------------------------------------------

    def _fetch(self, want: Want, progress: _Progress, cancel: threading.Event | None) -> Path:
        with self._lock_for(want.sha256):
            # Another thread may have fetched it while we waited for the lock.
            cached = self._cached(want)
            if cached is not None:
                return cached
            partial = self._partial_path(want.sha256)
            return self._resuming(
                want.url, partial, lambda state: self._attempt(want, partial, progress, cancel, state), cancel
            )

    def _resuming(
        self,
        url: str,
        partial: Path,
        attempt: Callable[[_Attempts], _T],
        cancel: threading.Event | None = None,
    ) -> _T:
        """Run download attempts that resume ``partial`` until one succeeds: a digest mismatch
        discards the partial and ends it; a discarded partial (416, foreign content) gets one free
        restart; anything else retryable waits with backoff, up to the retry limit."""
        state = _Attempts()
        failures = 0
        while True:
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            try:
                return attempt(state)
            except UpstreamDigestError:
                partial.unlink(missing_ok=True)
                raise
            except _Restart as exc:
                partial.unlink(missing_ok=True)
                cause, delay = exc.cause, 0.0
                if state.free_restart:
                    state.free_restart = False
                    continue
            except _Retryable as exc:
                cause, delay = exc.cause, self._delay(failures, exc.retry_after)
            failures += 1
            if failures > self._retries:
                raise self._exhausted(url, failures, cause)
            if cancel is None:
                time.sleep(delay)
            elif cancel.wait(delay):
                raise _Cancelled()

    def _receive(
        self,
        url: str,
        partial: Path,
        offset: int,
        size: int | None,
        new_hashers: Callable[[], list[HASH]],
        hashers: list[HASH],
        progress: _Progress,
        cancel: threading.Event | None = None,
    ) -> tuple[list[HASH], int, int]:
        """One GET of ``url`` from byte ``offset`` (a Range request when > 0) into ``partial``:
        appended on 206, rewritten from zero on 200 (the server ignored Range; ``hashers`` are
        replaced by ``new_hashers()``). Checks the announced and received sizes against
        ``size``. Returns (hashers, offset the body started at, bytes in ``partial``)."""
        mismatch = Want(url, "0" * 64, size)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self._get(url, headers) as resp:
            if resp.status_code == 416 and offset:
                raise _Restart(f"the server refused to resume at byte {offset} (HTTP 416)")
            self._check_status(url, resp, (200, 206))
            if resp.status_code == 206:
                if not offset:
                    raise _Retryable("the server answered 206 to a request without Range")
                start, total = _content_range(resp)
                if start != offset:
                    raise _Restart(f"the server resumed at byte {start}, not {offset}")
                if total is not None and size is not None and total != size:
                    raise self._size_mismatch(mismatch, total)
                mode = "ab"
            else:
                if offset:  # Range ignored: the body starts at byte zero.
                    hashers, offset = new_hashers(), 0
                length = _content_length(resp)
                if length is not None and size is not None and length != size:
                    raise self._size_mismatch(mismatch, length)
                mode = "wb"
            position = offset
            with open(partial, mode) as out:
                try:
                    for chunk in resp.raw.stream(CHUNK_SIZE, decode_content=False):
                        if cancel is not None and cancel.is_set():
                            raise _Cancelled()
                        position += len(chunk)
                        if size is not None and position > size:
                            raise self._size_mismatch(mismatch, f"more than {size}")
                        for h in hashers:
                            h.update(chunk)
                        out.write(chunk)
                        progress.to(position)
                except _network_errors() as exc:
                    raise _Retryable(f"the connection broke after {position} bytes ({exc})") from exc
                finally:
                    out.flush()
        return hashers, offset, position

    def _attempt(
        self,
        want: Want,
        partial: Path,
        progress: _Progress,
        cancel: threading.Event | None,
        state: _Attempts,
    ) -> Path:
        """One request. Returns the final path, or raises to say what to do next."""
        hasher = hashlib.sha256()
        offset = self._hash_partial(want, partial, hasher)
        progress.to(offset)
        if offset and offset == want.size:
            # Complete but not renamed (interrupted between the two): no request needed.
            if hasher.hexdigest() == want.sha256:
                return self._commit(partial, want.sha256)
            raise _Restart("the partial file left by an earlier run has the wrong content")

        (hasher,), start, position = self._receive(
            want.url, partial, offset, want.size, lambda: [hashlib.sha256()], [hasher], progress, cancel
        )
        fresh = start == 0  # the whole file comes from this one response

        if want.size is not None and position < want.size:
            raise _Retryable(f"the connection closed after {position} of {want.size} bytes")
        digest = hasher.hexdigest()
        if digest != want.sha256:
            if not fresh and not state.retried_mismatch:
                # Assembled from several responses: the upstream file may have been
                # replaced in between, or an old partial was bad. Try once from zero.
                state.retried_mismatch = True
                raise _Restart("the resumed download did not match its sha256")
            raise UpstreamDigestError(
                f"{want.url} does not match its declared sha256: expected {want.sha256}, got {digest}",
                remedy="the upstream file changed or is corrupt, or a proxy altered it; refresh the "
                "upstream metadata (re-run so its index is fetched again) and check for an "
                "intercepting proxy. Nothing was cached.",
            )
        return self._commit(partial, want.sha256)

    def _hash_partial(self, want: Want, partial: Path, hasher: HASH) -> int:
        """Feed an existing partial file to ``hasher``; return its length (0 if none)."""
        try:
            f = open(partial, "rb")  # noqa: SIM115 - closed below, FileNotFoundError first
        except FileNotFoundError:
            return 0
        with f:
            size = os.fstat(f.fileno()).st_size
            if want.size is not None and size > want.size:
                partial.unlink(missing_ok=True)
                return 0
            done = 0
            while chunk := f.read(CHUNK_SIZE):
                hasher.update(chunk)
                done += len(chunk)
            return done

    def _commit(self, partial: Path, sha256: str) -> Path:
        final = self._final_path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, final)
        return final

    def _size_mismatch(self, want: Want, got: int | str) -> UpstreamDigestError:
        return UpstreamDigestError(
            f"{want.url} does not match its declared size: expected {want.size} bytes, got {got}",
            remedy="the upstream file changed or the metadata that declared it is stale; refresh "
            "the upstream metadata (re-run so its index is fetched again). Nothing was cached.",
        )

    # --- HTTP ---------------------------------------------------------------------------

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        try:
            return self._http().get(url, headers=headers, stream=True, timeout=self._timeout, allow_redirects=True)
        except _request_fatal() as exc:
            raise FetchError(
                f"could not request {url}: {exc}",
                remedy="check the URL in the carry spec or the upstream metadata that named it",
            ) from exc
        except _network_errors() as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc

    def _check_status(self, url: str, resp: requests.Response, ok: tuple[int, ...]) -> None:
        code = resp.status_code
        if code in ok:
            return
        answer = f"HTTP {code} {resp.reason or ''}".rstrip()
        if code in (408, 429) or 500 <= code <= 599:
            raise _Retryable(f"the server answered {answer}", _retry_after(resp))
        if code == 404 or code == 410:
            remedy = (
                "check that upstream still offers this file; if an index named it, the index may be "
                "stale: re-run so it is fetched again, or fix the carry spec"
            )
        elif code in (401, 403, 407):
            remedy = "check access rights to this URL and the proxy settings (HTTPS_PROXY, HTTP_PROXY)"
        else:
            remedy = "check the URL and the upstream server"
        raise FetchError(f"{url}: the server answered {answer}", remedy=remedy)

    def _get_once(self, url: str, max_size: int, *, missing_ok: bool) -> bytes | None:
        with self._get(url, {}) as resp:
            if missing_ok and resp.status_code in (404, 410):
                return None
            self._check_status(url, resp, (200,))
            length = _content_length(resp)
            if length is not None and length > max_size:
                raise _too_big(url, max_size, f"{length} bytes")
            return _read_capped(resp, url, max_size, decode=False)

    def _delay(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_DELAY)
        return float(min(self._backoff * 2**failures, MAX_DELAY))

    def _exhausted(self, url: str, attempts: int, cause: str) -> FetchError:
        host = urlsplit(url).hostname or url
        return FetchError(
            f"could not download {url} after {attempts} attempts; last error: {cause}",
            remedy=f"check that this machine can reach {host} (and the proxy settings HTTPS_PROXY, "
            "HTTP_PROXY), then re-run: bytes already downloaded are kept and resumed",
        )


def _retry_after(resp: requests.Response) -> float | None:
    """``Retry-After`` in seconds when it is a number (HTTP dates are ignored)."""
    value = resp.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length", "").strip()
    return int(value) if value.isdigit() else None


def _content_range(resp: requests.Response) -> tuple[int, int | None]:
    """(first byte, complete length or None) from a 206 answer's ``Content-Range``."""
    value = resp.headers.get("Content-Range", "")
    match = _CONTENT_RANGE_RE.fullmatch(value)
    if match is None:
        raise _Restart(f"the server sent an unusable Content-Range {value!r}")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _read_capped(resp: requests.Response, url: str, max_size: int, *, decode: bool) -> bytes:
    """A small body, refused as soon as it passes ``max_size``; a broken stream is retryable."""
    body = bytearray()
    try:
        for chunk in resp.raw.stream(CHUNK_SIZE, decode_content=decode):
            if len(body) + len(chunk) > max_size:
                raise _too_big(url, max_size, "more")
            body += chunk
    except _network_errors() as exc:
        raise _Retryable(f"the connection broke after {len(body)} bytes ({exc})") from exc
    return bytes(body)


def _too_big(url: str, max_size: int, got: str) -> UpstreamDigestError:
    return UpstreamDigestError(
        f"{url} is larger than the {max_size} bytes allowed for it (got {got})",
        remedy="check that the URL points at the metadata expected there and not at something "
        "else (a captive portal or proxy page, a wrong path)",
    )
