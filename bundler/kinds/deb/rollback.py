"""All-or-nothing changes to a reprepro repository.

reprepro changes several things in place while it works: the Berkeley DB files under
``db/`` (modified in place), the exported indexes under ``dists/``, and new files under
``pool/``. An import that fails after one of its reprepro calls succeeded (a second
pocket refused, a carried package found missing afterwards) must not leave that half
done. :class:`RepoSnapshot` therefore:

* before anything changes, copies ``conf/``, ``db/`` and ``dists/`` (real copies: the
  DB files are rewritten in place, so hard links would change with them) and records
  every path under ``pool/`` and every top-level name of the repository;
* on failure, puts the three copies back and deletes whatever appeared in ``pool/`` (or
  at the top level) since; files that were there are never deleted meanwhile, because
  every reprepro call of an import runs with ``--keepunreferencedfiles`` and the
  unreferenced files are only deleted after the snapshot is dropped;
* writes a ``COMPLETE`` marker last, so that an import killed half-way is rolled back by
  :meth:`recover` at the start of the next one (a snapshot without the marker was taken
  before anything changed and is simply dropped).

The result: after a failed import the repository is byte-identical to what it was.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bundler.fsio import fsync_dir

SAVED = ("conf", "db", "dists")
_MARKER = "COMPLETE"
_LISTING = "paths.json"


@dataclass(frozen=True)
class RepoSnapshot:
    repo: Path
    """The reprepro base directory."""
    store: Path
    """Where the copies live while an import runs (outside ``repo``)."""

    def take(self) -> None:
        """Copy the mutable state of the repository; mark the copy complete last."""
        shutil.rmtree(self.store, ignore_errors=True)
        self.store.mkdir(parents=True)
        existed = self.repo.is_dir()
        for name in SAVED:
            src = self.repo / name
            if src.is_dir():
                shutil.copytree(src, self.store / name, symlinks=True)
        paths = {
            "repo_existed": existed,
            "top": sorted(p.name for p in self.repo.iterdir()) if existed else [],
            "pool": sorted(_walk(self.repo / "pool")),
        }
        (self.store / _LISTING).write_text(json.dumps(paths))
        _fsync_tree(self.store)
        marker = self.store / _MARKER
        marker.write_text("")
        fsync_dir(self.store)

    def complete(self) -> bool:
        return (self.store / _MARKER).is_file()

    def restore(self) -> None:
        """Put the repository back exactly as it was when :meth:`take` ran."""
        info = json.loads((self.store / _LISTING).read_text())
        if not info["repo_existed"]:
            shutil.rmtree(self.repo, ignore_errors=True)
            return
        for name in SAVED:
            live, saved = self.repo / name, self.store / name
            if live.is_symlink() or live.is_file():
                live.unlink()
            shutil.rmtree(live, ignore_errors=True)
            if saved.is_dir():
                shutil.copytree(saved, live, symlinks=True)
        before_pool = set(info["pool"])
        pool = self.repo / "pool"
        # Deepest first, so that new directories are empty by the time they are removed.
        for rel in sorted(_walk(pool) - before_pool, key=lambda r: r.count("/"), reverse=True):
            p = pool / rel
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        if "pool" not in info["top"] and pool.is_dir() and not any(pool.iterdir()):
            pool.rmdir()
        for p in self.repo.iterdir():
            if p.name not in info["top"]:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()

    def drop(self) -> None:
        """Forget the snapshot (the import succeeded, or the repository was restored)."""
        marker = self.store / _MARKER
        marker.unlink(missing_ok=True)
        shutil.rmtree(self.store, ignore_errors=True)

    def recover(self) -> bool:
        """Roll back an import that was interrupted; True if there was one to roll back."""
        if not self.store.exists():
            return False
        rolled_back = self.complete()
        if rolled_back:
            self.restore()
        self.drop()
        return rolled_back


def _walk(root: Path) -> set[str]:
    out: set[str] = set()
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames + filenames:
            out.add((base / name).relative_to(root).as_posix())
    return out


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))
