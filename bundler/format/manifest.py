"""The manifest: dataclasses, canonical bytes, and strict parsing.

``manifest.json`` is the exact byte string that is signed. It is parsed only after
its signature verified (see ``trust.py``), and parsing checks every structural
rule in docs/FORMAT.md so that later code can rely on a well-formed manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from bundler.errors import UnsafeMediaError, UnsupportedFormatError
from bundler.format.layout import MANIFEST_MAX_BYTES, SERIES_RE, check_relpath, is_digest
from bundler.model import Entry, FileRecord

SCHEMA_VERSION = 1
#: Features this reader understands. A manifest that requires any other is refused.
KNOWN_FEATURES: frozenset[str] = frozenset()

_REMEDY_FORMAT = "upgrade bundler in the enclave to a version that reads this bundle, or re-export with this version"
_REMEDY_BROKEN = "the bundle is malformed or was tampered with: do not import it; export it again"


@dataclass(frozen=True)
class ChunkRecord:
    """One stored piece: a single zstd frame named by the sha256 of its stored bytes."""

    id: str
    size: int  # stored (compressed) bytes
    raw_size: int  # bytes after decompression
    volume: int  # 1-based volume that carries it


@dataclass(frozen=True)
class BaseRef:
    """The bundle a delta builds on."""

    sequence: int
    digest: str


@dataclass(frozen=True)
class Manifest:
    schema: int
    features: tuple[str, ...]
    series: str
    sequence: int
    base: BaseRef | None
    created: datetime
    expires: datetime | None
    generator: str
    chunk_size: int
    volumes: int
    entries: tuple[Entry, ...]
    chunks: tuple[ChunkRecord, ...]

    # -- derived views -------------------------------------------------------------

    def chunk_map(self) -> dict[str, ChunkRecord]:
        """Chunk id -> record; built once (callers look chunks up thousands of times)."""
        return self._chunk_index

    @cached_property
    def _chunk_index(self) -> dict[str, ChunkRecord]:
        return {c.id: c for c in self.chunks}

    def chunks_on(self, volume: int) -> list[ChunkRecord]:
        return self._by_volume.get(volume, [])

    @cached_property
    def _by_volume(self) -> dict[int, list[ChunkRecord]]:
        out: dict[int, list[ChunkRecord]] = {}
        for c in self.chunks:
            out.setdefault(c.volume, []).append(c)
        return out

    def carried_files(self) -> Iterator[tuple[Entry, FileRecord]]:
        for entry in self.entries:
            for f in entry.files:
                if f.carried:
                    yield entry, f

    def payload_size(self) -> int:
        return sum(c.size for c in self.chunks)

    # -- bytes -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "features": list(self.features),
            "series": self.series,
            "sequence": self.sequence,
            "base": None if self.base is None else {"sequence": self.base.sequence, "digest": self.base.digest},
            "created": _fmt_time(self.created),
            "expires": None if self.expires is None else _fmt_time(self.expires),
            "generator": self.generator,
            "chunk_size": self.chunk_size,
            "volumes": self.volumes,
            "entries": [_entry_to_dict(e) for e in self.entries],
            "chunks": [{"id": c.id, "size": c.size, "raw_size": c.raw_size, "volume": c.volume} for c in self.chunks],
        }

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        if len(data) > MANIFEST_MAX_BYTES:
            raise UnsafeMediaError(f"manifest is {len(data)} bytes, over the {MANIFEST_MAX_BYTES}-byte cap")
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UnsupportedFormatError(f"manifest is not valid JSON: {exc}", remedy=_REMEDY_BROKEN) from exc
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> Manifest:
        if not isinstance(obj, dict):
            raise UnsupportedFormatError("manifest is not a JSON object", remedy=_REMEDY_BROKEN)
        schema = obj.get("schema")
        if type(schema) is not int or schema != SCHEMA_VERSION:
            raise UnsupportedFormatError(
                f"manifest schema version {schema!r} is not supported (this bundler reads {SCHEMA_VERSION})",
                remedy=_REMEDY_FORMAT,
            )
        features = _get(obj, "features", list)
        unknown = sorted(str(f) for f in features if f not in KNOWN_FEATURES)
        if unknown:
            raise UnsupportedFormatError(
                f"manifest requires features this bundler does not know: {', '.join(unknown)}",
                remedy=_REMEDY_FORMAT,
            )
        series = _get(obj, "series", str)
        if not SERIES_RE.fullmatch(series):
            raise UnsupportedFormatError(f"invalid series name {series!r}", remedy=_REMEDY_BROKEN)
        sequence = _get_int(obj, "sequence", minimum=1)
        base_obj = obj.get("base")
        base: BaseRef | None = None
        if base_obj is not None:
            if not isinstance(base_obj, dict):
                raise UnsupportedFormatError("'base' must be an object or null", remedy=_REMEDY_BROKEN)
            base = BaseRef(_get_int(base_obj, "sequence", minimum=1), _get_digest(base_obj, "digest"))
            if base.sequence >= sequence:
                raise UnsupportedFormatError(
                    f"base sequence {base.sequence} is not older than sequence {sequence}", remedy=_REMEDY_BROKEN
                )
        created = _parse_time(_get(obj, "created", str), "created")
        expires_raw = obj.get("expires")
        expires = None if expires_raw is None else _parse_time(_get(obj, "expires", str), "expires")
        generator = _get(obj, "generator", str)
        chunk_size = _get_int(obj, "chunk_size", minimum=1)
        volumes = _get_int(obj, "volumes", minimum=1)

        chunks: list[ChunkRecord] = []
        seen_chunks: dict[str, ChunkRecord] = {}
        for raw in _get(obj, "chunks", list):
            if not isinstance(raw, dict):
                raise UnsupportedFormatError("a chunk record is not an object", remedy=_REMEDY_BROKEN)
            rec = ChunkRecord(
                id=_get_digest(raw, "id"),
                size=_get_int(raw, "size", minimum=1),
                raw_size=_get_int(raw, "raw_size", minimum=1),
                volume=_get_int(raw, "volume", minimum=1),
            )
            if rec.volume > volumes:
                raise UnsupportedFormatError(
                    f"chunk {rec.id} is placed on volume {rec.volume} of {volumes}", remedy=_REMEDY_BROKEN
                )
            if rec.size > chunk_size:
                raise UnsupportedFormatError(
                    f"chunk {rec.id} is {rec.size} bytes, over the bundle's chunk size {chunk_size}",
                    remedy=_REMEDY_BROKEN,
                )
            if rec.id in seen_chunks:
                raise UnsupportedFormatError(f"chunk {rec.id} is listed twice", remedy=_REMEDY_BROKEN)
            seen_chunks[rec.id] = rec
            chunks.append(rec)

        entries = [_entry_from_dict(e, seen_chunks) for e in _get(obj, "entries", list)]
        _check_entries(entries, seen_chunks)
        return cls(
            schema=schema,
            features=tuple(str(f) for f in features),
            series=series,
            sequence=sequence,
            base=base,
            created=created,
            expires=expires,
            generator=generator,
            chunk_size=chunk_size,
            volumes=volumes,
            entries=tuple(entries),
            chunks=tuple(chunks),
        )


def canonical_json(obj: Any) -> bytes:
    """The one serialisation used for every JSON file bundler signs or records."""
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode("ascii")


def manifest_digest(data: bytes) -> str:
    """The bundle's identity: sha256 of the exact manifest bytes."""
    return hashlib.sha256(data).hexdigest()


