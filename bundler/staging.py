"""The importer's staging area: files rebuilt from verified chunks, resumable across runs.

``<enclave>/staging/<manifest digest>/``
    ``files/<sha256>``   a carried file being rebuilt (sparse until all its chunks are in)
    ``done``             one chunk id per line, appended (and fsynced) in batches after the
                         batch's bytes reached the disk: a crash never marks a chunk done early
    ``verified``         sha256 of each staged file that matched its digest (appended likewise)

Staging is not published content: the targets take files from here only after the
whole bundle is staged and verified.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from bundler.fsio import sync_filesystem


class Staging:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = root / "files"

    def create(self) -> None:
        self.files.mkdir(parents=True, exist_ok=True)

    def exists(self) -> bool:
        return self.root.is_dir()

    def path(self, sha256: str) -> Path:
        return self.files / sha256

    def done(self) -> set[str]:
        try:
            lines = (self.root / "done").read_text().split()
        except FileNotFoundError:
            return set()
        return set(lines)

    def commit(self, done: list[str], verified: list[str]) -> None:
        """Record a batch: first every staged byte written so far reaches the disk (one syncfs
        of the staging file system), then the chunk ids and verified files, one write and one
        fsync per log. A crash before this leaves them unrecorded, never recorded early."""
        if not done and not verified:
            return
        sync_filesystem(self.root)
        if done:
            self._append("done", *done)
        if verified:
            self._append("verified", *verified)

    def _append(self, log: str, *lines: str) -> None:
        with open(self.root / log, "a") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())

    def verified_files(self) -> set[str]:
        try:
            return set((self.root / "verified").read_text().split())
        except FileNotFoundError:
            return set()

    def mark_file_verified(self, sha256: str) -> None:
        self._append("verified", sha256)

    def remove(self) -> None:
        """Drop this bundle's staging, and its series directory once that is empty."""
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.root.parent.rmdir()
