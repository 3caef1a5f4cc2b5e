"""Chunks: how a file becomes zstd pieces on volumes, and how pieces become a file again.

A carried file is cut into consecutive raw segments. Each segment is compressed into
exactly one zstd frame (level 3, content size and XXH64 checksum in the frame) and
stored as ``chunks/<id[:2]>/<id>`` where ``id`` is the sha256 of the stored bytes, so
``sha256sum`` alone can audit a volume. A segment is sized so that even incompressible
data (zstd's worst case) cannot exceed the chunk size cap or the room left on the
current volume; volumes therefore fill up to their size and a file may continue on
the next volume.

Reading streams everything: memory stays bounded by a few block buffers, whatever
the file size.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import zstandard

from bundler.errors import DigestError, MissingChunkError, UnsafeMediaError, UpstreamDigestError, UsageError
from bundler.format.layout import CHUNKS_DIR, MIN_CHUNK_SIZE, chunk_relpath, volume_dir_name
from bundler.format.manifest import ChunkRecord
from bundler.hashing import StatKey, stat_key

BLOCK = 1024 * 1024
ZSTD_LEVEL = 3
#: zstd worker threads per frame: one per CPU, like `zstd -T0`.
ZSTD_THREADS = os.cpu_count() or 1
#: Small zstd jobs keep memory low (measured: 1 MiB jobs add ~25 MB RSS, the default ~160 MB)
#: at no cost in speed on incompressible data and a small one in ratio.
ZSTD_JOB_SIZE = 1024 * 1024
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


class _BlockReader:
    """Reads a file in a background thread, hashing it as it goes (hashlib releases the GIL),
    so that reading and hashing overlap with compression and writing."""

    def __init__(self, fh: IO[bytes], hasher: hashlib._Hash | None) -> None:
        self._q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
        self._fh = fh
        self._hasher = hasher
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                block = self._fh.read(BLOCK)
                if not block:
                    break
                if self._hasher is not None:
                    self._hasher.update(block)
                self._q.put(block)
            self._q.put(None)
        except BaseException as exc:  # handed to the consumer
            self._q.put(exc)

    def blocks(self) -> Iterator[bytes]:
        while True:
            item = self._q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get_nowait()
            except queue.Empty:
                self._thread.join(0.05)


class _HashingWriter:
    """Writes and hashes compressed output in a background thread, so that the thread feeding
    zstd never waits for the disk (measured: 0.5 s of writes per 375 MiB on the main thread)."""

    def __init__(self, path: Path) -> None:
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._fh = open(path, "wb")  # noqa: SIM115  (closed by the writer thread)
        self._hash = hashlib.sha256()
        self._size = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while (data := self._q.get()) is not None:
                if self._error is None:
                    self._hash.update(data)
                    self._fh.write(data)
                    self._size += len(data)
        except BaseException as exc:  # handed to the producer in finish()
            self._error = exc
            while self._q.get() is not None:
                pass
        finally:
            self._fh.close()

    def put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if data:
            self._q.put(data)

    def finish(self) -> tuple[str, int]:
        """Wait for everything to be written; return (sha256 of the stored bytes, size)."""
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest(), self._size

    def __enter__(self) -> _HashingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()


@dataclass(frozen=True)
class Stored:
    sha256: str
    chunks: tuple[str, ...]


def write_file_chunks(
    src: Path,
    *,
    sha256: str | None,
    size: int,
    chunk_size: int,
    volumes: VolumeSet,
    advance: Advance = lambda n: None,
    hashed_as: StatKey | None = None,
) -> Stored:
    """Compress ``src`` into chunks on ``volumes``; return its sha256 and ordered chunk ids.

    The raw bytes are hashed on the way and must match ``sha256`` and ``size`` (the file
    could have changed in the download cache or on disk since it was declared), unless the
    file's stat key still equals ``hashed_as``, the key it had when hashed in this run.
    ``sha256`` None: not known yet, computed on the way (see FileToStore)."""
    if chunk_size < MIN_CHUNK_SIZE:
        raise UsageError(f"chunk size {chunk_size} is below the minimum {MIN_CHUNK_SIZE}")
    hasher = hashlib.sha256()
    ids: list[str] = []
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, threads=ZSTD_THREADS, job_size=ZSTD_JOB_SIZE, write_checksum=True, write_content_size=True
    )
    cctx = zstandard.ZstdCompressor(compression_params=params)
    with open(src, "rb") as fh:
        unchanged = hashed_as is not None and stat_key(os.fstat(fh.fileno())) == hashed_as
        reader = _BlockReader(fh, None if unchanged else hasher)
        try:
            blocks = reader.blocks()
            pending = memoryview(b"")
            remaining = size
            while remaining > 0:
                seg = _next_segment(remaining, chunk_size, volumes)
                vol_dir = volumes.current_dir()
                tmp = vol_dir / CHUNKS_DIR / f".tmp-{os.getpid()}-{threading.get_ident()}"
                comp = cctx.compressobj(size=seg)
                with _HashingWriter(tmp) as out:
                    need = seg
                    while need > 0:
                        if not pending:
                            try:
                                pending = memoryview(next(blocks))
                            except StopIteration:
                                raise UpstreamDigestError(
                                    f"{src} is shorter than the {size} bytes it was declared with",
                                    remedy="the file changed after it was collected: run the export again",
                                ) from None
                        piece, pending = pending[:need], pending[need:]
                        need -= len(piece)
                        data = comp.compress(piece)
                        if data:
                            out.put(data)
                        advance(len(piece))
                    out.put(comp.flush())
                    chunk_id, stored = out.finish()
                remaining -= seg
                ids.append(_place_chunk(tmp, chunk_id, stored, seg, volumes))
            if pending or next(blocks, None) is not None:
                raise UpstreamDigestError(
                    f"{src} is longer than the {size} bytes it was declared with",
                    remedy="the file changed after it was collected: run the export again",
                )
        finally:
            reader.close()
    got = sha256 if unchanged and sha256 is not None else hasher.hexdigest()
    if sha256 is not None and got != sha256:
        raise UpstreamDigestError(
            f"{src} has sha256 {got}, but it was declared as {sha256}",
            remedy="the file changed after it was collected (or the download cache is damaged): "
            "delete it from the cache and export again",
        )
    return Stored(got, tuple(ids))


#: Files up to this size are compressed whole into one frame, one file per worker thread,
#: several files at a time, streamed through a temporary file: zstd spreads one frame over
#: its threads only in 1 MiB jobs and drains at every file's end, so a tree of small and
#: middle-sized files kept one core busy (measured with 2 cores on a mixed 512 MiB tree:
#: 0.42x tar|zstd one file at a time).
POOL_FILE = 64 * 1024 * 1024
TMP_DIR = ".bundler-tmp"
#: How far ahead of the file being placed the pool may work, in files and in raw bytes. Finished
#: files wait on disk (or already in place), not in memory, so the window costs no RAM; a window
#: of only ``2 * workers`` files left a core idle behind every 32 MiB file among small ones.
WINDOW_FILES = 1024
WINDOW_BYTES = 16 * POOL_FILE


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


def write_many(
    files: list[FileToStore],
    *,
    chunk_size: int,
    volumes: VolumeSet,
    advance: Advance = lambda n: None,
    workers: int = ZSTD_THREADS,
) -> dict[str, Stored]:
    """Store every file in order (volumes fill in declaration order); return key -> what was stored.

    Files up to :data:`POOL_FILE` are read, checked and compressed (single-threaded zstd, one
    frame) by a pool of ``workers`` threads (zstd and hashlib release the GIL) into temporary
    files under ``<out>/.bundler-tmp``, while this thread places finished chunks on the volumes
    in order; larger files go through :func:`write_file_chunks` (multi-threaded zstd). The pool
    works at most :data:`WINDOW_FILES` files or :data:`WINDOW_BYTES` ahead, and each worker streams
    its file in 1 MiB blocks: memory stays bounded whatever the tree.
    """
    pool_cap = min(POOL_FILE, max_raw_for(chunk_size))
    if volumes.capacity is not None:
        pool_cap = min(pool_cap, max_raw_for(volumes.capacity - 3 * volumes.cluster))
    out: dict[str, Stored] = {}
    local = threading.local()
    tmp_dir = volumes.out / TMP_DIR
    tmp_dir.mkdir(parents=True, exist_ok=True)

    # On a single unbounded volume, where a chunk goes does not depend on order: workers put
    # their chunks in place themselves (content-addressed names; an identical chunk renamed
    # twice is the same file), and this thread only records them.
    direct_dir = volumes.current_dir() if volumes.capacity is None else None

    def compress(f: FileToStore) -> tuple[Path, str, int, str]:
        cctx = getattr(local, "cctx", None)
        if cctx is None:
            cctx = local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True, write_content_size=True)
        tmp = tmp_dir / hashlib.sha256(f.key.encode()).hexdigest()
        raw_hash, out_hash = hashlib.sha256(), hashlib.sha256()
        stored = seen = 0
        with open(f.src, "rb") as fh, open(tmp, "wb") as dst:
            unchanged = (
                f.sha256 is not None and f.hashed_as is not None and stat_key(os.fstat(fh.fileno())) == f.hashed_as
            )
            comp = cctx.compressobj(size=f.size)
            while block := fh.read(min(BLOCK, f.size + 1 - seen)):
                seen += len(block)
                if seen > f.size:
                    break
                if not unchanged:
                    raw_hash.update(block)
                data = comp.compress(block)
                out_hash.update(data)
                dst.write(data)
                stored += len(data)
            if seen == f.size:
                data = comp.flush()
                out_hash.update(data)
                dst.write(data)
                stored += len(data)
        if seen != f.size:
            raise UpstreamDigestError(
                f"{f.src} is {'longer' if seen > f.size else 'shorter'} than the {f.size} bytes it was declared with",
                remedy="the file changed after it was collected: run the export again",
            )
        got = f.sha256 if unchanged and f.sha256 is not None else raw_hash.hexdigest()
        if f.sha256 is not None and got != f.sha256:
            raise UpstreamDigestError(
                f"{f.src} has sha256 {got}, but it was declared as {f.sha256}",
                remedy="the file changed after it was collected (or the download cache is damaged): "
                "delete it from the cache and export again",
            )
        chunk_id = out_hash.hexdigest()
        if direct_dir is not None:
            final = direct_dir / chunk_relpath(chunk_id)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            return final, chunk_id, stored, got
        return tmp, chunk_id, stored, got

    window: deque[tuple[FileToStore, Future[tuple[Path, str, int, str]] | None]] = deque()
    todo = iter(files)
    ahead = 0  # raw bytes of the files in the window
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="zstd") as pool:

            def refill() -> None:
                nonlocal ahead
                while len(window) < max(WINDOW_FILES, 2 * workers) and (not window or ahead < WINDOW_BYTES):
                    f = next(todo, None)
                    if f is None:
                        return
                    pooled = 0 < f.size <= pool_cap
                    window.append((f, pool.submit(compress, f) if pooled else None))
                    ahead += f.size if pooled else 0  # a large file is compressed by this thread

            refill()
            try:
                while window:
                    f, fut = window.popleft()
                    ahead -= f.size if fut is not None else 0
                    if fut is None:
                        out[f.key] = write_file_chunks(
                            f.src,
                            sha256=f.sha256,
                            size=f.size,
                            chunk_size=chunk_size,
                            volumes=volumes,
                            advance=advance,
                            hashed_as=f.hashed_as,
                        )
                    else:
                        path, chunk_id, stored, sha = fut.result()
                        if direct_dir is not None:
                            _record_placed(chunk_id, stored, f.size, volumes)
                        else:
                            _store_whole(path, chunk_id, stored, f.size, volumes)
                        out[f.key] = Stored(sha, (chunk_id,))
                        advance(f.size)
                    refill()
            finally:
                for _f, fut in window:
                    if fut is not None:
                        fut.cancel()
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out


def _record_placed(chunk_id: str, stored: int, raw: int, volumes: VolumeSet) -> None:
    if chunk_id not in volumes.records:
        volumes.charge(chunk_id, stored)
        volumes.records[chunk_id] = ChunkRecord(id=chunk_id, size=stored, raw_size=raw, volume=volumes.index)


def _store_whole(tmp: Path, chunk_id: str, stored: int, raw: int, volumes: VolumeSet) -> str:
    """Place one compressed whole-file chunk: on this volume if it fits, else on the next."""
    if chunk_id not in volumes.records:
        room = volumes.room()
        if room is not None and stored > room:
            volumes.next_volume()
    return _place_chunk(tmp, chunk_id, stored, raw, volumes)


def _next_segment(remaining: int, chunk_size: int, volumes: VolumeSet) -> int:
    cap = max_raw_for(chunk_size)
    room = volumes.room()
    if room is not None:
        fit = max_raw_for(room)
        if fit < min(remaining, MIN_CHUNK_SIZE):
            # Not worth a tiny piece: start the next medium.
            volumes.next_volume()
            room = volumes.room()
            assert room is not None
            fit = max_raw_for(room)
            if fit < min(remaining, MIN_CHUNK_SIZE):
                raise UsageError(
                    f"--volume-size leaves only {room} bytes per volume for chunks",
                    remedy="use a larger --volume-size (a volume must hold the manifest and at least one chunk)",
                )
        cap = min(cap, fit)
    return min(remaining, cap)


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