def file_offsets(manifest_chunks: dict[str, ChunkRecord], f: FileRecord) -> Iterator[tuple[ChunkRecord, int]]:
    """Each chunk of a carried file with the offset its raw bytes start at."""
    offset = 0
    for cid in f.chunks or ():
        rec = manifest_chunks[cid]
        yield rec, offset
        offset += rec.raw_size


# -- helpers ---------------------------------------------------------------------------------


def _fmt_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str, field: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UnsupportedFormatError(f"'{field}' is not an ISO 8601 time: {value!r}", remedy=_REMEDY_BROKEN) from exc
    if t.tzinfo is None:
        raise UnsupportedFormatError(f"'{field}' has no time zone: {value!r}", remedy=_REMEDY_BROKEN)
    return t.astimezone(UTC)


def _get(obj: dict[str, Any], key: str, typ: type) -> Any:
    value = obj.get(key)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise UnsupportedFormatError(
            f"manifest field {key!r} is missing or not a {typ.__name__}", remedy=_REMEDY_BROKEN
        )
    return value


def _get_int(obj: dict[str, Any], key: str, *, minimum: int) -> int:
    value: int = _get(obj, key, int)
    if value < minimum:
        raise UnsupportedFormatError(f"manifest field {key!r} is {value}, below {minimum}", remedy=_REMEDY_BROKEN)
    return value


