"""Enclave side of the ``files`` kind: a plain directory tree under ``<enclave>/files``.

Every file is put in place by an atomic rename (hard-linked from staging where the
filesystem allows, copied otherwise), so a reader sees the old or the new file, never
a partial one. Files that the new state no longer names are removed after the new
ones are in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bundler.errors import PublishError
from bundler.fsio import fsync_dir, install_file, prune_empty, require_writable
from bundler.kinds.base import Change, PublishReport, TargetContext
from bundler.model import Entry, FileRecord
from bundler.paths import resolve_inside


class FilesTarget:
    def __init__(self, ctx: TargetContext) -> None:
        self.ctx = ctx
        self.root = Path(ctx.options.get("files_root") or ctx.enclave / "files")

    def preflight(self, entries: Sequence[Entry]) -> None:
        require_writable(self.root, "files")
        for e in entries:
            for f in e.files:
                resolve_inside(self.root, f.path, what=f"files/{e.name}")

    def locate(self, entry: Entry, file: FileRecord) -> Path | None:
        p = resolve_inside(self.root, file.path, what=f"files/{entry.name}")
        return p if p.is_file() else None

    def publish(self, change: Change) -> PublishReport:
        self.root.mkdir(parents=True, exist_ok=True)
        previous = {(f.path, f.sha256) for e in change.previous for f in e.files}
        wanted: dict[str, FileRecord] = {}
        for e in change.entries:
            for f in e.files:
                wanted[f.path] = f
        unchanged = 0
        touched: set[Path] = set()
        install: list[tuple[Path, Path]] = []
        # Everything is checked before the first file moves: a refusal publishes nothing.
        for f in wanted.values():
            dest = resolve_inside(self.root, f.path, what="files")
            if (f.path, f.sha256) in previous and dest.is_file() and dest.stat().st_size == f.size:
                unchanged += 1
                continue
            src = change.staged.get(f.sha256)
            if src is None:
                raise PublishError(
                    f"files: {dest} is missing or was changed in the enclave, and this delta does not carry "
                    f"{f.path} (sha256 {f.sha256[:16]}) because the enclave should already have it",
                    remedy="restore the file from backup and re-run the import, or import a full export "
                    "('bundle export --full' on the connected side)",
                )
            install.append((src, dest))
        for src, dest in install:
            install_file(src, dest)
            touched.add(dest.parent)
        removed_paths = sorted({f.path for e in change.previous for f in e.files} - set(wanted))
        for rel in removed_paths:
            dest = resolve_inside(self.root, rel, what="files")
            dest.unlink(missing_ok=True)
            touched.add(dest.parent)
            prune_empty(dest.parent, self.root)
        for d in sorted(touched):  # the renames and unlinks survive a power cut once reported done
            if d.is_dir():
                fsync_dir(d)
        return PublishReport(
            kind="files",
            added=tuple(f"{e.name} {e.version}" for e in change.added()),
            removed=tuple(f"{e.name} {e.version}" for e in change.removed()),
            unchanged=len(change.entries) - len(change.added()),
            notes=(f"{len(wanted) - unchanged} file(s) written, {len(removed_paths)} removed, under {self.root}",),
        )
