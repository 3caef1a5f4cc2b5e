"""Loose .deb sections of the carry spec: checked, read with dpkg-deb, declared per the contract
in bundler/kinds/deb/__init__.py; and the example manifest parses with the spec checker."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import SpecError, UpstreamContentError
from bundler.events import RecordingReporter
from bundler.fetch import Fetcher
from bundler.kinds.base import SourceContext
from bundler.kinds.deb.source import check_section, declare
from bundler.model import Declared
from bundler.spec import load_spec
from tests.fakes.apt_archive import PackageSpec, build_loose_debs
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (./scripts/setup)")

WHERE = "test.toml [[deb]] #1"


def run(raw: dict[str, Any], tmp: Path, reporter: RecordingReporter | None = None) -> list[Declared]:
    checked = check_section(raw, WHERE)
    with Fetcher(tmp / "cache", retries=0, backoff=0) as fetcher:
        ctx = SourceContext(
            fetcher=fetcher, spec_dir=tmp, work_dir=tmp / "work", reporter=reporter or RecordingReporter()
        )
        return list(declare(checked, ctx))


def test_check_section_normalises_and_refuses() -> None:
    ok = check_section({"name": "site", "suite": "noble", "debs": ["a.deb"]}, WHERE)
    assert ok == {"name": "site", "suite": "noble", "component": "main", "debs": ["a.deb"]}
    assert check_section(dict(ok), WHERE) == ok  # idempotent
    assert (
        check_section({"name": "site", "suite": "noble", "debs_dir": "d", "component": "universe"}, WHERE)["component"]
        == "universe"
    )
    bad: list[tuple[dict[str, Any], str]] = [
        ({"name": "site", "suite": "noble", "debs": ["a.deb"], "url": "http://x"}, "url do(es) not apply"),
        ({"name": "site", "suite": "noble", "debs": ["a.deb"], "packages": ["x"]}, "packages do(es) not apply"),
        ({"name": "site", "debs": ["a.deb"]}, "'suite' is required"),
        ({"name": "site", "suite": "noble\nUpdate: x", "debs": ["a.deb"]}, "'suite' is required"),
        ({"suite": "noble", "debs": ["a.deb"]}, "'name' is required"),
        ({"name": "site", "suite": "noble", "debs": []}, "non-empty list"),
        ({"name": "site", "suite": "noble", "debs": ["a.tar"]}, "'a.tar' does not name a .deb"),
        ({"name": "site", "suite": "noble", "debs": ["a.deb", "a.deb"]}, "names a file twice"),
        ({"name": "site", "suite": "noble", "debs_dir": ""}, "'debs_dir' must be a directory"),
        ({"name": "site", "suite": "noble", "debs": ["a.deb"], "component": "Main Stuff"}, "'component' must be"),
    ]
    for raw, needle in bad:
        with pytest.raises(SpecError) as info:
            check_section(raw, WHERE)
        assert needle in info.value.message and WHERE in info.value.message, (raw, info.value.message)


def test_declare_reads_control_and_follows_the_contract(tmp_path: Path) -> None:
    debs = build_loose_debs(
        tmp_path / "build",
        [
            PackageSpec("libsite1", "1:1.0-1", "noble", source="libsite", section="libs"),
            PackageSpec("site-data", "1.0", "noble", architecture="all", section="", priority=""),
        ],
        ["arm64"],
    )
    got = run({"name": "site", "suite": "noble-updates", "debs_dir": "build", "component": "universe"}, tmp_path)
    by_name = {d.name: d for d in got}
    assert set(by_name) == {"site/noble-updates/libsite1", "site/noble-updates/site-data"}
    lib = by_name["site/noble-updates/libsite1"]
    assert (lib.kind, lib.version, lib.arch) == ("deb", "1:1.0-1", "arm64")
    (art,) = lib.artifacts
    # reprepro's own pool path: prefix "libs" for lib*, the Source name, no epoch in the file name.
    assert art.path == "site/pool/universe/libs/libsite/libsite1_1.0-1_arm64.deb"
    src = next(p for p in debs if p.name.startswith("libsite1"))
    assert art.local == src.resolve() and art.url is None
    assert (art.sha256, art.size) == (hashlib.sha256(src.read_bytes()).hexdigest(), src.stat().st_size)
    assert lib.metadata == {
        "role": "loose",
        "archive": "site",
        "suite": "noble-updates",
        "component": "universe",
        "package": "libsite1",
        "source": "libsite",
        "section": "libs",
        "priority": "optional",
        "filename": "pool/universe/libs/libsite/libsite1_1.0-1_arm64.deb",
    }
    data = by_name["site/noble-updates/site-data"]
    assert data.arch == "all" and data.metadata["section"] == "" and data.metadata["priority"] == ""
    assert data.artifacts[0].path == "site/pool/universe/s/site-data/site-data_1.0_all.deb"


def test_declare_refuses_bad_files_naming_them(tmp_path: Path) -> None:
    build = tmp_path / "build"
    one = build_loose_debs(build / "a", [PackageSpec("tool", "1.0-1", "noble")])[0]
    two = build_loose_debs(build / "b", [PackageSpec("tool", "2.0-1", "noble")])[0]
    with pytest.raises(SpecError) as info:
        run({"name": "site", "suite": "noble", "debs": [str(one), str(two)]}, tmp_path)
    assert "tool (amd64) is given twice" in info.value.message and str(one) in info.value.message

    with pytest.raises(SpecError) as info:
        run({"name": "site", "suite": "noble", "debs": ["missing/tool_1.0_amd64.deb"]}, tmp_path)
    assert str(tmp_path / "missing/tool_1.0_amd64.deb") in info.value.message and info.value.remedy

    fake = tmp_path / "junk_1.0_amd64.deb"
    fake.write_bytes(b"not an ar archive")
    with pytest.raises(UpstreamContentError) as cinfo:
        run({"name": "site", "suite": "noble", "debs": [fake.name]}, tmp_path)
    assert f"{fake} is not a readable .deb" in cinfo.value.message

    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError) as info:
        run({"name": "site", "suite": "noble", "debs_dir": "empty"}, tmp_path)
    assert "holds no .deb file" in info.value.message


def test_debs_dir_skips_symlinks_with_a_warning(tmp_path: Path) -> None:
    real = build_loose_debs(tmp_path / "elsewhere", [PackageSpec("tool", "1.0-1", "noble")])[0]
    build = tmp_path / "build"
    build_loose_debs(build, [PackageSpec("other", "1.0-1", "noble")])
    (build / real.name).symlink_to(real)
    rep = RecordingReporter()
    got = run({"name": "site", "suite": "noble", "debs_dir": "build"}, tmp_path, rep)
    assert [d.name for d in got] == ["site/noble/other"]
    assert any("skipping symlink" in w and real.name in w for w in rep.warnings)


def test_the_ubuntu_example_manifest_parses() -> None:
    spec = load_spec(ROOT / "manifests" / "deb-ubuntu-example.toml")
    sections = [s for kind, s in spec.sections if kind == "deb"]
    archive = {s["name"]: s for s in sections if "url" in s}
    assert archive["ubuntu"]["url"] == "http://archive.ubuntu.com/ubuntu"
    assert archive["ubuntu-ports"]["url"] == "http://ports.ubuntu.com/ubuntu-ports"
    assert archive["ubuntu"]["architectures"] == ["amd64"] and archive["ubuntu-ports"]["architectures"] == ["arm64"]
    for s in archive.values():
        assert s["suites"] == ["noble", "noble-updates", "noble-security"]
        assert s["keyring"] == "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
        assert s["fingerprints"] == ["F6ECB3762474EDA9D21B7022871920D1991BC93C"]
        assert s["installed"] == "fleet-installed.txt"
    loose = [s for s in sections if "url" not in s]
    assert loose and all(s["suite"] == "noble" for s in loose)
