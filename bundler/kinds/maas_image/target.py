"""Enclave side of the ``maas_image`` kind: a simplestreams mirror MAAS uses as its boot source.

Layout under the mirror root (``<enclave>/maas-images/``, option ``maas_images_root``)::

    <path>/streams/v1/index.sjson          what MAAS reads first (boot-source url = <mirror url>/<path>/)
    <path>/streams/v1/<content_id>.sjson   the products files the index names
    <path>/<item paths>                    squashfs, kernels, initrds, manifests, bootloader archives
    <path>/keyring.gpg                     binary keyring for MAAS keyring_filename=: the enclave key
                                           followed by the upstream keyring (valid in both modes below)
    .bundler/upstream/<path>/...           the carried upstream .sjson files and keyring, verbatim
    .bundler/tmp/                          scratch for atomic renames (gone after each import)

``<path>`` is the stream's URL path (``ephemeral-v3/stable``), so the mirror root can also
stand in for images.maas.io behind a transparent proxy.

Publishing:

1. re-verify every carried ``.sjson`` with gpgv against the carried upstream keyring (and the
   fingerprints the exporter saw) and parse only gpgv's output; every image entry must be
   listed in those signed products files with the same path, sha256 and size;
2. decide: when the entries hold exactly every item of every version of every product the
   signed products files list, the upstream files are published **verbatim** (MAAS can check
   them with the stock keyring); otherwise the index and products files are **regenerated**
   to list exactly what the mirror holds and clearsigned with the enclave key;
3. write item files, then the keyring, then the products files, then the index, each by an
   atomic rename; on any failure every rename is undone, so the mirror is exactly as it was;
4. only then delete files no entry of the new state uses (older versions beyond ``keep``),
   never a file a kept version still uses.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.errors import PreflightError, PublishError, UpstreamSignatureError
from bundler.fsio import prune_empty, require_writable
from bundler.hashing import sha256_file
from bundler.kinds.base import Change, PublishReport, TargetContext
from bundler.kinds.maas_image.handoff import MIRROR_KEYRING, handoff
from bundler.kinds.maas_image.mirror import Transaction
from bundler.kinds.maas_image.regenerate import Held, build_index, build_products, maas_problems
from bundler.kinds.maas_image.source import INDEX_PATH, KEYRING_NAME
from bundler.kinds.maas_image.stream import (
    Index,
    Item,
    ProductsFile,
    StreamError,
    clearsigned_problem,
    dumps,
    parse_index,
    parse_products,
    signed_payload,
)
from bundler.model import Entry, FileRecord
from bundler.openpgp.enclave_key import clearsign_many, ensure_enclave_key
from bundler.openpgp.gpgv import accept, gpgv
from bundler.paths import resolve_inside

__all__ = ["META_DIR", "MIRROR_KEYRING", "MaasImageTarget", "stale_paths"]

META_DIR = ".bundler"
_REEXPORT = "export the bundle again from the connected side; nothing was published"


@dataclass
class _Plan:
    """One stream, verified and decided, before anything is written."""

    stream: Entry
    prefix: str
    upstream: dict[str, Path]
    """Stream entry file path -> verified local copy."""
    images: list[Entry]
    verbatim: bool
    held_products: dict[str, Mapping[str, str]]
    """Product name -> the flattened fields of one of its held items (for the hand-off)."""
    metadata: list[tuple[str, bytes | None, Mapping[str, Any] | None]] = field(default_factory=list)
    """(mirror path, bytes to publish, or None with the document to sign), products first, index last."""


def _role(entries: Iterable[Entry], role: str) -> list[Entry]:
    return [e for e in entries if e.metadata.get("role") == role]


def stale_paths(previous: Sequence[Entry], current: Sequence[Entry]) -> list[str]:
    """Image file paths the previous state used and no entry of the current state uses."""
    keep = {f.path for e in _role(current, "image") for f in e.files}
    return sorted({f.path for e in _role(previous, "image") for f in e.files} - keep)


class MaasImageTarget:
    def __init__(self, ctx: TargetContext) -> None:
        self.ctx = ctx
        self.root = Path(ctx.options.get("maas_images_root") or ctx.enclave / "maas-images")
        self.meta = self.root / META_DIR
        self.upstream = self.meta / "upstream"
        self.mirror_url: str | None = ctx.options.get("maas_mirror_url")
        self._planned: tuple[Change, list[_Plan]] | None = None

    # -- Target protocol ---------------------------------------------------------------

    def preflight(self, entries: Sequence[Entry]) -> None:
        for tool in ("gpg", "gpgv"):
            if shutil.which(tool) is None:
                raise PreflightError(f"maas_image: {tool} is not installed", remedy=f"apt-get install {tool}")
        require_writable(self.root, "maas_image")
        streams = {e.metadata.get("path"): e for e in _role(entries, "stream")}
        versions: dict[tuple[str, str], int] = defaultdict(int)
        for e in entries:
            role = e.metadata.get("role")
            if role not in ("stream", "image"):
                raise PreflightError(f"maas_image entry {e.name} has no valid metadata role ({role!r})")
            for f in e.files:
                if f.path.startswith("."):
                    raise PreflightError(f"maas_image entry {e.name}: path {f.path!r} starts with '.'")
                resolve_inside(self.root, f.path, what=f"maas_image/{e.name}")
            if role == "image":
                stream = streams.get(e.metadata.get("stream"))
                if stream is None:
                    raise PreflightError(f"maas_image entry {e.name} belongs to no stream entry of this bundle")
                key = (str(e.metadata.get("stream")), str(e.metadata.get("product")))
                versions[key] += 1
                if versions[key] > int(stream.metadata.get("keep", 1)):
                    raise PreflightError(
                        f"maas_image: {key[1]} has more versions than the stream's "
                        f"keep = {stream.metadata.get('keep')}",
                        remedy=_REEXPORT,
                    )

    def locate(self, entry: Entry, file: FileRecord) -> Path | None:
        base = self.upstream if entry.metadata.get("role") == "stream" else self.root
        p = base / file.path
        return p if p.is_file() and not p.is_symlink() else None

    def check(self, change: Change) -> None:
        """Verify every carried stream again (gpgv on each .sjson) and every image entry against
        it; the importer runs this for every kind before any kind publishes."""
        self._planned = (change, self._plans(change))

    def _plans(self, change: Change) -> list[_Plan]:
        by_stream: dict[str, list[Entry]] = defaultdict(list)
        for e in _role(change.entries, "image"):
            by_stream[e.metadata["stream"]].append(e)
        return [self._plan(s, by_stream[s.metadata["path"]], change) for s in _role(change.entries, "stream")]

    def publish(self, change: Change) -> PublishReport:
        images = _role(change.entries, "image")
        done = self._planned
        plans = done[1] if done is not None and done[0] is change else self._plans(change)
        enclave_key = ensure_enclave_key(self.ctx.enclave) if plans else None
        self._sign(plans)
        txn = Transaction(self.meta / "tmp")
        try:
            self._write(plans, change, txn, enclave_key.binary.read_bytes() if enclave_key else b"")
        except BaseException:
            txn.rollback()
            raise
        txn.commit()
        removed = self._prune(plans, change)
        added, gone = change.added(), change.removed()
        notes: list[str] = []
        for p in plans:
            notes += handoff(
                self.root,
                p.prefix,
                self.mirror_url,
                verbatim=p.verbatim,
                versions=len(p.images),
                held=list(p.held_products.values()),
                fingerprint=enclave_key.fingerprint if enclave_key else "",
            )
        notes.append(f"{txn.written} file(s) written, {removed} removed, under {self.root}")
        return PublishReport(
            kind="maas_image",
            added=tuple(_describe(e) for e in _role(added, "image")),
            removed=tuple(_describe(e) for e in _role(gone, "image")),
            unchanged=len(images) - len(_role(added, "image")),
            notes=tuple(notes),
        )

    # -- 1-2. verify and decide ------------------------------------------------------------

    def _source(self, entry: Entry, f: FileRecord, change: Change) -> Path:
        staged = change.staged.get(f.sha256)
        if staged is not None:
            return staged
        local = self.locate(entry, f)
        if local is not None and sha256_file(local)[0] == f.sha256:
            return local
        raise PublishError(
            f"maas_image: no verified copy of {f.path} ({entry.name})",
            remedy="the enclave lost a file a delta relies on: ask for a full export (bundle export --full)",
        )

    def _plan(self, stream: Entry, images: list[Entry], change: Change) -> _Plan:
        prefix = stream.metadata["path"]
        upstream = {f.path: self._source(stream, f, change) for f in stream.files}
        keyring = upstream.get(f"{prefix}/{KEYRING_NAME}")
        if keyring is None:
            raise PublishError(f"maas_image: stream {prefix} carries no {KEYRING_NAME}", remedy=_REEXPORT)
        fingerprints = list(stream.metadata.get("fingerprints", []))
        index_rel = f"{prefix}/{INDEX_PATH}"
        if index_rel not in upstream:
            raise PublishError(f"maas_image: stream {prefix} carries no {INDEX_PATH}", remedy=_REEXPORT)
        products: list[ProductsFile] = []
        with tempfile.TemporaryDirectory(prefix="gv.", dir="/tmp") as home:
            payload = self._verified(upstream, index_rel, keyring, fingerprints, Path(home))
            try:
                index = parse_index(payload, index_rel)
            except StreamError as exc:
                raise PublishError(f"maas_image: {exc}", remedy=_REEXPORT) from exc
            for ie in index.entries:
                rel = f"{prefix}/{ie.path}"
                if rel not in upstream:
                    raise PublishError(
                        f"maas_image: the signed index names {rel}, but the bundle lacks it", remedy=_REEXPORT
                    )
                payload = self._verified(upstream, rel, keyring, fingerprints, Path(home))
                try:
                    products.append(parse_products(payload, ie.path, ie.content_id, rel))
                except StreamError as exc:
                    raise PublishError(f"maas_image: {exc}", remedy=_REEXPORT) from exc
        items: dict[tuple[str, str], dict[str, Item]] = defaultdict(dict)
        for pf in products:
            for one in pf.items:
                items[(one.product, one.version)][one.path] = one
        held: set[Held] = set()
        held_products: dict[str, Mapping[str, str]] = {}
        for e in images:
            listed = items.get((e.metadata["product"], e.metadata["version"]))
            if listed is None:
                raise PublishError(
                    f"maas_image: {e.name} is not listed in the signed upstream products files it came with",
                    remedy=_REEXPORT,
                )
            for f in e.files:
                it: Item | None = listed.get(f.path[len(prefix) + 1 :]) if f.path.startswith(prefix + "/") else None
                if it is None or (it.sha256, it.size) != (f.sha256, f.size):
                    raise PublishError(
                        f"maas_image: {e.name}: {f.path} does not match the signed upstream products file "
                        "(path, sha256 or size)",
                        remedy=_REEXPORT,
                    )
                held.add((it.product, it.version, it.name))
                held_products.setdefault(it.product, it.flat)
        everything = {(i.product, i.version, i.name) for pf in products for i in pf.items}
        plan = _Plan(stream, prefix, upstream, images, held == everything, held_products)
        if plan.verbatim:
            for ie in index.entries:
                plan.metadata.append((f"{prefix}/{ie.path}", upstream[f"{prefix}/{ie.path}"].read_bytes(), None))
            plan.metadata.append((index_rel, upstream[index_rel].read_bytes(), None))
        else:
            self._regenerate(plan, index, products, held)
        return plan

    def _verified(self, upstream: Mapping[str, Path], rel: str, keyring: Path, pins: list[str], home: Path) -> bytes:
        src = upstream[rel]
        what = f"maas_image: {rel}"
        problem = clearsigned_problem(src.read_bytes())
        if problem:
            raise UpstreamSignatureError(f"{what} is not a clearsigned file: {problem}", remedy=_REEXPORT)
        out = home / "payload"
        result = gpgv(keyring, src, output=out, homedir=home / "h")
        try:
            accept(result, pins, "maas_image", rel)
        except UpstreamSignatureError as exc:
            raise UpstreamSignatureError(
                f"{what} fails its upstream signature check in the enclave: {exc.message}",
                remedy="the carried file was altered after it was verified on the connected side; " + _REEXPORT,
            ) from exc
        return out.read_bytes()

    def _regenerate(self, plan: _Plan, index: Index, products: list[ProductsFile], held: set[Held]) -> None:
        docs: dict[str, dict[str, Any]] = {}
        for pf in products:
            doc = build_products(pf, held)
            if doc is not None:
                docs[pf.path] = doc
        idx = build_index(index, docs)
        problems = maas_problems(idx, docs)
        if problems:
            raise PublishError(
                f"maas_image: the regenerated stream {plan.prefix} would lack fields MAAS requires: "
                + "; ".join(problems[:5]),
                remedy="the upstream stream lacks them too; report it, or carry the whole stream (no filters)",
            )
        for rel, doc in [*sorted(docs.items()), (INDEX_PATH, idx)]:
            dest = f"{plan.prefix}/{rel}"
            plan.metadata.append((dest, self._unchanged(dest, doc), doc))

    def _unchanged(self, dest: str, doc: Mapping[str, Any]) -> bytes | None:
        """The published file at ``dest`` when it already holds ``doc`` (no need to sign again)."""
        p = self.root / dest
        try:
            data = p.read_bytes()
            payload = signed_payload(data)
            if payload is not None and json.loads(payload) == doc:
                return data
        except (OSError, ValueError):
            pass
        return None

    def _sign(self, plans: list[_Plan]) -> None:
        todo = [(p, i) for p in plans for i, (_d, data, _doc) in enumerate(p.metadata) if data is None]
        if not todo:
            return
        docs = []
        for p, i in todo:
            doc = p.metadata[i][2]
            assert doc is not None
            docs.append(dumps(doc))
        signed = clearsign_many(self.ctx.enclave, docs)
        for (p, i), data in zip(todo, signed, strict=True):
            dest, _old, doc = p.metadata[i]
            p.metadata[i] = (dest, data, doc)

    # -- 3. write ------------------------------------------------------------------------

    def _write(self, plans: list[_Plan], change: Change, txn: Transaction, enclave_key: bytes) -> None:
        before = {(f.path, f.sha256) for e in _role(change.previous, "image") for f in e.files}
        elsewhere = {
            f.sha256: p
            for e in _role(change.previous, "image")
            for f in e.files
            if (p := self.locate(e, f)) is not None
        }
        done: set[str] = set()
        for plan in plans:
            for e in plan.images:
                for f in e.files:
                    if f.path in done:
                        continue
                    done.add(f.path)
                    dest = resolve_inside(self.root, f.path, what=f"maas_image/{e.name}")
                    if (f.path, f.sha256) in before and dest.is_file() and dest.stat().st_size == f.size:
                        continue
                    src = change.staged.get(f.sha256) or elsewhere.get(f.sha256)
                    if src is None:
                        raise PublishError(
                            f"maas_image: no verified copy of {f.path} ({e.name}) was staged",
                            remedy="ask for a full export (bundle export --full); nothing was published",
                        )
                    txn.put_file(src, dest, f.sha256)
        for plan in plans:
            for rel, src in sorted(plan.upstream.items()):
                txn.put_file(src, resolve_inside(self.upstream, rel, what="maas_image"))
            keyring = enclave_key + plan.upstream[f"{plan.prefix}/{KEYRING_NAME}"].read_bytes()
            txn.put_bytes(keyring, resolve_inside(self.root, f"{plan.prefix}/{MIRROR_KEYRING}", what="maas_image"))
        for plan in plans:  # products files of every stream, then every index
            for rel, data, _doc in plan.metadata[:-1]:
                assert data is not None
                txn.put_bytes(data, resolve_inside(self.root, rel, what="maas_image"))
        for plan in plans:
            rel, data, _doc = plan.metadata[-1]
            assert data is not None
            txn.put_bytes(data, resolve_inside(self.root, rel, what="maas_image"))

    # -- 4. prune ------------------------------------------------------------------------

    def _prune(self, plans: list[_Plan], change: Change) -> int:
        doomed = [self.root / rel for rel in stale_paths(change.previous, change.entries)]
        published = {rel for p in plans for rel, _data, _doc in p.metadata}
        carried = {f.path for e in _role(change.entries, "stream") for f in e.files}
        live = {p.prefix for p in plans}
        for s in _role(change.previous, "stream"):
            for f in s.files:
                if f.path.endswith(".sjson") and f.path not in published:
                    doomed.append(self.root / f.path)
                if f.path not in carried:
                    doomed.append(self.upstream / f.path)
            if s.metadata.get("path") not in live:
                doomed.append(self.root / s.metadata["path"] / MIRROR_KEYRING)
        n = 0
        for p in doomed:
            if p.is_file() or p.is_symlink():
                p.unlink()
                n += 1
                prune_empty(p.parent, self.root)
        return n


def _describe(e: Entry) -> str:
    return f"{e.metadata.get('product')} {e.version} ({e.metadata.get('stream')})"
