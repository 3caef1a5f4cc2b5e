"""The ``deb`` source: a real signed archive on 127.0.0.1 -> ``declare()`` with a real Fetcher,
real gpgv and a real, isolated apt-get. Entries must follow the contract in
``bundler/kinds/deb/__init__.py`` exactly; every upstream problem is refused with a message
that names the suite, file or package.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import time
import tracemalloc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import (
    BundlerError,
    SpecError,
    UpstreamContentError,
    UpstreamDigestError,
    UpstreamSignatureError,
)
from bundler.fetch import Fetcher
from bundler.kinds.base import SourceContext
from bundler.kinds.deb.deb822 import iter_stanzas, open_index, parse_stanzas, select_stanzas
from bundler.kinds.deb.release import parse_release
from bundler.kinds.deb.source import check_section, declare
from bundler.model import Declared
from bundler.openpgp.gpgv import binary_keyring, gpgv
from tests.fakes.apt_archive import DEFAULT_PACKAGES, Archive, ArchiveSpec, PackageSpec, build_archive, serve_archive
from tests.fakes.gpg import GpgHome
from tests.fakes.http_server import FakeServer

_TOOLS = ("apt-get", "apt-cache", "apt-ftparchive", "dpkg-deb", "gpg", "gpgv", "gpgconf")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in _TOOLS), reason=f"needs {', '.join(_TOOLS)} (./scripts/setup)"
)

ARCHES = ["amd64", "arm64"]
SUITES = ["noble", "noble-updates"]
PACKAGES = ["hello", "cowsay-lite", "virtual-user"]
CLOSURE = {
    # name: (suite, version, deb architecture: "any" -> one per requested arch)
    "hello": ("noble-updates", "2.10-3ubuntu2", "any"),
    "libgreet1": ("noble-updates", "1.2-1ubuntu0.1", "any"),
    "libc-dummy": ("noble", "1:2.39-0ubuntu8", "any"),
    "greet-data": ("noble", "1.2-1", "all"),
    "cowsay-lite": ("noble", "3.03+dfsg2-8", "all"),
    "virtual-user": ("noble", "1.0-1", "any"),
    "tiny-mta": ("noble", "0.9-1", "any"),
}


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpg() -> Iterator[GpgHome]:
    with GpgHome() as home:
        yield home


@pytest.fixture(scope="module")
def fpr(gpg: GpgHome) -> str:
    return gpg.generate("Test Archive <archive@example.invalid>")


@pytest.fixture(scope="module")
def upstream(gpg: GpgHome, fpr: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Archive, FakeServer]]:
    """The shared archive: read-only tests only."""
    archive = build_archive(tmp_path_factory.mktemp("upstream") / "ubuntu", gpg, fpr)
    with serve_archive(archive) as srv:
        yield archive, srv


@pytest.fixture
def fresh(gpg: GpgHome, fpr: str, tmp_path: Path) -> Iterator[tuple[Archive, FakeServer]]:
    """An archive of its own, for tests that break it."""
    archive = build_archive(tmp_path / "fresh" / "ubuntu", gpg, fpr)
    with serve_archive(archive) as srv:
        yield archive, srv


@pytest.fixture(scope="module")
def other() -> Iterator[tuple[GpgHome, str]]:
    with GpgHome() as home:
        yield home, home.generate("Someone Else <else@example.invalid>")


def section(archive: Archive, srv: FakeServer, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "ubuntu",
        "url": srv.base_url.rstrip("/"),
        "suites": SUITES,
        "components": ["main", "universe"],
        "architectures": ARCHES,
        "keyring": str(archive.keyring),
        "fingerprints": [archive.fingerprint],
        "packages": PACKAGES,
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not None}


def run_declare(raw: Mapping[str, Any], tmp: Path, spec_dir: Path | None = None) -> list[Declared]:
    checked = check_section(raw, "test.toml [[deb]] #1")
    with Fetcher(tmp / "cache", retries=1, backoff=0) as fetcher:
        ctx = SourceContext(fetcher=fetcher, spec_dir=spec_dir or tmp, work_dir=tmp / "work")
        return list(declare(checked, ctx))


def packages_of(declared: list[Declared]) -> dict[tuple[str, str], Declared]:
    """Package entries keyed by (entry name, arch)."""
    return {(d.name, d.arch): d for d in declared if d.metadata["role"] == "package"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the closure, exactly per the contract --------------------------------------------------


def test_closure_entries_follow_the_contract(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = upstream
    started = time.monotonic()
    declared = run_declare(section(archive, srv), tmp_path)
    elapsed = time.monotonic() - started
    assert elapsed < 30, elapsed

    # Index entries: one per suite.
    indexes = [d for d in declared if d.metadata["role"] == "index"]
    assert [d.name for d in indexes] == ["ubuntu/noble", "ubuntu/noble-updates"]
    for d, suite in zip(indexes, SUITES, strict=True):
        inrelease = archive.dist(suite) / "InRelease"
        assert d.kind == "deb" and d.arch == "index"
        assert d.version == sha256(inrelease)[:16]
        assert d.metadata == {
            "role": "index",
            "archive": "ubuntu",
            "suite": suite,
            "codename": suite,
            "origin": "Ubuntu",
            "label": "Ubuntu",
            "url": srv.base_url.rstrip("/"),
            "components": ["main", "universe"],
            "architectures": ARCHES,
            "fingerprints": [archive.fingerprint],
        }
        files = {a.path: a for a in d.artifacts}
        expected = [f"ubuntu/dists/{suite}/InRelease"]
        expected += [f"ubuntu/dists/{suite}/{c}/binary-{a}/Packages.xz" for c in ("main", "universe") for a in ARCHES]
        expected.append("ubuntu/keyring.gpg")
        assert [a.path for a in d.artifacts] == expected
        for art in d.artifacts:
            assert art.url is None and art.local is not None and art.local.is_file()
            assert (sha256(art.local), art.local.stat().st_size) == (art.sha256, art.size), art.path
        carried = files[f"ubuntu/dists/{suite}/InRelease"].local
        assert carried is not None and carried.read_bytes() == inrelease.read_bytes()
        for arch in ARCHES:
            upstream_xz = archive.index_dir(suite, "main", arch) / "Packages.xz"
            assert files[f"ubuntu/dists/{suite}/main/binary-{arch}/Packages.xz"].sha256 == sha256(upstream_xz)
        assert files["ubuntu/keyring.gpg"].sha256 == sha256(archive.keyring)

    # Package entries: the closure, from the suite apt picked, per architecture ("all" once).
    pkgs = packages_of(declared)
    expected_keys = {
        (f"ubuntu/{suite}/{name}", a)
        for name, (suite, _version, deb_arch) in CLOSURE.items()
        for a in (["all"] if deb_arch == "all" else ARCHES)
    }
    assert set(pkgs) == expected_keys
    for (_entry, arch), d in pkgs.items():
        name = d.metadata["package"]
        suite, version, _ = CLOSURE[name]
        listed = archive.get(name, suite, arch if arch != "all" else "amd64")
        assert (d.kind, d.version, d.arch) == ("deb", version, listed.arch)
        assert d.metadata == {
            "role": "package",
            "archive": "ubuntu",
            "suite": suite,
            "component": listed.component,
            "package": name,
            "filename": listed.filename,
        }
        (art,) = d.artifacts
        assert art.path == f"ubuntu/{listed.filename}"
        assert (art.sha256, art.size) == (listed.sha256, listed.size)
        assert art.url == f"{srv.base_url.rstrip('/')}/{listed.filename}" and art.local is None
    assert pkgs[("ubuntu/noble/cowsay-lite", "all")].metadata["component"] == "universe"
    assert pkgs[("ubuntu/noble/libc-dummy", "arm64")].version == "1:2.39-0ubuntu8"

    # declare() downloads no deb: only InRelease and the indexes were asked for.
    asked = {r.path for r in srv.requests}
    assert not any(p.endswith(".deb") for p in asked)
    assert all("/by-hash/SHA256/" in p for p in asked if "Packages" in p)  # Acquire-By-Hash: yes


def test_pinned_versions_and_one_architecture(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = upstream
    declared = run_declare(section(archive, srv, architectures=["arm64"], packages=["hello=2.10-3ubuntu1"]), tmp_path)
    pkgs = packages_of(declared)
    assert set(pkgs) == {
        ("ubuntu/noble/hello", "arm64"),  # the pin wins over noble-updates
        ("ubuntu/noble-updates/libgreet1", "arm64"),  # its dependency still resolves to the newest
        ("ubuntu/noble/libc-dummy", "arm64"),
        ("ubuntu/noble/greet-data", "all"),
    }
    assert pkgs[("ubuntu/noble/hello", "arm64")].version == "2.10-3ubuntu1"
    for d in pkgs.values():
        assert d.artifacts[0].path.endswith(("_arm64.deb", "_all.deb"))
    indexes = [d for d in declared if d.metadata["role"] == "index"]
    assert all(d.metadata["architectures"] == ["arm64"] for d in indexes)
    assert not any("amd64" in a.path for d in indexes for a in d.artifacts)


def test_without_closure_exactly_the_named_packages(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = upstream
    raw = section(archive, srv, packages=["hello", "libc-dummy:arm64", "greet-data/noble"], closure=False)
    pkgs = packages_of(run_declare(raw, tmp_path))
    assert {k: d.version for k, d in pkgs.items()} == {
        ("ubuntu/noble-updates/hello", "amd64"): "2.10-3ubuntu2",
        ("ubuntu/noble-updates/hello", "arm64"): "2.10-3ubuntu2",
        ("ubuntu/noble/libc-dummy", "arm64"): "1:2.39-0ubuntu8",
        ("ubuntu/noble/greet-data", "all"): "1.2-1",
    }


def test_installed_set_brings_its_updates(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = upstream
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "fleet.txt").write_text(
        "hello\t2.10-3ubuntu1\n"
        "libgreet1:amd64\t1.2-1\n"
        "greet-data\t1.2-1\n"
        "libc-dummy:amd64\t1:2.39-0ubuntu8\n"
        "removed-long-ago\t\n"  # dpkg-query -W lists known, not installed packages without a version
        "local-only\t0.1\n"  # not in the archive: kept as it is
    )
    raw = section(archive, srv, architectures=["amd64"], packages=["tiny-mta"], installed="fleet.txt")
    pkgs = packages_of(run_declare(raw, tmp_path, spec_dir))
    assert {k: d.version for k, d in pkgs.items()} == {
        ("ubuntu/noble/tiny-mta", "amd64"): "0.9-1",  # asked for
        ("ubuntu/noble-updates/hello", "amd64"): "2.10-3ubuntu2",  # upgrades of what the fleet runs
        ("ubuntu/noble-updates/libgreet1", "amd64"): "1.2-1ubuntu0.1",
    }


def test_release_and_release_gpg_when_there_is_no_inrelease(fresh: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = fresh
    (archive.dist("noble") / "InRelease").unlink()
    declared = run_declare(section(archive, srv, packages=["tiny-mta"]), tmp_path)
    noble = next(d for d in declared if d.name == "ubuntu/noble")
    release = archive.dist("noble") / "Release"
    assert noble.version == sha256(release)[:16]
    paths = [a.path for a in noble.artifacts]
    assert paths[:2] == ["ubuntu/dists/noble/Release", "ubuntu/dists/noble/Release.gpg"]
    assert "ubuntu/dists/noble/InRelease" not in paths
    assert noble.artifacts[1].sha256 == sha256(archive.dist("noble") / "Release.gpg")
    assert ("ubuntu/noble/tiny-mta", "amd64") in packages_of(declared)


def test_by_hash_falls_back_to_the_canonical_path_and_work_dir_keeps_only_carried_files(
    fresh: tuple[Archive, FakeServer], tmp_path: Path
) -> None:
    archive, srv = fresh
    shutil.rmtree(archive.index_dir("noble", "main", "amd64") / "by-hash")
    declared = run_declare(section(archive, srv, architectures=["amd64"], packages=["tiny-mta"]), tmp_path)
    assert ("ubuntu/noble/tiny-mta", "amd64") in packages_of(declared)
    asked = [r.path for r in srv.requests if r.path.startswith("dists/noble/main/binary-amd64/")]
    assert asked[-1] == "dists/noble/main/binary-amd64/Packages.xz"
    assert any("/by-hash/" in p for p in asked)  # tried first
    # What stays in the work dir: the signed Release files and the keyring the entries point at.
    (root,) = (tmp_path / "work" / "deb").iterdir()
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert left == ["keyring.gpg", "signed/noble-updates/InRelease", "signed/noble/InRelease"]
    locals_ = {a.local for d in declared for a in d.artifacts if a.local is not None}
    assert all(p.is_file() for p in locals_)


def test_a_version_listed_in_two_suites_is_declared_in_each(fresh: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = fresh
    # As when a security update is also copied to -updates: same file in both pockets.
    archive.add_package(PackageSpec("tiny-mta", "0.9-1", "noble-updates", provides="mail-transport-agent"))
    archive.refresh()
    pkgs = packages_of(run_declare(section(archive, srv, architectures=["amd64"], packages=["tiny-mta"]), tmp_path))
    both = [pkgs[("ubuntu/noble/tiny-mta", "amd64")], pkgs[("ubuntu/noble-updates/tiny-mta", "amd64")]]
    assert both[0].artifacts == both[1].artifacts
    assert [d.metadata["suite"] for d in both] == ["noble", "noble-updates"]


def test_armored_keyring_and_no_fingerprint_pin(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = upstream
    armored = archive.gpg.export_armored(archive.fingerprint, tmp_path / "spec" / "archive.asc")
    raw = section(archive, srv, keyring="archive.asc", fingerprints=None, packages=["tiny-mta"])
    declared = run_declare(raw, tmp_path, spec_dir=armored.parent)
    index = declared[0]
    assert index.metadata["fingerprints"] == [archive.fingerprint]  # recorded even when not pinned
    keyring = next(a for a in index.artifacts if a.path == "ubuntu/keyring.gpg")
    assert keyring.local is not None and keyring.local.read_bytes() == archive.keyring.read_bytes()  # dearmored


# --- refusals -------------------------------------------------------------------------------


def test_bad_signature_is_refused(fresh: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = fresh
    archive.tamper_inrelease("noble-updates")
    with pytest.raises(UpstreamSignatureError) as info:
        run_declare(section(archive, srv), tmp_path)
    msg = str(info.value)
    assert "suite noble-updates" in msg and srv.url("dists/noble-updates/InRelease") in msg
    assert "BAD signature" in msg


def test_signature_by_an_unexpected_key_is_refused(
    fresh: tuple[Archive, FakeServer], other: tuple[GpgHome, str], tmp_path: Path
) -> None:
    archive, srv = fresh
    other_home, other_fpr = other
    archive.resign_inrelease("noble", other_home, other_fpr)
    # A keyring that holds both keys: the signature is valid, but not by a pinned key.
    both = tmp_path / "both.gpg"
    both.write_bytes(archive.keyring.read_bytes() + other_home.run("--export", other_fpr))
    with pytest.raises(UpstreamSignatureError) as info:
        run_declare(section(archive, srv, keyring=str(both)), tmp_path)
    msg = str(info.value)
    assert "suite noble" in msg and other_fpr in msg and archive.fingerprint in msg
    assert "not one of the accepted fingerprints" in msg
    # With only the archive key in the keyring there is no valid signature at all.
    with pytest.raises(UpstreamSignatureError, match=r"suite noble: .* no valid signature"):
        run_declare(section(archive, srv), tmp_path / "second")


def test_a_second_signature_by_an_unknown_key_does_not_matter(
    fresh: tuple[Archive, FakeServer], other: tuple[GpgHome, str], tmp_path: Path
) -> None:
    """As Debian's InRelease: several signatures, the keyring holds only some of the keys."""
    archive, srv = fresh
    other_home, other_fpr = other
    dist = archive.dist("noble")
    # Add the other key's signature: sign the same text with both keys in one home.
    both = GpgHome()
    with both:
        both.run("--import", input=archive.gpg.run("--export-secret-keys", archive.fingerprint))
        both.run("--import", input=other_home.run("--export-secret-keys", other_fpr))
        both.run(
            "--yes", "--local-user", f"{archive.fingerprint}!", "--local-user", f"{other_fpr}!",
            "--output", dist / "InRelease", "--clearsign", dist / "Release",
        )  # fmt: skip
    judged = gpgv(archive.keyring, dist / "InRelease", homedir=tmp_path / "gnupg").signatures
    assert sorted((s.good, s.problem) for s in judged) == [
        (False, "cannot be checked: the key is not in the keyring"),
        (True, ""),
    ]
    declared = run_declare(section(archive, srv, packages=["tiny-mta"]), tmp_path)
    assert declared[0].name == "ubuntu/noble" and declared[0].metadata["fingerprints"] == [archive.fingerprint]


