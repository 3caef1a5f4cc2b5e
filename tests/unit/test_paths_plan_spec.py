"""Path rules, the delta plan, and carry-spec validation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bundler.errors import SpecError, UnsafeMediaError, UsageError
from bundler.format.manifest import Manifest
from bundler.model import Artifact, Declared, Entry, FileRecord
from bundler.paths import check_relpath, resolve_inside
from bundler.plan import carry_plan
from bundler.spec import load_spec
from bundler.units import parse_size


@pytest.mark.parametrize("good", ["a", "a/b.c", "pool/main/h/hello/hello_2.10-3_amd64.deb", "a b/ü"])
def test_good_paths(good: str) -> None:
    assert check_relpath(good, what="t") == good


@pytest.mark.parametrize("bad", ["", "/a", "a/../b", "..", "a/./b", "a//b", "a/", "a\\b", "a\nb", "x" * 5000])
def test_bad_paths(bad: str) -> None:
    with pytest.raises(UnsafeMediaError):
        check_relpath(bad, what="t")


def test_resolve_inside_refuses_symlink_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)
    (root / "f").symlink_to(tmp_path / "x")
    assert resolve_inside(root, "d/new", what="t") == (root / "d/new").resolve()
    with pytest.raises(UnsafeMediaError, match="outside"):
        resolve_inside(root, "link/x", what="t")
    with pytest.raises(UnsafeMediaError, match="symlink"):
        resolve_inside(root, "f", what="t")


def _decl(name: str, *shas: str, url: bool = False) -> Declared:
    arts = tuple(
        Artifact(
            path=f"{name}/{i}",
            sha256=s,
            size=1,
            url="http://x/" + s if url else None,
            local=None if url else Path("/x"),
        )
        for i, s in enumerate(shas)
    )
    return Declared(kind="files", name=name, version="1", arch="all", artifacts=arts)


def test_plan_full_dedups_and_fetches_remote_only() -> None:
    p = carry_plan([_decl("a", "1" * 64, "2" * 64), _decl("b", "2" * 64, "3" * 64, url=True)], None)
    assert p.carry == ("1" * 64, "2" * 64, "3" * 64)
    assert [a.sha256 for a in p.to_fetch] == ["3" * 64]


def test_plan_delta_skips_what_the_base_state_holds() -> None:
    base = Manifest(
        schema=1,
        features=(),
        series="s",
        sequence=1,
        base=None,
        created=datetime.now(UTC),
        expires=None,
        generator="t",
        chunk_size=1 << 20,
        volumes=1,
        chunks=(),
        entries=(Entry("files", "old", "1", "all", (FileRecord("old/0", "2" * 64, 1, None),)),),
    )
    p = carry_plan([_decl("a", "1" * 64, "2" * 64)], base)
    assert p.carry == ("1" * 64,) and p.skipped == {"2" * 64}


def test_spec_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "s.toml"

    def load(text: str) -> object:
        spec.write_text(text)
        return load_spec(spec)

    with pytest.raises(SpecError, match="'series' is required"):
        load('[[files]]\nname="a"\npath="a"\nsource="."\n')
    with pytest.raises(SpecError, match="unknown key"):
        load('series="s"\nfoo=1\n')
    with pytest.raises(SpecError, match="names no content"):
        load('series="s"\n')
    with pytest.raises(SpecError, match="exactly one of 'url' and 'source'"):
        load('series="s"\n[[files]]\nname="a"\npath="a"\n')
    with pytest.raises(SpecError, match="must be relative"):
        load('series="s"\n[[files]]\nname="a"\npath="../a"\nsource="."\n')
    with pytest.raises(SpecError, match=r"\$\{NOPE_UNSET\} is used but not set"):
        load('series="s"\n[[files]]\nname="a"\npath="a"\nurl="${NOPE_UNSET}/x"\nsha256="' + "0" * 64 + '"\n')
    monkeypatch.setenv("MIRROR", "http://127.0.0.1:9")
    s = load(
        'series="s"\nchunk_size="2G"\n[[files]]\nname="a"\npath="a"\nurl="${MIRROR}/x"\nsha256="' + "A" * 64 + '"\n'
    )
    assert s.sections[0][1]["url"] == "http://127.0.0.1:9/x"  # type: ignore[attr-defined]
    assert s.sections[0][1]["sha256"] == "a" * 64  # type: ignore[attr-defined]
    assert s.chunk_size == 2 << 30  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "n"), [("700M", 700 << 20), ("4GiB", 4 << 30), ("1.5k", 1536), ("12", 12)])
def test_sizes(text: str, n: int) -> None:
    assert parse_size(text) == n


def test_bad_size() -> None:
    with pytest.raises(UsageError):
        parse_size("lots")
