"""Streaming deb822 (RFC 822-like) parsing for Release and Packages files.

A stanza is a block of ``Field: value`` lines separated from the next by a blank line.
A line starting with a space or tab continues the previous field (multi-line values keep
their line breaks; the leading space is removed). Field names are case-insensitive
(``MD5sum`` in Packages, ``MD5Sum`` in Release). Parsing is line by line, so a huge
index (a 60k-stanza universe ``Packages``) never sits in memory: only one stanza does.

:func:`open_index` opens a ``Packages``, ``Packages.gz`` or ``Packages.xz`` file as a text
stream of its decompressed content, optionally hashing the decompressed bytes as they are
read (so they can be checked against the uncompressed entry of a signed Release).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
from collections.abc import Container, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = ["HashingReader", "Stanza", "StanzaError", "iter_stanzas", "open_index", "parse_stanzas", "select_stanzas"]


class StanzaError(ValueError):
    """Malformed deb822 text; the message names the line."""


class Stanza(Mapping[str, str]):
    """One stanza: a read-only, case-insensitive mapping from field name to value.

    Iteration yields the field names as spelled in the file, in file order.
    """

    __slots__ = ("_fields", "_names")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: dict[str, str] = {}
        self._names: dict[str, str] = {}
        for name, value in fields:
            key = name.lower()
            self._names.setdefault(key, name)
            self._fields[key] = value

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.values())

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Stanza({dict(self.items())!r})"


def iter_stanzas(lines: Iterable[str], where: str = "input", first_line: int = 1) -> Iterator[Stanza]:
    """Yield the stanzas of deb822 text given as lines (with or without line ends).

    ``where`` names the source in error messages. Lines starting with ``#`` before a
    field are comments (as in control files). Raises :class:`StanzaError` on a line that
    is neither a field, a continuation nor blank.
    """
    fields: list[tuple[str, str]] = []
    name: str | None = None
    parts: list[str] = []
    for lineno, raw in enumerate(lines, first_line):
        line = raw.rstrip("\r\n")
        if line[:1] in (" ", "\t"):
            if not line.strip():
                # A whitespace-only line ends the stanza, like an empty one (apt does the same).
                pass
            elif name is None:
                raise StanzaError(f"{where}, line {lineno}: continuation line without a field before it")
            else:
                parts.append(line[1:])
                continue
        elif line.startswith("#"):
            continue
        elif line:
            colon = line.find(":")
            if colon <= 0:
                raise StanzaError(f"{where}, line {lineno}: expected 'Field: value', got {line[:80]!r}")
            if name is not None:
                fields.append((name, "\n".join(parts)))
            name = line[:colon].strip()
            if not name or any(c.isspace() for c in name):
                raise StanzaError(f"{where}, line {lineno}: bad field name {line[:colon]!r}")
            parts = [line[colon + 1 :].strip()]
            continue
        # blank line: end of stanza
        if name is not None:
            fields.append((name, "\n".join(parts)))
            name, parts = None, []
        if fields:
            yield Stanza(fields)
            fields = []
    if name is not None:
        fields.append((name, "\n".join(parts)))
    if fields:
        yield Stanza(fields)


def select_stanzas(lines: Iterable[str], field: str, values: Container[str], where: str = "input") -> Iterator[Stanza]:
    """The stanzas whose ``field`` has one of ``values``, fast.

    A stanza whose *first* line is ``field: <value not wanted>`` (``Package:`` opens every
    stanza of real Packages files) is skipped without being parsed; any other stanza is
    parsed and then filtered. This makes a scan of a 60k-stanza index for a few hundred
    packages several times faster than parsing every stanza.
    """
    key = field.lower()
    buf: list[str] = []
    start = 1
    skipping = False
    lineno = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            if buf:
                for st in iter_stanzas(buf, where, start):
                    if st.get(field) in values:
                        yield st
            buf, skipping = [], False
            continue
        if skipping:
            continue
        if not buf:
            head, colon, value = line.partition(":")
            if colon and head.strip().lower() == key and value.strip() not in values:
                skipping = True
                continue
            start = lineno
        buf.append(line)
    if buf:
        for st in iter_stanzas(buf, where, start):
            if st.get(field) in values:
                yield st


def parse_stanzas(text: str, where: str = "input") -> list[Stanza]:
    """All stanzas of a (small) deb822 text."""
    return list(iter_stanzas(text.splitlines(), where))


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class HashingReader(io.RawIOBase):
    """A binary reader that hashes (sha256) and counts every byte read through it."""

    def __init__(self, inner: _Readable) -> None:
        super().__init__()
        self._inner = inner
        self.hasher: HASH = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.hasher.update(data)
        self.size += n
        return n

    def drain(self) -> tuple[str, int]:
        """Hash the rest of the stream and return (sha256 hex, size) of everything read."""
        while True:
            data = self._inner.read(1 << 20)
            if not data:
                break
            self.hasher.update(data)
            self.size += len(data)
        return self.hasher.hexdigest(), self.size


@contextmanager
def open_index(path: Path, compression: str | None = None) -> Iterator[tuple[IO[str], HashingReader]]:
    """Open a Packages file as decompressed text lines, plus the reader that hashes them.

    ``compression`` is ``"xz"``, ``"gz"`` or ``""`` (none); by default it is taken from
    the file name. After reading all lines, ``reader.drain()`` gives the sha256 and size
    of the decompressed content. Decompression errors surface as :class:`OSError`,
    :class:`EOFError` or :class:`lzma.LZMAError` from the reads.
    """
    if compression is None:
        compression = {".xz": "xz", ".gz": "gz"}.get(path.suffix, "")
    if compression not in ("xz", "gz", ""):
        raise ValueError(f"unsupported compression {compression!r}")
    with ExitStack() as stack:
        raw = stack.enter_context(open(path, "rb"))
        inner: _Readable = raw
        if compression == "xz":
            inner = stack.enter_context(lzma.LZMAFile(raw))
        elif compression == "gz":
            inner = stack.enter_context(gzip.GzipFile(fileobj=raw))
        reader = HashingReader(inner)
        buffered = io.BufferedReader(reader, buffer_size=1 << 20)
        text = io.TextIOWrapper(buffered, encoding="utf-8", errors="surrogateescape", newline="\n")
        yield text, reader
