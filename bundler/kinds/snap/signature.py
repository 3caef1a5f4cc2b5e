"""Assertion signatures: OpenPGP v4 RSA signatures as snapd makes them, checked with ``cryptography``.

snapd (``asserts/crypto.go``) encodes a signature as base64 of ``0x01`` (format version 1)
followed by one OpenPGP signature packet (v4, RSA, SHA-512) over the assertion's content,
and an ``account-key`` body as base64 of ``0x01`` + an OpenPGP RSA public-key packet. A
key's id (``public-key-sha3-384``) is the base64url sha3-384 of ``0x01`` + that packet
re-serialised with snapd's fixed creation time (2016-01-01). :func:`verify_chain` checks
every assertion of a stream against the account-key that signed it, and each such key up
to a trusted root (Canonical's root account-key by default, :mod:`.trusted`).

Pure: no network, no files.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bundler.kinds.snap.assertions import Assertion, AssertionProblem

__all__ = ["PublicKey", "decode_public_key", "key_id", "verify", "verify_chain"]

_FIXED_TIME = 1451606400  # 2016-01-01T00:00:00Z, snapd's v1FixedTimestamp
_HASHES: dict[int, hashes.HashAlgorithm] = {8: hashes.SHA256(), 10: hashes.SHA512()}


@dataclass(frozen=True)
class PublicKey:
    n: int
    e: int
    id: str
    """public-key-sha3-384 (base64url)."""

    def crypto(self) -> rsa.RSAPublicKey:
        return rsa.RSAPublicNumbers(self.e, self.n).public_key()


def _b64(text: bytes) -> bytes:
    try:
        raw = base64.b64decode(b"".join(text.split()), validate=True)
    except ValueError as exc:
        raise AssertionProblem("signature or key is not valid base64") from exc
    if not raw or raw[0] != 1:
        raise AssertionProblem("signature or key is not in snapd's format version 1")
    return raw[1:]


def _packet(data: bytes) -> tuple[int, bytes]:
    """(tag, body) of the single OpenPGP packet that must fill ``data``."""
    if not data or not data[0] & 0x80:
        raise AssertionProblem("not an OpenPGP packet")
    first = data[0]
    if first & 0x40:  # new format
        tag = first & 0x3F
        if len(data) < 2:
            raise AssertionProblem("truncated OpenPGP packet")
        o = data[1]
        if o < 192:
            length, pos = o, 2
        elif o < 224:
            length, pos = ((o - 192) << 8) + data[2] + 192, 3
        elif o == 255:
            length, pos = struct.unpack(">I", data[2:6])[0], 6
        else:
            raise AssertionProblem("partial-length OpenPGP packets are not used by snapd")
    else:
        tag = (first >> 2) & 0x0F
        kind = first & 3
        if kind == 3:
            raise AssertionProblem("indeterminate-length OpenPGP packets are not used by snapd")
        size = 1 << kind
        length, pos = int.from_bytes(data[1 : 1 + size], "big"), 1 + size
    body = data[pos : pos + length]
    if len(body) != length or pos + length != len(data):
        raise AssertionProblem("OpenPGP packet length does not match its data")
    return tag, body


def _mpi(data: bytes, pos: int) -> tuple[int, int]:
    bits = struct.unpack(">H", data[pos : pos + 2])[0]
    n = (bits + 7) // 8
    value = data[pos + 2 : pos + 2 + n]
    if len(value) != n:
        raise AssertionProblem("truncated OpenPGP number")
    return int.from_bytes(value, "big"), pos + 2 + n


def _enc_mpi(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return struct.pack(">H", value.bit_length()) + raw


def public_key_packet(n: int, e: int, created: int = _FIXED_TIME) -> bytes:
    """An OpenPGP v4 RSA public-key packet (new-format header), as Go's openpgp writes it."""
    body = bytes([4]) + struct.pack(">I", created) + bytes([1]) + _enc_mpi(n) + _enc_mpi(e)
    return _header(6, len(body)) + body


def _header(tag: int, length: int) -> bytes:
    if length < 192:
        return bytes([0xC0 | tag, length])
    if length < 8384:
        length -= 192
        return bytes([0xC0 | tag, (length >> 8) + 192, length & 0xFF])
    return bytes([0xC0 | tag, 255]) + struct.pack(">I", length)


