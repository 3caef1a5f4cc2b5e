"""MAAS boot images end to end with the real CLI: a signed simplestreams source on 127.0.0.1 ->
export -> verify -> import into the enclave mirror -> a MAAS-like checking reader walks the
mirror over HTTP (gpgv on every .sjson with the published keyring, index -> products ->
items, sha256 and size of every item, the products a boot-source selection picks)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.http_server import FakeServer, serve_directory
from tests.fakes.maas_reader import MaasReader, MaasReadError, Selection
from tests.fakes.simplestreams import BOOT_CID, IMAGES_CID, Stream, signed_stream
from tests.helpers import Workspace, snapshot, volumes

PREFIX = "ephemeral-v3/stable"
JAMMY_GA = "com.ubuntu.maas.stable:v3:boot:22.04:amd64:ga-22.04"
JAMMY_HWE = "com.ubuntu.maas.stable:v3:boot:22.04:amd64:hwe-22.04"
NOBLE_AMD = "com.ubuntu.maas.stable:v3:boot:24.04:amd64:ga-24.04"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Stream, FakeServer]]:
    with signed_stream(tmp_path / "up") as up:
        yield up


def spec(ws: Workspace, stream: Stream, srv: FakeServer, filters: list[str], keep: int = 1) -> Path:
    return ws.write_spec(
        "[[maas_image]]\n"
        f'url = "{srv.url(stream.prefix)}"\n'
        f'keyring = "{stream.keyring}"\n'
        f"filters = {json.dumps(filters)}\n"
        f"keep = {keep}\n"
    )


def mirror(ws: Workspace) -> Path:
    return ws.enclave / "maas-images"


def on_disk(ws: Workspace, version: str) -> list[Path]:
    return sorted(p for p in (mirror(ws) / PREFIX).rglob("*") if p.is_file() and f"/{version}/" in p.as_posix())


def test_filtered_export_import_then_a_newer_version(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    ws = Workspace(tmp_path / "ws")
    s = spec(ws, stream, srv, ["release=jammy", "arch=amd64"])
    info = ws.export_json(s, tmp_path / "b1")
    assert info["entries"] == 1 + 2 + 2  # stream, 2 kernel products, 2 bootloaders
    # the squashfs shared by both kernel products was downloaded and carried once
    squash = f"{PREFIX}/jammy/amd64/20250718/squashfs"
    assert len(srv.requests_for(squash)) == 1
    manifest = json.loads((volumes(tmp_path / "b1")[0] / "manifest.json").read_text())
    recs = [f for e in manifest["entries"] for f in e["files"] if f["path"] == squash]
    assert len(recs) == 2 and recs[0]["chunks"] == recs[1]["chunks"]
    assert len(manifest["chunks"]) == len({f["sha256"] for e in manifest["entries"] for f in e["files"]})
    ws.verify(tmp_path / "b1")
    r = ws.import_(tmp_path / "b1", extra=("-o", "maas_mirror_url=http://mirror.site/maas-images"))
    keyring = mirror(ws) / PREFIX / "keyring.gpg"
    expected = f"boot-sources create url=http://mirror.site/maas-images/{PREFIX}/ keyring_filename={keyring}"
    assert f"maas $PROFILE {expected}" in r.stdout
    assert "boot-source-selections create $SOURCE_ID os=ubuntu release=jammy arches=amd64" in r.stdout
    assert f"+ {JAMMY_GA} 20250718 ({PREFIX})" in r.stdout

    enclave_key = ws.enclave / "signing" / "enclave-key.gpg"
    with serve_directory(mirror(ws)) as msrv:
        url = msrv.url(PREFIX) + "/"
        view = MaasReader(url, enclave_key).read()
        assert view.versions()[JAMMY_GA] == ["20250718"] and NOBLE_AMD not in view.versions()
        got = MaasReader(url, keyring).sync([Selection("ubuntu", "jammy", ["amd64"])])
        assert got[JAMMY_GA] == got[JAMMY_HWE] == "20250718"
        with pytest.raises(MaasReadError, match="gpgv refused"):
            MaasReader(url, stream.keyring).read(check_items=False)

    # upstream publishes a newer version (its kernels are byte-identical to the last ones)
    stream.add_version("20250801")
    info2 = ws.export_json(s, tmp_path / "b2")
    assert info2["base"]["sequence"] == 1
    kernel = f"{PREFIX}/jammy/amd64/20250801/ga-22.04/generic/boot-kernel"
    assert srv.requests_for(kernel) == []  # same sha256 as the kernel the enclave has: not carried
    r2 = ws.import_(tmp_path / "b2")
    assert f"+ {JAMMY_GA} 20250801" in r2.stdout and f"- {JAMMY_GA} 20250718" in r2.stdout
    with serve_directory(mirror(ws)) as msrv:
        url = msrv.url(PREFIX)
        view = MaasReader(url, enclave_key).read()
        assert view.versions()[JAMMY_GA] == ["20250801"]  # keep = 1: exactly one
        assert MaasReader(url, keyring).sync([Selection("ubuntu", "jammy")])[JAMMY_HWE] == "20250801"
    assert on_disk(ws, "20250718") == [] and len(on_disk(ws, "20250801")) == 2 + 2 * 2
    assert (mirror(ws) / kernel).read_bytes() == stream.files[kernel.removeprefix(PREFIX + "/")]


def test_the_whole_stream_is_verbatim_until_pruning_makes_it_regenerated(
    upstream: tuple[Stream, FakeServer], tmp_path: Path
) -> None:
    stream, srv = upstream
    ws = Workspace(tmp_path / "ws")
    s = spec(ws, stream, srv, [], keep=2)
    ws.export(s, tmp_path / "b1")
    # identical kernels of two versions (same sha256, two paths) were downloaded once
    k1, k2 = (f"{PREFIX}/noble/arm64/{v}/hwe-24.04/generic/boot-kernel" for v in ("20250701", "20250718"))
    assert stream.sha256(k1.removeprefix(PREFIX + "/")) == stream.sha256(k2.removeprefix(PREFIX + "/"))
    assert len(srv.requests_for(k1)) + len(srv.requests_for(k2)) == 1
    r = ws.import_(tmp_path / "b1")
    assert "upstream signatures kept verbatim" in r.stdout
    for rel in ("streams/v1/index.sjson", f"streams/v1/{IMAGES_CID}.sjson", f"streams/v1/{BOOT_CID}.sjson"):
        assert (mirror(ws) / PREFIX / rel).read_bytes() == (stream.base / rel).read_bytes()
    with serve_directory(mirror(ws)) as msrv:
        url = msrv.url(PREFIX)
        view = MaasReader(url, stream.keyring).read()  # the stock keyring is enough
        assert view.versions()[NOBLE_AMD] == ["20250701", "20250718"]
        assert MaasReader(url, stream.keyring).sync([Selection("ubuntu", "noble", ["amd64"])])[NOBLE_AMD] == "20250718"

    stream.add_version("20250801")
    ws.export(s, tmp_path / "b2")
    r2 = ws.import_(tmp_path / "b2")
    assert "regenerated and signed by the enclave key" in r2.stdout
    with serve_directory(mirror(ws)) as msrv:
        url = msrv.url(PREFIX)
        view = MaasReader(url, mirror(ws) / PREFIX / "keyring.gpg").read()
        assert all(v == ["20250718", "20250801"] for n, v in view.versions().items() if ":v3:" in n)
        with pytest.raises(MaasReadError, match="gpgv refused"):
            MaasReader(url, stream.keyring).read(check_items=False)
    assert on_disk(ws, "20250701") == []
    assert len(on_disk(ws, "20250718")) == len(on_disk(ws, "20250801")) == 4 * (2 + 2 * 2)


def test_a_tampered_image_on_the_media_leaves_the_mirror_unchanged(
    upstream: tuple[Stream, FakeServer], tmp_path: Path
) -> None:
    stream, srv = upstream
    ws = Workspace(tmp_path / "ws")
    s = spec(ws, stream, srv, ["release=noble", "arch=amd64"])
    ws.export(s, tmp_path / "b1")
    ws.import_(tmp_path / "b1")
    stream.add_version("20250801")
    ws.export(s, tmp_path / "b2")
    vol = volumes(tmp_path / "b2")[0]
    manifest = json.loads((vol / "manifest.json").read_text())
    f = next(f for e in manifest["entries"] for f in e["files"] if f["path"].endswith("20250801/squashfs"))
    chunk = vol / "chunks" / f["chunks"][0][:2] / f["chunks"][0]
    data = bytearray(chunk.read_bytes())
    data[-3] ^= 0xFF
    chunk.write_bytes(bytes(data))
    before = snapshot(mirror(ws))
    r = ws.import_(tmp_path / "b2", check=22)
    assert "maas_image ephemeral-v3/stable/" in r.stderr and "20250801/squashfs" in r.stderr
    assert snapshot(mirror(ws)) == before


def _tamper_products(stream: Stream) -> None:
    p = stream.products_sjson()
    p.write_bytes(p.read_bytes().replace(b'"label": "stable"', b'"label": "daily"', 1))


def _tamper_item(stream: Stream) -> None:
    p = stream.base / "noble/amd64/20250718/squashfs"
    p.write_bytes(p.read_bytes()[:-1] + b"!")


@pytest.mark.parametrize(
    ("damage", "filters", "code", "needle"),
    [
        (_tamper_products, ["release=noble"], 33, f"{IMAGES_CID}.sjson has a BAD signature"),
        (lambda s: (s.base / "streams/v1/index.sjson").unlink(), ["release=noble"], 33, "index.sjson does not exist"),
        (_tamper_item, ["release=noble", "arch=amd64"], 32, "noble/amd64/20250718/squashfs does not match"),
        (lambda s: s.products_sjson(BOOT_CID).unlink(), ["release=noble"], 34, f"{BOOT_CID}.sjson, but the source"),
        (lambda s: None, ["release~^(focal|bionic)$"], 34, "match no image"),
    ],
    ids=["bad-signature", "missing-signature", "item-digest", "missing-products-file", "filter-matches-nothing"],
)
def test_export_refuses_bad_upstream(
    upstream: tuple[Stream, FakeServer], tmp_path: Path, damage: object, filters: list[str], code: int, needle: str
) -> None:
    stream, srv = upstream
    assert callable(damage)
    damage(stream)
    ws = Workspace(tmp_path / "ws")
    r = ws.export(spec(ws, stream, srv, filters), tmp_path / "out", check=code)
    assert needle in r.stderr and "what to do:" in r.stderr
    assert not any((tmp_path / "out").glob("vol-*/manifest.json"))
