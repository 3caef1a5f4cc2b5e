"""Connected side of the ``maas_image`` kind: a signed simplestreams source -> manifest entries.

What :func:`declare` does (every download through ``ctx.fetcher``):

1. fetch ``<url>/streams/v1/index.sjson``, check it is one clearsigned block, verify it with
   gpgv against the keyring (and the pinned fingerprints, if any) and parse only the payload
   gpgv put out;
2. the same for every products file the signed index names (a file the index names but the
   source lacks is refused);
3. select items with the filters (bootloader products with ``bootloader_filters`` when
   ``bootloaders`` is true), keep the ``keep`` newest selected versions per product;
4. declare one ``stream`` entry carrying the signed files verbatim plus the keyring, and one
   ``image`` entry per selected (product, version) whose artifacts are the selected items,
   with the sha256 and size the signed products file gives. A file shared by several
   products or versions is one :class:`~bundler.model.Artifact` (the core downloads and
   carries it once and checks its sha256 and size while downloading).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from bundler.errors import FetchError, SpecError, UpstreamContentError, UpstreamDigestError, UpstreamSignatureError
from bundler.kinds.base import SourceContext, local_artifact
from bundler.kinds.maas_image.filters import Filter, FilterError, matches_all, parse_filters
from bundler.kinds.maas_image.stream import (
    Index,
    Item,
    ProductsFile,
    StreamError,
    clearsigned_problem,
    parse_index,
    parse_products,
    safe_relpath,
)
from bundler.model import Artifact, Declared
from bundler.openpgp.gpgv import accept, binary_keyring, gpgv, normalise_fingerprint

__all__ = ["DEFAULT_KEYRING", "DEFAULT_URL", "KEYRING_NAME", "check_section", "declare"]

DEFAULT_URL = "http://images.maas.io/ephemeral-v3/stable"
DEFAULT_KEYRING = "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg"
INDEX_PATH = "streams/v1/index.sjson"
KEYRING_NAME = "upstream-keyring.gpg"
"""Name of the carried upstream keyring, under the stream's path."""
MAX_INDEX = 16 << 20
MAX_PRODUCTS = 128 << 20
"""Largest products .sjson accepted (images.maas.io stable's v3 file is a few MiB)."""

_KEYS = {"url", "path", "keyring", "fingerprints", "filters", "keep", "bootloaders", "bootloader_filters"}
_SIGNATURE_REMEDY = (
    "check that 'keyring' holds the stream's signing key (for images.maas.io: "
    "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg, package ubuntu-cloudimage-keyring) and that the url "
    "is the real stream; never carry a stream whose signature does not verify"
)


# --- carry spec ---------------------------------------------------------------------------


