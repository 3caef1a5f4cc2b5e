"""Every on-media name and every path rule of the bundle format, in one place."""

from __future__ import annotations

import re

from bundler.errors import UnsafeMediaError
from bundler.paths import MAX_PATH_LEN, check_relpath

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
VOLUME_NAME = "volume.json"
CHUNKS_DIR = "chunks"

#: A manifest larger than this is refused before it is read.
MANIFEST_MAX_BYTES = 64 * 1024 * 1024
#: A signature file larger than this is refused before it is read.
SIGNATURE_MAX_BYTES = 64 * 1024
#: volume.json larger than this is ignored.
VOLUME_INFO_MAX_BYTES = 4096

#: Default cap on one stored chunk: well under FAT32's 4 GiB - 1 file size limit.
DEFAULT_CHUNK_SIZE = 1024 * 1024 * 1024
#: The smallest chunk size accepted (keeps chunk counts sane).
MIN_CHUNK_SIZE = 64 * 1024
#: Hard limit for one stored piece: FAT32 cannot hold a file of 4 GiB or more.
FAT32_MAX_FILE = 4 * 1024 * 1024 * 1024 - 1

HEX64 = re.compile(r"[0-9a-f]{64}")
SERIES_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def volume_dir_name(index: int) -> str:
    """Directory of volume ``index`` (1-based) under the export's ``--out``."""
    return f"vol-{index:03d}"


def chunk_relpath(chunk_id: str) -> str:
    """Where chunk ``chunk_id`` lives inside a volume (two-level fan-out)."""
    if not HEX64.fullmatch(chunk_id):
        raise UnsafeMediaError(f"invalid chunk id {chunk_id!r}")
    return f"{CHUNKS_DIR}/{chunk_id[:2]}/{chunk_id}"


def is_digest(value: object) -> bool:
    return isinstance(value, str) and bool(HEX64.fullmatch(value))


__all__ = ["MAX_PATH_LEN", "check_relpath"]
