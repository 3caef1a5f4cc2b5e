"""Checking upstream APT signatures with ``gpgv`` (shared/reference/apt-and-reprepro.md, section 2).

* The keyring given to gpgv (and to apt ``Signed-By``) must be a *binary* OpenPGP keyring:
  :func:`binary_keyring` converts an ASCII-armored one (in Python, CRC-24 checked) and
  refuses a GnuPG keybox or anything else.
* :func:`gpgv` runs ``gpgv --status-fd`` and judges each signature from the status lines,
  not from the exit code: an InRelease may carry several signatures, some by keys the
  keyring does not hold. A signature counts only with ``GOODSIG`` *and* ``VALIDSIG`` and
  no expired/revoked/bad marker and a digest stronger than SHA-1. Any ``BADSIG`` refuses
  the whole file.
* The fingerprint to pin is the *primary* key's (the last ``VALIDSIG`` field): archives
  sign with subkeys.
* For a clearsigned file only the payload gpgv writes with ``--output`` may be parsed;
  :func:`check_clearsigned_shape` also refuses text outside the signed block, because apt
  and reprepro read the file itself.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundler.errors import SourceError, SpecError, UpstreamSignatureError

__all__ = [
    "MAX_KEYRING",
    "GpgvResult",
    "Signature",
    "binary_keyring",
    "check_clearsigned_shape",
    "gpgv",
    "normalise_fingerprint",
]

MAX_KEYRING = 16 << 20
"""Largest keyring file accepted (the Ubuntu archive keyring is ~8 KiB)."""

_WEAK_HASHES = {1: "MD5", 2: "SHA1", 3: "RIPEMD160"}
_FPR = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
_ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"
_CLEAR_BEGIN = b"-----BEGIN PGP SIGNED MESSAGE-----"
_SIG_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_SIG_END = b"-----END PGP SIGNATURE-----"


def normalise_fingerprint(value: str) -> str | None:
    """Upper-case hex without spaces, or None when it is not a full v4/v5 fingerprint."""
    fpr = value.replace(" ", "").upper()
    if fpr.startswith("0X"):
        fpr = fpr[2:]
    return fpr if _FPR.fullmatch(fpr) else None


# --- keyrings --------------------------------------------------------------------------


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def _dearmor(text: str, where: str) -> bytes:
    """Every PUBLIC KEY BLOCK in ``text``, decoded (CRC-24 checked) and concatenated."""
    out = bytearray()
    lines = [line.strip() for line in text.splitlines()]
    blocks, i = 0, 0
    while i < len(lines):
        if lines[i] != _ARMOR_BEGIN:
            i += 1
            continue
        blocks += 1
        i += 1
        while i < len(lines) and lines[i] and ":" in lines[i]:  # armor headers ("Comment: ...")
            i += 1
        body: list[str] = []
        checksum: str | None = None
        while i < len(lines) and lines[i] != _ARMOR_END:
            line = lines[i]
            if line.startswith("=") and len(line) == 5:
                checksum = line[1:]
            elif line:
                body.append(line)
            i += 1
        if i == len(lines):
            raise SpecError(f"{where}: armored key block {blocks} has no '{_ARMOR_END}' line")
        i += 1
        try:
            data = base64.b64decode("".join(body), validate=True)
            expected = None if checksum is None else int.from_bytes(base64.b64decode(checksum, validate=True), "big")
        except binascii.Error as exc:
            raise SpecError(f"{where}: armored key block {blocks} is not valid base64 ({exc})") from exc
        if expected is not None and _crc24(data) != expected:
            raise SpecError(f"{where}: armored key block {blocks} fails its CRC-24 checksum (damaged file)")
        out += data
    if not blocks:
        raise SpecError(f"{where}: no '{_ARMOR_BEGIN}' line in the armored keyring")
    return bytes(out)


def _first_packet_tag(data: bytes) -> int | None:
    if not data or not data[0] & 0x80:
        return None
    ctb = data[0]
    return ctb & 0x3F if ctb & 0x40 else (ctb >> 2) & 0x0F


def binary_keyring(src: Path, dest: Path) -> Path:
    """Write the keys of ``src`` (binary or ASCII-armored OpenPGP) to ``dest`` as a binary keyring.

    Raises :class:`SpecError` (naming ``src``) when the file is missing, too large, a GnuPG
    keybox, or holds no OpenPGP public key.
    """
    where = f"keyring {src}"
    try:
        size = src.stat().st_size
        if size > MAX_KEYRING:
            raise SpecError(f"{where} is {size} bytes: larger than the {MAX_KEYRING} allowed for a keyring")
        data = src.read_bytes()
    except FileNotFoundError as exc:
        raise SpecError(
            f"{where} does not exist",
            remedy="install the archive keyring (apt-get install ubuntu-keyring) or set 'keyring' in the carry spec",
        ) from exc
    except IsADirectoryError as exc:
        raise SpecError(f"{where} is a directory; give the keyring file") from exc
    stripped = data.lstrip()
    if stripped.startswith(b"-----BEGIN PGP"):
        data = _dearmor(stripped.decode("ascii", errors="replace"), where)
    elif data[8:12] == b"KBXf":
        raise SpecError(
            f"{where} is a GnuPG keybox, not an OpenPGP keyring",
            remedy=f"export the archive key: gpg --no-default-keyring --keyring {src} --export KEYID > archive.gpg",
        )
    if _first_packet_tag(data) != 6:
        raise SpecError(
            f"{where} holds no OpenPGP public key (neither a binary keyring nor an armored PUBLIC KEY BLOCK)",
            remedy="give the archive's keyring, e.g. /usr/share/keyrings/ubuntu-archive-keyring.gpg",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest


# --- gpgv ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """One signature as gpgv judged it."""

    key_id: str
    """The signing key (id or fingerprint as gpgv names it)."""
    primary: str | None
    """The primary key's fingerprint (``VALIDSIG`` last field), upper-case hex."""
    good: bool
    problem: str
    """Why it does not count ("" when good)."""


