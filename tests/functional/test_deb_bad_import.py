"""Bad deb content at import: refused, named, and the reprepro repository left byte-identical.

Two layers check a bundle. The bundle layer (manifest signature, chunk and file digests)
catches damage on the media; those tests only check that the message names the package or
index. Behind it, reprepro re-checks upstream's chain inside the enclave: the InRelease
signature against the pinned upstream key, the Packages indexes against the signed Release,
each .deb against its index. To reach that second layer, these tests tamper with a file IN
the bundle and then make the bundle layer consistent again: a new chunk for the new bytes,
the manifest's file record updated, the manifest re-signed with the trusted exporter key
(what a stolen exporter key, or a compromised connected host, could do).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.fakes.apt_archive import Archive
from tests.fakes.gpg import GpgHome
from tests.fakes.http_server import FakeServer
from tests.functional.deb_support import archive_section, upstream_archive
from tests.helpers import Workspace, resign, snapshot, volumes

Manifest = dict[str, Any]

COWSAY_DEB = "ubuntu/pool/universe/c/cowsay-lite/cowsay-lite_3.03+dfsg2-8_all.deb"
NOBLE_MAIN_AMD64 = "ubuntu/dists/noble/main/binary-amd64/Packages.xz"
UPDATES_INRELEASE = "ubuntu/dists/noble-updates/InRelease"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Archive, FakeServer]]:
    with upstream_archive(tmp_path / "archive") as pair:
        yield pair


@pytest.fixture
def enclave_with_hello(upstream: tuple[Archive, FakeServer], tmp_path: Path) -> tuple[Workspace, Path]:
    """An enclave that imported hello (bundle #1); full bundle #2 (hello + cowsay-lite) exported, not imported."""
    archive, srv = upstream
    ws = Workspace(tmp_path / "ws")
    ws.export(ws.write_spec(archive_section(archive, srv, ["hello"])), tmp_path / "b1")
    ws.import_(tmp_path / "b1")
    # Full, so that every index file is on the media to be tampered with (a delta reuses the enclave's copies).
    ws.export(ws.write_spec(archive_section(archive, srv, ["hello", "cowsay-lite"])), tmp_path / "b2", "--full")
    return ws, volumes(tmp_path / "b2")[0]


# --- making a tampered bundle consistent again ----------------------------------------------


def _file_record(m: Manifest, path: str) -> dict[str, Any]:
    return next(f for e in m["entries"] for f in e["files"] if f["path"] == path)


def _drop_unused_chunks(m: Manifest) -> None:
    used = {c for e in m["entries"] for f in e["files"] for c in f.get("chunks", [])}
    m["chunks"] = [c for c in m["chunks"] if c["id"] in used]


def read_carried(vol: Path, path: str) -> bytes:
    m = json.loads((vol / "manifest.json").read_bytes())
    rec = _file_record(m, path)
    d = zstandard.ZstdDecompressor()
    return b"".join(
        d.decompressobj().decompress((vol / "chunks" / cid[:2] / cid).read_bytes()) for cid in rec["chunks"]
    )


def replace_carried(vol: Path, key: Path, path: str, data: bytes) -> None:
    """Carry ``data`` as ``path``: a new chunk, the file record updated, the manifest re-signed."""
    stored = zstandard.ZstdCompressor(level=3, write_content_size=True, write_checksum=True).compress(data)
    cid = hashlib.sha256(stored).hexdigest()
    chunk = vol / "chunks" / cid[:2] / cid
    chunk.parent.mkdir(parents=True, exist_ok=True)
    chunk.write_bytes(stored)

    def edit(m: Manifest) -> None:
        for e in m["entries"]:
            for f in e["files"]:
                if f["path"] == path:
                    f.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data), chunks=[cid])
        m["chunks"].append({"id": cid, "size": len(stored), "raw_size": len(data), "volume": 1})
        _drop_unused_chunks(m)

    resign([vol], key, edit)


def edit_manifest(vol: Path, key: Path, edit: Callable[[Manifest], None]) -> None:
    def full(m: Manifest) -> None:
        edit(m)
        _drop_unused_chunks(m)

    resign([vol], key, full)


