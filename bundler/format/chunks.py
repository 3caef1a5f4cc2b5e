"""Chunks: how a file becomes zstd pieces on volumes, and how pieces become a file again.

A carried file is cut into consecutive raw segments of at most 2 MiB. Each segment is
compressed into exactly one zstd frame (level 3, content size and XXH64 checksum in the
frame) and stored as ``chunks/<id[:2]>/<id>`` where ``id`` is the sha256 of the stored
bytes, so ``sha256sum`` alone can audit a volume. A segment is sized so that even
incompressible data (zstd's worst case) cannot exceed the chunk size cap or an empty
volume; a chunk that does not fit in the room left on a volume is split in two, so
volumes fill up to their size and a file may continue on the next volume.

Writing and reading are bounded: a few segment buffers to write, a few block buffers
(and, on import, a capped set of small verified chunks) to read, whatever the file size.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple, cast

import zstandard

from bundler.errors import DigestError, MissingChunkError, UnsafeMediaError, UpstreamDigestError, UsageError
from bundler.format.layout import CHUNKS_DIR, MIN_CHUNK_SIZE, chunk_relpath, volume_dir_name
from bundler.format.manifest import ChunkRecord
from bundler.fsio import BackgroundSync, DirectWriter, goes_direct, write_new_file
from bundler.hashing import StatKey, stat_key

ZSTD_LEVEL = 3
#: Compression threads: one per CPU, like `zstd -T0`.
WORKERS = os.cpu_count() or 1
#: Threads that write finished chunks. Direct writes (fsio.DirectWriter) wait for the device;
#: done by the compression threads, those waits left CPUs idle. Measured on 2 CPUs (2 GiB
#: corpus onto a journaled ext4, 6 interleaved rounds): writes in the compression threads
#: 4.61-5.15 s, two writer threads 4.05-4.49 s, tar|zstd -T0 4.30-4.57 s. One writer thread did
#: 4.23-4.73 s, three no better than two; four compression threads instead (no writers) cost
#: 1.2 CPU s more in user time, contending for two CPUs.
WRITERS = 2
#: The smallest segment a volume must be able to take whole (else: --volume-size is too small).
MIN_SEGMENT = 4096
#: The cluster size volumes are accounted in (see VolumeSet.cluster).
MEDIA_CLUSTER = 64 * 1024
#: zstd's worst case is input + input/256 + a small constant; keep a generous margin.
_FRAME_SLACK = 1024

Sink = Callable[[bytes], None]
Advance = Callable[[int], None]


def max_raw_for(stored_room: int) -> int:
    """The largest raw segment whose zstd frame is guaranteed to fit in ``stored_room`` bytes."""
    return max(0, (stored_room - _FRAME_SLACK) * 256 // 257)


def stored_bound(raw: int) -> int:
    """An upper bound of the stored size of a ``raw``-byte segment."""
    return raw + raw // 256 + _FRAME_SLACK


# --------------------------------------------------------------------------- writing


@dataclass
class VolumeSet:
    """Fills volume directories ``vol-001``, ``vol-002``... under ``out`` one after another.

    ``capacity`` is the room for chunks per volume (the volume size less what the
    manifest, signature and volume files need), or None for a single unbounded volume.
    """

    out: Path
    capacity: int | None
    index: int = 1
    used: int = MEDIA_CLUSTER  # the chunks/ directory itself
    records: dict[str, ChunkRecord] = field(default_factory=dict)
    #: Allocation unit assumed on the media: a file takes whole clusters and each directory at
    #: least one (FAT32 uses up to 32 KiB, exFAT on large sticks 128 KiB).
    cluster: int = MEDIA_CLUSTER
    _fanout: set[str] = field(default_factory=set)

    def room(self) -> int | None:
        """Bytes a new chunk may still take here, after its cluster rounding and a new fan-out dir."""
        if self.capacity is None:
            return None
        return max(0, self.capacity - self.used - 2 * self.cluster)

    def charge(self, chunk_id: str, stored: int) -> None:
        """Account a chunk placed on the current volume as the media will allocate it."""
        self.used += -(-stored // self.cluster) * self.cluster
        if chunk_id[:2] not in self._fanout:
            self._fanout.add(chunk_id[:2])
            self.used += self.cluster

    def current_dir(self) -> Path:
        d = self.out / volume_dir_name(self.index)
        (d / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
        return d

    def next_volume(self) -> None:
        self.index += 1
        self.used = self.cluster  # the chunks/ directory itself
        self._fanout = set()

    def dirs(self) -> list[Path]:
        return [self.out / volume_dir_name(i) for i in range(1, self.index + 1)]


@dataclass(frozen=True)
class Stored:
    sha256: str
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class FileToStore:
    """One file to store. ``key`` names it in the result; ``sha256`` is its declared digest,
    or None when the digest is computed while compressing (a full export's local files)."""

    key: str
    src: Path
    sha256: str | None
    size: int
    #: The file's stat key when its sha256 was computed in this run (see bundler.hashing):
    #: if it still matches, the bytes are not hashed a second time while being compressed.
    hashed_as: StatKey | None = None


#: Raw bytes per segment, so per chunk, unless the chunk size or the volume size asks for less.
#: A worker reads a whole segment into a buffer it reuses and compresses it in one call: zstd
#: then reads the input in place (no copy into its window, no slower "extDict" match finder,
#: measured at 14 % of an export's CPU when files were streamed), and segments of one file are
#: compressed in parallel like small files. 2 MiB is zstd level 3's window, so larger segments
#: compress no better (text: ratio 0.303 at 2 MiB, 0.304 at 8 MiB), and a segment stays in the
#: CPU caches between its read, its two hashes and its compression: one thread did 7 % more per
#: second than with 8 MiB. Measured on 2 CPUs (2 GiB corpus, interleaved rounds, direct writes):
#: 8 MiB 4.43-4.53 s, 2 MiB 4.16-4.39 s, 1 MiB 4.16-4.25 s; 2 MiB makes half as many chunk
#: files and manifest records as 1 MiB.
SEGMENT = 2 * 1024 * 1024
TMP_DIR = ".bundler-tmp"
#: How far ahead of the segment being placed the pool may work, in tasks (a segment, or a batch
#: of small files) and in raw bytes. Finished segments wait on disk (or already in place), not in
#: memory, so the window costs no RAM; a window of only ``2 * workers`` left a core idle behind
#: every large file among small ones.
WINDOW_SEGMENTS = 1024
WINDOW_BYTES = 1024 * 1024 * 1024
#: Chunk bytes written after which a background syncfs starts writing them to the media, so the
#: final sync does not wait for the whole bundle. Measured (2 CPUs, 2 GiB corpus, best of 3):
#: export 4.37 s with no background sync, 4.27 s every 128 MiB, 4.00-4.15 s every 16-32 MiB.
WRITEBACK_EVERY = 16 * 1024 * 1024


def _compressor() -> zstandard.ZstdCompressor:
    """The one frame format the writer produces (FORMAT.md §5.1): level 3, content size, XXH64."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, write_content_size=True)


def longest_segment(chunk_size: int, room: int | None = None) -> int:
    """The rule for how long a raw segment may be: :data:`SEGMENT`, less if its frame must fit
    ``chunk_size`` or ``room`` bytes (an empty volume's room for chunks)."""
    cap = min(SEGMENT, max_raw_for(chunk_size))
    return cap if room is None else min(cap, max_raw_for(room))


def segment_cap(chunk_size: int, volumes: VolumeSet) -> int:
    """The largest raw segment the writer cuts: its frame fits a chunk and an empty volume."""
    if volumes.capacity is None:
        return longest_segment(chunk_size)
    cap = longest_segment(chunk_size, volumes.capacity - 3 * volumes.cluster)
    if cap < MIN_SEGMENT:
        raise UsageError(
            f"--volume-size leaves only {max(0, volumes.capacity)} bytes per volume for chunks",
            remedy="use a larger --volume-size (a volume must hold the manifest and at least one chunk)",
        )
    return cap


class _Abandoned(Exception):
    """A segment's work stopped because an earlier segment of its file failed or the run ended."""


class _FileHash:
    """The sha256 of one file's raw bytes, fed segment by segment in file order by whichever
    worker read each segment (one condition variable for all files: waits are short)."""

    def __init__(self, f: FileToStore, lock: threading.Condition, stop: threading.Event) -> None:
        self.file = f
        # Hash unless this file was hashed earlier in this run and its stat key has not moved.
        self.unchanged = f.sha256 is not None and f.hashed_as is not None and _stat_key_of(f.src) == f.hashed_as
        self.hasher = hashlib.sha256()
        self.ids: list[str] = []
        self._next = 0
        self._broken_at: int | None = None  # offset of the first segment that failed
        self._lock = lock
        self._stop = stop

    def feed(self, offset: int, data: memoryview, *, wait: bool = True) -> bool:
        """Hash the segment at ``offset`` once the segments before it are hashed. With ``wait``
        False, return False at once if they are not (the caller does other work first)."""
        with self._lock:
            while self._next != offset:
                # A segment after a failed one never gets its turn; one before it still does.
                if (self._broken_at is not None and offset > self._broken_at) or self._stop.is_set():
                    raise _Abandoned
                if not wait:
                    return False
                self._lock.wait(0.5)
        if not self.unchanged:
            self.hasher.update(data)
        with self._lock:
            self._next = offset + len(data)
            self._lock.notify_all()
        return True

    def fail(self, offset: int) -> None:
        """The segment at ``offset`` failed: the segments after it give up (its error is the one
        reported, since the caller collects results in file order)."""
        with self._lock:
            self._broken_at = offset if self._broken_at is None else min(self._broken_at, offset)
            self._lock.notify_all()

    def digest(self) -> str:
        """The file's sha256, checked against the declared one."""
        f = self.file
        got = f.sha256 if self.unchanged and f.sha256 is not None else self.hasher.hexdigest()
        if f.sha256 is not None and got != f.sha256:
            raise UpstreamDigestError(
                f"{f.src} has sha256 {got}, but it was declared as {f.sha256}",
                remedy="the file changed after it was collected (or the download cache is damaged): "
                "delete it from the cache and export again",
            )
        return got


def _stat_key_of(path: Path) -> StatKey | None:
    try:
        return stat_key(os.stat(path))
    except OSError:
        return None


@dataclass(frozen=True)
class _Segment:
    index: int  # in the whole run: names the segment's temporary file
    file: _FileHash
    offset: int
    length: int
    last: bool


#: Whole files up to this size go to the pool in batches (up to BATCH_FILES files or BATCH_BYTES
#: raw bytes per task): per-task costs (a future, thread wake-ups: 15 % of the CPU samples in
#: context switches) were most of what a small file cost. Measured on 2 CPUs, 3,252 files of
#: 64 B-256 KiB (111 MiB), export's own seconds: 0.64-0.71 s one task per file, 0.57-0.67 s
#: with small chunks written by the worker itself, 0.49-0.51 s also batched. The 2 GiB corpus,
#: 6 interleaved rounds: median 4.13 s unbatched, 4.05 s batched, tar|zstd 4.27 s.
BATCH_FILE = 256 * 1024
BATCH_FILES = 32
BATCH_BYTES = 1024 * 1024


def _batches(segments: Iterator[_Segment]) -> Iterator[tuple[_Segment, ...]]:
    """Group consecutive whole small files into one task each; other segments go alone."""
    batch: list[_Segment] = []
    size = 0
    for seg in segments:
        small = seg.offset == 0 and seg.last and seg.length <= BATCH_FILE
        if batch and (not small or len(batch) == BATCH_FILES or size + seg.length > BATCH_BYTES):
            yield tuple(batch)
            batch, size = [], 0
        if small:
            batch.append(seg)
            size += seg.length
        else:
            yield (seg,)
    if batch:
        yield tuple(batch)


def _segments(
    files: list[FileToStore], cap: int, lock: threading.Condition, stop: threading.Event
) -> Iterator[_Segment]:
    index = 0
    for f in files:
        fh = _FileHash(f, lock, stop)
        offset = 0
        while True:
            n = min(cap, f.size - offset)
            yield _Segment(index, fh, offset, n, offset + n >= f.size)
            index += 1
            offset += n
            if offset >= f.size:
                break


def _changed(f: FileToStore, how: str) -> UpstreamDigestError:
    return UpstreamDigestError(f"{f.src} {how}", remedy="the file changed after it was collected: run the export again")


def _read_segment(seg: _Segment, view: memoryview) -> memoryview:
    """Read the segment's bytes into ``view`` and check the file's size on the way."""
    f = seg.file.file
    fd = os.open(f.src, os.O_RDONLY)
    try:
        if seg.file.unchanged and stat_key(os.fstat(fd)) != f.hashed_as:
            raise _changed(f, "changed while it was being exported")
        got = 0
        while got < seg.length:
            n = os.preadv(fd, [view[got : seg.length]], seg.offset + got)
            if n == 0:
                raise _changed(f, f"is shorter than the {f.size} bytes it was declared with")
            got += n
        if seg.last and os.pread(fd, 1, f.size):
            raise _changed(f, f"is longer than the {f.size} bytes it was declared with")
    finally:
        os.close(fd)
    return view[: seg.length]


class _Compressed(NamedTuple):
    """A segment's chunk: where it is written, its id and stored size, and the write in flight
    (None once it is on the file system: written by the worker, or by an earlier segment)."""

    path: Path
    chunk_id: str
    stored: int
    writing: Future[None] | None


def write_many(
    files: list[FileToStore],
    *,
    chunk_size: int,
    volumes: VolumeSet,
    advance: Advance = lambda n: None,
    workers: int = WORKERS,
) -> dict[str, Stored]:
    """Store every file in order (volumes fill in declaration order); return key -> what was stored.

    Each file is cut into segments of at most :func:`segment_cap` raw bytes. A pool of
    ``workers`` threads (zstd and hashlib release the GIL) reads each segment whole into a
    buffer the thread reuses, feeds it to its file's sha256 in file order, compresses it into
    one frame and hands it to one of :data:`WRITERS` writer threads, which write it around the
    page cache (:class:`~bundler.fsio.DirectWriter`): on a single unbounded volume straight to
    its chunk name (the sha256 of the frame), else under ``<out>/.bundler-tmp`` for this thread
    to place on the volumes in order (see :func:`_place_segment`). The pool works at most
    :data:`WINDOW_SEGMENTS` segments or :data:`WINDOW_BYTES` ahead, and what went through the
    page cache goes to the media in the background (:class:`~bundler.fsio.BackgroundSync`):
    memory stays bounded by a few segments per thread, whatever the tree.
    """
    cap = segment_cap(chunk_size, volumes)
    out: dict[str, Stored] = {}
    local = threading.local()
    tmp_dir = volumes.out / TMP_DIR  # chunks wait here for their volume (with --volume-size)
    lock, stop = threading.Condition(), threading.Event()
    flusher = BackgroundSync(volumes.out, WRITEBACK_EVERY)
    # On a single unbounded volume, where a chunk goes does not depend on order: chunks are
    # written in place (content-addressed names, each id written once), and this thread only
    # records them.
    direct_dir = volumes.current_dir() if volumes.capacity is None else None
    if direct_dir is None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
    written: set[str] = set()
    fanout: set[str] = set()

    # Frames compressed but not yet written wait in memory: at most this many (a worker that
    # would exceed it waits, so a slow medium slows compression instead of filling memory).
    unwritten = threading.BoundedSemaphore(2 * WRITERS + max(1, workers))

    def write(path: Path, frame: bytes) -> None:
        try:
            if getattr(local, "writer", None) is None:
                local.writer = DirectWriter(stored_bound(cap))
            # Chunks bypass the page cache: only what went through it is left for writeback.
            flusher.wrote(local.writer.write_new(path, frame))
        finally:
            unwritten.release()

    def work(seg: _Segment) -> _Compressed | None:
        if getattr(local, "cctx", None) is None:
            local.cctx = _compressor()
            local.buf = memoryview(bytearray(cap))
        try:
            data = _read_segment(seg, local.buf)
            # A segment whose predecessors are not hashed yet is compressed first, hashed after.
            hashed = seg.file.feed(seg.offset, data, wait=False)
            frame = local.cctx.compress(data) if seg.length else b""
            if not hashed:
                seg.file.feed(seg.offset, data)
        except BaseException:
            seg.file.fail(seg.offset)
            raise
        if not seg.length:
            return None
        chunk_id = hashlib.sha256(frame).hexdigest()
        if direct_dir is None:
            path = tmp_dir / str(seg.index)
        else:
            # One unbounded volume: straight to the chunk's own name, once per id. A crash leaves
            # a volume without a manifest, which nothing imports (and an error removes it).
            path = direct_dir / chunk_relpath(chunk_id)
            with lock:
                if chunk_id in written:
                    return _Compressed(path, chunk_id, len(frame), None)
                written.add(chunk_id)
            if chunk_id[:2] not in fanout:
                path.parent.mkdir(exist_ok=True)
                fanout.add(chunk_id[:2])
        if not goes_direct(len(frame)):  # through the page cache, so no wait: no hand-off either
            write_new_file(path, frame)
            flusher.wrote(len(frame))
            return _Compressed(path, chunk_id, len(frame), None)
        unwritten.acquire()
        return _Compressed(path, chunk_id, len(frame), writers.submit(write, path, frame))

    def work_batch(batch: tuple[_Segment, ...]) -> list[_Compressed | None]:
        return [work(seg) for seg in batch]  # in file order: the first failure is the one raised

    window: deque[tuple[tuple[_Segment, ...], Future[list[_Compressed | None]]]] = deque()
    todo = _batches(_segments(files, cap, lock, stop))
    ahead = 0  # raw bytes of the segments in the window
    try:
        with (
            flusher,
            ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="write") as writers,
            ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="zstd") as pool,
        ):
            try:
                while True:
                    while len(window) < max(WINDOW_SEGMENTS, 2 * workers) and (not window or ahead < WINDOW_BYTES):
                        batch = next(todo, None)
                        if batch is None:
                            break
                        window.append((batch, pool.submit(work_batch, batch)))
                        ahead += sum(seg.length for seg in batch)
                    if not window:
                        break
                    batch, fut = window.popleft()
                    ahead -= sum(seg.length for seg in batch)
                    for seg, done in zip(batch, fut.result(), strict=True):
                        if done is not None:
                            if done.writing is not None:
                                done.writing.result()  # in place (or in tmp_dir), or its error raised here
                            if direct_dir is not None:
                                _record_placed(done.chunk_id, done.stored, seg.length, volumes)
                                seg.file.ids.append(done.chunk_id)
                            else:
                                placed = _place_segment(done.path, done.chunk_id, done.stored, seg.length, volumes)
                                seg.file.ids.extend(placed)
                        advance(seg.length)
                        if seg.last:
                            out[seg.file.file.key] = Stored(seg.file.digest(), tuple(seg.file.ids))
            finally:
                stop.set()
                with lock:
                    lock.notify_all()
                for _batch, fut in window:
                    fut.cancel()
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out


