"""The local-file digest cache answers only while a file's stat key is unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bundler.hashing import DigestCache, sha256_file_keyed, stat_key


def test_cache_hit_needs_the_same_stat_key_and_keeps_only_what_was_looked_up(tmp_path: Path) -> None:
    f, other = tmp_path / "a.bin", tmp_path / "b.bin"
    f.write_bytes(b"one")
    other.write_bytes(b"two")
    sha, _n, key = sha256_file_keyed(f)
    assert key is not None and sha == hashlib.sha256(b"one").hexdigest()
    c = DigestCache(tmp_path / "cache.json")
    c.put(f, key, sha)
    c.put(other, stat_key(os.stat(other)), "0" * 64)
    c.save()

    again = DigestCache(tmp_path / "cache.json")
    assert again.get(f, stat_key(os.stat(f))) == sha
    f.write_bytes(b"uno")  # same size, new content: mtime/ctime move
    os.utime(f, ns=(key[3] + 10**9, key[3] + 10**9))
    assert again.get(f, stat_key(os.stat(f))) is None
    again.save()  # b.bin was not looked up in this run: dropped
    assert DigestCache(tmp_path / "cache.json").get(other, stat_key(os.stat(other))) is None


def test_a_damaged_cache_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "cache.json").write_text("{not json")
    f = tmp_path / "a"
    f.write_bytes(b"x")
    assert DigestCache(tmp_path / "cache.json").get(f, stat_key(os.stat(f))) is None
