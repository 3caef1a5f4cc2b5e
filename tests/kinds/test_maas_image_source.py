"""The ``maas_image`` source: a real signed stream on 127.0.0.1 -> ``declare()`` with a real
Fetcher and gpgv. Entries follow the contract in ``bundler/kinds/maas_image/__init__.py``;
every bad upstream is refused with a message naming the file."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import SpecError, UpstreamContentError, UpstreamDigestError, UpstreamSignatureError
from bundler.fetch import Fetcher, Want
from bundler.kinds.base import SourceContext
from bundler.kinds.maas_image.source import check_section, declare
from bundler.model import Declared
from tests.fakes.gpg import GpgHome
from tests.fakes.http_server import FakeServer
from tests.fakes.simplestreams import BOOT_CID, IMAGES_CID, Stream, signed_stream


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Stream, FakeServer]]:
    with signed_stream(tmp_path / "up") as up:
        yield up


def run(stream: Stream, srv: FakeServer, tmp_path: Path, **section: Any) -> list[Declared]:
    raw = {"url": srv.url(stream.prefix), "keyring": str(stream.keyring), **section}
    checked = check_section(raw, "spec [[maas_image]] #1")
    with Fetcher(tmp_path / "cache", retries=0) as f:
        return list(declare(checked, SourceContext(fetcher=f, spec_dir=tmp_path, work_dir=tmp_path / "work")))


def images(declared: list[Declared]) -> dict[str, Declared]:
    return {d.name: d for d in declared if d.metadata["role"] == "image"}


def test_section_defaults_and_refusals() -> None:
    s = check_section({}, "w")
    assert s["url"] == "http://images.maas.io/ephemeral-v3/stable" and s["path"] == "ephemeral-v3/stable"
    assert s["keyring"] == "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg"
    assert s["keep"] == 1 and s["bootloaders"] is True and s["filters"] == []
    assert check_section({"url": "http://x/a/streams/v1/index.sjson"}, "w")["url"] == "http://x/a"
    for bad in ({"keep": 0}, {"filters": ["release"]}, {"bogus": 1}, {"url": "ftp://x"}, {"url": "http://h"}):
        with pytest.raises(SpecError):
            check_section(bad, "w")


def test_declares_the_signed_stream_and_the_selected_versions(
    upstream: tuple[Stream, FakeServer], tmp_path: Path
) -> None:
    stream, srv = upstream
    got = run(stream, srv, tmp_path, filters=["release=jammy", "arch=amd64"])
    stream_entry = got[0]
    assert stream_entry.metadata["role"] == "stream" and stream_entry.arch == "index"
    assert stream_entry.metadata["fingerprints"] == [stream.fingerprint]
    paths = {a.path: a for a in stream_entry.artifacts}
    base = "ephemeral-v3/stable"
    assert set(paths) == {
        f"{base}/streams/v1/index.sjson",
        f"{base}/streams/v1/{IMAGES_CID}.sjson",
        f"{base}/streams/v1/{BOOT_CID}.sjson",
        f"{base}/upstream-keyring.gpg",
    }
    # verbatim: the carried bytes are exactly the upstream's
    local = paths[f"{base}/streams/v1/{IMAGES_CID}.sjson"].local
    assert local is not None and local.read_bytes() == stream.products_sjson().read_bytes()
    imgs = images(got)
    # keep = 1: the newest version of the 2 jammy/amd64 kernel products, plus both bootloaders
    assert sorted(imgs) == [
        f"{base}/com.ubuntu.maas.stable:1:grub-efi-signed:uefi:amd64/20250620.0",
        f"{base}/com.ubuntu.maas.stable:1:pxelinux:pxe:i386/20250620.0",
        f"{base}/com.ubuntu.maas.stable:v3:boot:22.04:amd64:ga-22.04/20250718",
        f"{base}/com.ubuntu.maas.stable:v3:boot:22.04:amd64:hwe-22.04/20250718",
    ]
    ga = imgs[f"{base}/com.ubuntu.maas.stable:v3:boot:22.04:amd64:ga-22.04/20250718"]
    assert ga.version == "20250718" and ga.arch == "amd64"
    assert ga.metadata["items"] == ["boot-initrd", "boot-kernel", "manifest", "squashfs"]
    sq = next(a for a in ga.artifacts if a.path.endswith("/squashfs"))
    assert sq.sha256 == stream.sha256("jammy/amd64/20250718/squashfs") and sq.size == 2000
    assert sq.url == srv.url(f"{base}/jammy/amd64/20250718/squashfs")
    # the squashfs shared by both kernel products is one artifact
    hwe = imgs[f"{base}/com.ubuntu.maas.stable:v3:boot:22.04:amd64:hwe-22.04/20250718"]
    assert next(a for a in hwe.artifacts if a.path.endswith("/squashfs")) is sq


def test_keep_two_and_no_bootloaders(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    got = images(run(stream, srv, tmp_path, filters=["release~(jammy|noble)", "arch=arm64"], keep=2, bootloaders=False))
    assert len(got) == 2 * 2 * 2  # 2 releases x 2 kernels x 2 versions
    assert {d.version for d in got.values()} == {"20250701", "20250718"}
    assert all(d.arch == "arm64" for d in got.values())


def test_item_filters_cut_items(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    got = images(run(stream, srv, tmp_path, filters=["release=noble", "ftype!=manifest"], bootloaders=False))
    assert got and all(d.metadata["items"] == ["boot-initrd", "boot-kernel", "squashfs"] for d in got.values())


def test_filter_matching_nothing_is_refused(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    with pytest.raises(UpstreamContentError, match="match no image") as info:
        run(stream, srv, tmp_path, filters=["release=focal"])
    assert info.value.remedy is not None and "release: jammy, noble" in info.value.remedy


def test_bad_signature_is_refused_naming_the_file(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    p = stream.products_sjson()
    p.write_bytes(p.read_bytes().replace(b'"label": "stable"', b'"label": "stab1e"', 1))
    with pytest.raises(UpstreamSignatureError, match=f"{IMAGES_CID}.sjson has a BAD signature"):
        run(stream, srv, tmp_path)


def test_signature_by_another_key_is_refused(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    with GpgHome() as other:
        fpr = other.generate("Someone Else <x@example.invalid>")
        keyring = other.export_binary(fpr, tmp_path / "other.gpg")
        with pytest.raises(UpstreamSignatureError, match=r"index\.sjson has no valid signature") as info:
            run(stream, srv, tmp_path, keyring=str(keyring))
        assert info.value.remedy is not None and "ubuntu-cloudimage-keyring" in info.value.remedy


def test_pinned_fingerprint_mismatch_is_refused(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    with pytest.raises(UpstreamSignatureError, match="not one of the accepted"):
        run(stream, srv, tmp_path, fingerprints=["A" * 40])


def test_missing_signature_is_refused(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    (stream.base / "streams/v1/index.sjson").unlink()
    with pytest.raises(
        UpstreamSignatureError, match=r"index\.sjson does not exist: the stream offers only the unsigned"
    ):
        run(stream, srv, tmp_path)


def test_unsigned_text_around_the_signature_is_refused(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    p = stream.base / "streams/v1/index.sjson"
    p.write_bytes(p.read_bytes() + b'{"format": "index:1.0"}\n')
    with pytest.raises(UpstreamSignatureError, match=r"index\.sjson is not a well-formed clearsigned file"):
        run(stream, srv, tmp_path)


def test_products_file_the_index_names_but_the_source_lacks(
    upstream: tuple[Stream, FakeServer], tmp_path: Path
) -> None:
    stream, srv = upstream
    stream.products_sjson(BOOT_CID).unlink()
    with pytest.raises(UpstreamContentError, match=f"index names streams/v1/{BOOT_CID}.sjson, but the source lacks"):
        run(stream, srv, tmp_path)


def _fetch_all(declared: list[Declared], tmp_path: Path) -> Mapping[str, Path]:
    wants = [Want(a.url, a.sha256, a.size) for d in declared for a in d.artifacts if a.url]
    with Fetcher(tmp_path / "cache2", retries=0) as f:
        return f.fetch_many(wants)


def test_item_with_wrong_sha256_or_size_is_refused_naming_the_file(
    upstream: tuple[Stream, FakeServer], tmp_path: Path
) -> None:
    stream, srv = upstream
    declared = run(stream, srv, tmp_path, filters=["release=jammy", "arch=amd64"])
    rel = "jammy/amd64/20250718/ga-22.04/generic/boot-kernel"
    target = stream.base / rel
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(UpstreamDigestError, match=f"{rel} does not match its declared sha256"):
        _fetch_all(declared, tmp_path)
    target.write_bytes(bytes(data) + b"x")
    with pytest.raises(UpstreamDigestError, match=f"{rel} does not match its declared size"):
        _fetch_all(declared, tmp_path)


def test_declare_is_deterministic(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream

    def key(ds: list[Declared]) -> str:
        return json.dumps(
            [(d.name, d.version, d.arch, [(a.path, a.sha256, a.size) for a in d.artifacts], d.metadata) for d in ds]
        )

    assert key(run(stream, srv, tmp_path, keep=2)) == key(run(stream, srv, tmp_path, keep=2))