def _record_placed(chunk_id: str, stored: int, raw: int, volumes: VolumeSet) -> None:
    if chunk_id not in volumes.records:
        volumes.charge(chunk_id, stored)
        volumes.records[chunk_id] = ChunkRecord(id=chunk_id, size=stored, raw_size=raw, volume=volumes.index)


def _place_segment(tmp: Path, chunk_id: str, stored: int, raw: int, volumes: VolumeSet) -> list[str]:
    """Place one segment's chunk on the current volume; return the chunk ids it became.

    A chunk that does not fit in the room left is split so that the volume fills up: the
    frame is decompressed (its bytes are the ones hashed) and cut in two, the head sized for
    the room left by the worst-case bound and the rest on the next volume. Where the room
    left would take less than ``min(raw, MIN_CHUNK_SIZE)``, the next volume is started instead."""
    room = volumes.room()
    if chunk_id in volumes.records or room is None or stored <= room:
        return [_place_chunk(tmp, chunk_id, stored, raw, volumes)]
    fit = max_raw_for(room)
    if fit < min(raw, MIN_CHUNK_SIZE):
        volumes.next_volume()
        return [_place_chunk(tmp, chunk_id, stored, raw, volumes)]
    data = zstandard.ZstdDecompressor().decompress(tmp.read_bytes(), max_output_size=raw)
    cctx = _compressor()

    def place(piece: bytes) -> str:
        frame = cctx.compress(piece)
        write_new_file(tmp, frame)
        return _place_chunk(tmp, hashlib.sha256(frame).hexdigest(), len(frame), len(piece), volumes)

    head = place(data[:fit])  # stored_bound(fit) <= room: it fits
    volumes.next_volume()
    return [head, place(data[fit:])]  # shorter than a segment: it fits an empty volume