def key_id(n: int, e: int) -> str:
    digest = hashlib.sha3_384(b"\x01" + public_key_packet(n, e)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def decode_public_key(body: bytes) -> PublicKey:
    """The RSA key in an account-key body."""
    tag, pkt = _packet(_b64(body))
    if tag != 6 or len(pkt) < 6 or pkt[0] != 4 or pkt[5] not in (1, 2, 3):
        raise AssertionProblem("account-key body is not an OpenPGP v4 RSA public key")
    n, pos = _mpi(pkt, 6)
    e, pos = _mpi(pkt, pos)
    if pos != len(pkt):
        raise AssertionProblem("account-key body has trailing data")
    return PublicKey(n=n, e=e, id=key_id(n, e))


def verify(assertion: Assertion, key: PublicKey) -> None:
    """Raise :class:`AssertionProblem` unless ``key`` made ``assertion``'s signature."""
    tag, sig = _packet(_b64(assertion.signature))
    if tag != 2 or len(sig) < 6 or sig[0] != 4:
        raise AssertionProblem(f"{assertion.describe()}: signature is not an OpenPGP v4 signature")
    sig_type, pk_algo, hash_algo = sig[1], sig[2], sig[3]
    if sig_type != 0 or pk_algo not in (1, 3) or hash_algo not in _HASHES:
        raise AssertionProblem(f"{assertion.describe()}: unsupported signature (type {sig_type}, algorithm {pk_algo})")
    hashed_len = struct.unpack(">H", sig[4:6])[0]
    hashed_end = 6 + hashed_len
    unhashed_len = struct.unpack(">H", sig[hashed_end : hashed_end + 2])[0]
    pos = hashed_end + 2 + unhashed_len + 2  # skip the unhashed subpackets and the 16-bit hash prefix
    value, end = _mpi(sig, pos)
    if end != len(sig):
        raise AssertionProblem(f"{assertion.describe()}: signature packet has trailing data")
    trailer = sig[:hashed_end]
    signed = assertion.content + trailer + b"\x04\xff" + struct.pack(">I", len(trailer))
    modulus_bytes = (key.n.bit_length() + 7) // 8
    try:
        key.crypto().verify(value.to_bytes(modulus_bytes, "big"), signed, padding.PKCS1v15(), _HASHES[hash_algo])
    except (InvalidSignature, OverflowError) as exc:
        raise AssertionProblem(f"{assertion.describe()}: the signature does not verify with key {key.id}") from exc


def _time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise AssertionProblem(f"bad time {value!r} in an assertion") from exc


def _check_window(signed: Assertion, key_assertion: Assertion) -> None:
    when = signed.headers.get("timestamp") or signed.headers.get("since")
    if when is None:
        return
    at = _time(when)
    if at < _time(key_assertion.get("since")):
        raise AssertionProblem(f"{signed.describe()} was signed before its key {key_assertion.describe()} was valid")
    until = key_assertion.headers.get("until")
    if until and at >= _time(until):
        raise AssertionProblem(f"{signed.describe()} was signed after its key {key_assertion.describe()} expired")


def verify_chain(stream: Sequence[Assertion], trusted: Sequence[Assertion]) -> None:
    """Check every assertion of ``stream`` up to a ``trusted`` account-key.

    Each assertion must be signed by an account-key (from ``trusted`` or ``stream``) whose
    ``account-id`` is the assertion's ``authority-id`` and whose validity covers its time;
    each account-key from ``stream`` must itself verify the same way. The keys of
    ``trusted`` are accepted as they are (they are built into snapd).
    """
    anchors = {a.get("public-key-sha3-384"): a for a in trusted if a.type == "account-key"}
    candidates = {a.get("public-key-sha3-384"): a for a in stream if a.type == "account-key"}
    good: set[bytes] = set()

    def check(a: Assertion, depth: int) -> None:
        if a.raw in good:
            return
        if depth > 8:
            raise AssertionProblem(f"{a.describe()}: account-key chain is too long")
        key_id_ = a.get("sign-key-sha3-384")
        key_assertion = anchors.get(key_id_) or candidates.get(key_id_)
        if key_assertion is None:
            raise AssertionProblem(
                f"{a.describe()}: the account-key {key_id_} that signed it is missing and is not a trusted root key"
            )
        if key_assertion.get("account-id") != a.get("authority-id"):
            raise AssertionProblem(
                f"{a.describe()}: signed by a key of account {key_assertion.get('account-id')}, "
                f"but its authority is {a.get('authority-id')}"
            )
        key = decode_public_key(key_assertion.body)
        if key.id != key_id_:
            raise AssertionProblem(f"account-key {key_id_}: its body holds key {key.id}")
        verify(a, key)
        _check_window(a, key_assertion)
        if key_id_ not in anchors:
            check(key_assertion, depth + 1)
        good.add(a.raw)

    for a in stream:
        if a.type == "account-key" and a.get("public-key-sha3-384") in anchors:
            continue
        check(a, 0)
