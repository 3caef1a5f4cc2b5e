"""Every trust rule, table-driven, on the pure verifier: bytes, keys, state and a clock in; a verdict out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bundler.errors import (
    BaseMismatchError,
    ExpiredError,
    ForkError,
    RollbackError,
    SignatureError,
    UnsafeMediaError,
    UnsupportedFormatError,
)
from bundler.format.manifest import BaseRef, Manifest, manifest_digest
from bundler.format.signing import SigningKey, generate_keypair, load_signing_key, sign
from bundler.format.trust import SeriesState, check_bundle

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    d = tmp_path_factory.mktemp("k")
    generate_keypair("t", d / "priv", d / "pub")
    return load_signing_key(d / "priv" / "t.key")


def mk(seq: int = 2, base: BaseRef | None = None, expires: datetime | None = None) -> Manifest:
    return Manifest(
        schema=1,
        features=(),
        series="s",
        sequence=seq,
        base=base,
        created=NOW - timedelta(days=1),
        expires=expires,
        generator="test",
        chunk_size=1 << 20,
        volumes=1,
        entries=(),
        chunks=(),
    )


def signed(m: Manifest, key: SigningKey) -> tuple[bytes, bytes]:
    data = m.to_bytes()
    return data, sign(data, key)


def test_valid_bundle_without_state(key: SigningKey) -> None:
    data, sig = signed(mk(), key)
    v = check_bundle(data, sig, {key.keyid: key.public()}, now=NOW, enclave={})
    assert v.manifest.sequence == 2 and not v.already_applied and v.signer.keyid == key.keyid
    assert v.digest == manifest_digest(data)


@pytest.mark.parametrize(
    ("state_seq", "bundle_seq", "same_digest", "base", "error"),
    [
        (3, 2, False, None, RollbackError),
        (2, 2, False, None, ForkError),
        (2, 2, True, None, None),  # already applied
        (1, 2, False, "right", None),  # delta on exactly what the enclave holds
        (1, 3, False, "seq2", BaseMismatchError),  # gap: #2 missing
        (1, 2, False, "wrong-digest", BaseMismatchError),
        (None, 2, False, "seq1", BaseMismatchError),  # delta into an empty enclave
        (None, 2, False, None, None),  # full bundle into an empty enclave
        (5, 7, False, None, None),  # a full bundle may skip sequences
    ],
)
def test_series_rules(
    key: SigningKey, state_seq: int | None, bundle_seq: int, same_digest: bool, base: str | None, error: type | None
) -> None:
    prev_digest = "a" * 64
    base_ref = {
        None: None,
        "right": BaseRef(1, prev_digest),
        "seq2": BaseRef(2, prev_digest),
        "seq1": BaseRef(1, prev_digest),
        "wrong-digest": BaseRef(1, "b" * 64),
    }[base]
    data, sig = signed(mk(seq=bundle_seq, base=base_ref), key)
    digest = manifest_digest(data) if same_digest else prev_digest
    enclave = {} if state_seq is None else {"s": SeriesState("s", state_seq, digest)}
    trust = {key.keyid: key.public()}
    if error is None:
        v = check_bundle(data, sig, trust, now=NOW, enclave=enclave)
        assert v.already_applied == same_digest
    else:
        with pytest.raises(error):
            check_bundle(data, sig, trust, now=NOW, enclave=enclave)


def test_expiry_and_override(key: SigningKey) -> None:
    data, sig = signed(mk(expires=NOW - timedelta(seconds=1)), key)
    trust = {key.keyid: key.public()}
    with pytest.raises(ExpiredError):
        check_bundle(data, sig, trust, now=NOW, enclave={})
    assert check_bundle(data, sig, trust, now=NOW, enclave={}, allow_expired=True).expired
    # verify without an enclave reports expiry instead of refusing
    assert check_bundle(data, sig, trust, now=NOW, enclave=None).expired
    # not yet expired
    data, sig = signed(mk(expires=NOW + timedelta(seconds=1)), key)
    assert not check_bundle(data, sig, trust, now=NOW, enclave={}).expired


def test_rollback_has_no_override(key: SigningKey) -> None:
    data, sig = signed(mk(seq=1), key)
    with pytest.raises(RollbackError):
        check_bundle(
            data,
            sig,
            {key.keyid: key.public()},
            now=NOW,
            enclave={"s": SeriesState("s", 2, "a" * 64)},
            allow_expired=True,
        )


def test_signature_rules(key: SigningKey, tmp_path: Path) -> None:
    data, sig = signed(mk(), key)
    trust = {key.keyid: key.public()}
    with pytest.raises(SignatureError, match="does not verify"):
        check_bundle(data.replace(b'"sequence": 2', b'"sequence": 3'), sig, trust, now=NOW)
    with pytest.raises(SignatureError, match="not among the 0 trusted keys"):
        check_bundle(data, sig, {}, now=NOW)
    with pytest.raises(SignatureError, match="malformed"):
        check_bundle(data, b"garbage", trust, now=NOW)
    with pytest.raises(SignatureError, match="no Ed25519 signature"):
        check_bundle(data, b'{"signatures": []}', trust, now=NOW)
    # a second signature by an unknown key (key rotation) does not hurt
    generate_keypair("other", tmp_path / "p", tmp_path / "q")
    other = load_signing_key(tmp_path / "p" / "other.key")
    import json

    both = json.loads(sign(data, other))
    both["signatures"] += json.loads(sig)["signatures"]
    assert check_bundle(data, json.dumps(both).encode(), trust, now=NOW).signer.keyid == key.keyid


def test_size_caps_come_before_the_signature(key: SigningKey) -> None:
    data, sig = signed(mk(), key)
    with pytest.raises(UnsafeMediaError, match=r"manifest\.json is"):
        check_bundle(data + b" " * (64 * 1024 * 1024), sig, {}, now=NOW)
    with pytest.raises(UnsafeMediaError, match=r"manifest\.sig is"):
        check_bundle(data, sig + b" " * (64 * 1024), {}, now=NOW)


def test_format_is_checked_after_the_signature(key: SigningKey) -> None:
    bad = mk().to_bytes().replace(b'"schema": 1', b'"schema": 7')
    with pytest.raises(UnsupportedFormatError, match="schema version 7"):
        check_bundle(bad, sign(bad, key), {key.keyid: key.public()}, now=NOW)
    with pytest.raises(SignatureError):  # an unsigned bad manifest never reaches the parser
        check_bundle(bad, sign(mk().to_bytes(), key), {key.keyid: key.public()}, now=NOW)


def test_manifest_round_trip_is_exact(key: SigningKey) -> None:
    m = replace(mk(), expires=NOW + timedelta(days=3))
    assert Manifest.from_bytes(m.to_bytes()) == m
    assert Manifest.from_bytes(m.to_bytes()).to_bytes() == m.to_bytes()
