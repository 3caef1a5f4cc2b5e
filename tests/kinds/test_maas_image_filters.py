"""The simplestreams filter syntax and the pure stream/regenerate helpers of ``maas_image``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundler.kinds.maas_image.filters import FilterError, flatten, matches_all, parse_filter, parse_filters
from bundler.kinds.maas_image.handoff import handoff
from bundler.kinds.maas_image.regenerate import build_index, build_products, maas_problems
from bundler.kinds.maas_image.stream import (
    StreamError,
    clearsigned_problem,
    parse_index,
    parse_products,
    signed_payload,
)
from bundler.kinds.maas_image.target import stale_paths
from bundler.model import Entry, FileRecord

FLAT = {"os": "ubuntu", "release": "jammy", "arch": "amd64", "subarch": "hwe-22.04", "label": "stable"}


@pytest.mark.parametrize(
    ("expr", "hit"),
    [
        ("os=ubuntu", True),
        ("os=ubunt", False),  # '=' is exact
        ("os!=ubuntu", False),
        ("arch!=arm64", True),
        ("release~(jammy|noble)", True),
        ("release~(focal|noble)", False),
        ("release!~(jammy|noble)", False),
        ("subarch~hwe", True),  # '~' is an unanchored search
        ("subarch~^hwe-22", True),
        ("subarch~^22", False),
        ("kflavor=", True),  # a missing key reads as ""
        ("kflavor=generic", False),
        ("label = stable", True),  # spaces around the operator, as simplestreams allows
    ],
)
def test_filter_operators(expr: str, hit: bool) -> None:
    assert parse_filter(expr).matches(FLAT) is hit


def test_filters_are_anded() -> None:
    assert matches_all(parse_filters(["os=ubuntu", "arch=amd64"]), FLAT)
    assert not matches_all(parse_filters(["os=ubuntu", "arch=arm64"]), FLAT)
    assert matches_all((), FLAT)


@pytest.mark.parametrize("bad", ["release", "=jammy", "release~(jammy", "rel ease=x"])
def test_bad_filters_are_refused(bad: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(bad)


def test_flatten_later_levels_win_and_names_are_inserted() -> None:
    flat = flatten(
        {"content_id": "c", "label": "top"},
        "p",
        {"label": "stable", "arch": "amd64", "n": 3},
        "20250718",
        {"pubname": "x"},
        "boot-kernel",
        {"ftype": "boot-kernel", "size": 5, "nested": {"a": 1}},
    )
    assert flat["label"] == "stable" and flat["product_name"] == "p" and flat["version_name"] == "20250718"
    assert flat["item_name"] == "boot-kernel" and flat["size"] == "5" and flat["n"] == "3"
    assert "nested" not in flat


def _products(versions: dict[str, dict[str, str]]) -> bytes:
    items = {
        v: {"items": {n: {"ftype": n, "path": p, "sha256": "a" * 64, "size": 1} for n, p in its.items()}}
        for v, its in versions.items()
    }
    doc = {
        "content_id": "cid",
        "datatype": "image-ids",
        "format": "products:1.0",
        "updated": "u",
        "products": {
            "p1": {
                "arch": "amd64",
                "label": "stable",
                "os": "ubuntu",
                "release": "jammy",
                "release_title": "22.04 LTS",
                "subarch": "ga-22.04",
                "subarches": "generic",
                "version": "22.04",
                "versions": items,
            }
        },
    }
    return json.dumps(doc).encode()


def test_parse_products_refuses_unsafe_or_unverifiable_items() -> None:
    good = _products({"1": {"squashfs": "j/a/1/squashfs"}})
    assert [i.path for i in parse_products(good, "x", "cid", "x").items] == ["j/a/1/squashfs"]
    with pytest.raises(StreamError, match="unusable path"):
        parse_products(_products({"1": {"squashfs": "../etc/passwd"}}), "x", "cid", "x")
    with pytest.raises(StreamError, match="metadata"):
        parse_products(_products({"1": {"squashfs": "streams/v1/index.sjson"}}), "x", "cid", "x")
    with pytest.raises(StreamError, match="keyring"):
        parse_products(_products({"1": {"squashfs": "keyring.gpg"}}), "x", "cid", "x")
    with pytest.raises(StreamError, match="index lists this file"):
        parse_products(good, "x", "other", "x")
    nosha = json.loads(good)
    del nosha["products"]["p1"]["versions"]["1"]["items"]["squashfs"]["sha256"]
    with pytest.raises(StreamError, match="sha256"):
        parse_products(json.dumps(nosha).encode(), "x", "cid", "x")


def test_parse_index_requires_signed_products_paths() -> None:
    doc = {"format": "index:1.0", "index": {"c": {"path": "streams/v1/c.json", "products": []}}}
    with pytest.raises(StreamError, match=r"not a signed \.sjson"):
        parse_index(json.dumps(doc).encode(), "index")


def test_regenerated_products_list_exactly_what_is_held_with_maas_fields() -> None:
    pf = parse_products(
        _products({"1": {"squashfs": "a/1/s", "manifest": "a/1/m"}, "2": {"squashfs": "a/2/s"}}), "p.sjson", "cid", "p"
    )
    doc = build_products(pf, {("p1", "2", "squashfs")})
    assert doc is not None
    assert list(doc["products"]["p1"]["versions"]) == ["2"]
    assert doc["products"]["p1"]["release_title"] == "22.04 LTS"
    assert build_products(pf, {("other", "1", "x")}) is None
    index = parse_index(
        json.dumps(
            {"format": "index:1.0", "updated": "u", "index": {"cid": {"path": "p.sjson", "products": ["p1", "gone"]}}}
        ).encode(),
        "i",
    )
    idx = build_index(index, {"p.sjson": doc})
    assert idx["index"]["cid"]["products"] == ["p1"] and idx["index"]["cid"]["updated"] == "u"
    assert maas_problems(idx, {"p.sjson": doc}) == []
    del doc["products"]["p1"]["subarches"]
    assert maas_problems(idx, {"p.sjson": doc}) == ["p.sjson: product p1: no 'subarches'"]


def test_clearsigned_shape_and_payload() -> None:
    signed = b"\n".join(
        [
            b"-----BEGIN PGP SIGNED MESSAGE-----",
            b"Hash: SHA512",
            b"",
            b'{"a": 1}',
            b"-----BEGIN PGP SIGNATURE-----",
            b"x",
            b"-----END PGP SIGNATURE-----",
            b"",
        ]
    )
    assert clearsigned_problem(signed) == ""
    assert "after" in clearsigned_problem(signed + b"junk")
    assert "does not start" in clearsigned_problem(b'{"a": 1}')
    assert json.loads(signed_payload(signed) or b"") == {"a": 1}


def _image(name: str, *paths: str) -> Entry:
    return Entry(
        "maas_image",
        name,
        "v",
        "amd64",
        tuple(FileRecord(p, "b" * 64, 1, None) for p in paths),
        {"role": "image"},
    )


def test_pruning_never_deletes_a_file_a_kept_version_uses() -> None:
    previous = [_image("old", "s/1/squashfs", "s/shared"), _image("mid", "s/2/squashfs", "s/shared")]
    current = [_image("mid", "s/2/squashfs", "s/shared"), _image("new", "s/3/squashfs")]
    assert stale_paths(previous, current) == ["s/1/squashfs"]


def test_handoff_commands() -> None:
    held = [
        {"os": "ubuntu", "release": "noble", "arch": "arm64"},
        {"os": "ubuntu", "release": "noble", "arch": "amd64"},
        {"os": "grub-efi-signed", "arch": "amd64", "bootloader-type": "uefi"},
    ]
    notes = handoff(Path("/srv/m"), "a/b", "http://mirror/m/", verbatim=True, versions=3, held=held, fingerprint="F")
    assert "maas $PROFILE boot-sources create url=http://mirror/m/a/b/ keyring_filename=/srv/m/a/b/keyring.gpg" in notes
    sel = [n for n in notes if "boot-source-selections" in n]
    assert sel == [
        "maas $PROFILE boot-source-selections create $SOURCE_ID os=ubuntu release=noble arches=amd64,arm64 "
        "subarches='*' labels='*'"
    ]
    assert not any("MIRROR_URL" in n for n in notes) and "verbatim" in notes[0]