@dataclass(frozen=True)
class GpgvResult:
    signatures: tuple[Signature, ...]
    returncode: int
    stderr: str

    @property
    def good(self) -> list[Signature]:
        return [s for s in self.signatures if s.good]

    def describe(self) -> str:
        if not self.signatures:
            detail = self.stderr.strip().splitlines()
            return "gpgv found no signature" + (f" ({detail[-1]})" if detail else "")
        return "; ".join(f"key {s.primary or s.key_id}: {'good' if s.good else s.problem}" for s in self.signatures)


def _judge(status: Iterable[str]) -> list[Signature]:
    sigs: list[Signature] = []
    block: list[list[str]] = []

    def close() -> None:
        if not block:
            return
        kinds = {f[0]: f[1:] for f in block}
        key_id, primary, problem = "?", None, ""
        for marker in ("GOODSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "BADSIG", "ERRSIG"):
            if kinds.get(marker):
                key_id = kinds[marker][0]
                break
        valid = kinds.get("VALIDSIG")
        if valid:
            key_id = valid[0]
            primary = (valid[9] if len(valid) >= 10 else valid[0]).upper()
        if "BADSIG" in kinds:
            problem = "BAD signature (the signed text was altered)"
        elif "ERRSIG" in kinds:
            problem = "cannot be checked: " + (
                "the key is not in the keyring" if "NO_PUBKEY" in kinds else "unsupported or damaged signature"
            )
        elif "EXPKEYSIG" in kinds:
            problem = "made by an expired key"
        elif "REVKEYSIG" in kinds:
            problem = "made by a revoked key"
        elif "EXPSIG" in kinds:
            problem = "the signature has expired"
        elif "GOODSIG" not in kinds or not valid:
            problem = "not confirmed valid by gpgv"
        elif len(valid) > 7 and valid[7].isdigit() and int(valid[7]) in _WEAK_HASHES:
            problem = f"uses the weak digest {_WEAK_HASHES[int(valid[7])]}"
        sigs.append(Signature(key_id=key_id, primary=primary, good=not problem, problem=problem))
        block.clear()

    for line in status:
        if not line.startswith("[GNUPG:] "):
            continue
        fields = line[len("[GNUPG:] ") :].split()
        if not fields:
            continue
        if fields[0] == "NEWSIG":
            close()
            block.append(fields)
        elif block or fields[0] in ("GOODSIG", "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"):
            block.append(fields)
    close()
    return sigs


def gpgv(
    keyring: Path,
    signed: Path,
    *,
    data: Path | None = None,
    output: Path | None = None,
    homedir: Path,
    timeout: float = 120,
) -> GpgvResult:
    """Run gpgv on ``signed`` (clearsigned, or a detached signature of ``data``).

    ``output`` receives the signed payload (clearsigned only); use it only when the result
    has a good signature. ``homedir`` is an empty private directory, so gpgv reads nothing
    of the user's ~/.gnupg. Raises :class:`SourceError` when gpgv is not installed.
    """
    homedir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cmd = ["gpgv", "--homedir", str(homedir), "--status-fd", "1", "--keyring", str(keyring.resolve())]
    if output is not None:
        output.unlink(missing_ok=True)
        cmd += ["--output", str(output)]
    cmd += ["--", str(signed)]
    if data is not None:
        cmd.append(str(data))
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise SourceError(
            "gpgv is not installed: upstream APT signatures cannot be checked", remedy="apt-get install gpgv"
        ) from exc
    status = proc.stdout.decode("utf-8", errors="replace").splitlines()
    return GpgvResult(
        signatures=tuple(_judge(status)),
        returncode=proc.returncode,
        stderr=proc.stderr.decode("utf-8", errors="replace"),
    )


def accept(result: GpgvResult, pinned: Sequence[str], what: str, url: str) -> list[str]:
    """The primary fingerprints of the good signatures that count, or raise
    :class:`UpstreamSignatureError` naming ``what`` (archive and suite) and ``url``."""
    if any("BAD signature" in s.problem for s in result.signatures):
        raise UpstreamSignatureError(
            f"{what}: {url} has a BAD signature: the signed text does not match ({result.describe()})",
            remedy="the file was altered in transit or on the mirror; try another mirror, never ignore this",
        )
    good = result.good
    if not good:
        raise UpstreamSignatureError(
            f"{what}: {url} has no valid signature from a key in the keyring ({result.describe()})",
            remedy="check that 'keyring' in the carry spec holds the archive's signing key (for Ubuntu: "
            "/usr/share/keyrings/ubuntu-archive-keyring.gpg) and that the URL is the real archive",
        )
    if result.returncode != 0 and not any(s.problem.startswith("cannot be checked") for s in result.signatures):
        raise UpstreamSignatureError(
            f"{what}: gpgv refused {url} (exit {result.returncode}): {result.stderr.strip()[-400:]}",
            remedy="check the keyring file and the upstream file",
        )
    primaries = sorted({s.primary for s in good if s.primary})
    if pinned:
        wanted = {p.upper() for p in pinned}
        ok = [p for p in primaries if p in wanted]
        if not ok:
            raise UpstreamSignatureError(
                f"{what}: {url} is signed by {', '.join(primaries)}, which is not one of the accepted "
                f"fingerprints {', '.join(sorted(wanted))}",
                remedy="if the archive really changed its key, check the new key out of band, then update "
                "'fingerprints' in the carry spec",
            )
        return ok
    return primaries


def check_clearsigned_shape(data: bytes, what: str, url: str) -> None:
    """Refuse an InRelease with anything but whitespace around its one signed block."""
    text = data.strip()
    problem = ""
    if not text.startswith(_CLEAR_BEGIN):
        problem = "it does not start with '-----BEGIN PGP SIGNED MESSAGE-----'"
    elif text.count(_CLEAR_BEGIN) != 1 or text.count(_SIG_BEGIN) != 1 or text.count(_SIG_END) != 1:
        problem = "it holds more than one signed block"
    elif not text.endswith(_SIG_END):
        problem = "it has text after '-----END PGP SIGNATURE-----'"
    if problem:
        raise UpstreamSignatureError(
            f"{what}: {url} is not a well-formed clearsigned InRelease: {problem}",
            remedy="text outside the signed block is not covered by the signature; the mirror or a proxy "
            "is serving something else: try another mirror",
        )
