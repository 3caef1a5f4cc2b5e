"""Regenerated simplestreams metadata for a mirror that is not the upstream snapshot (pure).

When the mirror holds less (or other) content than the signed upstream products files
list, those files cannot be published verbatim: MAAS would offer products and versions the
mirror lacks, and its newest-version rule would pick files that are not there. The index
and products documents are then rebuilt to list exactly what the mirror holds, every field
copied from the verified upstream documents (so MAAS 3.4 to 3.8 find what they require,
see :func:`maas_problems`), and clearsigned with the enclave key by the target.

``updated`` values are the upstream ones, so regenerating the same content twice gives the
same documents (and the target can leave an equal published file alone).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from bundler.kinds.maas_image.stream import Index, ProductsFile, is_bootloader

__all__ = ["Held", "build_index", "build_products", "maas_problems"]

Held = tuple[str, str, str]
"""(product name, version name, item name) of one item the mirror holds."""

#: Item types MAAS 3.4-3.8 know (others are skipped by 3.5-3.7).
KNOWN_FTYPES = frozenset(
    {
        "squashfs",
        "boot-kernel",
        "boot-initrd",
        "boot-dtb",
        "root-image.gz",
        "archive.tar.xz",
        "root-tgz",
        "root-tbz",
        "root-txz",
        "root-dd",
        "root-dd.gz",
        "root-dd.xz",
        "root-dd.bz2",
        "root-dd.tar",
        "root-dd.tar.xz",
        "root-dd.raw",
        "self-extracting",
        "manifest",
    }
)


def build_products(upstream: ProductsFile, held: Collection[Held]) -> dict[str, Any] | None:
    """``upstream``'s document cut down to the ``held`` items; None when it holds none of them."""
    keep = set(held)
    doc = {k: copy.deepcopy(v) for k, v in upstream.doc.items() if k != "products"}
    products: dict[str, Any] = {}
    for pname, product in upstream.doc["products"].items():
        versions: dict[str, Any] = {}
        for vname, version in product.get("versions", {}).items():
            items = {i: copy.deepcopy(d) for i, d in version.get("items", {}).items() if (pname, vname, i) in keep}
            if items:
                versions[vname] = {k: copy.deepcopy(v) for k, v in version.items() if k != "items"} | {"items": items}
        if versions:
            products[pname] = {k: copy.deepcopy(v) for k, v in product.items() if k != "versions"} | {
                "versions": versions
            }
    if not products:
        return None
    doc["products"] = products
    doc.setdefault("datatype", "image-ids")
    doc.setdefault("format", "products:1.0")
    return doc


def build_index(upstream: Index, products: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The index for the regenerated ``products`` documents (keyed by their path)."""
    doc = {k: copy.deepcopy(v) for k, v in upstream.doc.items() if k != "index"}
    index: dict[str, Any] = {}
    by_path = {e.path: e for e in upstream.entries}
    for path, pdoc in sorted(products.items()):
        cid = pdoc["content_id"]
        entry = copy.deepcopy(dict(upstream.doc["index"][by_path[path].content_id]))
        entry.update(
            path=path,
            products=sorted(pdoc["products"]),
            format="products:1.0",
            datatype=pdoc.get("datatype", entry.get("datatype", "image-ids")),
        )
        entry.setdefault("updated", pdoc.get("updated", upstream.doc.get("updated")))
        index[cid] = entry
    doc["index"] = index
    doc["format"] = "index:1.0"
    return doc


def maas_problems(index: Mapping[str, Any], products: Mapping[str, Mapping[str, Any]]) -> Sequence[str]:
    """Every field MAAS 3.4 to 3.8 require that is missing (empty list: MAAS can read this stream).

    From shared/reference/simplestreams-and-maas-images.md section 5: the 3.8 models for the
    index and products documents; 3.5-3.7 ``arch``, ``label``, ``release`` or
    ``bootloader-type``, and per item a known ``ftype``, ``path``, ``sha256``, ``size``.
    """
    out: list[str] = []
    if "updated" not in index:
        out.append("index: no 'updated'")
    for cid, e in index.get("index", {}).items():
        out += [f"index entry {cid}: no {k!r}" for k in ("path", "updated", "products") if k not in e]
    for path, doc in products.items():
        out += [f"{path}: no {k!r}" for k in ("content_id", "datatype", "updated", "products") if k not in doc]
        cid = str(doc.get("content_id", ""))
        for pname, p in doc.get("products", {}).items():
            need = ["arch", "label", "os", "versions"]
            if is_bootloader(cid, p):
                need += ["arches", "bootloader-type"]
            else:
                need += ["release", "release_title", "subarch", "subarches", "version"]
            out += [f"{path}: product {pname}: no {k!r}" for k in need if k not in p]
            for vname, v in p.get("versions", {}).items():
                for iname, item in v.get("items", {}).items():
                    where = f"{path}: {pname} {vname} item {iname}"
                    out += [f"{where}: no {k!r}" for k in ("ftype", "path", "sha256", "size") if k not in item]
                    if "ftype" in item and item["ftype"] not in KNOWN_FTYPES:
                        out.append(f"{where}: ftype {item['ftype']!r} is unknown to MAAS")
    return out
