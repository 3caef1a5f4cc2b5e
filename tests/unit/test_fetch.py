"""bundler.fetch against a real HTTP server on 127.0.0.1 (tests.fakes.http_server)."""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bundler.errors import FetchError, UpstreamDigestError
from bundler.events import Advance
from bundler.fetch import Fetcher, Want
from tests.fakes.http_server import FakeServer, serve_directory

MiB = 1 << 20


class CountingReporter:
    """Records each task's label and total and how far it was advanced."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int | None, str]] = []
        self.advanced = 0
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    @contextmanager
    def task(self, label: str, total: int | None, unit: str = "B") -> Iterator[Advance]:
        self.tasks.append((label, total, unit))

        def advance(n: int) -> None:
            with self._lock:
                self.advanced += n

        yield advance

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@pytest.fixture
def upstream_root(tmp_path: Path) -> Path:
    root = tmp_path / "upstream"
    root.mkdir()
    return root


@pytest.fixture
def srv(upstream_root: Path) -> Iterator[FakeServer]:
    with serve_directory(upstream_root) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def reporter() -> CountingReporter:
    return CountingReporter()


@pytest.fixture
def fetcher(cache: Path, reporter: CountingReporter) -> Iterator[Fetcher]:
    with Fetcher(cache, reporter=reporter, timeout=(2.0, 5.0), retries=3, backoff=0.01) as f:
        yield f


def put(srv: FakeServer, rel: str, data: bytes) -> Want:
    path = srv.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Want(srv.url(rel), hashlib.sha256(data).hexdigest(), len(data))


def payload(n: int, seed: int = 0) -> bytes:
    """n bytes that differ at every offset (so a misplaced resume shows)."""
    block = hashlib.sha256(str(seed).encode()).digest()
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(block + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


def partials(cache: Path) -> list[Path]:
    return list((cache / "partial").iterdir())


def cached_files(cache: Path) -> list[Path]:
    return [p for p in (cache / "sha256").rglob("*") if p.is_file()]


# --- the fake upstream itself ----------------------------------------------------------------


def test_fake_server_ranges(srv: FakeServer) -> None:
    import requests

    put(srv, "r", b"0123456789")
    with requests.Session() as s:

        def get(rng: str | None) -> tuple[int, bytes, str | None]:
            r = s.get(srv.url("r"), headers={"Range": rng} if rng else {})
            return r.status_code, r.content, r.headers.get("Content-Range")

        assert get(None) == (200, b"0123456789", None)
        assert get("bytes=3-") == (206, b"3456789", "bytes 3-9/10")
        assert get("bytes=2-4") == (206, b"234", "bytes 2-4/10")
        assert get("bytes=-3") == (206, b"789", "bytes 7-9/10")
        assert get("bytes=8-100") == (206, b"89", "bytes 8-9/10")
        assert get("bytes=10-")[0] == 416
        assert get("bytes=5-2") == (200, b"0123456789", None)  # invalid: ignored
        (srv.root.parent / "secret").write_bytes(b"outside")
        assert s.get(srv.base_url + "%2E%2E/secret").status_code == 404
    assert [r.range for r in srv.requests][:3] == [None, "bytes=3-", "bytes=2-4"]
    assert srv.requests[-1].path == "../secret"


def test_fake_server_shuts_down_cleanly(upstream_root: Path) -> None:
    import requests

    before = set(threading.enumerate())
    (upstream_root / "f").write_bytes(b"x")
    session = requests.Session()  # keeps its connection alive past the block
    with serve_directory(upstream_root) as server:
        assert session.get(server.url("f")).content == b"x"
        port = server.port
    assert set(threading.enumerate()) == before
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
    session.close()


# --- plain download and cache ------------------------------------------------------------


def test_fetch_verifies_and_stores_by_digest(srv: FakeServer, fetcher: Fetcher, cache: Path) -> None:
    data = payload(3 * MiB + 17)
    want = put(srv, "pool/a.deb", data)

    path = fetcher.fetch(want)

    assert path == cache / "sha256" / want.sha256[:2] / want.sha256
    assert path.read_bytes() == data
    assert partials(cache) == []
    [req] = srv.requests
    assert (req.method, req.path, req.range, req.status) == ("GET", "pool/a.deb", None, 200)
    assert req.headers["User-Agent"] == "bundler/0.1"
    assert req.headers["Accept-Encoding"] == "identity"


def test_cached_fetch_makes_no_request(srv: FakeServer, cache: Path) -> None:
    want = put(srv, "a.bin", payload(10_000))
    with Fetcher(cache, backoff=0.01) as first:
        first.fetch(want)
    assert len(srv.requests) == 1
    srv.clear_requests()

    # The upstream file may even disappear: the cache is trusted by digest.
    (srv.root / "a.bin").unlink()
    reporter = CountingReporter()
    with Fetcher(cache, reporter=reporter, backoff=0.01) as second:
        assert second.fetch(want).read_bytes() == payload(10_000)
        assert second.fetch_many([want]) == {want.sha256: second.fetch(want)}

    assert srv.requests == []
    assert reporter.tasks == []


def test_user_agent_is_configurable(srv: FakeServer, cache: Path) -> None:
    want = put(srv, "a", b"x")
    with Fetcher(cache, user_agent="bundler-test/9") as f:
        f.fetch(want)
    assert srv.requests[0].headers["User-Agent"] == "bundler-test/9"


# --- fetch_many ------------------------------------------------------------------------------


def test_fetch_many_parallel_dedup_and_progress(srv: FakeServer, fetcher: Fetcher, reporter: CountingReporter) -> None:
    blobs = {f"f{i}.bin": payload(i * 300_000 + 1, seed=i) for i in range(6)}
    blobs["empty"] = b""
    wants = [put(srv, rel, data) for rel, data in blobs.items()]
    for want in wants[:4]:
        srv.faults.delay(want.url.rsplit("/", 1)[1], 0.2)  # hold requests in flight together
    # The same content under another URL: fetched once, from the first URL.
    duplicate = Want(srv.url("elsewhere/f1.bin"), wants[1].sha256, wants[1].size)

    result = fetcher.fetch_many([*wants, duplicate])

    assert list(result) == [w.sha256 for w in wants]
    for rel, want in zip(blobs, wants, strict=True):
        assert result[want.sha256].read_bytes() == blobs[rel]
    assert sorted(r.path for r in srv.requests) == sorted(blobs)
    assert srv.max_in_flight >= 2
    total = sum(len(d) for d in blobs.values())
    assert reporter.tasks == [("download", total, "B")]
    assert reporter.advanced == total


def test_fetch_many_reports_only_what_is_not_cached(
    srv: FakeServer, fetcher: Fetcher, reporter: CountingReporter
) -> None:
    a = put(srv, "a", payload(1000, 1))
    b = put(srv, "b", payload(2000, 2))
    fetcher.fetch(a)
    reporter.tasks.clear()
    reporter.advanced = 0

    fetcher.fetch_many([a, b])

    assert reporter.tasks == [("download", 2000, "B")]
    assert reporter.advanced == 2000


def test_fetch_many_finishes_the_others_then_raises_first_error(srv: FakeServer, fetcher: Fetcher, cache: Path) -> None:
    good = [put(srv, f"ok{i}", payload(50_000, i)) for i in range(3)]
    missing = Want(srv.url("missing"), "0" * 64, 10)

    with pytest.raises(FetchError) as err:
        fetcher.fetch_many([good[0], missing, *good[1:]])

    assert srv.url("missing") in str(err.value)
    assert sorted(cached_files(cache)) == sorted(fetcher.fetch(w) for w in good)


# --- resume -----------------------------------------------------------------------------------


def test_resume_after_mid_stream_break_uses_range(
    srv: FakeServer, fetcher: Fetcher, reporter: CountingReporter
) -> None:
    data = payload(3 * MiB + 123)
    want = put(srv, "big.bin", data)
    srv.faults.break_after("big.bin", 1_234_567)

    path = fetcher.fetch(want)

    assert path.read_bytes() == data
    log = srv.requests_for("big.bin")
    assert [(r.range, r.status) for r in log] == [(None, 200), ("bytes=1234567-", 206)]
    assert reporter.advanced == len(data)  # resumed bytes are not counted twice


def test_resume_partial_left_by_an_earlier_run(srv: FakeServer, fetcher: Fetcher, cache: Path) -> None:
    data = payload(2 * MiB)
    want = put(srv, "x.bin", data)
    (cache / "partial" / want.sha256).write_bytes(data[:700_001])

    assert fetcher.fetch(want).read_bytes() == data
    assert [r.range for r in srv.requests] == ["bytes=700001-"]
    assert partials(cache) == []


def test_complete_partial_is_committed_without_request(srv: FakeServer, fetcher: Fetcher, cache: Path) -> None:
    data = payload(100_000)
    want = put(srv, "x.bin", data)
    (cache / "partial" / want.sha256).write_bytes(data)

    assert fetcher.fetch(want).read_bytes() == data
    assert srv.requests == []


def test_server_ignoring_range_still_yields_correct_file(srv: FakeServer, fetcher: Fetcher) -> None:
    data = payload(2 * MiB + 5)
    want = put(srv, "nr.bin", data)
    srv.faults.ignore_range("nr.bin")
    srv.faults.break_after("nr.bin", 900_000)

    assert fetcher.fetch(want).read_bytes() == data
    assert [(r.range, r.status) for r in srv.requests] == [(None, 200), ("bytes=900000-", 200)]


def test_416_discards_partial_and_restarts(srv: FakeServer, fetcher: Fetcher, cache: Path) -> None:
    data = payload(50_000)
    put(srv, "s.bin", data)
    want = Want(srv.url("s.bin"), hashlib.sha256(data).hexdigest())  # size unknown
    (cache / "partial" / want.sha256).write_bytes(b"\0" * 60_000)  # longer than the file

    assert fetcher.fetch(want).read_bytes() == data
    assert [(r.range, r.status) for r in srv.requests] == [("bytes=60000-", 416), (None, 200)]


def test_partial_longer_than_size_is_discarded(srv: FakeServer, fetcher: Fetcher, cache: Path) -> None:
    data = payload(50_000)
    want = put(srv, "s.bin", data)
    (cache / "partial" / want.sha256).write_bytes(b"\0" * 60_000)

    assert fetcher.fetch(want).read_bytes() == data
    assert [r.range for r in srv.requests] == [None]


def test_bad_partial_is_retried_from_zero_before_blaming_upstream(
    srv: FakeServer, fetcher: Fetcher, cache: Path
) -> None:
    data = payload(300_000)
    want = put(srv, "s.bin", data)
    (cache / "partial" / want.sha256).write_bytes(b"garbage")

    assert fetcher.fetch(want).read_bytes() == data
    assert [r.range for r in srv.requests] == ["bytes=7-", None]


# --- retries and failures -----------------------------------------------------------------------


def test_503_twice_then_success(srv: FakeServer, fetcher: Fetcher) -> None:
    data = payload(10_000)
    want = put(srv, "r.bin", data)
    srv.faults.fail("r.bin", 503, times=2, retry_after="0")

    assert fetcher.fetch(want).read_bytes() == data
    assert [r.status for r in srv.requests] == [503, 503, 200]


@pytest.mark.parametrize("status", [408, 429, 500, 502])
def test_transient_statuses_are_retried(srv: FakeServer, fetcher: Fetcher, status: int) -> None:
    want = put(srv, "r.bin", b"hello")
    srv.faults.fail("r.bin", status)

    assert fetcher.fetch(want).read_bytes() == b"hello"
    assert [r.status for r in srv.requests] == [status, 200]


def test_retry_after_zero_overrides_long_backoff(srv: FakeServer, cache: Path) -> None:
    want = put(srv, "r.bin", b"hello")
    srv.faults.fail("r.bin", 429, times=2, retry_after="0")
    started = time.monotonic()
    with Fetcher(cache, backoff=20.0) as f:
        f.fetch(want)
    assert time.monotonic() - started < 5.0


def test_read_timeout_is_retried(srv: FakeServer, cache: Path) -> None:
    want = put(srv, "slow.bin", b"late")
    srv.faults.delay("slow.bin", 0.8)
    with Fetcher(cache, timeout=(2.0, 0.2), backoff=0.01) as f:
        assert f.fetch(want).read_bytes() == b"late"
    assert len(srv.requests_for("slow.bin")) == 2


def test_retries_exhausted_raises_fetch_error(srv: FakeServer, cache: Path) -> None:
    want = put(srv, "r.bin", b"hello")
    srv.faults.fail("r.bin", 503, times=100)
    with Fetcher(cache, retries=2, backoff=0.01) as f, pytest.raises(FetchError) as err:
        f.fetch(want)
    message = str(err.value)
    assert want.url in message
    assert "3 attempts" in message
    assert "503" in message
    assert err.value.remedy
    assert len(srv.requests) == 3
    assert cached_files(cache) == []


def test_breaks_every_time_keeps_partial_for_next_run(srv: FakeServer, cache: Path) -> None:
    data = payload(2 * MiB)
    want = put(srv, "b.bin", data)
    srv.faults.break_after("b.bin", 300_000, times=2)
    with Fetcher(cache, retries=1, backoff=0.01) as f, pytest.raises(FetchError):
        f.fetch(want)
    assert (cache / "partial" / want.sha256).stat().st_size == 600_000

    with Fetcher(cache, backoff=0.01) as f:
        assert f.fetch(want).read_bytes() == data
    assert srv.requests[-1].range == "bytes=600000-"


def test_404_fails_at_once(srv: FakeServer, fetcher: Fetcher, cache: Path) -> None:
    want = Want(srv.url("no/such.deb"), "a" * 64, 5)
    with pytest.raises(FetchError) as err:
        fetcher.fetch(want)
    assert want.url in str(err.value)
    assert "404" in str(err.value)
    assert len(srv.requests) == 1
    assert cached_files(cache) == []


def test_403_fails_at_once(srv: FakeServer, fetcher: Fetcher) -> None:
    want = put(srv, "f", b"data")
    srv.faults.fail("f", 403, times=5)
    with pytest.raises(FetchError, match="403"):
        fetcher.fetch(want)
    assert len(srv.requests) == 1


def test_connection_refused_is_fetch_error(cache: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x"
    with Fetcher(cache, retries=1, backoff=0.01) as f, pytest.raises(FetchError) as err:
        f.fetch(Want(url, "b" * 64, 1))
    assert url in str(err.value)
    assert "2 attempts" in str(err.value)


# --- verification -----------------------------------------------------------------------------


def test_wrong_sha256_is_digest_error_and_leaves_nothing(srv: FakeServer, fetcher: Fetcher, cache: Path) -> None:
    data = payload(1 * MiB + 3)
    put(srv, "w.bin", data)
    wrong = hashlib.sha256(b"something else").hexdigest()
    want = Want(srv.url("w.bin"), wrong, len(data))

    with pytest.raises(UpstreamDigestError) as err:
        fetcher.fetch(want)

    message = str(err.value)
    assert want.url in message
    assert wrong in message
    assert hashlib.sha256(data).hexdigest() in message
    assert err.value.remedy
    assert cached_files(cache) == []
    assert partials(cache) == []
    assert len(srv.requests) == 1  # not retried


@pytest.mark.parametrize("declared", [999, 1001, 0])
def test_wrong_size_is_digest_error(srv: FakeServer, fetcher: Fetcher, cache: Path, declared: int) -> None:
    data = payload(1000)
    put(srv, "w.bin", data)
    want = Want(srv.url("w.bin"), hashlib.sha256(data).hexdigest(), declared)

    with pytest.raises(UpstreamDigestError) as err:
        fetcher.fetch(want)

    assert want.url in str(err.value)
    assert f"expected {declared} bytes" in str(err.value)
    assert cached_files(cache) == []
    assert partials(cache) == []


def test_digest_error_in_fetch_many(srv: FakeServer, fetcher: Fetcher, cache: Path) -> None:
    good = put(srv, "good", b"good")
    put(srv, "bad", b"bad")
    bad = Want(srv.url("bad"), "c" * 64, 3)
    with pytest.raises(UpstreamDigestError):
        fetcher.fetch_many([bad, good])
    assert cached_files(cache) == [fetcher.fetch(good)]


def test_want_validates_its_fields() -> None:
    with pytest.raises(ValueError):
        Want("http://h/x", "ABC" * 21 + "A", 1)
    with pytest.raises(ValueError):
        Want("http://h/x", "a" * 64, -1)
    with pytest.raises(ValueError):
        Want("file:///etc/passwd", "a" * 64)


# --- get_bytes ------------------------------------------------------------------------------------


def test_get_bytes_returns_body_and_retries(srv: FakeServer, fetcher: Fetcher, cache: Path) -> None:
    put(srv, "dists/InRelease", b"signed index")
    srv.faults.fail("dists/InRelease", 503, retry_after="0")
    srv.faults.break_after("dists/InRelease", 3)

    assert fetcher.get_bytes(srv.url("dists/InRelease"), max_size=100) == b"signed index"
    assert [r.status for r in srv.requests] == [503, 200, 200]
    assert cached_files(cache) == []


def test_get_bytes_refuses_body_over_max_size(srv: FakeServer, fetcher: Fetcher) -> None:
    put(srv, "huge", payload(5 * MiB))
    with pytest.raises(UpstreamDigestError) as err:
        fetcher.get_bytes(srv.url("huge"), max_size=1 * MiB)
    assert srv.url("huge") in str(err.value)
    assert len(srv.requests) == 1
    assert fetcher.get_bytes(srv.url("huge"), max_size=5 * MiB) == payload(5 * MiB)


def test_get_bytes_404_is_fetch_error(srv: FakeServer, fetcher: Fetcher) -> None:
    with pytest.raises(FetchError, match="404"):
        fetcher.get_bytes(srv.url("nothing"), max_size=10)
    assert len(srv.requests) == 1


# --- memory ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_200_mib_download_keeps_memory_bounded(srv: FakeServer, cache: Path) -> None:
    size = 200 * MiB
    block = bytearray(os.urandom(MiB))
    digest = hashlib.sha256()
    with open(srv.root / "huge.img", "wb") as out:
        for i in range(size // MiB):
            block[:8] = i.to_bytes(8, "big")
            digest.update(block)
            out.write(block)
    del block
    want = Want(srv.url("huge.img"), digest.hexdigest(), size)

    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        with Fetcher(cache, backoff=0.01) as f:
            path = f.fetch(want)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) * 1024

    assert path.stat().st_size == size
    assert peak < 16 * MiB, f"peak Python allocation {peak / MiB:.1f} MiB"
    assert rss_growth < 40 * MiB, f"peak RSS grew by {rss_growth / MiB:.1f} MiB"
