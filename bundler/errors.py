"""One error hierarchy for the whole tool.

Every error the library raises derives from :class:`BundlerError`. Each class
carries a fixed exit code (grouped in ranges, documented in ``docs/CLI.md``) and
a message that says what is wrong *and what to do about it*. Library code never
prints or exits: the CLI is the only place that catches these and sets the exit
code.

Ranges:
    3      (not an error) import staged the given volumes and needs more; set by the CLI
    10-19  carry spec, usage and keys
    20-29  bundle verification (signature, digest, format, series rules, media)
    30-39  upstream / source side (download, upstream signature)
    40-49  target side (preflight, publish)
    50-59  state (lock, corrupt state)
"""

from __future__ import annotations


class BundlerError(Exception):
    """Root of every error bundler raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        self.message = message
        self.remedy = remedy
        super().__init__(message if not remedy else f"{message}\n  what to do: {remedy}")


# --- 10-19: carry spec, usage, keys ------------------------------------------------


class SpecError(BundlerError):
    """The carry spec (manifests/*.toml) is invalid."""

    exit_code = 10


class UsageError(BundlerError):
    """Options that cannot work together, or an output that cannot be written."""

    exit_code = 11


class KeyFileError(BundlerError):
    """A signing or public key is missing, unreadable, or in the wrong place."""

    exit_code = 12


# --- 20-29: verification ------------------------------------------------------------


class VerificationError(BundlerError):
    """The bundle failed verification. Nothing was changed."""

    exit_code = 20


class SignatureError(VerificationError):
    """Missing or bad manifest signature, or a signer that is not trusted."""

    exit_code = 21


class DigestError(VerificationError):
    """A chunk or file does not match its recorded digest or size."""

    exit_code = 22


class MissingChunkError(VerificationError):
    """A chunk the manifest places on a given volume is not there."""

    exit_code = 23


class UnsupportedFormatError(VerificationError):
    """Unknown schema version or required feature, or a malformed manifest."""

    exit_code = 24


class RollbackError(VerificationError):
    """The bundle is older than what the enclave already holds."""

    exit_code = 25


class ForkError(VerificationError):
    """Another bundle with the same series and sequence was already applied."""

    exit_code = 26


class BaseMismatchError(VerificationError):
    """A delta bundle builds on a bundle the enclave has not applied."""

    exit_code = 27


class ExpiredError(VerificationError):
    """The bundle's expiry time has passed."""

    exit_code = 28


class UnsafeMediaError(VerificationError):
    """Something on the media or in the manifest is unsafe: an escaping path,
    a symlink, an oversized file, volumes of different bundles."""

    exit_code = 29


# --- 30-39: upstream / source --------------------------------------------------------


class SourceError(BundlerError):
    """Collecting content on the connected side failed."""

    exit_code = 30


class FetchError(SourceError):
    """A download failed after retries."""

    exit_code = 31


class UpstreamDigestError(SourceError):
    """Upstream content does not match the size or digest it was declared with."""

    exit_code = 32


class UpstreamSignatureError(SourceError):
    """Upstream metadata is unsigned, badly signed, or signed by an unexpected key."""

    exit_code = 33


class UpstreamContentError(SourceError):
    """Upstream does not offer what the carry spec asks for."""

    exit_code = 34


# --- 40-49: target --------------------------------------------------------------------


class TargetError(BundlerError):
    """Publishing into an enclave service failed."""

    exit_code = 40


class PreflightError(TargetError):
    """A target service is missing or unusable; nothing was published."""

    exit_code = 41


class PublishError(TargetError):
    """Publishing failed part-way; re-run the import to finish."""

    exit_code = 42


# --- 50-59: state ---------------------------------------------------------------------


class StateError(BundlerError):
    """Exporter ledger or enclave state problem."""

    exit_code = 50


class StateLockedError(StateError):
    """Another bundler process holds the lock."""

    exit_code = 51


class StateCorruptError(StateError):
    """A state file cannot be read."""

    exit_code = 52


ALL_ERRORS: tuple[type[BundlerError], ...] = (
    BundlerError,
    SpecError,
    UsageError,
    KeyFileError,
    VerificationError,
    SignatureError,
    DigestError,
    MissingChunkError,
    UnsupportedFormatError,
    RollbackError,
    ForkError,
    BaseMismatchError,
    ExpiredError,
    UnsafeMediaError,
    SourceError,
    FetchError,
    UpstreamDigestError,
    UpstreamSignatureError,
    UpstreamContentError,
    TargetError,
    PreflightError,
    PublishError,
    StateError,
    StateLockedError,
    StateCorruptError,
)
