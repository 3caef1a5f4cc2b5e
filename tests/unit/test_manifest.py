"""The manifest parser refuses every structural inconsistency, naming it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bundler.errors import UnsafeMediaError, UnsupportedFormatError
from bundler.format.manifest import Manifest

ID1, ID2 = "1" * 64, "2" * 64


def base() -> dict[str, Any]:
    return {
        "schema": 1,
        "features": [],
        "series": "s",
        "sequence": 2,
        "base": None,
        "created": "2026-11-25T00:00:00Z",
        "expires": None,
        "generator": "t",
        "chunk_size": 100,
        "volumes": 2,
        "entries": [
            {
                "kind": "files",
                "name": "n",
                "version": "1",
                "arch": "all",
                "metadata": {},
                "files": [
                    {"path": "a/b", "sha256": "f" * 64, "size": 15, "chunks": [ID1, ID2]},
                    {"path": "a/c", "sha256": "e" * 64, "size": 3},
                ],
            }
        ],
        "chunks": [
            {"id": ID1, "size": 50, "raw_size": 10, "volume": 1},
            {"id": ID2, "size": 50, "raw_size": 5, "volume": 2},
        ],
    }


def parse(d: dict[str, Any]) -> Manifest:
    return Manifest.from_bytes(json.dumps(d).encode())


def test_valid() -> None:
    m = parse(base())
    assert [f.carried for e in m.entries for f in e.files] == [True, False]
    assert [c.volume for c in m.chunks] == [1, 2]


@pytest.mark.parametrize(
    ("edit", "error", "needle"),
    [
        (lambda d: d.update(series="Bad Name"), UnsupportedFormatError, "invalid series"),
        (lambda d: d.update(sequence=0), UnsupportedFormatError, "'sequence' is 0"),
        (lambda d: d.update(sequence=True), UnsupportedFormatError, "'sequence' is missing or not a int"),
        (lambda d: d.update(base={"sequence": 2, "digest": "a" * 64}), UnsupportedFormatError, "not older"),
        (lambda d: d.update(created="yesterday"), UnsupportedFormatError, "not an ISO 8601"),
        (lambda d: d.update(created="2026-11-25T00:00:00"), UnsupportedFormatError, "no time zone"),
        (lambda d: d["chunks"][1].update(volume=3), UnsupportedFormatError, "volume 3 of 2"),
        (lambda d: d["chunks"][1].update(size=101), UnsupportedFormatError, "over the bundle's chunk size"),
        (lambda d: d["chunks"].append(dict(d["chunks"][0])), UnsupportedFormatError, "listed twice"),
        (
            lambda d: d["chunks"].append({"id": "3" * 64, "size": 1, "raw_size": 1, "volume": 1}),
            UnsupportedFormatError,
            "that no file uses",
        ),
        (lambda d: d["entries"][0]["files"][0].update(size=16), UnsupportedFormatError, "its chunks hold 15"),
        (lambda d: d["entries"][0]["files"][0].update(chunks=[ID1, "9" * 64]), UnsupportedFormatError, "does not list"),
        (lambda d: d["entries"].append(dict(d["entries"][0])), UnsupportedFormatError, "listed twice"),
        (
            lambda d: d["entries"][0]["files"][1].update(path="a/b"),
            UnsupportedFormatError,
            "listed twice with different content",
        ),
        (lambda d: d["entries"][0]["files"][0].update(path="a//b"), UnsafeMediaError, "empty"),
        (lambda d: d["entries"][0]["files"][0].update(path="./a"), UnsafeMediaError, "'.'"),
        (lambda d: d["entries"][0]["files"][0].update(path="a/\x00"), UnsafeMediaError, "control"),
        (lambda d: d["entries"][0]["files"][0].update(sha256="F" * 64), UnsupportedFormatError, "sha256"),
        (lambda d: d.pop("entries"), UnsupportedFormatError, "'entries' is missing"),
        # JSON true and 1.0 compare equal to 1 in Python: the schema must be the integer itself.
        (lambda d: d.update(schema=True), UnsupportedFormatError, "schema version True"),
        (lambda d: d.update(schema=1.0), UnsupportedFormatError, "schema version 1.0"),
        # "$" would accept a trailing newline; names and digests must match in full.
        (lambda d: d.update(series="s\n"), UnsupportedFormatError, "invalid series"),
        (lambda d: d["entries"][0]["files"][0].update(sha256="f" * 64 + "\n"), UnsupportedFormatError, "sha256"),
        (
            lambda d: d["entries"][0]["files"][1].update(sha256="f" * 64),
            UnsupportedFormatError,
            "with another size or other chunks",
        ),
    ],
)
def test_refusals(edit: Any, error: type[Exception], needle: str) -> None:
    d = base()
    edit(d)
    with pytest.raises(error, match=None) as info:
        parse(d)
    assert needle in str(info.value)


def test_not_json() -> None:
    with pytest.raises(UnsupportedFormatError, match="not valid JSON"):
        Manifest.from_bytes(b"\xff\xfe")
    with pytest.raises(UnsupportedFormatError, match="not a JSON object"):
        Manifest.from_bytes(b"[]")
