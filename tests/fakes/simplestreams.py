"""A small but structurally real simplestreams source (MAAS boot images), generated at test time.

::

    with GpgHome() as gpg:
        fpr = gpg.generate("Test Image Signing Key <images@example.invalid>")
        stream = build_stream(tmp_path / "upstream", gpg, fpr)
        with serve_stream(stream) as srv:
            ...srv.url(stream.prefix) is the stream root (boot-source url)...

Layout, modelled on images.maas.io (shared/reference/simplestreams-and-maas-images.md)::

    <root>/<prefix>/streams/v1/index.{json,sjson}
    <root>/<prefix>/streams/v1/com.ubuntu.maas:stable:v3:download.{json,sjson}
    <root>/<prefix>/streams/v1/com.ubuntu.maas:stable:1:bootloader-download.{json,sjson}
    <root>/<prefix>/<release>/<arch>/<version>/squashfs            one per release/arch/version,
    <root>/<prefix>/<release>/<arch>/<version>/squashfs.manifest   shared by every kernel product
    <root>/<prefix>/<release>/<arch>/<version>/<subarch>/generic/boot-{kernel,initrd}
    <root>/<prefix>/bootloaders/<type>/<arch>/<version>/<name>.tar.xz

Content (:data:`RELEASES`, :data:`ARCHES`, two kernel products per release: ``ga-`` and
``hwe-``), every product in :data:`VERSIONS`. A kernel's bytes depend on the release, arch
and subarch only, so identical kernels recur across versions (same sha256, other path).
Bootloaders: grub-efi-signed (uefi, amd64; two items) and pxelinux (pxe, i386).
Item files are tiny; every ``.sjson`` is clearsigned with the given throwaway key.
:meth:`Stream.add_version` adds a newer version to every image product and signs again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.gpg import GpgHome
from tests.fakes.http_server import FakeServer, serve_directory

__all__ = [
    "ARCHES",
    "BOOT_CID",
    "IMAGES_CID",
    "RELEASES",
    "VERSIONS",
    "Stream",
    "build_stream",
    "generate_stream",
    "serve_stream",
]

RELEASES = {"jammy": "22.04", "noble": "24.04"}
ARCHES = ("amd64", "arm64")
VERSIONS = ("20250701", "20250718")
IMAGES_CID = "com.ubuntu.maas:stable:v3:download"
BOOT_CID = "com.ubuntu.maas:stable:1:bootloader-download"
BOOT_VERSION = "20250620.0"
UPDATED = "Thu, 24 Jul 2025 08:01:49 +0000"
_TITLES = {"jammy": "22.04 LTS", "noble": "24.04 LTS"}


def blob(seed: str, size: int = 300) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:size])


@dataclass
class Stream:
    root: Path
    """The served directory."""
    prefix: str
    """The stream's path below the served directory (the stream root is ``<root>/<prefix>``)."""
    gpg: GpgHome
    fingerprint: str
    keyring: Path
    """Binary keyring holding the signing key (outside the served tree)."""
    versions: list[str] = field(default_factory=lambda: list(VERSIONS))
    files: dict[str, bytes] = field(default_factory=dict)
    """Item path (relative to the stream root) -> content."""

    @property
    def base(self) -> Path:
        return self.root / self.prefix

    # -- documents ------------------------------------------------------------------------

    def _item(self, path: str, data: bytes, ftype: str, **extra: Any) -> dict[str, Any]:
        self.files[path] = data
        return {"ftype": ftype, "path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), **extra}

    def image_products(self) -> dict[str, Any]:
        products: dict[str, Any] = {}
        for release, num in RELEASES.items():
            for arch in ARCHES:
                for sub in (f"ga-{num}", f"hwe-{num}"):
                    versions: dict[str, Any] = {}
                    for ver in self.versions:
                        d = f"{release}/{arch}/{ver}"
                        kpkg = "linux-generic" if sub.startswith("ga") else f"linux-generic-hwe-{num}"
                        versions[ver] = {
                            "items": {
                                "boot-kernel": self._item(
                                    f"{d}/{sub}/generic/boot-kernel",
                                    blob(f"kernel:{release}:{arch}:{sub}"),
                                    "boot-kernel",
                                    kpackage=kpkg,
                                ),
                                "boot-initrd": self._item(
                                    f"{d}/{sub}/generic/boot-initrd",
                                    blob(f"initrd:{release}:{arch}:{sub}:{ver}"),
                                    "boot-initrd",
                                    kpackage=kpkg,
                                ),
                                "manifest": self._item(
                                    f"{d}/squashfs.manifest", blob(f"manifest:{d}", 120), "manifest"
                                ),
                                "squashfs": self._item(f"{d}/squashfs", blob(f"squashfs:{d}", 2000), "squashfs"),
                            }
                        }
                    products[f"com.ubuntu.maas.stable:v3:boot:{num}:{arch}:{sub}"] = {
                        "arch": arch,
                        "kflavor": "generic",
                        "krel": release,
                        "label": "stable",
                        "os": "ubuntu",
                        "release": release,
                        "release_title": _TITLES[release],
                        "subarch": sub,
                        "subarches": f"generic,{sub}",
                        "support_eol": "2029-05-31",
                        "version": num,
                        "versions": versions,
                    }
        return products

    def boot_products(self) -> dict[str, Any]:
        def version(btype: str, arch: str, names: tuple[str, ...]) -> dict[str, Any]:
            items = {
                n: self._item(
                    f"bootloaders/{btype}/{arch}/{BOOT_VERSION}/{n}.tar.xz",
                    blob(f"boot:{btype}:{arch}:{n}", 500),
                    "archive.tar.xz",
                    src_package=n,
                    src_release="noble",
                    src_version="1.0",
                )
                for n in names
            }
            return {BOOT_VERSION: {"items": items}}

        return {
            "com.ubuntu.maas.stable:1:grub-efi-signed:uefi:amd64": {
                "arch": "amd64",
                "arches": "amd64",
                "bootloader-type": "uefi",
                "label": "stable",
                "os": "grub-efi-signed",
                "versions": version("uefi", "amd64", ("grub2-signed", "shim-signed")),
            },
            "com.ubuntu.maas.stable:1:pxelinux:pxe:i386": {
                "arch": "i386",
                "arches": "i386,amd64",
                "bootloader-type": "pxe",
                "label": "stable",
                "os": "pxelinux",
                "versions": version("pxe", "i386", ("syslinux",)),
            },
        }

    # -- writing --------------------------------------------------------------------------

    def write(self) -> None:
        """(Re)write every item file and metadata document, and sign the metadata."""
        self.files.clear()
        v1 = self.base / "streams" / "v1"
        v1.mkdir(parents=True, exist_ok=True)
        docs = {
            IMAGES_CID: {"datatype": "image-ids", "products": self.image_products()},
            BOOT_CID: {"datatype": "image-ids", "products": self.boot_products()},
        }
        index: dict[str, Any] = {}
        for cid, d in docs.items():
            doc = {"content_id": cid, "format": "products:1.0", "updated": UPDATED, **d}
            self._sign(v1 / f"{cid}.json", doc)
            index[cid] = {
                "datatype": d["datatype"],
                "format": "products:1.0",
                "path": f"streams/v1/{cid}.sjson",
                "products": sorted(d["products"]),
                "updated": UPDATED,
            }
        self._sign(v1 / "index.json", {"format": "index:1.0", "index": index, "updated": UPDATED})
        for rel, data in self.files.items():
            (self.base / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.base / rel).write_bytes(data)

    def _sign(self, plain: Path, doc: dict[str, Any]) -> None:
        plain.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        self.gpg.clearsign(plain, plain.with_suffix(".sjson"), self.fingerprint)

    def add_version(self, version: str) -> None:
        """A newer version of every image product (upstream keeps the older ones too)."""
        self.versions.append(version)
        self.write()

    def products_sjson(self, cid: str = IMAGES_CID) -> Path:
        return self.base / "streams" / "v1" / f"{cid}.sjson"

    def sha256(self, rel: str) -> str:
        return hashlib.sha256(self.files[rel]).hexdigest()


def build_stream(root: Path, gpg: GpgHome, fingerprint: str, prefix: str = "ephemeral-v3/stable") -> Stream:
    """Generate the stream under ``root/prefix`` and its keyring at ``<root>-keyring.gpg``."""
    keyring = gpg.export_binary(fingerprint, root.with_name(root.name + "-keyring.gpg"))
    stream = Stream(root=root, prefix=prefix, gpg=gpg, fingerprint=fingerprint, keyring=keyring)
    stream.write()
    return stream


def generate_stream(root: Path, prefix: str = "ephemeral-v3/stable") -> Path:
    """For scripts (the demo): generate the stream under ``root/prefix``, signed by a throwaway key
    that is thrown away afterwards; return the binary keyring (``<root>-keyring.gpg``)."""
    with GpgHome() as gpg:
        fpr = gpg.generate("Demo Image Signing Key <images@example.invalid>")
        return build_stream(root, gpg, fpr, prefix).keyring


@contextmanager
def serve_stream(stream: Stream) -> Iterator[FakeServer]:
    with serve_directory(stream.root) as srv:
        yield srv


@contextmanager
def signed_stream(root: Path) -> Iterator[tuple[Stream, FakeServer]]:
    """A stream under ``root`` signed by a throwaway key, served on 127.0.0.1 while in use."""
    with GpgHome() as g:
        fpr = g.generate("Test Image Signing Key <images@example.invalid>")
        stream = build_stream(root, g, fpr)
        with serve_stream(stream) as srv:
            yield stream, srv
