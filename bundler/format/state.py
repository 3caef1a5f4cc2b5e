"""Recorded state, written atomically: the exporter's ledger and the enclave's state.

Both are a :class:`StateStore`: per series the last sequence and manifest digest
(``series/<series>.json``) and a copy of every recorded manifest
(``manifests/<digest>.json``), so the next delta (exporter) or the next import
(enclave) knows exactly what the other side holds.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bundler.errors import StateCorruptError, StateLockedError
from bundler.format.layout import SERIES_RE
from bundler.format.manifest import Manifest, canonical_json, manifest_digest
from bundler.format.trust import SeriesState
from bundler.fsio import fsync_dir


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class StateStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _series_path(self, series: str) -> Path:
        if not SERIES_RE.fullmatch(series):
            raise StateCorruptError(f"invalid series name {series!r}")
        return self.root / "series" / f"{series}.json"

    def series(self) -> dict[str, SeriesState]:
        out: dict[str, SeriesState] = {}
        d = self.root / "series"
        if d.is_dir():
            for p in sorted(d.glob("*.json")):
                st = self.get(p.stem)
                if st is not None:
                    out[st.series] = st
        return out

    def get(self, series: str) -> SeriesState | None:
        path = self._series_path(series)
        try:
            obj = json.loads(path.read_bytes())
            return SeriesState(series=obj["series"], sequence=int(obj["sequence"]), digest=str(obj["digest"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise StateCorruptError(
                f"state file {path} is unreadable ({exc})",
                remedy="restore it from backup; never edit it by hand",
            ) from exc

    def manifest(self, digest: str) -> Manifest:
        path = self.root / "manifests" / f"{digest}.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise StateCorruptError(f"recorded manifest {path} is missing", remedy="restore it from backup") from exc
        if manifest_digest(data) != digest:
            raise StateCorruptError(
                f"recorded manifest {path} does not match its digest", remedy="restore it from backup"
            )
        return Manifest.from_bytes(data)

    def last_manifest(self, series: str) -> Manifest | None:
        st = self.get(series)
        return None if st is None else self.manifest(st.digest)

    def record(self, manifest_bytes: bytes, manifest: Manifest, **extra: object) -> SeriesState:
        """Record a manifest as the series' latest: the manifest copy first, the pointer last."""
        digest = manifest_digest(manifest_bytes)
        atomic_write(self.root / "manifests" / f"{digest}.json", manifest_bytes)
        state = SeriesState(series=manifest.series, sequence=manifest.sequence, digest=digest)
        doc = {"series": state.series, "sequence": state.sequence, "digest": digest, **extra}
        atomic_write(self._series_path(manifest.series), canonical_json(doc))
        return state

    def rewind(self, series: str, previous: SeriesState | None, **extra: object) -> None:
        """Point ``series`` back at ``previous`` (None: as if never recorded); used when an
        export fails after it reserved its sequence."""
        path = self._series_path(series)
        if previous is None:
            path.unlink(missing_ok=True)
            return
        doc = {"series": previous.series, "sequence": previous.sequence, "digest": previous.digest, **extra}
        atomic_write(path, canonical_json(doc))

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on this store for the length of one export or import."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StateLockedError(
                    f"another bundler process is using {self.root}",
                    remedy="wait for it to finish; if none is running, the lock is released automatically",
                ) from exc
            yield
        finally:
            os.close(fd)
