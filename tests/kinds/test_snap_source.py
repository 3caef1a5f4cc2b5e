"""The snap source against a store on 127.0.0.1 (tests.fakes.snap_store): what it resolves,
downloads and checks, the headers it sends, and every bad input refused, naming the snap."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bundler.errors import (
    SpecError,
    UpstreamContentError,
    UpstreamDigestError,
    UpstreamSignatureError,
)
from bundler.events import RecordingReporter
from bundler.fetch import Fetcher
from bundler.kinds.base import SourceContext
from bundler.kinds.snap.assertions import hex_to_b64, parse_stream
from bundler.kinds.snap.source import check_section, declare
from bundler.model import Declared
from tests.fakes.snap_store import SnapStore, StoreServer, demo_store, serve_snap_store
from tests.fakes.snap_store import store_admin_export as make_export


@pytest.fixture
def served(tmp_path: Path) -> Iterator[StoreServer]:
    with serve_snap_store(demo_store(tmp_path / "store")) as srv:
        yield srv


def run(srv: StoreServer, tmp_path: Path, reporter: Any = None, **section: Any) -> list[Declared]:
    section.setdefault("store", srv.url)
    section.setdefault("root_keys", [str(srv.store.root_assert)])
    checked = check_section(section, "test")
    with Fetcher(tmp_path / "cache", retries=1, backoff=0) as f:
        ctx = SourceContext(
            fetcher=f, spec_dir=tmp_path, work_dir=tmp_path / "work", reporter=reporter or RecordingReporter()
        )
        return list(declare(checked, ctx))


def test_maas_brings_snapd_its_base_and_content_provider(served: StoreServer, tmp_path: Path) -> None:
    got = run(served, tmp_path, name="maas", channel="3.6/stable", architectures=["amd64", "arm64"])
    names = sorted((d.name, d.arch) for d in got)
    expected = ["core24/latest/stable", "maas-content/latest/stable", "maas/3.6/stable", "snapd/latest/stable"]
    assert names == sorted((n, a) for n in expected for a in ("amd64", "arm64"))
    maas = next(d for d in got if d.name == "maas/3.6/stable" and d.arch == "amd64")
    rev = served.store.revision("maas", "3.6/stable", "amd64")
    assert maas.version == str(rev.revision)
    assert maas.metadata["sha3-384"] == rev.sha3_384 and maas.metadata["requested"] is True
    assert maas.metadata["default-providers"] == ["maas-content"]
    snap_art, assert_art = maas.artifacts
    assert snap_art.path == f"amd64/maas_{rev.revision}.snap"
    assert snap_art.local is not None and hashlib.sha3_384(snap_art.local.read_bytes()).hexdigest() == rev.sha3_384
    assert snap_art.sha256 == hashlib.sha256(rev.path.read_bytes()).hexdigest()
    assert assert_art.local is not None
    stream = parse_stream(assert_art.local.read_bytes())
    assert [a.type for a in stream] == ["account-key", "account", "snap-declaration", "snap-revision"]
    assert stream[-1].get("snap-sha3-384") == hex_to_b64(rev.sha3_384)
    core = next(d for d in got if d.name == "core24/latest/stable" and d.arch == "amd64")
    assert core.metadata["required-by"] == ["base of maas", "base of maas-content"]
    assert core.metadata["requested"] is False


def test_one_snap_in_two_channels_shares_its_dependencies(served: StoreServer, tmp_path: Path) -> None:
    snaps = [{"name": "maas", "channel": "3.5/stable"}, {"name": "maas", "channel": "3.6/stable"}]
    got = run(served, tmp_path, snaps=snaps)
    assert sorted(d.name for d in got) == [
        "core24/latest/stable",
        "maas-content/latest/stable",
        "maas/3.5/stable",
        "maas/3.6/stable",
        "snapd/latest/stable",
    ]
    assert len({a.path for d in got for a in d.artifacts}) == 10


def test_requests_carry_the_store_headers(served: StoreServer, tmp_path: Path) -> None:
    run(served, tmp_path, name="lxd", channel="5.21/stable")
    refresh = [r for r in served.requests if r.path == "/v2/snaps/refresh"]
    asserts = [r for r in served.requests if r.path.startswith("/v2/assertions/")]
    assert refresh and asserts
    for r in refresh:
        assert r.headers["Snap-Device-Series"] == "16" and r.headers["Snap-Device-Architecture"] == "amd64"
        assert r.headers["User-Agent"].startswith("bundler")
    assert all(r.headers["Accept"] == "application/x.ubuntu.assertion" for r in asserts)


def test_the_test_store_enforces_its_headers(served: StoreServer) -> None:
    """The fake answers a request without the required headers as the store does."""
    body = {"context": [], "actions": [], "fields": []}
    r = requests.post(f"{served.url}/v2/snaps/refresh", json=body, headers={"Snap-Device-Architecture": "amd64"})
    assert r.status_code == 400 and r.json()["error-list"][0]["code"] == "invalid-header"
    r = requests.get(f"{served.url}/v2/assertions/account/testrootorg", headers={"Snap-Device-Series": "16"})
    assert r.status_code == 406


def test_a_second_run_uses_the_cache_and_a_partial_download_resumes(served: StoreServer, tmp_path: Path) -> None:
    rev = served.store.revision("snapd", "latest/stable", "amd64")
    partial = tmp_path / "cache" / "partial" / f"sha3-384-{rev.sha3_384}"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(rev.path.read_bytes()[:1000])
    run(served, tmp_path, name="snapd", channel="stable")
    downloads = [r for r in served.requests if r.path.endswith(f"_{rev.revision}.snap")]
    assert [r.headers.get("Range") for r in downloads] == ["bytes=1000-"]
    before = len(served.requests)
    run(served, tmp_path, name="snapd", channel="stable")
    assert not [r for r in served.requests[before:] if "/download/" in r.path]


def test_dependencies_false_carries_only_the_named_snap(served: StoreServer, tmp_path: Path) -> None:
    got = run(served, tmp_path, name="maas", channel="3.6", dependencies=False)
    assert [d.name for d in got] == ["maas/3.6/stable"]


# --- bad input: export refuses, naming the snap ---------------------------------------------


def test_unknown_snap(served: StoreServer, tmp_path: Path) -> None:
    with pytest.raises(UpstreamContentError, match="snap no-such-snap: unknown to the store"):
        run(served, tmp_path, name="no-such-snap")


def test_unknown_channel(served: StoreServer, tmp_path: Path) -> None:
    with pytest.raises(UpstreamContentError, match=r"snap maas: no channel 9.9/stable .*3.6/stable"):
        run(served, tmp_path, name="maas", channel="9.9/stable")


def test_architecture_the_channel_lacks(served: StoreServer, tmp_path: Path) -> None:
    with pytest.raises(UpstreamContentError, match=r"snap maas: channel 3.5/stable has no release for .*arm64"):
        run(served, tmp_path, name="maas", channel="3.5/stable", architectures=["arm64"])


def test_digest_mismatch(served: StoreServer, tmp_path: Path) -> None:
    rev = served.store.revision("lxd", "5.21/stable", "amd64")
    data = bytearray(rev.path.read_bytes())
    data[100] ^= 0xFF
    served.store.blob_override[rev.path.name] = bytes(data)
    with pytest.raises(UpstreamDigestError, match=r"snap lxd 5.21/stable .*sha3-384"):
        run(served, tmp_path, name="lxd", channel="5.21/stable", dependencies=False)
    assert not list((tmp_path / "cache").glob("sha3-384/*/*"))


def test_size_mismatch(served: StoreServer, tmp_path: Path) -> None:
    served.store.size_override["lxd"] = served.store.revision("lxd", "5.21/stable", "amd64").size + 7
    with pytest.raises(UpstreamDigestError, match=r"snap lxd 5.21/stable .*size"):
        run(served, tmp_path, name="lxd", channel="5.21/stable", dependencies=False)


def test_missing_assertion(served: StoreServer, tmp_path: Path) -> None:
    spec = served.store.snaps["lxd"]
    del served.store.assertions[("snap-declaration", "16", spec.snap_id)]
    with pytest.raises(UpstreamContentError, match=r"snap lxd 5.21/stable .*no snap-declaration"):
        run(served, tmp_path, name="lxd", channel="5.21/stable", dependencies=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"snap_id": "Z" * 32}, "snap id"),
        ({"snap_revision": "4242"}, "revision 4242"),
        ({"snap_size": "12"}, "size 12"),
    ],
)
def test_assertion_for_another_snap_id_or_revision(
    served: StoreServer, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    served.store.forge_revision("lxd", "5.21/stable", "amd64", **change)
    with pytest.raises(UpstreamSignatureError, match=rf"snap lxd 5.21/stable \(amd64, revision \d+\): .*{message}"):
        run(served, tmp_path, name="lxd", channel="5.21/stable", dependencies=False)


def test_assertion_for_another_digest(served: StoreServer, tmp_path: Path) -> None:
    """The store serves, under this file's digest, a signed snap-revision for another digest."""
    store = served.store
    lxd = store.revision("lxd", "5.21/stable", "amd64")
    other = store.revision("core22", "latest/stable", "amd64")
    store.assertions[("snap-revision", hex_to_b64(lxd.sha3_384))] = store.assertions[
        ("snap-revision", hex_to_b64(other.sha3_384))
    ]
    with pytest.raises(UpstreamSignatureError, match=r"snap lxd .*no snap-revision assertion for digest"):
        run(served, tmp_path, name="lxd", channel="5.21/stable", dependencies=False)


