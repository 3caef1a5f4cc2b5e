"""The plugin interface every content kind implements.

A kind is a :class:`Kind`: a name, a spec checker, a source (connected side) and a
target (enclave side). Kinds never import ``bundler.format`` or each other; the core
moves the bytes (download, hash, chunk, sign, verify, stage) once for every kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bundler.events import NullReporter, Reporter
from bundler.hashing import sha256_file
from bundler.model import Artifact, Declared, Entry, FileRecord

if TYPE_CHECKING:
    from bundler.fetch import Fetcher


@dataclass(frozen=True)
class SourceContext:
    """What a source may use: the shared downloader, where the spec lives, a scratch dir."""

    fetcher: Fetcher
    spec_dir: Path
    work_dir: Path
    reporter: Reporter = field(default_factory=NullReporter)
    #: True for a full export (no base, so nothing can stay behind): a source may declare a
    #: local file with sha256 "" (and its entry with version "") and let the exporter hash it
    #: while compressing it, instead of reading it twice.
    hash_later: bool = False


@dataclass(frozen=True)
class TargetContext:
    """What a target may use: the enclave root and target options from the command line."""

    enclave: Path
    options: Mapping[str, Any] = field(default_factory=dict)
    reporter: Reporter = field(default_factory=NullReporter)


@dataclass(frozen=True)
class Change:
    """What one import asks a target to make true.

    ``entries`` is the full resulting state of this kind; ``previous`` what the enclave
    held before. ``staged`` maps the sha256 of every file of a new or changed entry to a
    verified local copy (in the importer's staging area) that the target may hard-link,
    copy or read.
    """

    entries: tuple[Entry, ...]
    previous: tuple[Entry, ...]
    staged: Mapping[str, Path]

    def added(self) -> list[Entry]:
        before = {e.key: e for e in self.previous}
        return [e for e in self.entries if not e.same_content(before.get(e.key))]

    def removed(self) -> list[Entry]:
        now = {e.key for e in self.entries}
        return [e for e in self.previous if e.key not in now]


@dataclass(frozen=True)
class PublishReport:
    kind: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    unchanged: int = 0
    notes: tuple[str, ...] = ()


class Target(Protocol):
    def preflight(self, entries: Sequence[Entry]) -> None:
        """Raise unless the real service is there and usable and every one of ``entries`` (the
        resulting state of this kind) can be published where it belongs. Runs before anything is
        unpacked; changes nothing."""

    def locate(self, entry: Entry, file: FileRecord) -> Path | None:
        """Where the published copy of ``file`` lives, so a delta can reuse it (None if nowhere)."""

    def publish(self, change: Change) -> PublishReport:
        """Make ``change.entries`` the published state. Idempotent: twice equals once."""


def check_before_publish(target: Target, change: Change) -> None:
    """Run a target's optional ``check(change)``: the kind's own verification of the staged,
    verified files (upstream signatures, its own digests), which the importer runs for every
    kind before the first kind publishes, so one kind's refusal publishes nothing at all."""
    check = getattr(target, "check", None)
    if check is not None:
        check(change)


def local_artifact(path: str, local: Path) -> Artifact:
    """An artifact at ``path`` whose bytes are the local file ``local`` (hashed now)."""
    digest, size = sha256_file(local)
    return Artifact(path=path, sha256=digest, size=size, local=local)


def _imported_on_call(module: str, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def connected_side(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported on its first call. A kind's source (HTTP client, upstream
    parsers) is only needed on the connected host: ``bundle import`` and ``verify`` start
    without loading it."""
    return _imported_on_call(module, name)


def enclave_side(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported on its first call. A kind's target (reprepro, gpg, mirror
    code) is only needed in the enclave: ``bundle export`` and ``verify`` start without it."""
    return _imported_on_call(module, name)


@dataclass(frozen=True)
class Kind:
    name: str
    #: Validate one carry-spec section (a TOML table), returning it normalised; raise SpecError.
    check_section: Callable[[Mapping[str, Any], str], Mapping[str, Any]]
    #: Declare what exists upstream for one (checked) section, verified against upstream.
    declare: Callable[[Mapping[str, Any], SourceContext], Iterator[Declared]]
    #: Build the enclave-side target.
    target: Callable[[TargetContext], Target]
    #: One line for ``--help`` and docs.
    summary: str = ""
    #: Optional one-time enclave set-up (``bundle enclave init``; a target that needs it runs it
    #: itself on first publish, so an import never depends on it having been run): returns
    #: what the operator needs to know (key fingerprints, paths), as label -> value.
    init: Callable[[TargetContext], Mapping[str, str]] | None = None
