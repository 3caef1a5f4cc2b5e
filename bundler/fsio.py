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
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Start writing ``fd``'s dirty pages to the device now, without waiting for it
    (sync_file_range(2) SYNC_FILE_RANGE_WRITE; nothing where it is unavailable).

    The exporter calls this on every finished chunk, so that the media write runs alongside
    compression instead of all at the final syncfs; on slow media it also keeps dirty memory
    bounded, since a full device queue blocks the writer here. Durability still comes from
    the final :func:`sync_filesystem`."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


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
