"""The enclave's own OpenPGP key: it signs what deployed machines and MAAS trust.

One key per enclave signs everything the enclave republishes: the reprepro repository
(deb kind) and regenerated simplestreams (maas_image kind). It lives in
``<enclave>/signing/gnupg`` (mode 0700, no passphrase: the enclave host must protect it like
any repository signing key). Its public half is exported as ``<enclave>/signing/enclave-key.gpg``
(binary: apt ``Signed-By:``, MAAS ``keyring_filename=``) and ``enclave-key.asc`` (armored:
MAAS package-repository ``key=``).

gpg puts its agent socket in the home directory when /run/user/<uid> is absent, and a
socket path over ~108 characters breaks gpg; every call therefore goes through a short
symlink in /tmp (:func:`short_home`), and the agent is stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bundler.errors import PreflightError, PublishError

UID = "bundler enclave repository <enclave@bundler.invalid>"


@dataclass(frozen=True)
class EnclaveKey:
    fingerprint: str
    binary: Path
    armored: Path


@contextmanager
def short_home(home: Path) -> Iterator[Path]:
    """A short path to ``home`` for gpg and reprepro; stops the gpg agent afterwards."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)
    link_dir = Path(tempfile.mkdtemp(prefix="g.", dir="/tmp"))
    link = link_dir / "h"
    link.symlink_to(home.resolve())
    try:
        yield link
    finally:
        subprocess.run(["gpgconf", "--homedir", str(link), "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(link_dir, ignore_errors=True)


def gpg(home: Path, *args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--quiet", *args],
        input=input,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise PublishError(
            f"gpg {' '.join(args[:2])} failed: {proc.stderr.decode(errors='replace').strip()}",
            remedy="check the enclave's GnuPG home (<enclave>/signing/gnupg)",
        )
    return proc.stdout


def secret_fingerprint(home: Path) -> str | None:
    out = gpg(home, "--list-secret-keys", "--with-colons").decode()
    for line in out.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    return None


def signing_dir(enclave: Path) -> Path:
    return enclave / "signing"


def ensure_enclave_key(enclave: Path) -> EnclaveKey:
    """Create the enclave signing key on first use; export its public half. Idempotent."""
    deb_root = signing_dir(enclave)
    if shutil.which("gpg") is None:
        raise PreflightError("gpg is not installed", remedy="apt-get install gnupg")
    home = deb_root / "gnupg"
    binary, armored = deb_root / "enclave-key.gpg", deb_root / "enclave-key.asc"
    with short_home(home) as h:
        fpr = secret_fingerprint(h)
        if fpr is None:
            gpg(h, "--passphrase", "", "--quick-gen-key", UID, "ed25519", "sign", "never")
            fpr = secret_fingerprint(h)
            assert fpr is not None
        if not binary.exists() or not armored.exists():
            binary.write_bytes(gpg(h, "--export", fpr))
            armored.write_bytes(gpg(h, "--armor", "--export", fpr))
    return EnclaveKey(fingerprint=fpr, binary=binary, armored=armored)


def clearsign_many(enclave: Path, documents: list[bytes]) -> list[bytes]:
    """Clearsign each of ``documents`` with the enclave key (SHA512), in one gpg session.

    Creates the key on first use, like :func:`ensure_enclave_key`. Used for regenerated
    simplestreams (``.sjson``) that MAAS verifies with ``enclave-key.gpg``.
    """
    key = ensure_enclave_key(enclave)
    with short_home(signing_dir(enclave) / "gnupg") as h:
        return [
            gpg(h, "--local-user", f"{key.fingerprint}!", "--digest-algo", "SHA512", "--clearsign", input=doc)
            for doc in documents
        ]


def clearsign(enclave: Path, data: bytes) -> bytes:
    """Clearsign ``data`` with the enclave key; see :func:`clearsign_many`."""
    return clearsign_many(enclave, [data])[0]
