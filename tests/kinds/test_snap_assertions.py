"""The snap assertion format, digest encoding and signature checks (pure; no network).

Signature checking is proved against real data: Canonical's root account-key and account
assertions as snapd embeds them (self-signed by the 8192-bit root key)."""

from __future__ import annotations

import hashlib

import pytest

from bundler.kinds.snap.assertions import (
    AssertionProblem,
    b64_to_hex,
    check_declaration,
    check_revision,
    encode_stream,
    hex_to_b64,
    parse_stream,
    select,
)
from bundler.kinds.snap.signature import decode_public_key, verify, verify_chain
from bundler.kinds.snap.trusted import CANONICAL_ACCOUNT, CANONICAL_ROOT_ACCOUNT_KEY
from tests.fakes.snap_store import ROOT_ACCOUNT, Key, SnapStore, assertion

ROOT_ID = "-CvQKAwRQ5h3Ffn10FILJoEZUXOv6km9FwA80-Rcj-f-6jadQ89VRswHNiEB9Lxk"


def test_canonical_root_key_id_and_self_signatures_verify() -> None:
    key_a, account = parse_stream(CANONICAL_ROOT_ACCOUNT_KEY + b"\n" + CANONICAL_ACCOUNT)
    key = decode_public_key(key_a.body)
    assert key.id == ROOT_ID == key_a.get("public-key-sha3-384")
    assert key.n.bit_length() == 8192
    verify(key_a, key)
    verify(account, key)
    verify_chain([account], [key_a])


def test_a_changed_byte_breaks_the_canonical_signature() -> None:
    key_a = parse_stream(CANONICAL_ROOT_ACCOUNT_KEY)[0]
    forged = parse_stream(CANONICAL_ACCOUNT.replace(b"validation: certified", b"validation: verified"))[0]
    with pytest.raises(AssertionProblem, match="does not verify"):
        verify(forged, decode_public_key(key_a.body))


def test_digest_encodings() -> None:
    data = b"snap file bytes"
    hexd = hashlib.sha3_384(data).hexdigest()
    b64 = hex_to_b64(hexd)
    assert len(b64) == 64 and "=" not in b64 and "+" not in b64 and "/" not in b64
    assert b64_to_hex(b64) == hexd
    with pytest.raises(AssertionProblem):
        b64_to_hex(b64[:-1])


def test_stream_round_trip_with_body_and_malformed_input() -> None:
    stream = parse_stream(CANONICAL_ROOT_ACCOUNT_KEY + b"\n" + CANONICAL_ACCOUNT)
    assert [a.type for a in stream] == ["account-key", "account"]
    assert len(stream[0].body) == 1406
    again = parse_stream(encode_stream([*stream, stream[0]]))  # a duplicate is written once
    assert [a.raw for a in again] == [a.raw for a in stream]
    with pytest.raises(AssertionProblem, match="no signature"):
        parse_stream(b"type: account\naccount-id: x")
    with pytest.raises(AssertionProblem, match="body"):
        parse_stream(CANONICAL_ROOT_ACCOUNT_KEY.replace(b"body-length: 1406", b"body-length: 1405"))
    with pytest.raises(AssertionProblem, match="header line"):
        parse_stream(b"type account\n\nAAAA\n")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SnapStore:
    s = SnapStore(tmp_path_factory.mktemp("store"))
    s.add("hello", "1.0", channels={"latest/stable": ["amd64"]}, base="core24")
    return s


def _stream(store: SnapStore, digest: str) -> list:  # type: ignore[type-arg]
    spec = store.snaps["hello"]
    keys = [
        ("snap-revision", digest),
        ("snap-declaration", "16", spec.snap_id),
        ("account", spec.publisher),
        ("account-key", store.store_key.id),
    ]
    return [a for k in keys for a in parse_stream(store.assertions[k])]


def test_select_and_chain_for_a_real_snap_file(store: SnapStore) -> None:
    r = store.revision("hello", "latest/stable", "amd64")
    spec = store.snaps["hello"]
    stream = _stream(store, hex_to_b64(r.sha3_384))
    got = select(stream, name="hello", snap_id=spec.snap_id, revision=r.revision, sha3_384_hex=r.sha3_384, size=r.size)
    assert [a.type for a in got.ordered()] == ["account-key", "account", "snap-declaration", "snap-revision"]
    anchors = parse_stream(store.root_assert.read_bytes())
    verify_chain(got.ordered(), anchors)
    # The same stream does not chain up to Canonical's root.
    with pytest.raises(AssertionProblem, match="missing"):
        verify_chain(got.ordered(), parse_stream(CANONICAL_ROOT_ACCOUNT_KEY))
    # Without the store's account-key the chain is broken.
    with pytest.raises(AssertionProblem, match="missing"):
        verify_chain([a for a in got.ordered() if a.type != "account-key"], anchors)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sha3_384_hex", "0" * 96, "digest"),
        ("size", 1, "size"),
        ("snap_id", "B" * 32, "snap id"),
        ("revision", 999, "revision"),
    ],
)
def test_revision_mismatch_is_named(store: SnapStore, field: str, value: object, message: str) -> None:
    r = store.revision("hello", "latest/stable", "amd64")
    rev = parse_stream(store.assertions[("snap-revision", hex_to_b64(r.sha3_384))])[0]
    args = {"sha3_384_hex": r.sha3_384, "size": r.size, "snap_id": store.snaps["hello"].snap_id, "revision": r.revision}
    check_revision(rev, **args)  # type: ignore[arg-type]
    args[field] = value
    with pytest.raises(AssertionProblem, match=message):
        check_revision(rev, **args)  # type: ignore[arg-type]


def test_declaration_mismatch_is_named(store: SnapStore) -> None:
    spec = store.snaps["hello"]
    decl = parse_stream(store.assertions[("snap-declaration", "16", spec.snap_id)])[0]
    check_declaration(decl, snap_id=spec.snap_id, name="hello")
    with pytest.raises(AssertionProblem, match="names the snap 'hello', not 'other'"):
        check_declaration(decl, snap_id=spec.snap_id, name="other")
    with pytest.raises(AssertionProblem, match="snap id"):
        check_declaration(decl, snap_id="C" * 32, name="hello")


def test_a_key_of_another_account_is_refused(store: SnapStore) -> None:
    rogue = Key(1024)
    rogue_key = assertion(
        [
            ("type", "account-key"),
            ("authority-id", ROOT_ACCOUNT),
            ("public-key-sha3-384", rogue.id),
            ("account-id", "someone-else"),
            ("name", "x"),
            ("since", "2016-01-01T00:00:00Z"),
        ],
        store.root_key,
        rogue.body,
    )
    signed = assertion(
        [
            ("type", "account"),
            ("authority-id", ROOT_ACCOUNT),
            ("account-id", "a"),
            ("timestamp", "2024-01-01T00:00:00Z"),
        ],
        rogue,
    )
    with pytest.raises(AssertionProblem, match="authority is testrootorg"):
        verify_chain(parse_stream(signed + b"\n\n" + rogue_key), parse_stream(store.root_assert.read_bytes()))
