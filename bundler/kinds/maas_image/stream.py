"""Pure parsing of simplestreams v1 index and products documents (no I/O, no gpg).

Only the payload gpgv put out is ever given to these functions. They check what the
exporter and the target rely on (formats, safe relative paths, sha256 and size of every
item) and raise :class:`StreamError` with a message naming the document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from bundler.kinds.maas_image.filters import flatten

__all__ = [
    "RESERVED",
    "Index",
    "IndexEntry",
    "Item",
    "ProductsFile",
    "StreamError",
    "clearsigned_problem",
    "dumps",
    "is_bootloader",
    "parse_index",
    "parse_products",
    "safe_relpath",
    "signed_payload",
]

RESERVED = frozenset({"keyring.gpg", "upstream-keyring.gpg"})
"""Item paths the mirror uses for itself (besides ``streams/``)."""
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CLEAR_BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
_SIG_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_SIG_END = b"-----END PGP SIGNATURE-----"


class StreamError(ValueError):
    """A simplestreams document that cannot be used."""


@dataclass(frozen=True)
class IndexEntry:
    content_id: str
    path: str
    """Relative to the stream's root (``streams/v1/<content_id>.sjson``)."""
    datatype: str
    products: tuple[str, ...]


@dataclass(frozen=True)
class Index:
    doc: Mapping[str, Any]
    entries: tuple[IndexEntry, ...]


@dataclass(frozen=True)
class Item:
    content_id: str
    product: str
    version: str
    name: str
    path: str
    sha256: str
    size: int
    bootloader: bool
    flat: Mapping[str, str]
    """The flattened item the filters are matched against."""


@dataclass(frozen=True)
class ProductsFile:
    path: str
    content_id: str
    doc: Mapping[str, Any]
    items: tuple[Item, ...]


def safe_relpath(path: object) -> str | None:
    """``path`` if it is a safe relative POSIX path (no ``..``, no absolute, no backslash), else None."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        return None
    if any(ord(c) < 32 for c in path) or any(p in ("", ".", "..") for p in path.split("/")):
        return None
    return str(PurePosixPath(path))


def clearsigned_problem(data: bytes) -> str:
    """Why ``data`` is not one clearsigned block with nothing around it ("" when it is)."""
    text = data.strip()
    if not text.startswith(_CLEAR_BEGIN):
        return "it does not start with '-----BEGIN PGP SIGNED MESSAGE-----' (not a clearsigned .sjson)"
    if text.count(_CLEAR_BEGIN) != 1 or text.count(_SIG_BEGIN) != 1 or text.count(_SIG_END) != 1:
        return "it holds more than one signed block"
    if not text.endswith(_SIG_END):
        return "it has text after '-----END PGP SIGNATURE-----'"
    return ""


def signed_payload(data: bytes) -> bytes | None:
    """The text between the armor header and the signature (as MAAS 3.8 reads it), or None.

    Used only to compare a published file with what would be written; never to trust it.
    """
    start = data.find(b"{")
    end = data.find(_SIG_BEGIN)
    if start < 0 or end < start:
        return None
    return data[start:end]


def _load(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StreamError(f"{where} is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise StreamError(f"{where} is not a JSON object")
    return doc


def parse_index(data: bytes, where: str) -> Index:
    doc = _load(data, where)
    if doc.get("format") != "index:1.0":
        raise StreamError(f"{where}: format is {doc.get('format')!r}, expected 'index:1.0'")
    index = doc.get("index")
    if not isinstance(index, dict):
        raise StreamError(f"{where}: no 'index' object")
    entries = []
    for cid, e in sorted(index.items()):
        if not isinstance(e, dict):
            raise StreamError(f"{where}: index entry {cid!r} is not an object")
        path = safe_relpath(e.get("path"))
        if path is None:
            raise StreamError(f"{where}: index entry {cid!r} has an unusable path {e.get('path')!r}")
        if not path.endswith(".sjson"):
            raise StreamError(
                f"{where}: index entry {cid!r} points at {path}, which is not a signed .sjson file",
            )
        if e.get("format", "products:1.0") != "products:1.0":
            raise StreamError(f"{where}: index entry {cid!r} has format {e.get('format')!r}")
        products = e.get("products", [])
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            raise StreamError(f"{where}: index entry {cid!r} has an unusable 'products' list")
        entries.append(IndexEntry(cid, path, str(e.get("datatype", "")), tuple(products)))
    return Index(doc=doc, entries=tuple(entries))


def is_bootloader(content_id: str, product: Mapping[str, Any]) -> bool:
    return "bootloader-type" in product or "bootloader" in content_id


def parse_products(data: bytes, path: str, expected_content_id: str, where: str) -> ProductsFile:
    doc = _load(data, where)
    if doc.get("format") != "products:1.0":
        raise StreamError(f"{where}: format is {doc.get('format')!r}, expected 'products:1.0'")
    cid = doc.get("content_id")
    if cid != expected_content_id:
        raise StreamError(f"{where}: content_id is {cid!r}, but the index lists this file for {expected_content_id!r}")
    products = doc.get("products")
    if not isinstance(products, dict):
        raise StreamError(f"{where}: no 'products' object")
    top = {k: v for k, v in doc.items() if k != "products"}
    items = list(_items(top, products, cid, where))
    return ProductsFile(path=path, content_id=cid, doc=doc, items=tuple(items))


def _items(top: Mapping[str, Any], products: Mapping[str, Any], cid: str, where: str) -> Iterator[Item]:
    for pname, product in sorted(products.items()):
        if not isinstance(product, dict) or not isinstance(product.get("versions", {}), dict):
            raise StreamError(f"{where}: product {pname!r} is not an object with 'versions'")
        boot = is_bootloader(cid, product)
        pfields = {k: v for k, v in product.items() if k != "versions"}
        for vname, version in sorted(product.get("versions", {}).items()):
            if not isinstance(version, dict) or not isinstance(version.get("items", {}), dict):
                raise StreamError(f"{where}: {pname} version {vname!r} is not an object with 'items'")
            vfields = {k: v for k, v in version.items() if k != "items"}
            for iname, item in sorted(version.get("items", {}).items()):
                what = f"{where}: {pname} {vname} item {iname!r}"
                if not isinstance(item, dict):
                    raise StreamError(f"{what} is not an object")
                path = safe_relpath(item.get("path"))
                if path is None:
                    raise StreamError(f"{what} has an unusable path {item.get('path')!r}")
                if path.startswith("streams/") or path in RESERVED:
                    raise StreamError(f"{what}: path {path} is where the mirror keeps its metadata or keyring")
                sha = item.get("sha256")
                if not isinstance(sha, str) or not _HEX64.fullmatch(sha.lower()):
                    raise StreamError(f"{what} has no usable sha256: it cannot be verified")
                size = item.get("size")
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise StreamError(f"{what} has no usable size")
                flat = flatten(top, pname, pfields, vname, vfields, iname, item)
                yield Item(cid, pname, vname, iname, path, sha.lower(), size, boot, flat)


def dumps(doc: Mapping[str, Any]) -> bytes:
    """How regenerated documents are serialised (stable: sorted keys, one-space indent)."""
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode("ascii")
