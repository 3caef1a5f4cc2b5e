"""The fetcher's store-addressed additions (used by the snap kind): fetch_sha3_384 and request,
against the fault-injecting HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler.errors import UpstreamDigestError
from bundler.fetch import Fetcher
from tests.fakes.http_server import FakeServer, serve_directory

DATA = os.urandom(3 * 1024 * 1024 + 17)
SHA3 = hashlib.sha3_384(DATA).hexdigest()
SHA256 = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[FakeServer]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.snap").write_bytes(DATA)
    (root / "meta.json").write_bytes(b'{"ok": true}')
    with serve_directory(root) as s:
        yield s


def fetcher(tmp_path: Path) -> Fetcher:
    return Fetcher(tmp_path / "cache", retries=3, backoff=0)


def test_broken_download_resumes_and_is_cached_by_both_digests(srv: FakeServer, tmp_path: Path) -> None:
    srv.faults.break_after("a.snap", 1_000_000)
    with fetcher(tmp_path) as f:
        got = f.fetch_sha3_384(srv.url("a.snap"), SHA3, len(DATA))
        assert got.sha256 == SHA256 and got.path.read_bytes() == DATA
        assert [r.range for r in srv.requests_for("a.snap")] == [None, "bytes=1000000-"]
        again = f.fetch_sha3_384(srv.url("a.snap"), SHA3, len(DATA))
    assert again.path == got.path and len(srv.requests_for("a.snap")) == 2
    assert (tmp_path / "cache" / "sha256" / SHA256[:2] / SHA256).is_file()
    assert (tmp_path / "cache" / "sha3-384" / SHA3[:2] / SHA3).resolve() == got.path.resolve()


def test_server_ignoring_range_is_read_from_the_start(srv: FakeServer, tmp_path: Path) -> None:
    srv.faults.break_after("a.snap", 500_000)
    srv.faults.ignore_range("a.snap")
    with fetcher(tmp_path) as f:
        assert f.fetch_sha3_384(srv.url("a.snap"), SHA3, len(DATA)).sha256 == SHA256


@pytest.mark.parametrize(("sha3", "size", "match"), [("0" * 96, len(DATA), "sha3-384"), (SHA3, len(DATA) - 1, "size")])
def test_mismatch_caches_nothing(srv: FakeServer, tmp_path: Path, sha3: str, size: int, match: str) -> None:
    with fetcher(tmp_path) as f, pytest.raises(UpstreamDigestError, match=match):
        f.fetch_sha3_384(srv.url("a.snap"), sha3, size)
    assert not any((tmp_path / "cache" / "sha256").rglob("*.*")) and not list((tmp_path / "cache").rglob(SHA256))
    assert not list((tmp_path / "cache" / "partial").iterdir())


def test_request_retries_5xx_and_returns_4xx(srv: FakeServer, tmp_path: Path) -> None:
    srv.faults.fail("meta.json", 503, times=2, retry_after="0")
    with fetcher(tmp_path) as f:
        ok = f.request("GET", srv.url("meta.json"), headers={"Accept": "application/json"}, max_size=1000)
        missing = f.request("GET", srv.url("nothing"), max_size=1000)
        with pytest.raises(UpstreamDigestError, match="larger"):
            f.request("GET", srv.url("a.snap"), max_size=10)
    assert ok.status == 200 and ok.body == b'{"ok": true}'
    assert [r.status for r in srv.requests_for("meta.json")] == [503, 503, 200]
    assert srv.requests_for("meta.json")[-1].headers["Accept"] == "application/json"
    assert missing.status == 404