def _place_chunk(tmp: Path, chunk_id: str, stored: int, raw: int, volumes: VolumeSet) -> str:
    known = volumes.records.get(chunk_id)
    if known is not None:  # identical segment already stored in this bundle
        tmp.unlink()
        return chunk_id
    final = volumes.current_dir() / chunk_relpath(chunk_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    volumes.charge(chunk_id, stored)
    volumes.records[chunk_id] = ChunkRecord(id=chunk_id, size=stored, raw_size=raw, volume=volumes.index)
    return chunk_id


# --------------------------------------------------------------------------- reading


class _HashingReader:
    """A file-like wrapper that hashes and counts everything read through it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.hasher = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.hasher.update(data)
        self.count += len(data)
        return data


def _check_dirs(volume_dir: Path, rel: str, safe_dirs: set[str] | None) -> None:
    """Refuse a symlink as the volume's chunks/ directory or the chunk's fan-out directory.
    ``safe_dirs`` remembers the directories already checked in this run (one lstat each)."""
    for parent in (f"{volume_dir}/{CHUNKS_DIR}", f"{volume_dir}/{rel[: rel.rindex('/')]}"):
        if safe_dirs is not None and parent in safe_dirs:
            continue
        if os.path.islink(parent):
            raise UnsafeMediaError(f"{parent} is a symlink", remedy="bundles never contain symlinks: re-copy the media")
        if safe_dirs is not None:
            safe_dirs.add(parent)


def _check_stat(st: os.stat_result, rec: ChunkRecord, where: str) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeMediaError(f"{where} is a symlink", remedy="bundles never contain symlinks: re-copy the media")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeMediaError(f"{where} is not a regular file")
    if st.st_size != rec.size:
        state = "truncated" if st.st_size < rec.size else "larger than recorded"
        raise DigestError(
            f"{where} is {st.st_size} bytes, expected {rec.size}: {state}",
            remedy="re-copy this volume from the export host (or export again), then re-run",
        )


def chunk_present(volume_dir: Path, rec: ChunkRecord, safe_dirs: set[str] | None = None) -> bool:
    """Whether the chunk is on the volume, from its directory entry alone (no open): False if
    absent; UnsafeMediaError for a symlink or a non-regular file, DigestError for a wrong size."""
    rel = chunk_relpath(rec.id)
    _check_dirs(volume_dir, rel, safe_dirs)
    try:
        st = os.lstat(f"{volume_dir}/{rel}")
    except FileNotFoundError:
        return False
    _check_stat(st, rec, f"chunk {rec.id} on {volume_dir} (volume {rec.volume})")
    return True


def open_chunk(volume_dir: Path, rec: ChunkRecord, safe_dirs: set[str] | None = None) -> IO[bytes] | None:
    """Open a chunk on a volume safely, or return None if it is not there.

    Refuses symlinks (anywhere on the chunk's path inside the volume) and anything that is
    not a regular file; a wrong size is reported as truncated or padded before any byte is read.
    """
    rel = chunk_relpath(rec.id)
    path = f"{volume_dir}/{rel}"
    where = f"chunk {rec.id} on {volume_dir} (volume {rec.volume})"
    _check_dirs(volume_dir, rel, safe_dirs)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeMediaError(
                f"{where} is a symlink", remedy="bundles never contain symlinks: re-copy the media"
            ) from exc
        raise
    try:
        _check_stat(os.fstat(fd), rec, where)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def require_chunk(volume_dir: Path, rec: ChunkRecord, safe_dirs: set[str] | None = None) -> IO[bytes]:
    fh = open_chunk(volume_dir, rec, safe_dirs)
    if fh is None:
        raise MissingChunkError(
            f"chunk {rec.id} of volume {rec.volume} is missing from {volume_dir}",
            remedy="re-copy this volume from the export host, then re-run",
        )
    return fh


_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """One decompression context per thread, reused for every chunk it reads."""
    dctx = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    return dctx


def read_small_chunk(fh: IO[bytes], rec: ChunkRecord, *, where: str) -> bytes:
    """Read a whole (small) chunk and check its sha256: the bytes returned are the verified
    ones, so they can be unpacked later without reading the media again."""
    data = fh.read(rec.size + 1)
    if len(data) != rec.size or hashlib.sha256(data).hexdigest() != rec.id:
        raise DigestError(
            f"chunk {rec.id} ({where}) is damaged: its sha256 is {hashlib.sha256(data).hexdigest()}",
            remedy="re-copy this volume from the export host (or export again), then re-run",
        )
    return data


def unpack_verified(
    data: bytes, rec: ChunkRecord, *, where: str, sink: Sink, advance: Advance = lambda n: None
) -> None:
    """Decompress a chunk already read and checked by :func:`read_small_chunk` into ``sink``."""
    try:
        declared = zstandard.frame_content_size(data)
        if declared > rec.raw_size:  # (-1: not declared; max_output_size bounds it then)
            raise zstandard.ZstdError(f"its frame declares {declared} bytes")
        raw = _decompressor().decompress(data, max_output_size=rec.raw_size)
    except zstandard.ZstdError as exc:
        raise DigestError(
            f"chunk {rec.id} ({where}) does not decompress ({exc})",
            remedy="the bundle is inconsistent: export it again",
        ) from exc
    if len(raw) != rec.raw_size:
        raise DigestError(
            f"chunk {rec.id} ({where}) decompresses to {len(raw)} bytes, expected {rec.raw_size}",
            remedy="the bundle is inconsistent: export it again",
        )
    sink(raw)
    advance(len(raw))


def stream_chunk(fh: IO[bytes], rec: ChunkRecord, *, where: str, sink: Sink, advance: Advance = lambda n: None) -> None:
    """Decompress one chunk into ``sink`` while checking its stored digest and sizes.

    Raises DigestError naming the chunk and ``where`` (its volume). On error the sink may
    already have received bytes: callers write into staging only and discard them.
    """
    hr = _HashingReader(fh)
    dctx = _decompressor()
    produced = 0
    try:
        with dctx.stream_reader(cast(IO[bytes], hr), read_size=1024 * 1024, closefd=False) as reader:
            while True:
                data = reader.read(1024 * 1024)
                if not data:
                    break
                produced += len(data)
                if produced > rec.raw_size:
                    raise DigestError(
                        f"chunk {rec.id} ({where}) decompresses to more than its {rec.raw_size} bytes",
                        remedy="the chunk was tampered with: re-copy the volume or export again",
                    )
                sink(data)
                advance(len(data))
    except zstandard.ZstdError as exc:
        # A damaged frame: report it the same way as a digest mismatch, which it also is.
        while hr.read(1024 * 1024):
            pass
        raise DigestError(
            f"chunk {rec.id} ({where}) is damaged: sha256 {hr.hasher.hexdigest()} ≠ recorded id ({exc})",
            remedy="re-copy this volume from the export host (or export again), then re-run",
        ) from exc
    while hr.read(1024 * 1024):  # trailing bytes after the frame still count for the digest
        pass
    got = hr.hasher.hexdigest()
    if got != rec.id or hr.count != rec.size:
        raise DigestError(
            f"chunk {rec.id} ({where}) is damaged: its sha256 is {got}",
            remedy="re-copy this volume from the export host (or export again), then re-run",
        )
    if produced != rec.raw_size:
        raise DigestError(
            f"chunk {rec.id} ({where}) decompresses to {produced} bytes, expected {rec.raw_size}",
            remedy="the bundle is inconsistent: export again",
        )
