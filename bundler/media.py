"""Reading bundles from media: finding volumes, reading the signed manifest safely,
telling which volume a directory is, and listing what on it is not ours.

Used by ``verify``, ``inspect`` and ``import``; it reads and never writes.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bundler.errors import SignatureError, UnsafeMediaError, UsageError
from bundler.format.layout import (
    MANIFEST_MAX_BYTES,
    MANIFEST_NAME,
    SIGNATURE_MAX_BYTES,
    SIGNATURE_NAME,
    VOLUME_INFO_MAX_BYTES,
    VOLUME_NAME,
    chunk_relpath,
)
from bundler.format.manifest import Manifest
from bundler.format.signing import PublicKey
from bundler.format.trust import SeriesState, Verdict, check_bundle


@dataclass(frozen=True)
class Volume:
    path: Path
    #: The volume numbers this directory holds (usually one).
    numbers: frozenset[int]


@dataclass(frozen=True)
class OpenedBundle:
    verdict: Verdict
    volumes: tuple[Volume, ...]
    warnings: tuple[str, ...]

    @property
    def manifest(self) -> Manifest:
        return self.verdict.manifest

    def numbers(self) -> set[int]:
        return {n for v in self.volumes for n in v.numbers}

    def where(self, chunk_id: str) -> Volume | None:
        vol = self.manifest.chunk_map()[chunk_id].volume
        return next((v for v in self.volumes if vol in v.numbers), None)


def find_volumes(paths: Sequence[Path]) -> list[Path]:
    """Each argument is a volume directory, or a directory holding volume directories."""
    found: list[Path] = []
    for p in paths:
        if (p / MANIFEST_NAME).exists() or (p / MANIFEST_NAME).is_symlink():
            found.append(p)
            continue
        subs = sorted(d for d in p.glob("*/") if (d / MANIFEST_NAME).exists()) if p.is_dir() else []
        if not subs:
            raise UsageError(
                f"{p} is not a bundle volume (no {MANIFEST_NAME} in it or in its subdirectories)",
                remedy="give the directory that holds manifest.json, e.g. /media/usb/vol-001",
            )
        found.extend(subs)
    return found


def read_capped(path: Path, cap: int, what: str) -> bytes:
    """Read a small file from the media: refuses symlinks, non-files and oversize files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        if what == SIGNATURE_NAME:
            raise SignatureError(
                f"{path} is missing: the bundle is unsigned",
                remedy="copy the whole volume again; bundler never imports an unsigned bundle",
            ) from None
        raise UsageError(f"{path} is missing", remedy="copy the whole volume again") from None
    except OSError as exc:
        raise UnsafeMediaError(
            f"{path} is a symlink or cannot be opened ({exc.strerror})",
            remedy="bundles never contain symlinks: copy the volume again from the export host",
        ) from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeMediaError(f"{path} is not a regular file")
        if st.st_size > cap:
            raise UnsafeMediaError(
                f"{path} is {st.st_size} bytes, over the {cap}-byte cap for {what}",
                remedy="do not import this bundle: it was not written by bundler",
            )
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise UnsafeMediaError(f"{path} grew over the {cap}-byte cap while being read")
    return data


def open_bundle(
    paths: Sequence[Path],
    trust: Mapping[str, PublicKey],
    *,
    now: datetime,
    enclave: Mapping[str, SeriesState] | None = None,
    allow_expired: bool = False,
) -> OpenedBundle:
    """Read and check the manifest of every given volume; all must be the same bundle."""
    dirs = find_volumes(paths)
    first: tuple[bytes, bytes] | None = None
    for d in dirs:
        pair = (
            read_capped(d / MANIFEST_NAME, MANIFEST_MAX_BYTES, MANIFEST_NAME),
            read_capped(d / SIGNATURE_NAME, SIGNATURE_MAX_BYTES, SIGNATURE_NAME),
        )
        if first is None:
            first = pair
        elif pair[0] != first[0]:
            raise UnsafeMediaError(
                f"{d} belongs to another bundle than {dirs[0]}",
                remedy="give the volumes of one bundle per run",
            )
    assert first is not None
    verdict = check_bundle(first[0], first[1], trust, now=now, enclave=enclave, allow_expired=allow_expired)
    warnings: list[str] = []
    volumes = tuple(_identify(d, verdict, warnings) for d in dirs)
    return OpenedBundle(verdict=verdict, volumes=volumes, warnings=tuple(warnings))


def _identify(d: Path, verdict: Verdict, warnings: list[str]) -> Volume:
    m = verdict.manifest
    ours = {chunk_relpath(c.id): c.volume for c in m.chunks}
    present: dict[int, int] = {}
    for root, dirnames, filenames in os.walk(d):
        rel_root = Path(root).relative_to(d)
        for name in sorted(filenames) + sorted(x for x in dirnames if (Path(root) / x).is_symlink()):
            rel = (rel_root / name).as_posix()
            if rel in ours:
                present[ours[rel]] = present.get(ours[rel], 0) + 1
            elif rel not in (MANIFEST_NAME, SIGNATURE_NAME, VOLUME_NAME):
                warnings.append(f"{d}: ignoring {rel}: not part of this bundle")
        dirnames[:] = [x for x in dirnames if not (Path(root) / x).is_symlink()]
    per_volume = {n: len(m.chunks_on(n)) for n in present}
    complete = {n for n, count in present.items() if count == per_volume[n]}
    claimed = _claimed(d, verdict)
    numbers = claimed | complete if claimed else set(present)
    for n in sorted(set(present) - numbers):
        warnings.append(
            f"{d}: holds {present[n]} of the {per_volume[n]} chunks of volume {n}; they are not used from here: "
            f"give volume {n}'s own directory"
        )
    if not numbers and m.chunks:
        raise UsageError(
            f"{d} holds none of the chunks of bundle {m.series} #{m.sequence}",
            remedy="copy the volume again from the export host",
        )
    return Volume(path=d, numbers=frozenset(numbers or {1}))


def _claimed(d: Path, verdict: Verdict) -> set[int]:
    """The volume number volume.json claims, if it names this bundle (unsigned: used only to
    say which chunks should be here; every chunk is still checked by its digest)."""
    try:
        info = json.loads(read_capped(d / VOLUME_NAME, VOLUME_INFO_MAX_BYTES, VOLUME_NAME))
        n = int(info["volume"])
        if info.get("bundle") == verdict.digest and 1 <= n <= verdict.manifest.volumes:
            return {n}
    except (UsageError, UnsafeMediaError, ValueError, KeyError, TypeError):
        pass
    return set()
