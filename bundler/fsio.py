"""File-system helpers shared by the format layer and the kinds' targets."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import shutil
import threading
from pathlib import Path

from bundler.errors import PreflightError


def fsync_dir(path: Path) -> None:
    """Make the renames and unlinks inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link_or_copy(src: Path, dest: Path) -> None:
    """Make ``dest`` (a new name) hold ``src``'s content: a hard link where the file system allows
    it, else a copy, fsynced so that it survives a power cut like a link does."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
        with open(dest, "rb+") as fh:
            os.fsync(fh.fileno())


def install_file(src: Path, dest: Path) -> None:
    """Put ``src``'s content at ``dest`` (mode 0644) in one rename: readers see the old file or
    the new one, never a part."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.bundler-tmp")
    tmp.unlink(missing_ok=True)
    link_or_copy(src, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)


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


class BackgroundSync:
    """Writes dirty data of the file system holding ``path`` back while more is being written:
    a thread calls syncfs(2) each time ``every`` more bytes were reported through :meth:`wrote`,
    so that the final sync has little left to wait for (the media write overlaps the work that
    produces it). Errors surface in the final, blocking :func:`sync_filesystem`."""

    def __init__(self, path: Path, every: int) -> None:
        self._path = path
        self._every = every
        self._pending = 0
        self._cond = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="writeback", daemon=True)

    def __enter__(self) -> BackgroundSync:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._done = True
            self._cond.notify()
        self._thread.join()

    def wrote(self, n: int) -> None:
        with self._cond:
            self._pending += n
            if self._pending >= self._every:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._done and self._pending < self._every:
                    self._cond.wait()
                if self._done:
                    return
                self._pending = 0
            try:
                sync_filesystem(self._path)
            except OSError:
                return  # reported by the caller's own final sync


#: O_DIRECT wants the buffer address, the file offset and the length aligned to the device's
#: logical block size; 4096 covers every common device (512-byte sectors included).
DIRECT_ALIGN = 4096
#: Files smaller than this are written through the page cache: a synchronous device write per
#: small file would cost more than the copy it saves.
DIRECT_MIN = 64 * 1024


def goes_direct(size: int) -> bool:
    """Whether a :class:`DirectWriter` writes a file of ``size`` bytes around the page cache
    (where the file system allows it), so that the write waits for the device."""
    return size >= DIRECT_MIN


class DirectWriter:
    """Writes new files around the page cache (O_DIRECT), for data this host will not read again.

    A bundle's chunks go to removable media and are never read back by the exporter, so
    copying them into the page cache first costs CPU (measured: that copy was 24-27 % of an
    export's CPU on a 2-CPU VM) and evicts the operator's cached data for nothing. Each writer
    owns one page-aligned buffer of ``capacity`` bytes: the data is copied into it, the aligned
    head is written with O_DIRECT and the tail (under 4 KiB) through the page cache. Where the
    file system refuses O_DIRECT (EINVAL: tmpfs before Linux 6.6, some FUSE file systems), the
    writer falls back to ordinary writes for the rest of its life. vfat turns extending direct
    writes into buffered ones itself. Durability is unchanged: callers still sync at the end.
    Not thread-safe: one writer per thread.
    """

    def __init__(self, capacity: int) -> None:
        size = -(-max(capacity, 1) // DIRECT_ALIGN) * DIRECT_ALIGN
        self._map = mmap.mmap(-1, size)  # anonymous mappings are page-aligned
        self._buf = memoryview(self._map)
        self.direct = hasattr(os, "O_DIRECT")

    def write_new(self, path: Path | str, data: bytes) -> int:
        """Create ``path`` (mode 0644, truncated if it exists) holding ``data``; return how many
        of its bytes went through the page cache (what a later sync still has to write)."""
        n = len(data)
        if self.direct and goes_direct(n) and n <= len(self._buf):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.direct = False
            else:
                try:
                    return self._write_direct(fd, data)
                finally:
                    os.close(fd)
        write_new_file(path, data)
        return n

    def _write_direct(self, fd: int, data: bytes) -> int:
        n = len(data)
        head = n - n % DIRECT_ALIGN
        self._buf[:n] = data
        try:
            _write_all(fd, self._buf[:head])
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # the device wants a larger alignment: stop trying
                raise
            self.direct = False
            head = 0
            os.ftruncate(fd, 0)
        # The tail is not a whole block: write it (or, after a refusal, everything) buffered.
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        os.lseek(fd, head, os.SEEK_SET)
        _write_all(fd, self._buf[head:n])
        return n - head


def _write_all(fd: int, view: memoryview | bytes) -> None:
    view = memoryview(view)
    while view:
        view = view[os.write(fd, view) :]


def write_new_file(path: Path | str, data: bytes) -> None:
    """Create ``path`` (mode 0644, truncated if it exists) holding ``data``, through the page cache."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
