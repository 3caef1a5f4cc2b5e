"""The APT test fixture is a real, signed archive: a real apt-get and gpgv accept it, and
its negative-test helpers break it the way they claim to.

Fixtures: tests/fakes/gpg.py (throwaway key), tests/fakes/apt_archive.py (archive + HTTP),
tests/fakes/apt_client.py (apt-get isolated from the host's /etc/apt).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.apt_archive import Archive, ArchiveSpec, PackageSpec, build_archive, serve_archive
from tests.fakes.apt_client import AptError, IsolatedApt
from tests.fakes.gpg import GpgHome, daemon_pids
from tests.fakes.http_server import FakeServer

_TOOLS = ("apt-get", "apt-ftparchive", "dpkg-deb", "gpg", "gpgv", "gpgconf")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in _TOOLS), reason=f"needs {', '.join(_TOOLS)} (./scripts/setup)"
)

ARCHES = ["amd64", "arm64"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gpgv(keyring: Path, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """gpgv with status lines on stderr; ``--keyring`` must be a path with a slash (else ~/.gnupg)."""
    cmd = ["gpgv", "--status-fd", "2", "--keyring", str(keyring.resolve()), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, timeout=30, check=False)


def release_fields(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z-]+): (.+)$", text, re.MULTILINE))


def release_sha256(text: str) -> list[tuple[str, int, str]]:
    block = text.split("\nSHA256:\n", 1)[1]
    rows = []
    for line in block.splitlines():
        if not line.startswith(" "):
            break
        digest, size, rel = line.split()
        rows.append((digest, int(size), rel))
    return rows


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpg() -> Iterator[GpgHome]:
    with GpgHome() as home:
        yield home


@pytest.fixture(scope="module")
def fpr(gpg: GpgHome) -> str:
    return gpg.generate("Test Archive <archive@example.invalid>")


@pytest.fixture(scope="module")
def archive(gpg: GpgHome, fpr: str, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return build_archive(tmp_path_factory.mktemp("upstream") / "ubuntu", gpg, fpr)


@pytest.fixture(scope="module")
def server(archive: Archive) -> Iterator[FakeServer]:
    with serve_archive(archive) as srv:
        yield srv


@pytest.fixture(scope="module")
def apt(archive: Archive, server: FakeServer, tmp_path_factory: pytest.TempPathFactory) -> IsolatedApt:
    """An updated client trusting the archive key (shared by the read-only tests)."""
    client = IsolatedApt(tmp_path_factory.mktemp("apt"), [archive.apt_source(server.base_url)], ARCHES)
    client.update()
    return client


@pytest.fixture
def fresh(gpg: GpgHome, fpr: str, tmp_path: Path) -> Iterator[tuple[Archive, FakeServer]]:
    """An archive of its own, for tests that break it."""
    archive = build_archive(tmp_path / "ubuntu", gpg, fpr)
    with serve_archive(archive) as srv:
        yield archive, srv


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GpgHome, str, Path]]:
    """Another key: (home, fingerprint, binary keyring)."""
    with GpgHome() as home:
        fingerprint = home.generate("Someone Else <else@example.invalid>")
        yield home, fingerprint, home.export_binary(fingerprint, tmp_path_factory.mktemp("other") / "other.gpg")


# --- the files ----------------------------------------------------------------------------


def test_release_files_list_every_index_with_by_hash_copies(archive: Archive) -> None:
    for suite in archive.suites:
        text = (archive.dist(suite) / "Release").read_text()
        fields = release_fields(text)
        assert fields["Codename"] == fields["Suite"] == suite
        assert fields["Origin"] == fields["Label"] == "Ubuntu"
        assert fields["Architectures"] == "amd64 arm64"
        assert fields["Components"] == "main universe"
        assert fields["Acquire-By-Hash"] == "yes"
        assert "\nSHA512:" not in text  # Ubuntu-like: MD5Sum, SHA1, SHA256
        listed = {rel for _, _, rel in release_sha256(text)}
        for comp in archive.components:
            for arch in archive.architectures:
                for name in ("Packages", "Packages.gz", "Packages.xz"):
                    assert f"{comp}/binary-{arch}/{name}" in listed
        for digest, size, rel in release_sha256(text):
            path = archive.dist(suite) / rel
            assert (sha256(path), path.stat().st_size) == (digest, size), rel
            assert (path.parent / "by-hash" / "SHA256" / digest).read_bytes() == path.read_bytes()


def test_indexes_are_per_suite_and_component_and_match_the_pool(archive: Archive) -> None:
    for suite in archive.suites:
        for comp in archive.components:
            for arch in archive.architectures:
                d = archive.index_dir(suite, comp, arch)
                plain = (d / "Packages").read_bytes()
                assert gzip.decompress((d / "Packages.gz").read_bytes()) == plain
                assert lzma.decompress((d / "Packages.xz").read_bytes()) == plain
                names = sorted(re.findall(r"^Filename: (\S+)$", plain.decode(), re.MULTILINE))
                assert names == sorted(p.filename for p in archive.index(suite, comp, arch))
    for p in archive.packages:
        path = archive.root / p.filename
        assert (sha256(path), path.stat().st_size) == (p.sha256, p.size)
        assert path.name == f"{p.name}_{p.version.split(':')[-1]}_{p.arch}.deb"

    # pool/<comp>/<prefix>/<source>/, epoch not in the file name, "all" in every arch's index
    assert archive.get("libgreet1", "noble", "arm64").filename == "pool/main/g/greet/libgreet1_1.2-1_arm64.deb"
    libc = archive.get("libc-dummy", "noble", "amd64")
    assert libc.filename == "pool/main/libc/libc-dummy/libc-dummy_2.39-0ubuntu8_amd64.deb"
    assert libc.version == "1:2.39-0ubuntu8"
    greet_data = archive.get("greet-data", "noble", "all")
    for arch in ARCHES:
        assert greet_data in archive.index("noble", "main", arch)
    cowsay = archive.get("cowsay-lite", "noble", "amd64")
    assert cowsay.component == "universe"
    assert "Section: universe/games" in (archive.index_dir("noble", "universe", "arm64") / "Packages").read_text()
    assert archive.index("noble-updates", "universe", "amd64") == []  # an empty index, as real pockets have

    # the newer versions are only in noble-updates
    assert [p.version for p in archive.find("hello", "noble", "amd64")] == ["2.10-3ubuntu1"]
    assert [p.version for p in archive.find("hello", "noble-updates", "amd64")] == ["2.10-3ubuntu2"]
    assert [p.version for p in archive.find("libgreet1", "noble-updates", "arm64")] == ["1.2-1ubuntu0.1"]
    noble = (archive.index_dir("noble", "main", "amd64") / "Packages").read_text()
    assert "2.10-3ubuntu2" not in noble and "Phased-Update-Percentage" not in noble

    # Phased-Update-Percentage is in the index stanza, not in the deb
    updates = (archive.index_dir("noble-updates", "main", "amd64") / "Packages").read_text()
    hello_stanza = next(s for s in updates.split("\n\n") if s.startswith("Package: hello\n"))
    assert "\nPhased-Update-Percentage: 50" in hello_stanza
    deb = archive.root / archive.get("hello", "noble-updates", "amd64").filename
    control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "Package: hello\n" in control and "Phased" not in control
    files = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "./usr/share/doc/hello/README" in files and "root/root" in files


def test_gpgv_verifies_inrelease_and_release_gpg_then_fails_after_tampering(
    gpg: GpgHome, fpr: str, tmp_path: Path
) -> None:
    archive = build_archive(tmp_path / "ubuntu", gpg, fpr)
    dist = archive.dist("noble")
    ok = gpgv(archive.keyring, "--output", "-", dist / "InRelease")
    assert ok.returncode == 0, ok.stderr.decode()
    assert ok.stdout == (dist / "Release").read_bytes()
    validsig = re.search(r"VALIDSIG .* ([0-9A-F]{40})$", ok.stderr.decode(), re.MULTILINE)
    assert validsig is not None and validsig.group(1) == fpr
    detached = gpgv(archive.keyring, dist / "Release.gpg", dist / "Release")
    assert detached.returncode == 0, detached.stderr.decode()

    archive.tamper_inrelease("noble")
    bad = gpgv(archive.keyring, "--output", "-", dist / "InRelease")
    assert bad.returncode != 0
    assert "BADSIG" in bad.stderr.decode()
    assert gpgv(archive.keyring, "--output", "-", archive.dist("noble-updates") / "InRelease").returncode == 0


# --- a real apt-get -----------------------------------------------------------------------


def test_apt_get_update_accepts_both_pockets_and_components(
    archive: Archive, server: FakeServer, tmp_path: Path
) -> None:
    client = IsolatedApt(tmp_path / "apt", [archive.apt_source(server.base_url)], ARCHES)
    before = len(server.requests)
    client.update()
    requests = server.requests[before:]
    assert all(r.status == 200 for r in requests), [(r.path, r.status) for r in requests]
    paths = [r.path for r in requests]
    for suite in archive.suites:
        assert f"dists/{suite}/InRelease" in paths
        for comp in archive.components:
            for arch in archive.architectures:
                prefix = f"dists/{suite}/{comp}/binary-{arch}/by-hash/SHA256/"
                fetched = [p for p in paths if p.startswith(prefix)]
                # apt does not fetch an index that Release says is empty
                assert len(fetched) == (1 if archive.index(suite, comp, arch) else 0), (suite, comp, arch)


def test_apt_get_resolves_the_closure_from_both_pockets(apt: IsolatedApt) -> None:
    installs = {i.name: i for i in apt.simulate(["hello", "cowsay-lite", "virtual-user"])}
    assert {name: i.version for name, i in installs.items()} == {
        "hello": "2.10-3ubuntu2",
        "libgreet1": "1.2-1ubuntu0.1",
        "libc-dummy": "1:2.39-0ubuntu8",
        "greet-data": "1.2-1",
        "cowsay-lite": "3.03+dfsg2-8",
        "virtual-user": "1.0-1",
        "tiny-mta": "0.9-1",
    }
    assert installs["hello"].origins.endswith("/noble-updates")
    assert installs["greet-data"].arch == "all"
    assert apt.simulate_install(["hello:arm64"]) == {
        "hello:arm64": "2.10-3ubuntu2",
        "libgreet1:arm64": "1.2-1ubuntu0.1",
        "libc-dummy:arm64": "1:2.39-0ubuntu8",
        "greet-data": "1.2-1",
    }


def test_apt_get_downloads_the_listed_debs(apt: IsolatedApt, archive: Archive) -> None:
    debs = apt.download(["hello"])
    expected = {
        archive.get("hello", "noble-updates", "amd64").sha256,
        archive.get("libgreet1", "noble-updates", "amd64").sha256,
        archive.get("libc-dummy", "noble", "amd64").sha256,
        archive.get("greet-data", "noble", "amd64").sha256,
    }
    assert {sha256(p) for p in debs} == expected
    assert "libc-dummy_1%3a2.39-0ubuntu8_amd64.deb" in {p.name for p in debs}  # apt's name keeps the epoch


def test_apt_get_update_fails_with_another_key(
    archive: Archive, server: FakeServer, other: tuple[GpgHome, str, Path], tmp_path: Path
) -> None:
    url, suites, comps, _ = archive.apt_source(server.base_url)
    client = IsolatedApt(tmp_path / "apt", [(url, suites, comps, other[2])], ARCHES)
    result = client.update(check=False)
    assert result.returncode == 100, result.stdout + result.stderr
    assert f"NO_PUBKEY {archive.fingerprint[-16:]}" in result.stderr, result.stderr
    assert client.run("install", "-s", "-y", "hello", check=False).returncode == 100  # nothing usable


# --- the negative-test helpers ---------------------------------------------------------


def test_resign_inrelease_gives_a_valid_signature_apt_rejects(
    fresh: tuple[Archive, FakeServer], other: tuple[GpgHome, str, Path], tmp_path: Path
) -> None:
    archive, srv = fresh
    other_home, other_fpr, other_keyring = other
    archive.resign_inrelease("noble-updates", other_home, other_fpr)
    dist = archive.dist("noble-updates")
    assert gpgv(other_keyring, "--output", "-", dist / "InRelease").returncode == 0
    assert gpgv(other_keyring, dist / "Release.gpg", dist / "Release").returncode == 0
    assert gpgv(archive.keyring, "--output", "-", dist / "InRelease").returncode != 0
    client = IsolatedApt(tmp_path / "apt", [archive.apt_source(srv.base_url)], ARCHES)
    result = client.update(check=False)
    assert result.returncode == 100
    # no fallback to Release + Release.gpg either way (detached=False gives the same)
    assert f"NO_PUBKEY {other_fpr[-16:]}" in result.stderr, result.stderr


def test_tamper_inrelease_makes_apt_fail(fresh: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = fresh
    archive.tamper_inrelease("noble")
    client = IsolatedApt(tmp_path / "apt", [archive.apt_source(srv.base_url)], ARCHES)
    result = client.update(check=False)
    assert result.returncode == 100
    assert "BADSIG" in result.stderr, result.stderr


def test_corrupt_index_makes_apt_update_fail(fresh: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = fresh
    changed = archive.corrupt_index("noble", "main", "arm64")
    assert [p.parent.name for p in changed] == ["binary-arm64", "SHA256"]
    client = IsolatedApt(tmp_path / "apt", [archive.apt_source(srv.base_url)], ARCHES)
    result = client.update(check=False)
    assert result.returncode == 100
    assert "Hash Sum mismatch" in result.stderr, result.stderr


def test_tamper_deb_makes_apt_download_fail(fresh: tuple[Archive, FakeServer], tmp_path: Path) -> None:
    archive, srv = fresh
    client = IsolatedApt(tmp_path / "apt", [archive.apt_source(srv.base_url)], ARCHES)
    client.update()
    path = archive.tamper_deb("libgreet1", "noble-updates", "amd64")
    assert sha256(path) != archive.get("libgreet1", "noble-updates", "amd64").sha256
    with pytest.raises(AptError) as err:
        client.download(["hello"])
    assert err.value.returncode == 100
    assert "Hash Sum mismatch" in err.value.stderr


def test_add_package_and_refresh_publish_a_second_export(
    fresh: tuple[Archive, FakeServer], fpr: str, tmp_path: Path
) -> None:
    archive, srv = fresh
    client = IsolatedApt(tmp_path / "apt", [archive.apt_source(srv.base_url)], ARCHES)
    client.update()
    old_inrelease = (archive.dist("noble-updates") / "InRelease").read_bytes()
    new = archive.add_package(
        PackageSpec("hello", "2.10-3ubuntu3", "noble-updates", depends="libgreet1 (>= 1.2), greet-data"),
        PackageSpec("cowsay-lite", "3.03+dfsg2-8ubuntu0.1", "noble-updates", "universe", architecture="all"),
    )
    assert [p.name for p in new] == [
        "hello_2.10-3ubuntu3_amd64.deb",
        "hello_2.10-3ubuntu3_arm64.deb",
        "cowsay-lite_3.03+dfsg2-8ubuntu0.1_all.deb",
    ]
    assert not archive.find("hello", "noble-updates", "amd64")[0].version.endswith("ubuntu3")  # until refresh
    archive.refresh()
    assert (archive.dist("noble-updates") / "InRelease").read_bytes() != old_inrelease
    assert [p.version for p in archive.find("hello", "noble-updates", "amd64")] == ["2.10-3ubuntu3"]
    assert (archive.root / "pool/main/h/hello/hello_2.10-3ubuntu2_amd64.deb").exists()  # superseded, kept
    dist = archive.dist("noble-updates")
    assert gpgv(archive.keyring, "--output", "-", dist / "InRelease").returncode == 0

    client.update()
    got = client.simulate_install(["hello", "cowsay-lite"])
    assert got["hello"] == "2.10-3ubuntu3"
    assert got["cowsay-lite"] == "3.03+dfsg2-8ubuntu0.1"
    assert got["libgreet1"] == "1.2-1ubuntu0.1"


# --- leaks ------------------------------------------------------------------------------------


def test_gpg_home_kills_its_agent_and_removes_itself() -> None:
    with GpgHome() as home:
        fingerprint = home.generate("Leak Check <leak@example.invalid>")
        home.clearsign(Path("/etc/hostname"), home.path / "x.asc", fingerprint)
        path = home.path
        assert daemon_pids(path)  # the agent is running now
    assert not path.exists()
    assert daemon_pids(path) == []


def test_fast_debs_are_real_debs_that_apt_installs(gpg: GpgHome, fpr: str, tmp_path: Path) -> None:
    specs = (
        PackageSpec("fast-a", "1:1.0-1", "noble", depends="fast-b"),
        PackageSpec("fast-b", "2.0", "noble", architecture="all", source="fastsrc"),
    )
    spec = ArchiveSpec(
        suites=("noble",), components=("main",), architectures=("amd64",), packages=specs, fast_debs=True
    )
    archive = build_archive(tmp_path / "fast", gpg, fpr, spec)
    deb = archive.root / archive.get("fast-a", "noble", "amd64").filename
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture", "Depends"], capture_output=True, text=True
    )
    assert fields.returncode == 0, fields.stderr
    assert fields.stdout == "Package: fast-a\nVersion: 1:1.0-1\nArchitecture: amd64\nDepends: fast-b\n"
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True).stdout
    assert "./usr/share/doc/fast-a/README" in listing
    with serve_archive(archive) as srv:
        client = IsolatedApt(tmp_path / "apt", [archive.apt_source(srv.base_url)])
        client.update()
        got = client.download(["fast-a"])
    assert sorted(sha256(p) for p in got) == sorted(p.sha256 for p in archive.packages)