def _strings(section: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = section.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: '{key}' must be a list of strings, got {value!r}")
    return list(value)


def check_section(section: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """Validate one ``[[maas_image]]`` table and return it with every default filled in."""
    unknown = set(section) - _KEYS
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", remedy=f"allowed: {sorted(_KEYS)}")
    url = section.get("url", DEFAULT_URL)
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s?#]+", url):
        raise SpecError(f"{where}: url must be an http(s) URL of the stream (without streams/v1/...), got {url!r}")
    url = url.rstrip("/")
    if url.endswith(("/streams/v1/index.sjson", "/streams/v1/index.json")):
        url = url.rsplit("/streams/v1/", 1)[0]
    default_path = urlsplit(url).path.strip("/")
    path = section.get("path", default_path)
    if not isinstance(path, str) or safe_relpath(path) is None or path.startswith("."):
        raise SpecError(
            f"{where}: 'path' (where the stream lands under the mirror root) must be a relative path without "
            f"'.', '..' or a leading '.', got {path!r}",
            remedy='the default is the URL\'s path (e.g. "ephemeral-v3/stable"); set path = "..." when the URL '
            "has none",
        )
    keyring = section.get("keyring", DEFAULT_KEYRING)
    if not isinstance(keyring, str) or not keyring:
        raise SpecError(f"{where}: keyring must be a path (string), got {keyring!r}")
    fingerprints = []
    for raw in _strings(section, "fingerprints", where):
        fpr = normalise_fingerprint(raw)
        if fpr is None:
            raise SpecError(f"{where}: fingerprint {raw!r} is not a full key fingerprint (40 or 64 hex digits)")
        fingerprints.append(fpr)
    filters = _strings(section, "filters", where)
    boot_filters = _strings(section, "bootloader_filters", where)
    try:
        parse_filters(filters + boot_filters)
    except FilterError as exc:
        raise SpecError(
            f"{where}: {exc}", remedy='write filters as sstream-mirror does: "release~(jammy|noble)", "arch=amd64"'
        ) from exc
    keep = section.get("keep", 1)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise SpecError(f"{where}: keep (versions kept per product) must be a whole number >= 1, got {keep!r}")
    bootloaders = section.get("bootloaders", True)
    if not isinstance(bootloaders, bool):
        raise SpecError(f"{where}: bootloaders must be true or false, got {bootloaders!r}")
    if boot_filters and not bootloaders:
        raise SpecError(f"{where}: bootloader_filters is given but bootloaders = false")
    return {
        "url": url,
        "path": path.strip("/"),
        "keyring": keyring,
        "fingerprints": fingerprints,
        "filters": filters,
        "keep": keep,
        "bootloaders": bootloaders,
        "bootloader_filters": boot_filters,
    }


# --- declare ------------------------------------------------------------------------------


class _Exporter:
    def __init__(self, section: Mapping[str, Any], ctx: SourceContext) -> None:
        self.ctx = ctx
        self.url: str = section["url"]
        self.prefix: str = section["path"]
        self.fingerprints: list[str] = list(section["fingerprints"])
        self.filters = parse_filters(section["filters"])
        self.boot_filters = parse_filters(section["bootloader_filters"])
        self.bootloaders: bool = section["bootloaders"]
        self.keep: int = section["keep"]
        self.section = dict(section)
        self.keyring_src = ctx.spec_dir / os.path.expanduser(section["keyring"])
        tag = hashlib.sha256(json.dumps(self.section, sort_keys=True).encode()).hexdigest()[:12]
        self.root = ctx.work_dir / "maas_image" / tag
        self.what = f"maas_image {self.url}"

    def run(self) -> list[Declared]:
        shutil.rmtree(self.root, ignore_errors=True)
        (self.root / "signed").mkdir(parents=True)
        keyring = binary_keyring(self.keyring_src, self.root / KEYRING_NAME)
        with tempfile.TemporaryDirectory(prefix="gv.", dir="/tmp") as home:
            index_bytes, index_payload, signers = self._signed(INDEX_PATH, MAX_INDEX, keyring, Path(home))
            try:
                index = parse_index(index_payload, f"{self.url}/{INDEX_PATH}")
            except StreamError as exc:
                raise UpstreamContentError(f"{self.what}: {exc}") from exc
            files: list[tuple[str, bytes]] = [(INDEX_PATH, index_bytes)]
            products: list[ProductsFile] = []
            for entry in index.entries:
                raw, payload, more = self._signed(entry.path, MAX_PRODUCTS, keyring, Path(home), index_names=True)
                signers = sorted(set(signers) | set(more))
                try:
                    products.append(parse_products(payload, entry.path, entry.content_id, f"{self.url}/{entry.path}"))
                except StreamError as exc:
                    raise UpstreamContentError(f"{self.what}: {exc}") from exc
                files.append((entry.path, raw))
        chosen = self._select(products)
        return [self._stream_entry(index, files, keyring, signers), *self._image_entries(chosen)]

    def _get(self, url: str, cap: int) -> bytes | None:
        try:
            return self.ctx.fetcher.get_bytes_if_present(url, max_size=cap)
        except FetchError as exc:
            raise FetchError(f"{self.what}: {exc.message}", remedy=exc.remedy) from exc
        except UpstreamDigestError as exc:
            raise UpstreamContentError(f"{self.what}: {exc.message}", remedy=exc.remedy) from exc

    def _signed(
        self, rel: str, cap: int, keyring: Path, home: Path, *, index_names: bool = False
    ) -> tuple[bytes, bytes, list[str]]:
        """(the .sjson bytes, the payload gpgv put out, the primary fingerprints that signed it)."""
        url = f"{self.url}/{rel}"
        data = self._get(url, cap)
        if data is None:
            if index_names:
                raise UpstreamContentError(
                    f"{self.what}: the signed index names {rel}, but the source lacks it ({url}: HTTP 404)",
                    remedy="the mirror is incomplete or mid-sync: re-run later or use another mirror",
                )
            plain = self._get(f"{self.url}/streams/v1/index.json", MAX_INDEX)
            raise UpstreamSignatureError(
                f"{self.what}: {url} does not exist"
                + (": the stream offers only the unsigned index.json" if plain is not None else ""),
                remedy="an unsigned stream cannot be carried; check the url (the stream root, without streams/v1)",
            )
        problem = clearsigned_problem(data)
        if problem:
            raise UpstreamSignatureError(
                f"{self.what}: {url} is not a well-formed clearsigned file: {problem}",
                remedy="text outside the signed block is not covered by the signature; the mirror or a proxy "
                "serves something else: try another mirror",
            )
        local = self.root / "signed" / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        verified = self.root / "verified.json"
        result = gpgv(keyring, local, output=verified, homedir=home / "h")
        try:
            signers = accept(result, self.fingerprints, self.what, url)
        except UpstreamSignatureError as exc:
            raise UpstreamSignatureError(exc.message, remedy=_SIGNATURE_REMEDY) from exc
        payload = verified.read_bytes()
        verified.unlink()
        return data, payload, signers

    def _select(self, products: Sequence[ProductsFile]) -> dict[tuple[str, str, str], list[Item]]:
        """(content_id, product, version) -> selected items, the ``keep`` newest versions per product."""
        picked: dict[tuple[str, str], dict[str, list[Item]]] = defaultdict(lambda: defaultdict(list))
        n_images = 0
        for pf in products:
            for item in pf.items:
                if item.bootloader:
                    if not self.bootloaders or not matches_all(self.boot_filters, item.flat):
                        continue
                elif not matches_all(self.filters, item.flat):
                    continue
                else:
                    n_images += 1
                picked[(item.content_id, item.product)][item.version].append(item)
        if not n_images:
            raise UpstreamContentError(
                f"{self.what}: the filters {_show(self.filters)} match no image in the signed stream",
                remedy="the stream offers " + _offer(products) + "; fix 'filters' in the carry spec",
            )
        if (
            self.bootloaders
            and self.boot_filters
            and not any(i.bootloader for vs in picked.values() for v in vs.values() for i in v)
        ):
            raise UpstreamContentError(
                f"{self.what}: the bootloader_filters {_show(self.boot_filters)} match no bootloader in the stream",
                remedy="fix 'bootloader_filters', or set bootloaders = false",
            )
        chosen: dict[tuple[str, str, str], list[Item]] = {}
        for (cid, pname), versions in sorted(picked.items()):
            for vname in sorted(versions)[-self.keep :]:
                chosen[(cid, pname, vname)] = versions[vname]
        return chosen

    def _stream_entry(
        self, index: Index, files: list[tuple[str, bytes]], keyring: Path, signers: list[str]
    ) -> Declared:
        artifacts = [local_artifact(f"{self.prefix}/{rel}", self.root / "signed" / rel) for rel, _ in files]
        artifacts.append(local_artifact(f"{self.prefix}/{KEYRING_NAME}", keyring))
        return Declared(
            kind="maas_image",
            name=self.prefix,
            version=hashlib.sha256(files[0][1]).hexdigest()[:16],
            arch="index",
            artifacts=tuple(artifacts),
            metadata={
                "role": "stream",
                "url": self.url,
                "path": self.prefix,
                "keep": self.keep,
                "filters": [str(f) for f in self.filters],
                "bootloaders": self.bootloaders,
                "bootloader_filters": [str(f) for f in self.boot_filters],
                "fingerprints": signers,
                "products_files": [e.path for e in index.entries],
            },
        )

    def _image_entries(self, chosen: Mapping[tuple[str, str, str], list[Item]]) -> Iterator[Declared]:
        shared: dict[str, Artifact] = {}
        for (cid, pname, vname), items in chosen.items():
            artifacts = []
            for item in items:
                art = shared.get(item.path)
                if art is None:
                    art = Artifact(
                        path=f"{self.prefix}/{item.path}",
                        sha256=item.sha256,
                        size=item.size,
                        url=f"{self.url}/{quote(item.path, safe='/+~:@=,')}",
                    )
                    shared[item.path] = art
                elif (art.sha256, art.size) != (item.sha256, item.size):
                    raise UpstreamContentError(
                        f"{self.what}: {item.path} is listed with two different sha256/size "
                        f"({pname} {vname} and another product)",
                        remedy="the stream is inconsistent; report it to its publisher or use another mirror",
                    )
                if art not in artifacts:
                    artifacts.append(art)
            flat = items[0].flat
            yield Declared(
                kind="maas_image",
                name=f"{self.prefix}/{pname}/{vname}",
                version=vname,
                arch=flat.get("arch") or "all",
                artifacts=tuple(artifacts),
                metadata={
                    "role": "image",
                    "stream": self.prefix,
                    "content_id": cid,
                    "product": pname,
                    "version": vname,
                    "items": sorted(i.name for i in items),
                },
            )


def _show(filters: Sequence[Filter]) -> str:
    return "[" + ", ".join(repr(str(f)) for f in filters) + "]" if filters else "(none)"


def _offer(products: Sequence[ProductsFile]) -> str:
    seen: dict[str, set[str]] = defaultdict(set)
    for pf in products:
        for item in pf.items:
            if not item.bootloader:
                for key in ("os", "release", "arch", "subarch", "label"):
                    if item.flat.get(key):
                        seen[key].add(item.flat[key])
    return "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in seen.items()) or "no images at all"


def declare(section: Mapping[str, Any], ctx: SourceContext) -> Iterator[Declared]:
    """Declare the stream entry and the image entries of one checked ``[[maas_image]]`` section."""
    yield from _Exporter(section, ctx).run()
