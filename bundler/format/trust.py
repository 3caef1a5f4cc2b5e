"""The trust rules, as one pure function: bytes, keys, state and a clock in; a verdict out.

Order (docs/FORMAT.md, "Trust rules"):
  1. size caps on manifest.json and manifest.sig
  2. a valid signature by a trusted key (before a single byte of the manifest is parsed)
  3. known schema version and required features, well-formed manifest
  4. series rules against what the enclave last applied: older -> rollback; same sequence
     and digest -> already applied (a no-op); same sequence, other digest -> fork
  5. a delta's base must be exactly what the enclave last applied
  6. expiry, unless explicitly overridden (there is no override for rules 1-5)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from bundler.errors import BaseMismatchError, ExpiredError, ForkError, RollbackError, UnsafeMediaError
from bundler.format.layout import MANIFEST_MAX_BYTES, SIGNATURE_MAX_BYTES
from bundler.format.manifest import Manifest, manifest_digest
from bundler.format.signing import PublicKey, verify


@dataclass(frozen=True)
class SeriesState:
    """What an enclave (or the exporter's ledger) last applied for one series."""

    series: str
    sequence: int
    digest: str


@dataclass(frozen=True)
class Verdict:
    manifest: Manifest
    digest: str
    signer: PublicKey
    already_applied: bool
    expired: bool


def check_bundle(
    manifest_bytes: bytes,
    sig_bytes: bytes,
    trust: Mapping[str, PublicKey],
    *,
    now: datetime,
    enclave: Mapping[str, SeriesState] | None = None,
    allow_expired: bool = False,
) -> Verdict:
    """Apply every trust rule; return a verdict or raise the first rule's error.

    ``enclave`` is None when there is no enclave to compare with (``bundle verify``
    without ``--enclave``): rules 4 and 5 are then skipped and expiry is reported,
    not enforced.
    """
    if len(manifest_bytes) > MANIFEST_MAX_BYTES:
        raise UnsafeMediaError(
            f"manifest.json is {len(manifest_bytes)} bytes, over the {MANIFEST_MAX_BYTES}-byte cap",
            remedy="do not import this bundle; it was not written by bundler",
        )
    if len(sig_bytes) > SIGNATURE_MAX_BYTES:
        raise UnsafeMediaError(
            f"manifest.sig is {len(sig_bytes)} bytes, over the {SIGNATURE_MAX_BYTES}-byte cap",
            remedy="do not import this bundle; it was not written by bundler",
        )
    signer = verify(manifest_bytes, sig_bytes, dict(trust))
    manifest = Manifest.from_bytes(manifest_bytes)
    digest = manifest_digest(manifest_bytes)

    already = False
    if enclave is not None:
        already = _series_rules(manifest, digest, enclave.get(manifest.series))

    expired = manifest.expires is not None and now > manifest.expires
    if expired and enclave is not None and not already and not allow_expired:
        assert manifest.expires is not None
        raise ExpiredError(
            f"bundle {manifest.series} #{manifest.sequence} expired at {manifest.expires:%Y-%m-%d %H:%M} UTC "
            f"(now {now:%Y-%m-%d %H:%M} UTC)",
            remedy="ask for a fresh export; if the enclave clock is wrong, fix it or pass --allow-expired",
        )
    return Verdict(manifest=manifest, digest=digest, signer=signer, already_applied=already, expired=expired)


def _series_rules(m: Manifest, digest: str, last: SeriesState | None) -> bool:
    """Rules 4 and 5. Returns True when this exact bundle was already applied."""
    name = f"bundle {m.series} #{m.sequence}"
    if last is None:
        if m.base is not None:
            raise BaseMismatchError(
                f"{name} is a delta on #{m.base.sequence}, but this enclave has never imported series {m.series}",
                remedy=f"import the full bundle of series {m.series} first, or ask for a full export (--full)",
            )
        return False
    if m.sequence < last.sequence:
        raise RollbackError(
            f"{name} is older than #{last.sequence}, which this enclave already applied",
            remedy="nothing to do: this bundle is superseded (replaying it would roll the enclave back)",
        )
    if m.sequence == last.sequence:
        if digest == last.digest:
            return True
        raise ForkError(
            f"{name} differs from the #{last.sequence} this enclave already applied "
            f"(manifest {digest[:16]} vs {last.digest[:16]})",
            remedy="two exports used the same sequence: find out which exporter made this one; "
            "the exporter must continue from the enclave's sequence",
        )
    if m.base is not None and (m.base.sequence, m.base.digest) != (last.sequence, last.digest):
        if m.base.sequence > last.sequence:
            what = f"import bundles #{last.sequence + 1} to #{m.base.sequence} first"
        else:
            what = "ask for a delta against what this enclave holds, or a full export (--full)"
        raise BaseMismatchError(
            f"{name} builds on #{m.base.sequence} ({m.base.digest[:16]}), but this enclave last applied "
            f"#{last.sequence} ({last.digest[:16]})",
            remedy=what,
        )
    return False
