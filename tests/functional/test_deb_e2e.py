"""Debian packages end to end: a signed upstream archive on 127.0.0.1 -> export -> verify ->
import into reprepro -> a real apt-get that trusts only the enclave key fetches the packages."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.apt_archive import Archive, PackageSpec, build_archive, serve_archive
from tests.fakes.apt_client import AptError, IsolatedApt
from tests.fakes.gpg import GpgHome
from tests.fakes.http_server import FakeServer, serve_directory
from tests.helpers import Workspace, run_cli, snapshot, volumes

PACKAGES = ["hello", "cowsay-lite", "virtual-user"]
SUITES = ["noble", "noble-updates"]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Archive, FakeServer, GpgHome]]:
    with GpgHome() as g:
        fpr = g.generate("Test Archive Signing Key <archive@example.invalid>")
        archive = build_archive(tmp_path / "archive", g, fpr)
        with serve_archive(archive) as srv:
            yield archive, srv, g


def deb_spec(ws: Workspace, archive: Archive, srv: FakeServer, packages: list[str] = PACKAGES) -> Path:
    return ws.write_spec(
        "[[deb]]\n"
        'name = "ubuntu"\n'
        f'url = "{srv.base_url}"\n'
        f"suites = {json.dumps(SUITES)}\n"
        'components = ["main", "universe"]\n'
        'architectures = ["amd64", "arm64"]\n'
        f'keyring = "{archive.keyring}"\n'
        f'fingerprints = ["{archive.fingerprint}"]\n'
        f"packages = {json.dumps(packages)}\n"
    )


def enclave_client(ws: Workspace, repo_srv: FakeServer, tmp_path: Path, name: str = "client") -> IsolatedApt:
    """A second isolated apt that trusts ONLY the enclave key, with every pocket MAAS writes."""
    return IsolatedApt(
        tmp_path / name,
        [
            (
                repo_srv.base_url,
                ["noble", "noble-updates", "noble-security", "noble-backports"],
                ["main", "restricted", "universe", "multiverse"],
                ws.enclave / "signing" / "enclave-key.gpg",
            )
        ],
        architectures=["amd64", "arm64"],
    )


def test_deb_round_trip_then_upgrade(upstream: tuple[Archive, FakeServer, GpgHome], tmp_path: Path) -> None:
    archive, srv, _g = upstream
    ws = Workspace(tmp_path / "ws")
    spec = deb_spec(ws, archive, srv)
    info = ws.export_json(spec, tmp_path / "b1")
    assert info["entries"] >= len(SUITES) + 6
    ws.verify(tmp_path / "b1")
    r = ws.import_(tmp_path / "b1")
    assert "deb:" in r.stdout and "hello 2.10-3ubuntu2" in r.stdout

    with serve_directory(ws.enclave / "deb" / "repo") as repo_srv:
        client = enclave_client(ws, repo_srv, tmp_path)
        client.update()  # --error-on=any: every pocket and component exists and is signed by the enclave key
        got = client.simulate_install(PACKAGES)
        assert got["hello"] == "2.10-3ubuntu2"  # the noble-updates version
        assert {"greet-data", "libc-dummy", "tiny-mta", "libgreet1"} <= set(got)
        debs = client.download(PACKAGES)
        upstream_digests = {p.sha256 for p in archive.packages}
        assert debs and all(hashlib.sha256(d.read_bytes()).hexdigest() in upstream_digests for d in debs)
        arm = IsolatedApt(
            tmp_path / "arm",
            [(repo_srv.base_url, SUITES, ["main", "universe"], ws.enclave / "signing" / "enclave-key.gpg")],
            architectures=["arm64"],
        )
        arm.update()
        assert arm.simulate_install(["hello"])["hello"] == "2.10-3ubuntu2"

    # Phased-Update-Percentage is stripped in the enclave.
    packages_files = list((ws.enclave / "deb/repo/dists/noble-updates").rglob("Packages"))
    assert packages_files and not any("Phased-Update-Percentage" in p.read_text() for p in packages_files)

    # A second bundle with a newer version upgrades it, as a delta.
    archive.add_package(
        PackageSpec(
            "hello", "2.10-3ubuntu3", "noble-updates", depends="libgreet1 (>= 1.0) | libgreet-compat, greet-data"
        )
    )
    archive.refresh()
    info2 = ws.export_json(spec, tmp_path / "b2")
    assert info2["base"]["sequence"] == 1 and info2["files_carried"] < info2["files"]
    ws.import_(tmp_path / "b2")
    with serve_directory(ws.enclave / "deb" / "repo") as repo_srv:
        client = enclave_client(ws, repo_srv, tmp_path, "client2")
        client.update()
        assert client.simulate_install(["hello"])["hello"] == "2.10-3ubuntu3"


def test_untrusting_client_is_refused(upstream: tuple[Archive, FakeServer, GpgHome], tmp_path: Path) -> None:
    archive, srv, _g = upstream
    ws = Workspace(tmp_path / "ws")
    ws.export(deb_spec(ws, archive, srv, ["hello"]), tmp_path / "b1")
    ws.import_(tmp_path / "b1")
    with serve_directory(ws.enclave / "deb" / "repo") as repo_srv:
        wrong = IsolatedApt(tmp_path / "wrong", [(repo_srv.base_url, SUITES, ["main"], archive.keyring)])
        with pytest.raises(AptError) as info:
            wrong.update()
        assert info.value.args and "exited 100" in str(info.value)


def test_enclave_init_exports_the_repository_key(tmp_path: Path) -> None:
    d = json.loads(run_cli("enclave", "init", "--enclave", tmp_path / "enc", "--json").stdout)
    fpr = d["enclave signing key"]
    assert len(fpr) == 40
    binary = Path(d["enclave public key (apt Signed-By, MAAS keyring_filename=)"])
    armored = Path(d["enclave public key (armored, MAAS key=)"])
    assert armored.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    listing = subprocess.run(["gpg", "--show-keys", "--with-colons", str(binary)], capture_output=True, text=True)
    assert fpr in listing.stdout
    again = json.loads(run_cli("enclave", "init", "--enclave", tmp_path / "enc", "--json").stdout)
    assert again["enclave signing key"] == fpr  # idempotent


def test_tampered_pool_file_on_the_media_names_the_package(
    upstream: tuple[Archive, FakeServer, GpgHome], tmp_path: Path
) -> None:
    archive, srv, _g = upstream
    ws = Workspace(tmp_path / "ws")
    ws.export(deb_spec(ws, archive, srv, ["hello"]), tmp_path / "b0")
    ws.import_(tmp_path / "b0")
    ws.export(deb_spec(ws, archive, srv, ["hello", "cowsay-lite"]), tmp_path / "b1")
    vol = volumes(tmp_path / "b1")[0]
    manifest = json.loads((vol / "manifest.json").read_text())
    cow = next(e for e in manifest["entries"] if e["name"].endswith("/cowsay-lite"))
    chunk = vol / "chunks" / cow["files"][0]["chunks"][0][:2] / cow["files"][0]["chunks"][0]
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0xFF
    chunk.write_bytes(bytes(data))
    before = snapshot(ws.enclave / "deb")
    r = ws.import_(tmp_path / "b1", check=22)
    assert "deb ubuntu/noble/cowsay-lite" in r.stderr
    assert snapshot(ws.enclave / "deb") == before


def test_every_maas_pocket_and_component_exists_signed_and_phasing_is_stripped(
    upstream: tuple[Archive, FakeServer, GpgHome], tmp_path: Path
) -> None:
    archive, srv, _g = upstream
    upstream_index = (archive.index_dir("noble-updates", "main", "amd64") / "Packages").read_text()
    assert "Phased-Update-Percentage: 50" in upstream_index  # upstream phases hello 2.10-3ubuntu2
    ws = Workspace(tmp_path / "ws")
    ws.export(deb_spec(ws, archive, srv, ["hello"]), tmp_path / "b1")  # carries noble and noble-updates only
    ws.import_(tmp_path / "b1")
    repo = ws.enclave / "deb" / "repo"
    key = ws.enclave / "signing" / "enclave-key.gpg"
    for pocket in ("noble", "noble-updates", "noble-security", "noble-backports"):
        dist = repo / "dists" / pocket
        check = subprocess.run(["gpgv", "--keyring", str(key), str(dist / "InRelease")], capture_output=True)
        assert check.returncode == 0, check.stderr
        release = (dist / "Release").read_text()
        assert "Origin: Ubuntu\n" in release and "Label: Ubuntu\n" in release and "Valid-Until" not in release
        for comp in ("main", "restricted", "universe", "multiverse"):
            for arch in ("amd64", "arm64"):
                assert (dist / comp / f"binary-{arch}" / "Packages.xz").is_file(), (pocket, comp, arch)
            assert (dist / comp / "source" / "Sources.gz").is_file()  # MAAS also writes deb-src lines
            assert f" {comp}/source/Sources.gz\n" in release
    enclave_index = (repo / "dists/noble-updates/main/binary-amd64/Packages").read_text()
    assert "Package: hello\n" in enclave_index and "Version: 2.10-3ubuntu2\n" in enclave_index
    assert "Phased-Update-Percentage" not in enclave_index
    assert (repo / "dists/noble-security/main/binary-amd64/Packages").read_text() == ""  # empty, but there


def test_release_signed_by_a_subkey_of_the_pinned_key(
    upstream: tuple[Archive, FakeServer, GpgHome], tmp_path: Path
) -> None:
    """Debian and Ubuntu sign with subkeys: the pin names the primary key, and both gpgv on the
    connected side and reprepro's VerifyRelease in the enclave must accept its subkeys."""
    archive, srv, g = upstream
    g.run("--passphrase", "", "--quick-add-key", archive.fingerprint, "ed25519", "sign", "never")
    listing = g.run("--with-colons", "--list-keys", archive.fingerprint).decode()
    fprs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
    subkey = fprs[-1]
    assert len(fprs) == 2 and subkey != archive.fingerprint
    g.export_binary(archive.fingerprint, archive.keyring)  # the keyring now holds the subkey too
    for suite in SUITES:
        archive.resign_inrelease(suite, g, subkey)
    ws = Workspace(tmp_path / "ws")
    ws.export(deb_spec(ws, archive, srv, ["hello"]), tmp_path / "b1")  # gpgv accepted the subkey
    ws.import_(tmp_path / "b1")  # and so did reprepro
    conf = (ws.enclave / "deb/repo/conf/updates").read_text()
    assert f"VerifyRelease: {archive.fingerprint[-16:]}+\n" in conf
    signed = subprocess.run(
        ["gpgv", "--status-fd", "1", "--keyring", str(archive.keyring), str(archive.dist("noble") / "InRelease")],
        capture_output=True,
        text=True,
    )
    assert f"VALIDSIG {subkey}" in signed.stdout  # really signed by the subkey


@pytest.mark.parametrize("damage", ["flip a byte", "append bytes"])
def test_export_refuses_a_deb_that_differs_from_its_index(
    upstream: tuple[Archive, FakeServer, GpgHome], tmp_path: Path, damage: str
) -> None:
    archive, srv, _g = upstream
    pkg = archive.get("libgreet1", "noble-updates", "amd64")
    pool_file = archive.root / pkg.filename
    if damage == "flip a byte":
        archive.tamper_deb("libgreet1", "noble-updates", "amd64")
        assert pool_file.stat().st_size == pkg.size  # same size, other sha256
    else:
        with open(pool_file, "ab") as fh:
            fh.write(b"trailing bytes")
    ws = Workspace(tmp_path / "ws")
    r = ws.export(deb_spec(ws, archive, srv, ["hello"]), tmp_path / "b1", check=32)
    assert "libgreet1_1.2-1ubuntu0.1_amd64.deb" in r.stderr
    assert not (tmp_path / "b1").exists() or not any((tmp_path / "b1").iterdir())  # no bundle written
