"""Snap assertions: the text format, the digest encoding, and the checks bundler makes.

Pure: no network, no files. The format (snapd ``asserts/asserts.go``)::

    type: snap-revision            <- headers, "key: value"; nested values are indented lines
    authority-id: canonical
    ...
    body-length: 12                <- optional body of exactly that many bytes
    sign-key-sha3-384: <key id>

    <body>                         <- only when body-length > 0

    <base64 signature, 76-char lines>

The signed *content* is everything before the blank line that precedes the signature.
A stream (an ``.assert`` file) holds assertions separated by blank lines; ``snap ack``
re-sorts it into prerequisite order, so order inside the file does not matter.

Digests: the store's JSON gives a snap's sha3-384 in lowercase hex; assertions
(``snap-sha3-384``, ``sign-key-sha3-384``, ``public-key-sha3-384``) use unpadded base64url
of the same 48 bytes (64 characters).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Assertion",
    "AssertionProblem",
    "b64_to_hex",
    "check_declaration",
    "check_revision",
    "encode_stream",
    "hex_to_b64",
    "parse_stream",
]

_KEY = re.compile(r"[a-z][a-z0-9-]*")
_B64URL_DIGEST = re.compile(r"[A-Za-z0-9_-]{64}")
MAX_ASSERTION = 1 << 20


class AssertionProblem(ValueError):
    """An assertion is malformed, missing, or does not match what it must describe."""


@dataclass(frozen=True)
class Assertion:
    """One assertion as received: its exact bytes, parsed headers, body and signature."""

    content: bytes
    """The signed part: headers, and ``\\n\\n`` + body when there is a body."""
    signature: bytes
    """The base64 signature text (possibly several lines), as received."""
    headers: Mapping[str, str] = field(hash=False)
    """Top-level headers; a nested (multi-line) value is kept as its raw indented text."""
    body: bytes = b""

    @property
    def type(self) -> str:
        return self.headers["type"]

    @property
    def raw(self) -> bytes:
        return self.content + b"\n\n" + self.signature

    def get(self, key: str) -> str:
        value = self.headers.get(key)
        if value is None:
            raise AssertionProblem(f"{self.type} assertion has no {key!r} header")
        return value

    def describe(self) -> str:
        keys = {
            "snap-revision": ("snap-sha3-384",),
            "snap-declaration": ("snap-id",),
            "account": ("account-id",),
            "account-key": ("public-key-sha3-384",),
        }.get(self.type, ())
        return " ".join([self.type, *(self.headers.get(k, "?") for k in keys)])


def hex_to_b64(hexdigest: str) -> str:
    """Lowercase hex sha3-384 (store JSON) -> unpadded base64url (assertions)."""
    return base64.urlsafe_b64encode(bytes.fromhex(hexdigest)).rstrip(b"=").decode()


def b64_to_hex(b64: str) -> str:
    """Unpadded base64url (assertions) -> lowercase hex."""
    if not _B64URL_DIGEST.fullmatch(b64):
        raise AssertionProblem(f"{b64!r} is not a base64url sha3-384 digest (64 characters)")
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()


def _parse_headers(block: bytes) -> dict[str, str]:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AssertionProblem("assertion headers are not UTF-8") from exc
    headers: dict[str, str] = {}
    current: str | None = None
    for line in text.split("\n"):
        if line.startswith(" ") and current is not None:
            headers[current] += ("\n" if headers[current] else "") + line
            continue
        key, sep, value = line.partition(":")
        if not sep or not _KEY.fullmatch(key) or key in headers:
            raise AssertionProblem(f"bad assertion header line {line[:60]!r}")
        if value and not value.startswith(" "):
            raise AssertionProblem(f"bad assertion header line {line[:60]!r}")
        headers[key] = value[1:] if value else ""
        current = key
    if "type" not in headers:
        raise AssertionProblem("assertion has no 'type' header")
    return headers


def parse_stream(data: bytes) -> list[Assertion]:
    """Split an assertion stream (an ``.assert`` file or an API answer) into assertions."""
    if len(data) > 64 * MAX_ASSERTION:
        raise AssertionProblem("assertion stream is too large")
    out: list[Assertion] = []
    pos = 0
    n = len(data)
    while True:
        while pos < n and data[pos : pos + 1] == b"\n":
            pos += 1
        if pos >= n:
            return out
        end = data.find(b"\n\n", pos)
        if end < 0:
            raise AssertionProblem("assertion ends after its headers: no signature")
        headers = _parse_headers(data[pos:end])
        body = b""
        content_end = end
        length = headers.get("body-length")
        if length is not None:
            if not length.isdigit() or int(length) > MAX_ASSERTION:
                raise AssertionProblem(f"bad body-length {length!r}")
            if int(length):
                start = end + 2
                body = data[start : start + int(length)]
                content_end = start + int(length)
                if len(body) != int(length) or data[content_end : content_end + 2] != b"\n\n":
                    raise AssertionProblem(f"{headers['type']} assertion body is not {length} bytes long")
        sig_start = content_end + 2
        sig_end = data.find(b"\n\n", sig_start)
        if sig_end < 0:
            sig_end = n
        signature = data[sig_start:sig_end].rstrip(b"\n")
        if not signature or not re.fullmatch(rb"[A-Za-z0-9+/=\n]+", signature):
            raise AssertionProblem(f"{headers['type']} assertion has no valid signature block")
        out.append(Assertion(content=data[pos:content_end], signature=signature, headers=headers, body=body))
        pos = sig_end


def encode_stream(assertions: Iterable[Assertion]) -> bytes:
    """Write assertions the way ``snap download`` does: each one followed by a newline,
    separated by a blank line. Duplicates (same bytes) are written once."""
    seen: set[bytes] = set()
    parts: list[bytes] = []
    for a in assertions:
        if a.raw not in seen:
            seen.add(a.raw)
            parts.append(a.raw + b"\n")
    return b"\n".join(parts)


def find(assertions: Sequence[Assertion], type_: str, **match: str) -> list[Assertion]:
    """The assertions of ``type_`` whose headers equal ``match`` (keys with '_' for '-')."""
    want = {k.replace("_", "-"): v for k, v in match.items()}
    return [a for a in assertions if a.type == type_ and all(a.headers.get(k) == v for k, v in want.items())]


def check_revision(
    rev: Assertion, *, sha3_384_hex: str, size: int, snap_id: str, revision: int, provenance: str | None = None
) -> None:
    """The snap-revision assertion names exactly this file (digest, size), snap id and revision."""
    if rev.type != "snap-revision":
        raise AssertionProblem(f"expected a snap-revision assertion, got {rev.type}")
    problems = []
    if rev.get("snap-sha3-384") != hex_to_b64(sha3_384_hex):
        problems.append(f"it is for digest {rev.get('snap-sha3-384')}, the file has {hex_to_b64(sha3_384_hex)}")
    if rev.get("snap-size") != str(size):
        problems.append(f"it gives size {rev.get('snap-size')}, the file has {size} bytes")
    if rev.get("snap-id") != snap_id:
        problems.append(f"it is for snap id {rev.get('snap-id')}, not {snap_id}")
    if rev.get("snap-revision") != str(revision):
        problems.append(f"it is for revision {rev.get('snap-revision')}, not {revision}")
    if provenance is not None and rev.headers.get("provenance", "global-upload") != provenance:
        problems.append(f"its provenance is {rev.headers.get('provenance', 'global-upload')}, not {provenance}")
    if problems:
        raise AssertionProblem("the snap-revision assertion does not match: " + "; ".join(problems))


def check_declaration(decl: Assertion, *, snap_id: str, name: str) -> None:
    """The snap-declaration assertion is for this snap id and name, series 16."""
    if decl.type != "snap-declaration":
        raise AssertionProblem(f"expected a snap-declaration assertion, got {decl.type}")
    problems = []
    if decl.get("snap-id") != snap_id:
        problems.append(f"it is for snap id {decl.get('snap-id')}, not {snap_id}")
    if decl.get("snap-name") != name:
        problems.append(f"it names the snap {decl.get('snap-name')!r}, not {name!r}")
    if decl.get("series") != "16":
        problems.append(f"it is for series {decl.get('series')}, not 16")
    if problems:
        raise AssertionProblem("the snap-declaration assertion does not match: " + "; ".join(problems))


@dataclass(frozen=True)
class SnapAssertions:
    """The assertions that make one ``.snap`` installable, picked out of a stream."""

    revision: Assertion
    declaration: Assertion
    accounts: tuple[Assertion, ...]
    keys: tuple[Assertion, ...]

    def ordered(self) -> list[Assertion]:
        """Prerequisites first, as ``snap download`` writes them: account-key(s), account(s),
        snap-declaration, snap-revision."""
        return [*self.keys, *self.accounts, self.declaration, self.revision]


def select(
    stream: Sequence[Assertion], *, name: str, snap_id: str, revision: int, sha3_384_hex: str, size: int
) -> SnapAssertions:
    """Find and check this snap's assertions in ``stream``: the snap-revision for this file,
    the snap-declaration it belongs to, the publisher's account and every account-key that
    signed one of them (except keys the caller trusts out of band, which may be absent)."""
    digest = hex_to_b64(sha3_384_hex)
    revs = find(stream, "snap-revision", snap_sha3_384=digest)
    if not revs:
        others = [a.headers.get("snap-sha3-384", "?") for a in find(stream, "snap-revision")]
        raise AssertionProblem(
            f"no snap-revision assertion for digest {digest}"
            + (f" (there is one for {', '.join(others)})" if others else "")
        )
    rev = revs[0]
    check_revision(rev, sha3_384_hex=sha3_384_hex, size=size, snap_id=snap_id, revision=revision)
    decls = find(stream, "snap-declaration", snap_id=snap_id)
    if not decls:
        raise AssertionProblem(f"no snap-declaration assertion for snap id {snap_id}")
    decl = max(decls, key=lambda a: int(a.headers.get("revision", "0") or 0))
    check_declaration(decl, snap_id=snap_id, name=name)
    publisher = decl.get("publisher-id")
    accounts = []
    for account_id in dict.fromkeys([publisher, rev.get("developer-id")]):
        if account_id == "canonical":
            continue  # built into snapd, not written by `snap download`
        found = find(stream, "account", account_id=account_id)
        if not found:
            raise AssertionProblem(f"no account assertion for account {account_id}")
        accounts.append(found[0])
    keys = []
    for signed in [rev, decl, *accounts]:
        key_id = signed.get("sign-key-sha3-384")
        found = find(stream, "account-key", public_key_sha3_384=key_id)
        if found and found[0] not in keys:
            keys.append(found[0])
    return SnapAssertions(revision=rev, declaration=decl, accounts=tuple(accounts), keys=tuple(keys))