def flip(data: bytes, at: int | None = None) -> bytes:
    b = bytearray(data)
    b[len(b) // 2 if at is None else at] ^= 0x01
    return bytes(b)


def refused(ws: Workspace, vol: Path, code: int, *needles: str) -> str:
    """Import ``vol``: it must exit ``code``, name every needle, and leave <enclave>/deb byte-identical."""
    before = snapshot(ws.enclave / "deb")
    assert before, "the enclave holds a repository to protect"
    r = ws.import_(vol.parent, check=code)
    for needle in needles:
        assert needle in r.stderr, f"{needle!r} not in:\n{r.stderr}"
    assert snapshot(ws.enclave / "deb") == before
    return r.stderr


# --- refused by reprepro inside the enclave -------------------------------------------------


def test_tampered_deb_is_refused_by_reprepro(enclave_with_hello: tuple[Workspace, Path]) -> None:
    ws, vol = enclave_with_hello
    replace_carried(vol, ws.key, COWSAY_DEB, flip(read_carried(vol, COWSAY_DEB)))
    ws.verify(vol.parent)  # the bundle layer is satisfied: only reprepro can tell
    refused(ws, vol, 42, "reprepro update failed", f"ubuntu/noble/cowsay-lite 3.03+dfsg2-8 (all) [{COWSAY_DEB}]")


def test_tampered_packages_index_is_refused_by_reprepro(enclave_with_hello: tuple[Workspace, Path]) -> None:
    ws, vol = enclave_with_hello
    text = lzma.decompress(read_carried(vol, NOBLE_MAIN_AMD64)).decode()
    forged = re.sub(r"^(Package: tiny-mta\n(?:.+\n)*?)Version: 0\.9-1$", r"\1Version: 0.9-2", text, flags=re.M)
    assert forged != text
    replace_carried(vol, ws.key, NOBLE_MAIN_AMD64, lzma.compress(forged.encode()))
    ws.verify(vol.parent)
    refused(ws, vol, 42, "reprepro update failed", f"ubuntu/noble [{NOBLE_MAIN_AMD64}]")


def test_tampered_inrelease_is_refused_by_reprepro(enclave_with_hello: tuple[Workspace, Path]) -> None:
    ws, vol = enclave_with_hello
    text = read_carried(vol, UPDATES_INRELEASE).decode()
    forged = re.sub(r"^(Date: .*?)(\d)(?=\D*$)", lambda m: m[1] + str((int(m[2]) + 1) % 10), text, count=1, flags=re.M)
    assert forged != text
    replace_carried(vol, ws.key, UPDATES_INRELEASE, forged.encode())
    ws.verify(vol.parent)
    stderr = refused(ws, vol, 42, "reprepro update failed", f"on ubuntu/noble-updates [{UPDATES_INRELEASE}]")
    assert "bad signature" in stderr and "not validly signed by the pinned upstream key" in stderr


def test_inrelease_signed_by_an_unpinned_key_is_refused_by_reprepro(
    enclave_with_hello: tuple[Workspace, Path], upstream: tuple[Archive, FakeServer]
) -> None:
    ws, vol = enclave_with_hello
    archive, _srv = upstream
    with GpgHome() as other:
        fpr = other.generate("Mallory <mallory@example.invalid>")
        other.clearsign(archive.dist("noble-updates") / "Release", archive.root / "forged-InRelease", fpr)
        # The keyring the bundle carries gains Mallory's key too: only the pinned fingerprint stops it.
        other.export_binary(fpr, archive.root / "mallory.gpg")
    replace_carried(vol, ws.key, UPDATES_INRELEASE, (archive.root / "forged-InRelease").read_bytes())
    keyring = read_carried(vol, "ubuntu/keyring.gpg") + (archive.root / "mallory.gpg").read_bytes()
    replace_carried(vol, ws.key, "ubuntu/keyring.gpg", keyring)
    ws.verify(vol.parent)
    stderr = refused(ws, vol, 42, "reprepro update failed", f"on ubuntu/noble-updates [{UPDATES_INRELEASE}]")
    assert f"'{fpr}' (signed" in stderr and "valid" in stderr  # reprepro saw Mallory's valid signature...
    assert "Not enough signatures found" in stderr  # ...and still refused: it is not the pinned key


def test_a_version_the_signed_index_does_not_list_is_caught_after_the_update(
    enclave_with_hello: tuple[Workspace, Path],
) -> None:
    """reprepro installs nothing for a selected version its verified index lacks, and exits 0:
    only the listing check after the update sees it; what the update did change is undone."""
    ws, vol = enclave_with_hello

    def bump(m: Manifest) -> None:
        for e in m["entries"]:
            if e["name"] == "ubuntu/noble-updates/hello":
                e["version"] = "2.10-3ubuntu9"

    edit_manifest(vol, ws.key, bump)
    stderr = refused(
        ws, vol, 42, "ubuntu/noble-updates/hello 2.10-3ubuntu9 (amd64) in noble-updates/main: it is not listed"
    )
    assert "left as it was" in stderr


# --- refused before reprepro runs -------------------------------------------------------


def test_missing_index_in_a_resigned_manifest_is_refused_before_anything(
    enclave_with_hello: tuple[Workspace, Path],
) -> None:
    ws, vol = enclave_with_hello

    def drop(m: Manifest) -> None:
        for e in m["entries"]:
            e["files"] = [f for f in e["files"] if f["path"] != NOBLE_MAIN_AMD64]

    edit_manifest(vol, ws.key, drop)
    refused(ws, vol, 41, "deb index ubuntu/noble", "ubuntu/dists/noble/main/binary-amd64/Packages(.xz/.gz)")


def test_missing_pool_file_in_a_resigned_manifest_is_refused_before_anything(
    enclave_with_hello: tuple[Workspace, Path],
) -> None:
    ws, vol = enclave_with_hello

    def drop(m: Manifest) -> None:
        for e in m["entries"]:
            if e["name"] == "ubuntu/noble/cowsay-lite":
                e["files"] = []

    edit_manifest(vol, ws.key, drop)
    refused(ws, vol, 41, "deb entry ubuntu/noble/cowsay-lite 3.03+dfsg2-8 (all) must carry exactly one .deb file")


# --- refused by the bundle layer, naming the package or index --------------------------------


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        (COWSAY_DEB, "deb ubuntu/noble/cowsay-lite 3.03+dfsg2-8"),
        (NOBLE_MAIN_AMD64, f"deb ubuntu/noble {{}} ({NOBLE_MAIN_AMD64})"),
    ],
)
def test_missing_chunk_names_the_package_or_index(
    enclave_with_hello: tuple[Workspace, Path], path: str, needle: str
) -> None:
    ws, vol = enclave_with_hello
    m = json.loads((vol / "manifest.json").read_bytes())
    rec = _file_record(m, path)
    index_version = next(e["version"] for e in m["entries"] if e["name"] == "ubuntu/noble")
    for cid in rec["chunks"]:
        (vol / "chunks" / cid[:2] / cid).unlink()
    refused(ws, vol, 23, "is missing", needle.format(index_version))
