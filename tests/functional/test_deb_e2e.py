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
