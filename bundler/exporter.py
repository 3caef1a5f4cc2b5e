"""The export pipeline: carry spec -> declare -> plan -> fetch -> chunks -> manifest -> sign -> record."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from bundler import __version__
from bundler.errors import SpecError, UsageError
from bundler.events import NullReporter, Reporter
from bundler.fetch import Fetcher, Want
from bundler.format.chunks import MIN_SEGMENT, FileToStore, VolumeSet, longest_segment, write_many
from bundler.format.layout import (
    DEFAULT_CHUNK_SIZE,
    FAT32_MAX_FILE,
    MANIFEST_MAX_BYTES,
    MANIFEST_NAME,
    MIN_CHUNK_SIZE,
    SIGNATURE_NAME,
    VOLUME_NAME,
)
from bundler.format.manifest import SCHEMA_VERSION, BaseRef, Manifest, canonical_json, manifest_digest
from bundler.format.signing import load_signing_key, sign
from bundler.format.state import StateStore, atomic_write
from bundler.fsio import sync_filesystem
from bundler.kinds import REGISTRY
from bundler.kinds.base import SourceContext
from bundler.model import Artifact, Declared, Entry, FileRecord, content_version
from bundler.plan import carry_plan
from bundler.spec import load_spec

#: Bytes per chunk that the manifest needs (chunk record + id in a file's list), generously.
_MANIFEST_BYTES_PER_CHUNK = 320
_VOLUME_SLACK = 256 * 1024
#: What a chunk and a file record cost manifest.json at the least, as canonical_json lays them
#: out: a chunk record (id, size, raw_size, volume) plus its id in a file's chunk list, 206
#: bytes with one-digit sizes; a file record (path, sha256, size, chunk list) 152 bytes plus its
#: path. On the bench corpus (3,350 files, 4,208 chunks) the floor is 5 % under the real size.
_MANIFEST_FLOOR_PER_CHUNK = 200
_MANIFEST_FLOOR_PER_FILE = 150


@dataclass(frozen=True)
class ExportOptions:
    spec: Path
    out: Path
    key: Path
    state_dir: Path
    cache_dir: Path
    now: datetime
    volume_size: int | None = None
    chunk_size: int | None = None
    full: bool = False


@dataclass(frozen=True)
class ExportResult:
    series: str
    sequence: int
    base: BaseRef | None
    digest: str
    signer: str
    volumes: tuple[Path, ...]
    entries: int
    files: int
    files_carried: int
    raw_bytes: int
    stored_bytes: int
    chunks: int
    expires: datetime | None
    seconds: float


def export_bundle(opts: ExportOptions, reporter: Reporter | None = None) -> ExportResult:
    rep = reporter or NullReporter()
    started = time.monotonic()
    spec = load_spec(opts.spec)
    key = load_signing_key(opts.key)  # fail before any download if the key is unusable
    chunk_size = opts.chunk_size or spec.chunk_size or DEFAULT_CHUNK_SIZE
    if not MIN_CHUNK_SIZE <= chunk_size <= FAT32_MAX_FILE:
        raise UsageError(
            f"chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..{FAT32_MAX_FILE}",
            remedy="pieces above 4 GiB - 1 do not fit on FAT32 media",
        )
    _check_out(opts.out)
    ledger = StateStore(opts.state_dir)
    with ledger.lock():
        last = ledger.get(spec.series)
        base_manifest = None if (last is None or opts.full) else ledger.manifest(last.digest)
        work = opts.state_dir / "work"
        work.mkdir(parents=True, exist_ok=True)
        with Fetcher(opts.cache_dir, reporter=rep) as fetcher:
            ctx = SourceContext(
                fetcher=fetcher, spec_dir=spec.directory, work_dir=work, reporter=rep, hash_later=base_manifest is None
            )
            declared = _placeholders(_declare_all(spec.sections, ctx))
            plan = carry_plan(declared, base_manifest)
            wants = [Want(a.url or "", a.sha256, a.size if a.size >= 0 else None) for a in plan.to_fetch]
            fetched = fetcher.fetch_many(wants) if wants else {}
        local = {a.sha256: a.local for d in declared for a in d.artifacts if a.local is not None}
        local.update(fetched)
        # Sizes: measured for what is here; from the base for content that stays behind.
        sizes = {f.sha256: f.size for e in (base_manifest.entries if base_manifest else ()) for f in e.files}
        sizes.update({sha: p.stat().st_size for sha, p in local.items() if p is not None})

        _check_manifest_floor(declared, plan.carry, sizes, chunk_size)
        capacity = None
        if opts.volume_size is not None:
            capacity = opts.volume_size - _reserve(declared, plan.carry, sizes, chunk_size, opts.volume_size)
            if capacity < MIN_CHUNK_SIZE:
                raise UsageError(
                    f"--volume-size {opts.volume_size} leaves no room for chunks once the manifest fits",
                    remedy="use a larger --volume-size",
                )
        volumes = VolumeSet(opts.out, capacity)
        volumes.current_dir()
        recorded = False
        try:
            total = sum(sizes[s] for s in plan.carry)
            hashed = {a.sha256: a.hashed_as for d in declared for a in d.artifacts if a.hashed_as is not None}
            todo = []
            for name in plan.carry:
                path = local[name]
                assert path is not None
                sha = None if name.startswith(_PENDING) else name
                todo.append(FileToStore(key=name, src=path, sha256=sha, size=sizes[name], hashed_as=hashed.get(name)))
            with rep.task("compress", total) as advance:
                stored = write_many(todo, chunk_size=chunk_size, volumes=volumes, advance=advance)
            chunk_ids = {st.sha256: st.chunks for st in stored.values()}
            declared = _resolved(declared, {k: st.sha256 for k, st in stored.items() if k.startswith(_PENDING)})
            sizes.update({stored[k].sha256: n for k, n in sizes.items() if k.startswith(_PENDING)})
            # Chunks reach the media before the manifest that names them: a bundle whose
            # manifest is present is complete even if the host crashes right after. The sync
            # runs while the manifest is built, signed and recorded, none of which touches the media.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync") as syncer:
                synced = syncer.submit(sync_filesystem, opts.out)
                manifest = Manifest(
                    schema=SCHEMA_VERSION,
                    features=(),
                    series=spec.series,
                    sequence=(last.sequence + 1) if last else 1,
                    base=None if base_manifest is None or last is None else BaseRef(last.sequence, last.digest),
                    created=opts.now,
                    expires=(opts.now + timedelta(days=spec.expires_days)) if spec.expires_days else None,
                    generator=f"bundler {__version__}",
                    chunk_size=chunk_size,
                    volumes=volumes.index,
                    entries=tuple(_entry(d, sizes, chunk_ids) for d in declared),
                    chunks=tuple(volumes.records.values()),
                )
                data = manifest.to_bytes()
                Manifest.from_bytes(data)  # the exporter checks its own output with the importer's parser
                digest = manifest_digest(data)
                sig = sign(data, key)
                # The ledger records the bundle before any manifest reaches the media. Were it the
                # other way round, a crash in between would leave an importable bundle that the
                # ledger does not know, and the next export would reuse its sequence: a fork the
                # enclave must refuse, with no way forward. This way a crash leaves media without
                # a manifest (not importable) and a ledger one ahead, which the enclave answers
                # with a clear base mismatch that 'bundle export --full' resolves.
                ledger.record(data, manifest)
                recorded = True
                synced.result()
            for i, vdir in enumerate(volumes.dirs(), 1):
                vdir.mkdir(parents=True, exist_ok=True)
                info = canonical_json(
                    {
                        "bundle": digest,
                        "series": spec.series,
                        "sequence": manifest.sequence,
                        "volume": i,
                        "volumes": volumes.index,
                    }
                )
                for name, content in ((SIGNATURE_NAME, sig), (VOLUME_NAME, info), (MANIFEST_NAME, data)):
                    atomic_write(vdir / name, content)
                if opts.volume_size is not None:
                    used = sum(c.size for c in manifest.chunks_on(i)) + len(data) + len(sig) + len(info)
                    if used > opts.volume_size:
                        raise UsageError(
                            f"volume {i} would hold {used} bytes, over --volume-size {opts.volume_size}",
                            remedy="report this as a bug; use a larger --volume-size meanwhile",
                        )
        except BaseException:
            for vdir in volumes.dirs():
                shutil.rmtree(vdir, ignore_errors=True)
            if recorded:
                ledger.rewind(spec.series, last)
            raise
    return ExportResult(
        series=manifest.series,
        sequence=manifest.sequence,
        base=manifest.base,
        digest=digest,
        signer=key.keyid,
        volumes=tuple(volumes.dirs()),
        entries=len(manifest.entries),
        files=sum(len(e.files) for e in manifest.entries),
        files_carried=sum(1 for e in manifest.entries for f in e.files if f.carried),
        raw_bytes=sum(sizes[s] for s in plan.carry),
        stored_bytes=manifest.payload_size(),
        chunks=len(manifest.chunks),
        expires=manifest.expires,
        seconds=time.monotonic() - started,
    )


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists and is not empty", remedy="give a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)


def _declare_all(sections: Iterable[tuple[str, dict[str, object]]], ctx: SourceContext) -> list[Declared]:
    declared: list[Declared] = []
    keys: dict[tuple[str, str, str], Declared] = {}
    paths: dict[tuple[str, str], str] = {}
    for kind_name, section in sections:
        for d in REGISTRY[kind_name].declare(section, ctx):
            first = keys.get((d.kind, d.name, d.arch))
            if first is not None:
                if _same_thing(first, d):
                    continue  # e.g. snapd, needed by two [[snap]] sections: carried once, as first declared
                raise SpecError(f"{d.kind} entry {d.name!r} ({d.arch}) is named twice in the carry spec")
            keys[(d.kind, d.name, d.arch)] = d
            for a in d.artifacts:
                if paths.setdefault((d.kind, a.path), a.sha256) != a.sha256:
                    raise SpecError(f"{d.kind}: two different files want the same path {a.path!r}")
            declared.append(d)
    return declared


#: Stands in for a digest the exporter computes while compressing (never reaches a manifest).
_PENDING = "pending:"


def _placeholders(declared: list[Declared]) -> list[Declared]:
    """Give every local artifact declared without a digest a unique placeholder key."""
    n = 0

    def key(a: Artifact) -> Artifact:
        nonlocal n
        if a.sha256:
            return a
        if a.local is None:
            raise SpecError(f"{a.path}: an artifact without a sha256 must be a local file")
        n += 1
        return replace(a, sha256=f"{_PENDING}{n:056d}")  # as long as a digest: _reserve counts it

    return [replace(d, artifacts=tuple(key(a) for a in d.artifacts)) for d in declared]


def _resolved(declared: list[Declared], digests: dict[str, str]) -> list[Declared]:
    """Put the digests computed while compressing in place of their placeholders, and give
    entries declared with version "" their content version."""
    out = []
    for d in declared:
        arts = tuple(replace(a, sha256=digests[a.sha256]) if a.sha256 in digests else a for a in d.artifacts)
        version = d.version or content_version((a.path, a.sha256) for a in arts)
        out.append(replace(d, artifacts=arts, version=version))
    return out


def _same_thing(a: Declared, b: Declared) -> bool:
    """Two declarations of one entry that agree on version and every file (path, sha256)."""
    return a.version == b.version and [(x.path, x.sha256, x.url, x.local) for x in a.artifacts] == [
        (x.path, x.sha256, x.url, x.local) for x in b.artifacts
    ]


def _entry(d: Declared, sizes: dict[str, int], chunk_ids: dict[str, tuple[str, ...]]) -> Entry:
    files = tuple(
        FileRecord(path=a.path, sha256=a.sha256, size=_size(a, sizes), chunks=chunk_ids.get(a.sha256))
        for a in d.artifacts
    )
    return Entry(kind=d.kind, name=d.name, version=d.version, arch=d.arch, files=files, metadata=d.metadata)


def _size(a: Artifact, sizes: dict[str, int]) -> int:
    return a.size if a.size >= 0 else sizes[a.sha256]


def _manifest_floor(declared: list[Declared], carry: tuple[str, ...], sizes: dict[str, int], chunk_size: int) -> int:
    """A lower bound of manifest.json's size for this bundle, known before anything is compressed."""
    segment = longest_segment(chunk_size)  # a volume size only makes segments shorter
    chunks = sum(-(-sizes[s] // segment) for s in carry)
    return chunks * _MANIFEST_FLOOR_PER_CHUNK + sum(
        _MANIFEST_FLOOR_PER_FILE + len(a.path) for d in declared for a in d.artifacts
    )


def _check_manifest_floor(
    declared: list[Declared], carry: tuple[str, ...], sizes: dict[str, int], chunk_size: int
) -> None:
    """Refuse, before anything is compressed, a bundle whose manifest cannot stay under the
    cap that every importer enforces (FORMAT.md §9.1): otherwise the export would run for hours
    and fail at its end."""
    floor = _manifest_floor(declared, carry, sizes, chunk_size)
    if floor > MANIFEST_MAX_BYTES:
        files = sum(len(d.artifacts) for d in declared)
        raise UsageError(
            f"this bundle ({files} files) needs a manifest of at least {floor} bytes,"
            f" over the {MANIFEST_MAX_BYTES}-byte cap every importer enforces",
            remedy="split the carry spec into several series, or carry less per bundle"
            " (one bundle holds up to about 550 GiB of large files or 160,000 small ones)",
        )


def _reserve(
    declared: list[Declared], carry: tuple[str, ...], sizes: dict[str, int], chunk_size: int, volume_size: int
) -> int:
    """An upper bound of what manifest.json, manifest.sig and volume.json take on every volume."""
    draft = Manifest(
        schema=SCHEMA_VERSION,
        features=(),
        series="x" * 64,
        sequence=10**9,
        base=BaseRef(10**9 - 1, "0" * 64),
        created=datetime(2000, 1, 1).astimezone(),
        expires=None,
        generator=f"bundler {__version__}",
        chunk_size=chunk_size,
        volumes=10**6,
        entries=tuple(
            replace(_entry(d, sizes, {}), files=tuple(FileRecord(a.path, a.sha256, 10**15, None) for a in d.artifacts))
            for d in declared
        ),
        chunks=(),
    )
    total = sum(sizes[s] for s in carry)
    est_volumes = math.ceil(total / max(1, volume_size // 2)) + 1
    # Segments are at most this long (smaller than the writer's cap: the capacity is less than
    # half the volume size only where the export fails anyway); a split adds one per volume.
    cap = max(MIN_SEGMENT, longest_segment(chunk_size, volume_size // 2))
    est_chunks = sum(math.ceil(sizes[s] / cap) for s in carry) + est_volumes + len(carry)
    return len(draft.to_bytes()) + est_chunks * _MANIFEST_BYTES_PER_CHUNK + _VOLUME_SLACK
