"""Frozen dataclasses shared by every layer: what a kind declares, what a manifest records."""

from __future__ import annotations

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
    sha256: str
    size: int  # -1 when upstream does not say; the exporter measures it after download
    url: str | None = None
    local: Path | None = None


@dataclass(frozen=True)
class Declared:
    """One entry a source declares: verified against upstream, ready to fetch."""

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

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity across bundles: a newer bundle replaces the entry with the same key."""
        return (self.kind, self.name, self.arch)
