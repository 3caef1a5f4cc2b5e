"""All-or-nothing changes to the mirror tree: every write is an atomic rename that can be undone.

:class:`Transaction` puts files in place (hard link or copy into a scratch directory inside
the mirror root, then ``os.replace``), keeping a hard link to any file it replaces and
noting every directory it creates. :meth:`Transaction.rollback` undoes all of it in reverse
order, so after a failure the tree is byte-for-byte what it was; :meth:`Transaction.commit`
drops the backups.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from bundler.fsio import link_or_copy
from bundler.hashing import sha256_file

__all__ = ["Transaction", "same_content"]


def same_content(path: Path, data: bytes) -> bool:
    try:
        if path.stat().st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


class Transaction:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        # Left over by an import that was killed mid-way (no rollback ran): its files are
        # temporary copies and backups of files that are in place, never the only copy.
        shutil.rmtree(scratch, ignore_errors=True)
        self._done: list[tuple[Path, Path | None]] = []
        self._created: list[Path] = []
        self._n = 0
        self.written = 0

    def _mkdirs(self, d: Path) -> None:
        missing = []
        while not d.exists():
            missing.append(d)
            d = d.parent
        for m in reversed(missing):
            m.mkdir()
            self._created.append(m)

    def _tmp(self) -> Path:
        self._mkdirs(self.scratch)
        self._n += 1
        return self.scratch / f"t{self._n}"

    def put_file(self, src: Path, dest: Path, sha256: str | None = None) -> bool:
        """Place a copy of ``src`` at ``dest``; False (and nothing done) when ``dest`` already
        has that content (checked by ``sha256`` when given, else byte for byte)."""
        if dest.is_file() and not dest.is_symlink():
            if sha256 is not None:
                if dest.stat().st_size == src.stat().st_size and sha256_file(dest)[0] == sha256:
                    return False
            elif same_content(dest, src.read_bytes()):
                return False
        tmp = self._tmp()
        link_or_copy(src, tmp)
        self._swap(tmp, dest)
        return True

    def put_bytes(self, data: bytes, dest: Path) -> bool:
        if same_content(dest, data):
            return False
        tmp = self._tmp()
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self._swap(tmp, dest)
        return True

    def _swap(self, tmp: Path, dest: Path) -> None:
        os.chmod(tmp, 0o644)
        self._mkdirs(dest.parent)
        backup = None
        if dest.exists() or dest.is_symlink():
            self._n += 1
            backup = self.scratch / f"b{self._n}"
            os.link(dest, backup, follow_symlinks=False)
        os.replace(tmp, dest)
        self._done.append((dest, backup))
        self.written += 1

    def rollback(self) -> None:
        for dest, backup in reversed(self._done):
            if backup is not None:
                os.replace(backup, dest)
            else:
                dest.unlink(missing_ok=True)
        self._done.clear()
        shutil.rmtree(self.scratch, ignore_errors=True)
        for d in reversed(self._created):
            with contextlib.suppress(OSError):
                d.rmdir()
        self._created.clear()

    def commit(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self._done.clear()
        self._created.clear()
