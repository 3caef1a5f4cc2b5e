"""Pure pieces of the deb target: the all-or-nothing snapshot, the entry checks that keep
manifest values out of reprepro's configuration, the generated configuration, version order."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import BundlerError, PreflightError
from bundler.kinds.base import TargetContext
from bundler.kinds.deb.conf import build_conf
from bundler.kinds.deb.rollback import RepoSnapshot
from bundler.kinds.deb.target import DebTarget, check_entries
from bundler.kinds.deb.version import compare_versions
from bundler.model import Entry, FileRecord
from tests.helpers import snapshot

FPR = "A" * 40
SHA = "0" * 64


def make_repo(repo: Path) -> None:
    for rel, data in {
        "conf/distributions": b"Codename: noble\n",
        "db/packages.db": b"\x00" * 4096,
        "db/checksums.db": b"\x01" * 4096,
        "dists/noble/Release": b"Release\n",
        "dists/noble/InRelease": b"signed\n",
        "pool/main/h/hello/hello_1_amd64.deb": b"deb",
    }.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)


def mutate(repo: Path) -> None:
    with open(repo / "db/packages.db", "r+b") as fh:  # in place, as Berkeley DB does
        fh.seek(100)
        fh.write(b"changed")
    (repo / "conf/distributions").write_text("Codename: noble\n\nCodename: noble-updates\n")
    (repo / "dists/noble/InRelease").unlink()
    (repo / "dists/noble-updates").mkdir()
    (repo / "dists/noble-updates/Release").write_text("new\n")
    (repo / "pool/main/n/new").mkdir(parents=True)
    (repo / "pool/main/n/new/new_1_amd64.deb").write_bytes(b"new")
    (repo / "pool/main/h/hello/hello_2_amd64.deb").write_bytes(b"newer")
    (repo / "lists").mkdir()
    (repo / "lists/cache").write_text("x")


def test_restore_makes_the_repository_byte_identical(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo)
    before = snapshot(repo)
    snap = RepoSnapshot(repo, tmp_path / "rollback")
    snap.take()
    assert snap.complete()
    mutate(repo)
    assert snapshot(repo) != before
    snap.restore()
    assert snapshot(repo) == before  # the in-place DB change too: the copy was not a hard link
    snap.drop()
    assert not (tmp_path / "rollback").exists()


def test_restore_of_a_repository_that_did_not_exist_removes_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    snap = RepoSnapshot(repo, tmp_path / "rollback")
    snap.take()
    make_repo(repo)
    snap.restore()
    assert not repo.exists()


def test_recover_rolls_back_only_a_complete_snapshot(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo)
    before = snapshot(repo)
    snap = RepoSnapshot(repo, tmp_path / "rollback")
    assert snap.recover() is False  # nothing to recover
    snap.take()
    mutate(repo)
    assert snap.recover() is True  # an import died after changing things
    assert snapshot(repo) == before and not (tmp_path / "rollback").exists()

    snap.take()
    (tmp_path / "rollback" / "COMPLETE").unlink()  # died while taking it: nothing was changed yet
    (repo / "conf/options").write_text("verbose\n")
    assert snap.recover() is False
    assert (repo / "conf/options").exists() and not (tmp_path / "rollback").exists()


def index(**meta: Any) -> Entry:
    m: dict[str, Any] = {
        "role": "index",
        "archive": "ubuntu",
        "suite": "noble",
        "codename": "noble",
        "origin": "Ubuntu",
        "label": "Ubuntu",
        "url": "http://x",
        "components": ["main"],
        "architectures": ["amd64"],
        "fingerprints": [FPR],
    }
    m.update(meta)
    prefix = f"{m['archive']}/dists/{m['suite']}"
    files = [f"{prefix}/InRelease", f"{prefix}/main/binary-amd64/Packages.xz", f"{m['archive']}/keyring.gpg"]
    return Entry(
        "deb", f"{m['archive']}/{m['suite']}", "1" * 16, "index", tuple(FileRecord(p, SHA, 1, None) for p in files), m
    )


def package(name: str = "hello", role: str = "package", arch: str = "amd64", **meta: Any) -> Entry:
    m: dict[str, Any] = {"role": role, "archive": "ubuntu", "suite": "noble", "component": "main", "package": name}
    m.update(meta)
    path = f"{m['archive']}/pool/main/{name[0]}/{name}/{name}_1.0_{arch}.deb"
    return Entry("deb", f"{m['archive']}/{m['suite']}/{name}", "1.0", arch, (FileRecord(path, SHA, 1, None),), m)


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ([index(origin="Ubuntu\nUpdate: evil")], "metadata origin"),
        ([index(suite="noble\nSignWith: x")], "metadata suite"),
        ([index(components=["main", "-x"])], "metadata components"),
        ([index(fingerprints=["871920D1991BC93C"])], "metadata fingerprints"),
        ([index(), package(component="main universe")], "metadata component"),
        ([index(), package(role="loose", archive="site", section="misc\nevil")], "metadata section"),
        ([index(), package(name="--help")], "metadata package"),
        ([package()], "the bundle carries no index for ubuntu/noble"),
        ([index(), package(), package(role="loose", archive="site")], "hello (amd64) is carried twice into noble"),
        ([index(), package(role="other")], "no valid metadata role"),
    ],
)
def test_check_entries_refuses_naming_the_entry(entries: list[Entry], needle: str) -> None:
    with pytest.raises(PreflightError) as info:
        check_entries(entries)
    assert needle in info.value.message


def test_check_entries_requires_the_signed_release_and_every_index() -> None:
    e = index(architectures=["amd64", "arm64"])
    with pytest.raises(PreflightError) as info:
        check_entries([e])
    assert "ubuntu/dists/noble/main/binary-arm64/Packages(.xz/.gz)" in info.value.message
    no_release = Entry(e.kind, e.name, e.version, e.arch, e.files[1:], index().metadata)
    with pytest.raises(PreflightError) as info:
        check_entries([no_release])
    assert "neither ubuntu/dists/noble/InRelease nor" in info.value.message
    check_entries([index(), package(), package("tool", role="loose", archive="site", arch="all")])


def test_conf_has_every_maas_pocket_and_component_and_overrides_for_loose_debs(tmp_path: Path) -> None:
    loose = [
        package("tool", role="loose", archive="site", suite="jammy", component="extras", arch="arm64"),
        package("doc", role="loose", archive="site", suite="jammy", arch="all", section="doc", priority="optional"),
    ]
    conf = build_conf(FPR, tmp_path, [index()], [package()], loose)
    assert conf.suites == (
        "jammy", "jammy-backports", "jammy-security", "jammy-updates",
        "noble", "noble-backports", "noble-security", "noble-updates",
    )  # fmt: skip
    assert conf.update_suites == ("noble",)
    stanzas = {s.split("Codename: ")[1].split("\n")[0]: s for s in conf.files["distributions"].split("\n\n")}
    for suite, text in stanzas.items():
        assert "Components: main restricted universe multiverse extras\n" in text
        assert "Architectures: amd64 arm64 source\n" in text and f"SignWith: {FPR}" in text
        assert ("Update: - ubuntu-noble" in text) == (suite == "noble")
        assert ("DebOverride: override.jammy" in text) == (suite == "jammy")
        assert "ValidFor" not in text
    assert conf.files["override.jammy"] == "tool Priority optional\ntool Section misc\n"
    assert conf.files["selection-ubuntu-noble"] == "hello = 1.0\n"
    updates = conf.files["updates"]
    assert f"VerifyRelease: {FPR[-16:]}+\n" in updates  # subkeys of the pinned primary key count
    assert "ListShellHook: sed '/^Phased-Update-Percentage:/d'" in updates
    assert f"Method: file://{tmp_path.resolve()}/ubuntu" in updates


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("1.0", "1.0", 0),
        ("1.0-1", "1.0-2", -1),
        ("1:0.9", "2.0", 1),
        ("1.0~rc1", "1.0", -1),
        ("1.0", "1.0+b1", -1),
        ("2.10-3ubuntu10", "2.10-3ubuntu2", 1),
        ("1.0a", "1.0", 1),
        ("1.0~~", "1.0~", -1),
        ("1.0-1ubuntu0.1", "1.0-1", 1),
    ],
)
def test_debian_version_order(a: str, b: str, want: int) -> None:
    assert compare_versions(a, b) == want
    assert compare_versions(b, a) == -want


def test_snapshot_store_is_outside_the_repository(tmp_path: Path) -> None:
    t = DebTarget(TargetContext(enclave=tmp_path))
    assert not str(t.snapshot.store).startswith(str(t.repo) + os.sep)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (package(role="loose", archive="site", suite="noble"), None),
        (
            Entry("deb", "site/noble/x", "1.0", "amd64", (FileRecord("ubuntu/dists/noble/InRelease", SHA, 1, None),),
                  {"role": "loose", "archive": "site", "suite": "noble", "component": "main", "package": "x"}),
            "file ubuntu/dists/noble/InRelease is not under site/pool/",
        ),
        (
            Entry("deb", "ubuntu/noble/x", "1.0", "amd64", (FileRecord("ubuntu/pool/../../x.deb", SHA, 1, None),),
                  {"role": "package", "archive": "ubuntu", "suite": "noble", "component": "main", "package": "x"}),
            "'..' component",
        ),
    ],
)  # fmt: skip
def test_every_file_stays_under_its_archive(entry: Entry, needle: str | None) -> None:
    entries = [index(), index(archive="site"), entry]
    if needle is None:
        check_entries(entries)
        return
    with pytest.raises(BundlerError) as info:
        check_entries(entries)
    assert needle in info.value.message


def test_an_index_file_outside_its_suite_is_refused() -> None:
    e = index()
    bad = Entry(
        e.kind, e.name, e.version, e.arch, (*e.files, FileRecord("ubuntu/keyring.gpg.evil", SHA, 1, None)), e.metadata
    )
    with pytest.raises(PreflightError) as info:
        check_entries([bad])
    assert "ubuntu/keyring.gpg.evil is not under ubuntu/dists/noble/ (nor ubuntu/keyring.gpg)" in info.value.message
