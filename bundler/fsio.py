"""File-system helpers shared by the format layer and the kinds' targets."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from bundler.errors import PreflightError


def fsync_dir(path: Path) -> None:
    """Make the renames and unlinks inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def require_writable(root: Path, what: str) -> None:
    """Raise PreflightError unless ``root``, or the nearest parent that exists, is writable
    (a target creates its tree on first publish)."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise PreflightError(f"{what}: {probe} is not writable", remedy="run the import as the owner of the enclave")


def prune_empty(d: Path, root: Path) -> None:
    """Remove ``d`` and its parents while they are empty, up to (not including) ``root``."""
    root = root.resolve()
    d = d.resolve()
    while d != root and d.is_relative_to(root):
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


#: The C library the interpreter is linked with (no ldconfig lookup at import).
_libc = ctypes.CDLL(None, use_errno=True)


def sync_filesystem(path: Path) -> None:
    """syncfs(2) on the file system holding ``path`` (only it, unlike sync(2)); sync(2) where
    syncfs is unavailable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = getattr(_libc, "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
