"""Connected side of the ``files`` kind.

Carry spec section ``[[files]]``::

    [[files]]
    name = "centos-9-stream-iso"        # entry name (unique per bundle)
    path = "isos/CentOS-Stream-9.iso"   # where it lands under <enclave>/files/
    url = "https://.../CentOS-Stream-9.iso"
    sha256 = "..."                      # required for URLs
    size = 123                          # optional, checked while downloading
    version = "20261101"                # optional, default: derived from the content

    [[files]]
    name = "site-tools"
    path = "tools"                      # for a directory: the destination directory
    source = "../tools"                 # a local file or directory, relative to the spec
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from bundler.errors import SpecError, UpstreamDigestError
from bundler.fetch import Want
from bundler.hashing import DigestCache, StatKey, sha256_file_keyed, stat_key
from bundler.kinds.base import SourceContext
from bundler.model import Artifact, Declared, content_version

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"name", "path", "url", "source", "sha256", "size", "version"}


def check_section(section: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    unknown = set(section) - _KEYS
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", remedy=f"allowed: {sorted(_KEYS)}")
    for key in ("name", "path"):
        if not isinstance(section.get(key), str) or not section[key]:
            raise SpecError(f"{where}: '{key}' is required and must be a non-empty string")
    path = section["path"]
    parts = PurePosixPath(path).parts
    if path.startswith("/") or "\\" in path or any(p in ("..", ".") for p in parts) or "//" in path:
        raise SpecError(f"{where}: path {path!r} must be relative and must not contain '.' or '..'")
    has_url, has_source = "url" in section, "source" in section
    if has_url == has_source:
        raise SpecError(f"{where}: give exactly one of 'url' and 'source'")
    if has_url:
        url = section["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SpecError(f"{where}: url must be an http(s) URL, got {url!r}")
        if "sha256" not in section:
            raise SpecError(
                f"{where}: a URL needs its expected 'sha256'",
                remedy="take it from the publisher's checksum file (after checking that file's signature)",
            )
    sha = section.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _HEX64.fullmatch(sha.lower())):
        raise SpecError(f"{where}: sha256 must be 64 hex digits")
    size = section.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise SpecError(f"{where}: size must be a non-negative integer")
    version = section.get("version")
    if version is not None and not isinstance(version, str):
        raise SpecError(f"{where}: version must be a string")
    return dict(section, sha256=sha.lower()) if sha else section


def declare(section: Mapping[str, Any], ctx: SourceContext) -> Iterator[Declared]:
    name: str = section["name"]
    dest: str = section["path"].strip("/")
    artifacts: list[Artifact]
    if "url" in section:
        artifacts = [Artifact(path=dest, sha256=section["sha256"], size=section.get("size", -1), url=section["url"])]
    else:
        src = (ctx.spec_dir / os.path.expandvars(section["source"])).resolve()
        if src.is_dir():
            if "sha256" in section:
                raise SpecError(f"files {name}: 'sha256' applies to a single file, but {src} is a directory")
            artifacts = _hash_all(_walk(src, dest, ctx), None, ctx)
        elif src.is_file():
            artifacts = _hash_all([(src, dest, os.stat(src))], section.get("sha256"), ctx)
        else:
            raise SpecError(f"files {name}: source {src} does not exist")
    version = section.get("version") or (
        content_version((a.path, a.sha256) for a in artifacts) if all(a.sha256 for a in artifacts) else ""
    )
    yield Declared(kind="files", name=name, version=version, arch="all", artifacts=tuple(artifacts))


def _local(
    src: Path,
    dest: str,
    st: os.stat_result,
    expected: str | None,
    advance: Callable[[int], None],
    cache: DigestCache,
    later: bool,
) -> Artifact:
    key: StatKey | None = stat_key(st)
    assert key is not None
    known = cache.get(src, key)
    if known is not None:
        digest, size = known, st.st_size
        advance(size)
    elif later:  # a full export: the exporter hashes it while compressing (and checks `expected`)
        advance(st.st_size)
        return Artifact(path=dest, sha256=expected or "", size=st.st_size, local=src)
    else:
        digest, size, key = sha256_file_keyed(src, advance)
        if key is not None:
            cache.put(src, key, digest)
    if expected is not None and digest != expected:
        raise UpstreamDigestError(
            f"{src} has sha256 {digest}, but the carry spec expects {expected}",
            remedy="check the file, or correct the sha256 in the carry spec",
        )
    return Artifact(path=dest, sha256=digest, size=size, local=src, hashed_as=key)


def _hash_all(
    found: list[tuple[Path, str, os.stat_result]], expected: str | None, ctx: SourceContext
) -> list[Artifact]:
    """Hash local files under one progress bar (a tree may hold thousands of files); files
    unchanged since an earlier export (same stat key) take their digest from the cache."""
    total = sum(st.st_size for _p, _d, st in found)
    cache = DigestCache(ctx.work_dir / "files-digests.json")
    with ctx.reporter.task(f"hash {len(found)} local file(s)", total) as advance:
        lock = threading.Lock()

        def locked(n: int) -> None:
            with lock:
                advance(n)

        def one(f: tuple[Path, str, os.stat_result]) -> Artifact:
            return _local(f[0], f[1], f[2], expected, locked, cache, ctx.hash_later)

        if ctx.hash_later:  # nothing is hashed here (the exporter hashes while compressing)
            out = [one(f) for f in found]
        else:  # hashlib releases the GIL: one thread per core hashes a tree that much faster
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                out = list(pool.map(one, found))
    cache.save()
    return out


def _walk(root: Path, dest: str, ctx: SourceContext) -> list[tuple[Path, str, os.stat_result]]:
    """Every regular file under ``root`` (sorted), its path under ``dest`` and its lstat."""
    found: list[tuple[Path, str, os.stat_result]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        prefix = dest if rel == "." else f"{dest}/{Path(rel).as_posix()}"
        for fname in sorted(filenames):
            path = os.path.join(dirpath, fname)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                ctx.reporter.warn(f"files: skipping {path}: not a regular file (symlinks are not carried)")
                continue
            found.append((Path(path), f"{prefix}/{fname}", st))
    return found


__all__ = ["Want", "check_section", "declare"]