def test_missing_suite_and_unsigned_release_are_refused(fresh: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = fresh
    with pytest.raises(UpstreamContentError) as info:
        run_declare(section(archive, srv, suites=["noble", "noble-backports"]), tmp_path)
    msg = str(info.value)
    assert "suite noble-backports" in msg and "InRelease" in msg and "Release" in msg
    assert srv.url("dists/noble-backports/InRelease") in msg

    dist = archive.dist("noble")
    (dist / "InRelease").unlink()
    (dist / "Release.gpg").unlink()
    with pytest.raises(UpstreamSignatureError, match=r"suite noble: .*/dists/noble/Release is not signed"):
        run_declare(section(archive, srv), tmp_path / "second")


def test_index_that_does_not_match_the_release_is_refused(fresh: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = fresh
    signed = parse_release((archive.dist("noble-updates") / "Release").read_text())
    expected = signed.sha256["main/binary-arm64/Packages.xz"].sha256
    archive.corrupt_index("noble-updates", "main", "arm64")
    with pytest.raises(UpstreamDigestError) as info:
        run_declare(section(archive, srv), tmp_path)
    msg = str(info.value)
    assert "suite noble-updates: main/binary-arm64/Packages.xz" in msg and "signed Release" in msg
    assert not list((tmp_path / "cache" / "sha256").rglob(expected))  # nothing was cached under its name


def test_unknown_package_is_refused(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = upstream
    with pytest.raises(UpstreamContentError) as info:
        run_declare(section(archive, srv, packages=["hello", "no-such-package"]), tmp_path)
    assert "no-such-package" in str(info.value) and "Unable to locate" in str(info.value)
    with pytest.raises(UpstreamContentError, match=r"Version '9\.9' for 'hello' was not found"):
        run_declare(section(archive, srv, packages=["hello=9.9"]), tmp_path / "second")
    with pytest.raises(UpstreamContentError, match="Unable to locate package no-such-package"):
        run_declare(section(archive, srv, packages=["no-such-package"], closure=False), tmp_path / "third")
    with pytest.raises(UpstreamContentError, match=r"Version '9\.9' for 'hello' was not found"):
        run_declare(section(archive, srv, packages=["hello=9.9"], closure=False), tmp_path / "fourth")


def test_unsatisfiable_dependency_is_refused(gpg: GpgHome, fpr: str, tmp_path: Path) -> None:
    broken = PackageSpec("needs-ghost", "1.0-1", "noble", depends="ghost-lib (>= 2.0)")
    archive = build_archive(tmp_path / "ubuntu", gpg, fpr, ArchiveSpec(packages=(*DEFAULT_PACKAGES, broken)))
    with serve_archive(archive) as srv, pytest.raises(UpstreamContentError) as info:
        run_declare(section(archive, srv, packages=["hello", "needs-ghost"]), tmp_path)
    msg = str(info.value)
    assert "deb ubuntu" in msg and "amd64" in msg
    assert "needs-ghost : Depends: ghost-lib (>= 2.0) but it is not installable" in msg


def test_component_or_architecture_the_release_lacks_is_refused(
    upstream: tuple[Archive, FakeServer], tmp_path: Path
) -> None:
    archive, srv = upstream
    with pytest.raises(UpstreamContentError, match=r"suite noble: component 'multiverse' is not in the archive"):
        run_declare(section(archive, srv, components=["main", "multiverse"]), tmp_path)
    with pytest.raises(UpstreamContentError, match=r"suite noble: architecture 'riscv64' is not in the archive"):
        run_declare(section(archive, srv, architectures=["riscv64"]), tmp_path / "second")


def test_release_for_another_suite_is_refused(fresh: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = fresh
    for name in ("InRelease", "Release", "Release.gpg"):  # a validly signed file replayed in its place
        shutil.copyfile(archive.dist("noble") / name, archive.dist("noble-updates") / name)
    with pytest.raises(UpstreamSignatureError, match=r"suite noble-updates: .* is for suite 'noble'"):
        run_declare(section(archive, srv), tmp_path)


def test_text_outside_the_signed_block_is_refused(fresh: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = fresh
    path = archive.dist("noble") / "InRelease"
    path.write_bytes(path.read_bytes() + b"\nSHA256:\n 00 1 main/binary-amd64/Packages.xz\n")
    with pytest.raises(UpstreamSignatureError, match="text after"):
        run_declare(section(archive, srv), tmp_path)


def test_the_hosts_apt_is_untouched(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = upstream
    roots = [Path(p) for p in ("/etc/apt", "/var/lib/apt", "/var/cache/apt", "/var/lib/dpkg", "/var/log/apt")]

    def state() -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for root in roots:
            if not root.exists():
                continue
            for dirpath, _dirs, files in os.walk(root):
                for p in [Path(dirpath), *(Path(dirpath) / f for f in files)]:
                    st = p.lstat()
                    out[str(p)] = (st.st_mtime_ns, st.st_size)
        return out

    before = state()
    run_declare(section(archive, srv, installed=None), tmp_path)
    assert state() == before


# --- carry spec ----------------------------------------------------------------------------


def test_check_section_normalises_and_refuses(tmp_path: Path) -> None:
    where = "t.toml [[deb]] #1"
    got = check_section({"name": "ubuntu", "suites": ["noble"], "packages": ["hello"]}, where)
    assert got == {
        "name": "ubuntu",
        "url": "http://archive.ubuntu.com/ubuntu",
        "suites": ["noble"],
        "components": ["main", "restricted", "universe", "multiverse"],
        "architectures": ["amd64"],
        "keyring": "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
        "fingerprints": [],
        "packages": ["hello"],
        "closure": True,
    }
    ports = check_section(
        {
            "name": "ubuntu-ports",
            "suites": ["noble"],
            "architectures": ["arm64"],
            "packages": ["hello"],
            "fingerprints": ["f6ec b376 2474 eda9 d21b  7022 8719 20d1 991b c93c"],
        },
        where,
    )
    assert ports["url"] == "http://ports.ubuntu.com/ubuntu-ports"
    assert ports["fingerprints"] == ["F6ECB3762474EDA9D21B7022871920D1991BC93C"]

    base = {"name": "ubuntu", "suites": ["noble"], "packages": ["hello"]}
    bad: list[tuple[dict[str, Any], str]] = [
        ({**base, "mirror": "x"}, "unknown key"),
        ({**base, "name": "Ubuntu"}, "'name' is required"),
        ({**base, "suites": []}, "'suites' is empty"),
        ({**base, "suites": "noble"}, "must be a list"),
        ({**base, "architectures": ["amd64", "arm64"]}, "two Ubuntu archives"),
        ({**base, "architectures": ["all"]}, "cannot be asked for"),
        ({**base, "url": "ftp://x/ubuntu"}, "http"),
        ({**base, "fingerprints": ["871920D1991BC93C"]}, "not a full key fingerprint"),
        ({**base, "packages": ["Hello World"]}, "is not 'name'"),
        ({**base, "packages": ["hello:arm64"]}, "not in \\['amd64'\\]"),
        ({**base, "packages": ["hello/jammy"]}, "suite 'jammy'"),
        ({**base, "packages": ["hello", "hello=1.0"]}, "listed twice"),
        ({**base, "packages": []}, "nothing to carry"),
        ({**base, "closure": "yes"}, "closure must be true or false"),
    ]
    for raw, message in bad:
        with pytest.raises(SpecError, match=message):
            check_section(raw, where)


def test_keyring_problems_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        binary_keyring(tmp_path / "missing.gpg", tmp_path / "out.gpg")
    junk = tmp_path / "junk.gpg"
    junk.write_bytes(b"not a key\n")
    with pytest.raises(SpecError, match="holds no OpenPGP public key"):
        binary_keyring(junk, tmp_path / "out.gpg")
    kbx = tmp_path / "pubring.kbx"
    kbx.write_bytes(b"\x00\x00\x00\x20\x01\x01\x00\x00KBXf" + bytes(20))
    with pytest.raises(SpecError, match="keybox"):
        binary_keyring(kbx, tmp_path / "out.gpg")


def test_installed_file_errors_name_the_line(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = upstream
    (tmp_path / "fleet.txt").write_text("hello\t2.10-3ubuntu1\nthis is not dpkg-query output\n")
    with pytest.raises(SpecError, match=r"fleet.txt, line 2"):
        run_declare(section(archive, srv, installed="fleet.txt"), tmp_path)


def test_every_refusal_is_a_bundler_error_with_a_remedy(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = upstream
    with pytest.raises(BundlerError) as info:
        run_declare(section(archive, srv, packages=["no-such-package"]), tmp_path)
    assert info.value.remedy


# --- parsers --------------------------------------------------------------------------------


def test_deb822_continuations_and_case_insensitive_fields() -> None:
    text = "Package: hello\nversion: 1.0\nDescription: short\n long line\n .\n more\n\n\nPackage: other\nMD5sum: abc\n"
    first, second = parse_stanzas(text)
    assert first["Version"] == first["VERSION"] == "1.0"
    assert first["Description"] == "short\nlong line\n.\nmore"
    assert list(first) == ["Package", "version", "Description"]
    assert second["md5sum"] == "abc" and "MD5Sum" in second
    with pytest.raises(ValueError, match="line 1"):
        parse_stanzas(" orphan continuation\n")
    with pytest.raises(ValueError, match="line 2"):
        parse_stanzas("Package: x\nno colon here\n")


def test_release_sha256_section_and_fields() -> None:
    rel = parse_release(
        "Origin: Ubuntu\nLabel: Ubuntu\nSuite: noble-updates\nCodename: noble\n"
        "Date: Thu, 25 Apr 2024 15:10:33 UTC\nAcquire-By-Hash: yes\nComponents: main universe\n"
        "Architectures: amd64 i386\nMD5Sum:\n 0123 10 main/binary-amd64/Packages\nSHA256:\n"
        f" {'a' * 64} 10 main/binary-amd64/Packages\n {'B' * 64}     4 main/binary-amd64/Packages.xz\n"
    )
    assert rel.matches("noble-updates") and rel.matches("noble") and not rel.matches("jammy")
    assert rel.acquire_by_hash and rel.components == ("main", "universe")
    assert rel.sha256["main/binary-amd64/Packages.xz"].sha256 == "b" * 64
    assert rel.sha256["main/binary-amd64/Packages.xz"].size == 4
    assert rel.date is not None and rel.date.year == 2024


@pytest.mark.slow
def test_index_scan_streams_with_bounded_memory(tmp_path: Path) -> None:
    """A 60k-stanza index is read one stanza at a time: memory does not grow with it."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as gz:
        for i in range(60_000):
            gz.write(
                f"Package: pkg{i}\nVersion: 1.{i}-1\nArchitecture: amd64\nFilename: pool/main/p/pkg{i}/pkg{i}.deb\n"
                f"Size: {i}\nSHA256: {'0' * 64}\nDescription: package {i}\n line two of {i}\n\n".encode()
            )
    path = tmp_path / "Packages.gz"
    path.write_bytes(out.getvalue())
    tracemalloc.start()
    try:
        count = 0
        with open_index(path) as (text, reader):
            for st in iter_stanzas(text, "Packages.gz"):
                count += 1
                last = st["Package"]
            digest, size = reader.drain()
        with open_index(path) as (text, _reader):
            picked = [st["Version"] for st in select_stanzas(text, "Package", {"pkg7", "pkg59999"}, "Packages.gz")]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 60_000 and last == "pkg59999"
    assert picked == ["1.7-1", "1.59999-1"]
    assert digest == hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() and size > 10_000_000
    assert peak < 8 << 20, peak  # the decompressed index is > 10 MB


def test_manifest_metadata_is_json(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = upstream
    for d in run_declare(section(archive, srv, packages=["tiny-mta"]), tmp_path):
        assert json.loads(json.dumps(d.metadata)) == d.metadata
