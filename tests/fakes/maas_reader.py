"""A checking reader that walks a simplestreams mirror the way MAAS does.

The real ``simplestreams`` library (and MAAS) is not installable here (not in Debian, not
on PyPI), so this is written from shared/reference/simplestreams-and-maas-images.md,
section 5 ("How MAAS reads a boot source"):

* boot-source URL -> base URL (a trailing ``streams/v1/index.(s)json`` removed); the index
  is ``<base>/streams/v1/index.sjson``; a file's URL is ``<base>/<path>``;
* every ``.sjson`` goes through ``gpgv --keyring=<keyring_filename>`` (3.8 behaviour; 3.4-3.7
  do the same for ``.sjson`` URLs); the JSON used is the payload gpgv puts out, and it must
  equal the text MAAS 3.8 takes (first ``{`` up to ``-----BEGIN PGP SIGNATURE-----``);
* MAAS fetches every products file the index lists: one missing file fails the whole sync;
* required fields: the 3.8 models (index ``updated``; entries ``path``, ``updated``,
  ``products``; products files ``content_id``, ``datatype``, ``updated``, ``products``;
  products ``arch``, ``label``, ``os``, ``versions`` and for images ``release``,
  ``release_title``, ``subarch``, ``subarches``, ``version``; bootloaders ``arches``,
  ``bootloader-type``) and 3.5-3.7's per-item ``ftype``, ``path``, ``sha256``, ``size``;
* a boot-source selection (os, release, arches, subarches, labels; ``*`` matches all) picks
  products, and MAAS uses only the **newest version** of each.

Beyond MAAS, :meth:`MaasReader.read` checks the sha256 and size of every item of every
version listed (a mirror must never list a file it lacks).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

__all__ = ["MaasReadError", "MaasReader", "Selection", "StreamView"]

_SIG_BEGIN = "-----BEGIN PGP SIGNATURE-----"
_IMAGE_FIELDS = ("arch", "label", "os", "versions", "release", "release_title", "subarch", "subarches", "version")
_BOOT_FIELDS = ("arch", "label", "os", "versions", "arches", "bootloader-type")


class MaasReadError(AssertionError):
    """The mirror is not something MAAS could sync from."""


@dataclass(frozen=True)
class Selection:
    os: str
    release: str
    arches: Sequence[str] = ("*",)
    subarches: Sequence[str] = ("*",)
    labels: Sequence[str] = ("*",)

    def wants(self, product: dict[str, Any]) -> bool:
        def ok(values: Sequence[str], value: Any) -> bool:
            return "*" in values or str(value) in values

        return (
            product.get("os") == self.os
            and product.get("release") == self.release
            and ok(self.arches, product.get("arch"))
            and ok(self.subarches, product.get("subarch"))
            and ok(self.labels, product.get("label"))
        )


@dataclass
class StreamView:
    index: dict[str, Any]
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Products file path -> document."""
    signed_files: list[str] = field(default_factory=list)

    def all_products(self) -> dict[str, dict[str, Any]]:
        return {name: p for doc in self.products.values() for name, p in doc["products"].items()}

    def versions(self) -> dict[str, list[str]]:
        return {name: sorted(p["versions"]) for name, p in self.all_products().items()}


class MaasReader:
    def __init__(self, url: str, keyring: Path) -> None:
        base = url.rstrip("/")
        for tail in ("/streams/v1/index.sjson", "/streams/v1/index.json"):
            base = base.removesuffix(tail)
        self.base = base
        self.keyring = keyring
        self.session = requests.Session()

    def _get(self, path: str) -> bytes:
        r = self.session.get(f"{self.base}/{path}", timeout=30)
        if r.status_code != 200:
            raise MaasReadError(f"{self.base}/{path}: HTTP {r.status_code}")
        return r.content

    def _verified(self, path: str) -> dict[str, Any]:
        data = self._get(path)
        with tempfile.TemporaryDirectory(prefix="mr.", dir="/tmp") as home:
            proc = subprocess.run(
                ["gpgv", "--homedir", home, "--keyring", str(self.keyring.resolve()), "--output", "-", "-"],
                input=data,
                capture_output=True,
                check=False,
            )
        if proc.returncode != 0:
            raise MaasReadError(f"gpgv refused {path} with {self.keyring}: {proc.stderr.decode(errors='replace')}")
        text = data.decode()
        maas_text = text[text.index("{") : text.index(_SIG_BEGIN)]
        doc: dict[str, Any] = json.loads(proc.stdout)
        if json.loads(maas_text) != doc:
            raise MaasReadError(f"{path}: the text MAAS 3.8 reads differs from the signed payload")
        return doc

    def read(self, *, check_items: bool = True) -> StreamView:
        index = self._verified("streams/v1/index.sjson")
        view = StreamView(index=index, signed_files=["streams/v1/index.sjson"])
        _need(index, ("updated", "index"), "index")
        for cid, entry in index["index"].items():
            _need(entry, ("path", "updated", "products"), f"index entry {cid}")
            doc = self._verified(entry["path"])
            view.signed_files.append(entry["path"])
            _need(doc, ("content_id", "datatype", "updated", "products"), entry["path"])
            if doc["content_id"] != cid:
                raise MaasReadError(f"{entry['path']}: content_id {doc['content_id']} is not {cid}")
            if sorted(doc["products"]) != sorted(entry["products"]):
                raise MaasReadError(f"{entry['path']}: products differ from the index's list")
            for name, product in doc["products"].items():
                boot = "bootloader-type" in product
                _need(product, _BOOT_FIELDS if boot else _IMAGE_FIELDS, f"{entry['path']}: {name}")
                if not boot and ":v3:" not in name and ":v2:" not in name and product.get("os") == "ubuntu":
                    raise MaasReadError(f"{name}: an Ubuntu product name must hold :v2: or :v3:")
                for vname, version in product["versions"].items():
                    for iname, item in version["items"].items():
                        _need(item, ("ftype", "path", "sha256", "size"), f"{name} {vname} {iname}")
                        if check_items:
                            self.check_item(item)
            view.products[entry["path"]] = doc
        return view

    def check_item(self, item: dict[str, Any]) -> bytes:
        data = self._get(item["path"])
        if len(data) != item["size"] or hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise MaasReadError(f"{item['path']}: sha256/size differ from the signed products file")
        return data

    def sync(self, selections: Sequence[Selection]) -> dict[str, str]:
        """What MAAS imports for ``selections``: product name -> the (newest) version it takes;
        downloads and checks every item MAAS would download for it (not ``manifest``)."""
        view = self.read(check_items=False)
        out: dict[str, str] = {}
        for name, product in view.all_products().items():
            if "bootloader-type" in product or any(s.wants(product) for s in selections):
                newest = max(product["versions"])
                for item in product["versions"][newest]["items"].values():
                    if item["ftype"] != "manifest":
                        self.check_item(item)
                out[name] = newest
        return out


def _need(doc: dict[str, Any], keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        raise MaasReadError(f"{where}: MAAS requires {', '.join(missing)}")
