"""Parse the (already verified) payload of a Release / InRelease file.

Only the text gpgv put out after checking the signature may be given here: a clearsigned
InRelease can carry unsigned text around its signed block, and parsing the whole file
would trust it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from bundler.kinds.deb.deb822 import StanzaError, parse_stanzas

__all__ = ["HashEntry", "Release", "ReleaseError", "parse_release"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


class ReleaseError(ValueError):
    """The Release text is not usable (the message says why)."""


@dataclass(frozen=True)
class HashEntry:
    path: str
    """Relative to ``dists/<suite>/``."""
    sha256: str
    size: int


@dataclass(frozen=True)
class Release:
    origin: str
    label: str
    suite: str
    codename: str
    version: str
    date: datetime | None
    valid_until: datetime | None
    components: tuple[str, ...]
    architectures: tuple[str, ...]
    acquire_by_hash: bool
    sha256: dict[str, HashEntry]
    """SHA256 section, keyed by path under ``dists/<suite>/``."""

    def matches(self, suite: str) -> bool:
        """apt's rule: the file must be about the suite asked for (``Suite`` or ``Codename``)."""
        return suite in (self.suite, self.codename)


def _date(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError) as exc:
        raise ReleaseError(f"unreadable {field}: {value!r}") from exc
    if parsed.tzinfo is None:  # "-0000" or an unknown zone name: the RFC says UTC
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def parse_release(text: str) -> Release:
    """Parse Release text; raise :class:`ReleaseError` if it is malformed or has no SHA256 list."""
    try:
        stanzas = parse_stanzas(text, "Release")
    except StanzaError as exc:
        raise ReleaseError(str(exc)) from exc
    if len(stanzas) != 1:
        raise ReleaseError(f"expected one stanza, found {len(stanzas)}")
    st = stanzas[0]
    if "SHA256" not in st:
        raise ReleaseError("it has no SHA256 section (MD5Sum/SHA1 alone are not trusted)")
    entries: dict[str, HashEntry] = {}
    for line in st["SHA256"].splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not _HEX64.fullmatch(parts[0].lower()) or not parts[1].isdigit():
            raise ReleaseError(f"malformed SHA256 line {line.strip()[:120]!r}")
        digest, size, path = parts[0].lower(), int(parts[1]), parts[2]
        if path.startswith("/") or ".." in path.split("/"):
            raise ReleaseError(f"SHA256 line names an unsafe path {path!r}")
        entries[path] = HashEntry(path, digest, size)
    return Release(
        origin=st.get("Origin", ""),
        label=st.get("Label", ""),
        suite=st.get("Suite", ""),
        codename=st.get("Codename", ""),
        version=st.get("Version", ""),
        date=_date(st.get("Date"), "Date"),
        valid_until=_date(st.get("Valid-Until"), "Valid-Until"),
        components=tuple(st.get("Components", "").split()),
        architectures=tuple(st.get("Architectures", "").split()),
        acquire_by_hash=st.get("Acquire-By-Hash", "no").strip().lower() == "yes",
        sha256=entries,
    )
