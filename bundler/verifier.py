"""``bundle verify`` and ``bundle inspect``: read-only checks and descriptions of a bundle."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bundler.errors import DigestError, MissingChunkError
from bundler.events import NullReporter, Reporter
from bundler.format.chunks import chunk_present, open_chunk, stream_chunk
from bundler.format.manifest import file_offsets
from bundler.format.signing import load_trust
from bundler.format.state import StateStore
from bundler.kinds import require_known
from bundler.media import OpenedBundle, open_bundle
from bundler.model import FileRecord

_WORKERS = 2


@dataclass(frozen=True)
class VerifyResult:
    series: str
    sequence: int
    digest: str
    signer: str
    volumes_checked: tuple[int, ...]
    volumes_missing: tuple[int, ...]
    chunks_checked: int
    files_checked: int
    files_partial: int  # files whose chunks span volumes that were not given
    bytes_checked: int
    expired: bool
    warnings: tuple[str, ...]
    seconds: float


def verify_bundle(
    paths: list[Path], keys: Path, *, now: datetime, enclave: Path | None = None, reporter: Reporter | None = None
) -> VerifyResult:
    """Signature, every chunk digest on the given volumes, every file digest those volumes complete.

    Writes nothing. With ``enclave``, the series rules are checked against its state too.
    """
    rep = reporter or NullReporter()
    started = time.monotonic()
    trust = load_trust(keys)
    series_state = StateStore(enclave / "state").series() if enclave else None
    bundle = open_bundle(paths, trust, now=now, enclave=series_state, allow_expired=True)
    for w in bundle.warnings:
        rep.warn(w)
    m = bundle.manifest
    require_known(e.kind for e in m.entries)
    chunks = m.chunk_map()
    have = bundle.numbers()
    safe_dirs: set[str] = set()  # directories on the media already checked not to be symlinks
    for vol in bundle.volumes:
        for n in sorted(vol.numbers):
            for rec in m.chunks_on(n):
                if not chunk_present(vol.path, rec, safe_dirs):
                    raise MissingChunkError(
                        f"chunk {rec.id} of volume {n} is missing from {vol.path}",
                        remedy="copy this volume again from the export host",
                    )
    files: dict[str, FileRecord] = {}
    for _e, f in m.carried_files():
        files.setdefault(f.sha256, f)
    complete = [f for f in files.values() if all(chunks[c].volume in have for c in f.chunks or ())]
    partial = [f for f in files.values() if f not in complete]
    covered = {c for f in complete for c in f.chunks or ()}
    loose = [c for c in m.chunks if c.volume in have and c.id not in covered]
    total = sum(chunks[c].size for f in complete for c in set(f.chunks or ())) + sum(c.size for c in loose)

    with rep.task("verify", total) as advance:

        def check_file(f: FileRecord) -> int:
            h = hashlib.sha256()
            for rec, _off in file_offsets(chunks, f):
                vol = bundle.where(rec.id)
                assert vol is not None
                fh = open_chunk(vol.path, rec, safe_dirs)
                assert fh is not None
                with fh:
                    stream_chunk(fh, rec, where=f"volume {rec.volume}, {vol.path}", sink=h.update)
                advance(rec.size)
            if h.hexdigest() != f.sha256:
                raise DigestError(
                    f"file {f.path} rebuilt from its chunks has sha256 {h.hexdigest()}, expected {f.sha256}",
                    remedy="the bundle is inconsistent although its chunks verify: export it again",
                )
            return f.size

        def check_loose(rec_id: str) -> int:
            rec = chunks[rec_id]
            vol = bundle.where(rec.id)
            assert vol is not None
            fh = open_chunk(vol.path, rec, safe_dirs)
            assert fh is not None
            with fh:
                stream_chunk(fh, rec, where=f"volume {rec.volume}, {vol.path}", sink=lambda b: None)
            advance(rec.size)
            return rec.raw_size

        with ThreadPoolExecutor(_WORKERS) as pool:
            done = list(pool.map(check_file, complete)) + list(pool.map(check_loose, [c.id for c in loose]))
    return VerifyResult(
        series=m.series,
        sequence=m.sequence,
        digest=bundle.verdict.digest,
        signer=bundle.verdict.signer.keyid,
        volumes_checked=tuple(sorted(have)),
        volumes_missing=tuple(sorted(set(range(1, m.volumes + 1)) - have)),
        chunks_checked=len({c for f in complete for c in f.chunks or ()}) + len(loose),
        files_checked=len(complete),
        files_partial=len(partial),
        bytes_checked=sum(done),
        expired=bundle.verdict.expired,
        warnings=bundle.warnings,
        seconds=time.monotonic() - started,
    )


def describe(bundle: OpenedBundle) -> dict[str, Any]:
    """What ``bundle inspect`` shows: everything an operator needs before carrying media in."""
    m = bundle.manifest
    kinds: dict[str, dict[str, int]] = {}
    for e in m.entries:
        k = kinds.setdefault(e.kind, {"entries": 0, "files": 0, "files_carried": 0, "bytes": 0, "bytes_carried": 0})
        k["entries"] += 1
        for f in e.files:
            k["files"] += 1
            k["bytes"] += f.size
            if f.carried:
                k["files_carried"] += 1
                k["bytes_carried"] += f.size
    return {
        "series": m.series,
        "sequence": m.sequence,
        "base": None if m.base is None else {"sequence": m.base.sequence, "digest": m.base.digest},
        "digest": bundle.verdict.digest,
        "signer": bundle.verdict.signer.keyid,
        "signer_file": str(bundle.verdict.signer.source) if bundle.verdict.signer.source else None,
        "created": m.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires": None if m.expires is None else m.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expired": bundle.verdict.expired,
        "generator": m.generator,
        "volumes": m.volumes,
        "volumes_here": sorted(bundle.numbers()),
        "chunk_size": m.chunk_size,
        "chunks": len(m.chunks),
        "stored_bytes": m.payload_size(),
        "kinds": kinds,
        "entries": [
            {
                "kind": e.kind,
                "name": e.name,
                "version": e.version,
                "arch": e.arch,
                "files": len(e.files),
                "bytes": sum(f.size for f in e.files),
                "carried": sum(1 for f in e.files if f.carried),
            }
            for e in m.entries
        ],
    }


def inspect_bundle(paths: list[Path], keys: Path, *, now: datetime) -> dict[str, Any]:
    bundle = open_bundle(paths, load_trust(keys), now=now)
    out = describe(bundle)
    out["warnings"] = list(bundle.warnings)
    return out
