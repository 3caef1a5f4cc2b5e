"""Ed25519 keys, key ids, the trust store, and signing/verifying exact bytes.

Key files are PEM (PKCS#8 private, SubjectPublicKeyInfo public) so that standard
tools (``openssl pkey``) can read them. A key id is the sha256 of the raw 32-byte
public key, in hex. ``manifest.sig`` is a small JSON document:

    {"signatures": [{"algorithm": "ed25519", "keyid": "<64 hex>", "signature": "<base64>"}]}

The signed message is the exact content of ``manifest.json``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bundler.errors import KeyFileError, SignatureError, UnsafeMediaError
from bundler.format.layout import SIGNATURE_MAX_BYTES, is_digest

ALGORITHM = "ed25519"
PUBLIC_SUFFIX = ".pub"
PRIVATE_SUFFIX = ".key"


@dataclass(frozen=True)
class PublicKey:
    keyid: str
    raw: bytes
    source: Path | None = None

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    keyid: str
    private: Ed25519PrivateKey
    source: Path | None = None

    def public(self) -> PublicKey:
        return PublicKey(self.keyid, _raw_public(self.private.public_key()), None)


def keyid_of(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_keypair(name: str, private_dir: Path, public_dir: Path) -> tuple[Path, Path, str]:
    """Write ``<private_dir>/<name>.key`` (mode 0600) and ``<public_dir>/<name>.pub``.

    Refuses to put a private key into a public-key directory, or to overwrite a key.
    """
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"invalid key name {name!r}", remedy="use a plain name such as 'site-a-exporter'")
    priv_dir = private_dir.expanduser().resolve()
    pub_dir = public_dir.expanduser().resolve()
    holds_public = priv_dir.is_dir() and any(priv_dir.glob(f"*{PUBLIC_SUFFIX}"))
    if priv_dir == pub_dir or priv_dir.is_relative_to(pub_dir) or holds_public:
        raise KeyFileError(
            f"refusing to write a private key into {private_dir}: that directory holds (or is) a public-key directory",
            remedy="choose a --private-dir outside the repository's keys/ (the default is ~/.config/bundler/keys)",
        )
    priv_path = priv_dir / f"{name}{PRIVATE_SUFFIX}"
    pub_path = pub_dir / f"{name}{PUBLIC_SUFFIX}"
    for p in (priv_path, pub_path):
        if p.exists():
            raise KeyFileError(f"{p} already exists", remedy="choose another name or remove the old key first")
    priv_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pub_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_path.write_bytes(pub_pem)
    return priv_path, pub_path, keyid_of(_raw_public(key.public_key()))


def load_signing_key(path: Path) -> SigningKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            f"cannot read signing key {path}: {exc.strerror}",
            remedy="create one with 'bundle keys generate NAME' or pass --key PATH",
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return SigningKey(keyid_of(_raw_public(key.public_key())), key, path)


def load_public_key(path: Path) -> PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            f"cannot read public key {path}: {exc.strerror}", remedy="check the file's permissions"
        ) from exc
    if b"PRIVATE KEY" in data:
        raise KeyFileError(
            f"{path} holds a PRIVATE key in a public-key directory",
            remedy="move it out of keys/ at once and treat it as exposed: generate a new key pair",
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    raw = _raw_public(key)
    return PublicKey(keyid_of(raw), raw, path)


def load_trust(keys_dir: Path) -> dict[str, PublicKey]:
    """Every ``*.pub`` in ``keys_dir``, by key id."""
    if not keys_dir.is_dir():
        raise KeyFileError(
            f"trusted-keys directory {keys_dir} does not exist",
            remedy="copy the exporter's public key (*.pub) into it, or pass --keys DIR",
        )
    trust: dict[str, PublicKey] = {}
    for path in sorted(keys_dir.glob(f"*{PUBLIC_SUFFIX}")):
        key = load_public_key(path)
        trust[key.keyid] = key
    return trust


def sign(message: bytes, key: SigningKey) -> bytes:
    sig = key.private.sign(message)
    doc = {"signatures": [{"algorithm": ALGORITHM, "keyid": key.keyid, "signature": base64.b64encode(sig).decode()}]}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("ascii")


def verify(message: bytes, sig_file: bytes, trust: dict[str, PublicKey]) -> PublicKey:
    """Return the trusted key that signed ``message``, or raise SignatureError.

    One valid signature by a trusted key is enough; signatures by unknown keys are
    skipped (so a bundle can carry a second signature during a key rotation).
    """
    if len(sig_file) > SIGNATURE_MAX_BYTES:
        raise UnsafeMediaError(f"manifest.sig is {len(sig_file)} bytes, over the {SIGNATURE_MAX_BYTES}-byte cap")
    try:
        doc = json.loads(sig_file.decode("ascii"))
        sigs = doc["signatures"]
        if not isinstance(sigs, list):
            raise TypeError("signatures is not a list")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SignatureError(
            f"manifest.sig is malformed ({exc})", remedy="the media was damaged or tampered with; export again"
        ) from exc
    seen: list[str] = []
    for item in sigs:
        if not isinstance(item, dict) or item.get("algorithm") != ALGORITHM or not is_digest(item.get("keyid")):
            continue
        keyid = str(item["keyid"])
        seen.append(keyid)
        key = trust.get(keyid)
        if key is None:
            continue
        try:
            signature = base64.b64decode(str(item.get("signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError(
                f"the signature by trusted key {keyid[:16]} in manifest.sig is not valid base64: the file was damaged",
                remedy="do not import this bundle; get an untouched copy or a new export",
            ) from None
        if key.verify(signature, message):
            return key
        raise SignatureError(
            f"the manifest signature by trusted key {keyid[:16]} does not verify: manifest.json was altered",
            remedy="do not import this bundle; get an untouched copy or a new export",
        )
    if not seen:
        raise SignatureError("manifest.sig holds no Ed25519 signature", remedy="export the bundle again")
    names = ", ".join(k[:16] for k in seen)
    raise SignatureError(
        f"the bundle is signed by key {names}, which is not among the {len(trust)} trusted keys",
        remedy="if this exporter is legitimate, add its public key (*.pub) to the enclave's keys/ directory",
    )