def test_assertions_from_an_untrusted_root(served: StoreServer, tmp_path: Path) -> None:
    other = SnapStore(tmp_path / "other")
    with pytest.raises(UpstreamSignatureError, match=r"snap lxd .*account-key .* is missing"):
        run(served, tmp_path, name="lxd", channel="5.21/stable", dependencies=False, root_keys=[str(other.root_assert)])


def test_default_root_is_canonical(served: StoreServer, tmp_path: Path) -> None:
    """Without root_keys the test store's assertions do not chain to Canonical's root key."""
    section = {"name": "lxd", "channel": "5.21/stable", "dependencies": False, "store": served.url}
    with pytest.raises(UpstreamSignatureError, match="is missing"), Fetcher(tmp_path / "cache", retries=0) as f:
        list(declare(check_section(section, "t"), SourceContext(f, tmp_path, tmp_path / "w")))


# --- carry spec ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"name": "Maas"}, "'name' must be a snap name"),
        ({"name": "maas", "channel": "3.6/stable/x/y"}, "not a channel"),
        ({"name": "maas", "architectures": []}, "architectures"),
        ({"name": "maas", "snaps": [{"name": "lxd"}]}, "either 'name'"),
        ({"name": "maas", "store": "ftp://x"}, "store must be"),
        ({"store_admin_exports": ["x"], "name": "maas"}, "cannot be mixed"),
        ({"name": "maas", "colour": "red"}, "unknown key"),
    ],
)
def test_bad_sections(section: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        check_section(section, "spec.toml [[snap]] #1")


def test_channels_are_normalised() -> None:
    got = check_section({"snaps": [{"name": "a", "channel": "stable"}, {"name": "b", "channel": "3.6"}]}, "t")
    assert [s["channel"] for s in got["snaps"]] == ["latest/stable", "3.6/stable"]


# --- store-admin exports ------------------------------------------------------------------


def test_store_admin_exports_are_carried_opaque_newest_first(tmp_path: Path) -> None:
    d = tmp_path / "exports"
    old = make_export(d, "maas", "20261101T101010")
    new = make_export(d, "maas", "20261102T101010")
    jq = make_export(d, "jq", "20261101T000000")
    rep = RecordingReporter()
    with Fetcher(tmp_path / "cache") as f:
        got = list(
            declare(
                check_section({"store_admin_exports": ["exports"]}, "t"),
                SourceContext(f, tmp_path, tmp_path / "w", rep),
            )
        )
    assert [(d.name, d.version, d.artifacts[0].path) for d in got] == [
        ("store-admin/jq", "20261101T000000", f"store-admin/{jq.name}"),
        ("store-admin/maas", "20261102T101010", f"store-admin/{new.name}"),
    ]
    assert got[1].artifacts[0].sha256 == hashlib.sha256(new.read_bytes()).hexdigest()
    assert any(old.name in w for w in rep.warnings)


def test_store_admin_export_with_a_foreign_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "maas.tar.gz").write_bytes(b"x")
    with Fetcher(tmp_path / "cache") as f, pytest.raises(SpecError, match="not named like a store-admin export"):
        list(declare({"store_admin_exports": ["maas.tar.gz"]}, SourceContext(f, tmp_path, tmp_path / "w")))


def test_example_and_demo_carry_specs_parse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bundler.spec import load_spec
    from tests.helpers import ROOT

    example = load_spec(ROOT / "manifests" / "snap-maas-region-example.toml")
    assert [s["name"] for _k, sec in example.sections for s in sec["snaps"]] == ["maas", "lxd"]
    monkeypatch.setenv("BUNDLER_DEMO_SNAP_STORE", "http://127.0.0.1:9")
    monkeypatch.setenv("BUNDLER_DEMO_DIR", str(tmp_path))
    for var in ("UPSTREAM", "APT_URL", "APT_KEYRING", "IMAGES_URL", "IMAGES_KEYRING"):
        monkeypatch.setenv(f"BUNDLER_DEMO_{var}", "http://127.0.0.1:9")
    monkeypatch.setenv("BUNDLER_DEMO_APT_FINGERPRINT", "A" * 40)
    ((_kind, section),) = [(k, sec) for k, sec in load_spec(ROOT / "manifests" / "demo.toml").sections if k == "snap"]
    assert section["store"] == "http://127.0.0.1:9"
    assert section["root_keys"] == [f"{tmp_path}/snap-store/root.assert"]
