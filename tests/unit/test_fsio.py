"""BackgroundSync: chunk data goes to the media while more is compressed, not all at the end.
DirectWriter: chunk data goes to the file system around the page cache, and falls back cleanly."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from bundler import fsio


def test_background_sync_runs_once_enough_was_written_and_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    synced = threading.Event()

    def record(path: Path) -> None:  # stands in for syncfs(2) so that the calls can be counted
        calls.append(path)
        synced.set()

    monkeypatch.setattr(fsio, "sync_filesystem", record)
    with fsio.BackgroundSync(tmp_path, every=1000) as bg:
        bg.wrote(600)
        time.sleep(0.2)
        assert calls == []  # below the threshold: nothing yet
        bg.wrote(600)
        assert synced.wait(5), "no sync after 1200 bytes with a threshold of 1000"
    assert calls == [tmp_path]
    assert not any(t.name == "writeback" for t in threading.enumerate())


@pytest.mark.parametrize(
    ("size", "buffered"),
    [
        (0, 0),  # empty
        (1000, 1000),  # under DIRECT_MIN: through the page cache
        (fsio.DIRECT_MIN, 0),  # whole blocks: all direct
        (fsio.DIRECT_MIN * 3 + 123, 123),  # direct head, buffered tail
    ],
)
def test_direct_writer_writes_exact_bytes_and_reports_what_went_through_the_page_cache(
    tmp_path: Path, size: int, buffered: int
) -> None:
    data = os.urandom(size)
    writer = fsio.DirectWriter(fsio.DIRECT_MIN * 4)
    dest = tmp_path / "chunk"
    dest.write_bytes(b"old content that must go" * 10_000)  # truncated, not overwritten in place
    assert writer.write_new(dest, data) == buffered
    assert dest.read_bytes() == data
    assert dest.stat().st_mode & 0o777 == 0o644 & ~_umask()
    assert writer.direct, "the test file system (ext4 or tmpfs >= 6.6) should take O_DIRECT"


def test_direct_writer_falls_back_where_the_file_system_refuses_o_direct(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refusing_open(path: str, flags: int, *args: int) -> int:  # like tmpfs before Linux 6.6
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    writer = fsio.DirectWriter(1 << 20)
    data = os.urandom(300_000)
    assert writer.write_new(tmp_path / "a", data) == len(data)
    assert (tmp_path / "a").read_bytes() == data
    assert not writer.direct  # learnt once: no further attempts
    assert writer.write_new(tmp_path / "b", data) == len(data)
    assert (tmp_path / "b").read_bytes() == data


def test_direct_writer_rewrites_buffered_when_the_device_refuses_the_alignment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    refused: list[int] = []

    def picky_write(fd: int, data: memoryview) -> int:  # a device with blocks larger than 4 KiB
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", picky_write)
    writer = fsio.DirectWriter(1 << 20)
    data = os.urandom(200_000)
    assert writer.write_new(tmp_path / "c", data) == len(data)
    assert (tmp_path / "c").read_bytes() == data
    assert refused == [200_000 - 200_000 % fsio.DIRECT_ALIGN]
    assert not writer.direct


def test_direct_writer_passes_other_errors_on(tmp_path: Path) -> None:
    writer = fsio.DirectWriter(1 << 20)
    with pytest.raises(FileNotFoundError):
        writer.write_new(tmp_path / "no" / "such" / "dir", os.urandom(100_000))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
