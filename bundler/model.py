"""Frozen dataclasses shared by every layer: what a kind declares, what a manifest records."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Artifact:
    """One upstream file a kind declared: where it comes from and what it must be.

    ``path`` is where the file lands inside the kind's target tree (relative, POSIX).
    Exactly one of ``url`` and ``local`` says where the exporter reads it.
    """

    path: str
    #: "" only for a ``local`` file whose digest the exporter computes while compressing it
    #: (allowed when ``SourceContext.hash_later``: a full export, where nothing can be skipped).
    sha256: str
    size: int  # -1 when upstream does not say; the exporter measures it after download
    url: str | None = None
    local: Path | None = None
    #: For ``local`` files the source hashed in this run: the file's stat key (device, inode,
    #: size, mtime, ctime) when hashed. The exporter skips hashing it again while compressing
    #: if the key still matches (the importer checks every file's sha256 in any case).
    hashed_as: tuple[int, int, int, int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Declared:
    """One entry a source declares: verified against upstream, ready to fetch.

    ``version`` "" asks the exporter for the content version (:func:`content_version`) once
    every digest is known (see ``Artifact.sha256``).
    """

    kind: str
    name: str
    version: str
    arch: str
    artifacts: tuple[Artifact, ...]
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class FileRecord:
    """A file of an entry as the manifest records it.

    ``chunks`` is the ordered list of chunk ids that rebuild the file, or ``None``
    when this bundle does not carry it because its base already delivered the same
    content (same sha256) to the enclave.
    """

    path: str
    sha256: str
    size: int
    chunks: tuple[str, ...] | None

    @property
    def carried(self) -> bool:
        return self.chunks is not None


@dataclass(frozen=True)
class Entry:
    """A manifest entry: one named, versioned thing of one kind in the resulting state."""

    kind: str
    name: str
    version: str
    arch: str
    files: tuple[FileRecord, ...]
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    def same_content(self, other: Entry | None) -> bool:
        """Equal in everything but transport: two manifests that record the same entry with
        other chunk lists (or one carrying it, one not) describe the same published state."""
        if other is None:
            return False
        return (self.kind, self.name, self.version, self.arch, self.metadata, _content(self.files)) == (
            other.kind,
            other.name,
            other.version,
            other.arch,
            other.metadata,
            _content(other.files),
        )

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity across bundles: a newer bundle replaces the entry with the same key."""
        return (self.kind, self.name, self.arch)


def _content(files: tuple[FileRecord, ...]) -> tuple[tuple[str, str, int], ...]:
    return tuple((f.path, f.sha256, f.size) for f in files)


def content_version(files: Iterable[tuple[str, str]]) -> str:
    """A version derived from content: the first 16 hex digits of the sha256 over the sorted
    lines ``<path>\0<sha256>\n`` of an entry's files."""
    h = hashlib.sha256()
    for path, sha in sorted(files):
        h.update(f"{path}\0{sha}\n".encode())
    return h.hexdigest()[:16]