def _get_digest(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not is_digest(value):
        raise UnsupportedFormatError(f"manifest field {key!r} is not a sha256 hex digest", remedy=_REMEDY_BROKEN)
    return str(value)


def _entry_to_dict(e: Entry) -> dict[str, Any]:
    files = []
    for f in e.files:
        d: dict[str, Any] = {"path": f.path, "sha256": f.sha256, "size": f.size}
        if f.chunks is not None:
            d["chunks"] = list(f.chunks)
        files.append(d)
    return {
        "kind": e.kind,
        "name": e.name,
        "version": e.version,
        "arch": e.arch,
        "metadata": e.metadata,
        "files": files,
    }


def _entry_from_dict(obj: Any, chunks: dict[str, ChunkRecord]) -> Entry:
    if not isinstance(obj, dict):
        raise UnsupportedFormatError("an entry is not an object", remedy=_REMEDY_BROKEN)
    kind = _get(obj, "kind", str)
    name = _get(obj, "name", str)
    label = f"entry {kind}/{name}"
    metadata = _get(obj, "metadata", dict)
    files: list[FileRecord] = []
    for raw in _get(obj, "files", list):
        if not isinstance(raw, dict):
            raise UnsupportedFormatError(f"{label}: a file record is not an object", remedy=_REMEDY_BROKEN)
        path = check_relpath(raw.get("path"), what=label)
        size = _get_int(raw, "size", minimum=0)
        chunk_ids: tuple[str, ...] | None = None
        if "chunks" in raw:
            ids = _get(raw, "chunks", list)
            for cid in ids:
                if not is_digest(cid) or cid not in chunks:
                    raise UnsupportedFormatError(
                        f"{label}: file {path} names chunk {cid!r} that the manifest does not list",
                        remedy=_REMEDY_BROKEN,
                    )
            chunk_ids = tuple(ids)
            raw_total = sum(chunks[c].raw_size for c in chunk_ids)
            if raw_total != size:
                raise UnsupportedFormatError(
                    f"{label}: file {path} is {size} bytes but its chunks hold {raw_total}",
                    remedy=_REMEDY_BROKEN,
                )
        files.append(FileRecord(path=path, sha256=_get_digest(raw, "sha256"), size=size, chunks=chunk_ids))
    return Entry(
        kind=kind,
        name=name,
        version=_get(obj, "version", str),
        arch=_get(obj, "arch", str),
        files=tuple(files),
        metadata=metadata,
    )


def _check_entries(entries: Iterable[Entry], chunks: dict[str, ChunkRecord]) -> None:
    keys: set[tuple[str, str, str]] = set()
    paths: dict[tuple[str, str], str] = {}
    contents: dict[str, FileRecord] = {}
    used: set[str] = set()
    for e in entries:
        if e.key in keys:
            raise UnsupportedFormatError(f"entry {e.kind}/{e.name} ({e.arch}) is listed twice", remedy=_REMEDY_BROKEN)
        keys.add(e.key)
        for f in e.files:
            previous = paths.setdefault((e.kind, f.path), f.sha256)
            if previous != f.sha256:
                raise UnsupportedFormatError(
                    f"{e.kind} path {f.path} is listed twice with different content", remedy=_REMEDY_BROKEN
                )
            same = contents.setdefault(f.sha256, f)
            if same.size != f.size or (same.carried and f.carried and same.chunks != f.chunks):
                raise UnsupportedFormatError(
                    f"{e.kind} file {f.path}: sha256 {f.sha256[:16]} is recorded elsewhere ({same.path}) with another "
                    "size or other chunks",
                    remedy=_REMEDY_BROKEN,
                )
            used.update(f.chunks or ())
    unused = sorted(set(chunks) - used)
    if unused:
        raise UnsupportedFormatError(
            f"manifest lists chunk {unused[0]} that no file uses ({len(unused)} in all)", remedy=_REMEDY_BROKEN
        )
