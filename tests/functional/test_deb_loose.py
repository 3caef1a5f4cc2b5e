"""Loose .debs (no upstream index) end to end, and all-or-nothing publishing into reprepro.

The real CLI runs with a recording wrapper first on PATH in front of the real reprepro
(tests/fakes/apt_reprepro.py), so the tests see every reprepro call and its exit code.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.apt_archive import Archive, PackageSpec, build_loose_debs
from tests.fakes.apt_reprepro import RepreproRecorder
from tests.fakes.http_server import FakeServer, serve_directory
from tests.functional.deb_support import archive_section, enclave_client, loose_section, upstream_archive
from tests.helpers import Workspace, snapshot

SITETOOL_1 = PackageSpec("sitetool", "1.0-1", "noble", section="admin", depends="libsite1")
SITETOOL_2 = PackageSpec("sitetool", "2.0-1", "noble", section="admin", depends="libsite1")
LIBSITE = PackageSpec("libsite1", "1:1.0-1", "noble", source="libsite", section="libs")
SITEDATA = PackageSpec("site-data", "1.0", "noble", architecture="all", section="", priority="")
CONTRIB_2 = PackageSpec("site-contrib", "0.2-1", "noble", "universe")
CONTRIB_1 = PackageSpec("site-contrib", "0.1-1", "noble", "universe")
SITE_OLD = PackageSpec("site-old", "1-1", "noble", "universe")
HOTFIX = PackageSpec("site-hotfix", "5-1", "noble-updates")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Archive, FakeServer]]:
    with upstream_archive(tmp_path / "archive") as pair:
        yield pair


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture
def rec(ws: Workspace, tmp_path: Path) -> RepreproRecorder:
    recorder = RepreproRecorder(tmp_path / "rec")
    ws.env.update(recorder.env())
    return recorder


def _clean_short_homes(home: Path) -> None:
    """Stop the gpg agent and remove the /tmp/g.*/h link a SIGKILLed importer left for ``home``."""
    for link in Path("/tmp").glob("g.*/h"):
        if link.is_symlink() and link.resolve() == home.resolve():
            subprocess.run(["gpgconf", "--homedir", str(link), "--kill", "all"], capture_output=True, check=False)
            shutil.rmtree(link.parent, ignore_errors=True)


def digests(paths: list[Path]) -> dict[str, str]:
    return {p.name.split("_")[0]: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_loose_debs_one_includedeb_per_distribution_and_component(
    upstream: tuple[Archive, FakeServer], ws: Workspace, rec: RepreproRecorder, tmp_path: Path
) -> None:
    archive, srv = upstream
    main_dir, contrib_dir = tmp_path / "build" / "main", tmp_path / "build" / "contrib"
    main_debs = build_loose_debs(main_dir, [SITETOOL_1, LIBSITE, SITEDATA])
    contrib = build_loose_debs(contrib_dir, [CONTRIB_2, SITE_OLD])
    hotfix = build_loose_debs(tmp_path / "build" / "hotfix", [HOTFIX], ["arm64"])
    spec = ws.write_spec(
        archive_section(archive, srv, ["hello"])
        + loose_section("site", "noble", debs_dir=main_dir)  # noble is also fed by upstream's rule
        + loose_section("site", "noble-backports", debs_dir=contrib_dir, component="universe")  # loose only
        + loose_section("site-fixes", "noble-updates", debs=hotfix)
    )
    info = ws.export_json(spec, tmp_path / "b1")
    assert info["files"] >= 6
    ws.verify(tmp_path / "b1")
    r = ws.import_(tmp_path / "b1")
    assert "sitetool 1.0-1 amd64 (noble/main)" in r.stdout and "site-hotfix 5-1 arm64 (noble-updates/main)" in r.stdout

    # Exactly one includedeb per (distribution, component), never one per file; all with -C.
    calls = rec.actions("includedeb")
    batches = {(c.operands()[0], c.option("-C")): c.operands()[1:] for c in calls}
    assert len(calls) == len(batches) == 3
    assert {k: len(v) for k, v in batches.items()} == {
        ("noble", "main"): 3,
        ("noble-backports", "universe"): 2,
        ("noble-updates", "main"): 1,
    }
    # The update (upstream pockets) ran before the includes, one export after all of them.
    order = [c.action for c in rec.calls()]
    assert order.index("update") < order.index("includedeb") and order.count("export") == 1
    assert order.index("export") > max(i for i, a in enumerate(order) if a == "includedeb")

    with serve_directory(ws.enclave / "deb" / "repo") as repo_srv:
        client = enclave_client(ws, repo_srv.base_url, tmp_path / "client")
        client.update()
        got = client.simulate_install(["sitetool", "site-data", "site-contrib", "site-old", "hello"])
        assert got["sitetool"] == "1.0-1" and got["libsite1"] == "1:1.0-1" and got["hello"] == "2.10-3ubuntu2"
        debs = client.download(["sitetool", "site-data", "site-contrib", "site-old"])
        assert digests(debs) == digests(main_debs + contrib)  # the very bytes that were built
        arm = enclave_client(ws, repo_srv.base_url, tmp_path / "arm", ["arm64"])
        arm.update()
        assert arm.simulate_install(["site-hotfix"])["site-hotfix"] == "5-1"
        assert arm.simulate_install(["hello"])["hello"] == "2.10-3ubuntu2"  # the update kept upstream's too

    # Bundle 2: sitetool upgraded and site-data dropped in noble; in the loose-only
    # noble-backports, site-contrib deliberately goes back to 0.1-1 and site-old is dropped.
    rec.clear()
    for gone in (*main_dir.glob("site-data_*"), *main_dir.glob("sitetool_*"), *contrib_dir.glob("*.deb")):
        gone.unlink()
    build_loose_debs(main_dir, [SITETOOL_2])
    build_loose_debs(contrib_dir, [CONTRIB_1])
    ws.export(spec, tmp_path / "b2")
    r = ws.import_(tmp_path / "b2")
    assert "+ sitetool 2.0-1 amd64 (noble/main), was 1.0-1" in r.stdout
    assert "- site-data 1.0 all (noble/main)" in r.stdout
    assert "+ site-contrib 0.1-1 amd64 (noble-backports/universe), was 0.2-1" in r.stdout
    assert "- site-old 1-1 amd64 (noble-backports/universe)" in r.stdout
    assert "site-contrib (amd64) in noble-backports/universe from 0.2-1 to 0.1-1" in r.stderr  # a warning
    # noble is made exactly its carried content by the update; the loose-only distribution by
    # one remove per (distribution, component).
    removes = [(c.operands()[0], c.option("-C"), c.operands()[1:]) for c in rec.actions("remove")]
    assert removes == [("noble-backports", "universe", ["site-contrib", "site-old"])]
    assert len(rec.actions("includedeb")) == 3
    with serve_directory(ws.enclave / "deb" / "repo") as repo_srv:
        client = enclave_client(ws, repo_srv.base_url, tmp_path / "client2")
        client.update()
        got = client.simulate_install(["sitetool", "site-contrib"])
        assert (got["sitetool"], got["site-contrib"]) == ("2.0-1", "0.1-1")
        for gone_pkg in ("site-data", "site-old"):
            assert client.run("install", "-s", gone_pkg, check=False).returncode == 100
    pool = ws.enclave / "deb" / "repo" / "pool"
    left = {p.name for p in pool.rglob("*.deb")}
    assert not {n for n in left if n.startswith(("sitetool_1.0", "site-data_", "site-old_", "site-contrib_0.2"))}
    assert "sitetool_2.0-1_amd64.deb" in left and "site-contrib_0.1-1_amd64.deb" in left
    assert not (ws.enclave / "deb" / "rollback").exists() and not (ws.enclave / "deb" / "lists").exists()


def test_a_refused_include_after_an_update_rolls_everything_back(
    upstream: tuple[Archive, FakeServer], ws: Workspace, rec: RepreproRecorder, tmp_path: Path
) -> None:
    archive, srv = upstream
    build = tmp_path / "build"
    build_loose_debs(build, [SITETOOL_2, LIBSITE])
    spec = ws.write_spec(archive_section(archive, srv, ["hello"]) + loose_section("site", "noble", debs_dir=build))
    ws.export(spec, tmp_path / "b1")
    ws.import_(tmp_path / "b1")

    # Bundle 2: a newer upstream hello (reprepro update changes noble-updates), a new loose
    # package, and sitetool 2.0-1 rebuilt with other content but the same version, which
    # reprepro refuses (exit 254) after the update succeeded.
    archive.add_package(PackageSpec("hello", "2.10-3ubuntu3", "noble-updates", depends="greet-data"))
    archive.refresh()
    for old in build.glob("sitetool_*"):
        old.unlink()
    rebuilt = PackageSpec("sitetool", "2.0-1", "noble", section="admin", control=(("X-Rebuilt", "yes"),))
    build_loose_debs(build, [rebuilt, PackageSpec("site-new", "1-1", "noble")])
    ws.export(spec, tmp_path / "b2")
    before = snapshot(ws.enclave / "deb")
    rec.clear()
    r = ws.import_(tmp_path / "b2", check=42)
    assert "reprepro includedeb failed" in r.stderr
    assert "site/noble/sitetool 2.0-1 (amd64) [site/pool/main/s/sitetool/sitetool_2.0-1_amd64.deb]" in r.stderr
    assert "give it a new version" in r.stderr
    # reprepro did change the repository before the include failed...
    done = [(c.action, c.rc) for c in rec.calls()]
    assert done[0] == ("update", 0) and done[-1][0] == "includedeb" and done[-1][1] != 0
    # ...and all of it was undone: same files, same signed indexes, new pool files gone.
    assert snapshot(ws.enclave / "deb") == before

    # With a new version the same content imports cleanly.
    for old in build.glob("sitetool_*"):
        old.unlink()
    build_loose_debs(build, [PackageSpec("sitetool", "2.0-1+site1", "noble", section="admin")])
    ws.export(spec, tmp_path / "b3", "--full")  # #2 was never applied: no delta on it
    ws.import_(tmp_path / "b3")
    with serve_directory(ws.enclave / "deb" / "repo") as repo_srv:
        client = enclave_client(ws, repo_srv.base_url, tmp_path / "client")
        client.update()
        got = client.simulate_install(["sitetool", "site-new", "hello"])
        assert (got["sitetool"], got["site-new"], got["hello"]) == ("2.0-1+site1", "1-1", "2.10-3ubuntu3")


def test_an_import_killed_mid_publish_is_rolled_back_and_the_rerun_finishes(
    upstream: tuple[Archive, FakeServer], ws: Workspace, rec: RepreproRecorder, tmp_path: Path
) -> None:
    archive, srv = upstream
    build = tmp_path / "build"
    build_loose_debs(build, [SITETOOL_1, LIBSITE])
    spec = ws.write_spec(archive_section(archive, srv, ["hello"]) + loose_section("site", "noble", debs_dir=build))
    ws.export(spec, tmp_path / "b1")
    ws.import_(tmp_path / "b1")
    before = snapshot(ws.enclave / "deb" / "repo")

    for old in build.glob("sitetool_*"):
        old.unlink()
    build_loose_debs(build, [SITETOOL_2])
    archive.add_package(PackageSpec("hello", "2.10-3ubuntu3", "noble-updates", depends="greet-data"))
    archive.refresh()
    ws.export(spec, tmp_path / "b2")
    rec.crash_after("includedeb")
    killed = ws.import_(tmp_path / "b2", check=None)
    _clean_short_homes(ws.enclave / "signing" / "gnupg")  # the killed importer could not
    assert killed.returncode == -9
    assert (ws.enclave / "deb" / "rollback" / "COMPLETE").is_file()
    assert snapshot(ws.enclave / "deb" / "repo") != before  # half done: update and includedeb ran

    ws.import_(tmp_path / "b2")
    assert not (ws.enclave / "deb" / "rollback").exists()
    with serve_directory(ws.enclave / "deb" / "repo") as repo_srv:
        client = enclave_client(ws, repo_srv.base_url, tmp_path / "client")
        client.update()
        got = client.simulate_install(["sitetool", "hello"])
        assert (got["sitetool"], got["hello"]) == ("2.0-1", "2.10-3ubuntu3")


def test_a_release_no_longer_carried_leaves_the_repository(
    upstream: tuple[Archive, FakeServer], ws: Workspace, rec: RepreproRecorder, tmp_path: Path
) -> None:
    archive, srv = upstream
    jammy = build_loose_debs(tmp_path / "jammy", [PackageSpec("old-agent", "1-1", "jammy")])
    extras = build_loose_debs(tmp_path / "extras", [PackageSpec("extra-tool", "1-1", "noble")], ["riscv64"])
    first = ws.write_spec(
        archive_section(archive, srv, ["hello"])
        + loose_section("site", "jammy", debs=jammy)
        + loose_section("site", "noble", debs=extras, component="extras")  # a component and an architecture
    )
    ws.export(first, tmp_path / "b1")
    ws.import_(tmp_path / "b1")
    dists = ws.enclave / "deb" / "repo" / "dists"
    assert {p.name for p in dists.iterdir()} >= {"jammy", "jammy-updates", "jammy-security", "jammy-backports"}
    assert (dists / "noble/extras/binary-riscv64/Packages").is_file()
    assert (dists / "noble/main/binary-riscv64/Packages").is_file()

    rec.clear()
    ws.export(ws.write_spec(archive_section(archive, srv, ["hello"])), tmp_path / "b2")
    r = ws.import_(tmp_path / "b2")
    assert "- old-agent 1-1 amd64 (jammy/main)" in r.stdout and "- extra-tool 1-1 riscv64 (noble/extras)" in r.stdout
    assert [c.rc for c in rec.actions("clearvanished")] == [0]
    assert sorted(p.name for p in dists.iterdir()) == ["noble", "noble-backports", "noble-security", "noble-updates"]
    assert not list((ws.enclave / "deb" / "repo" / "pool").rglob("old-agent_*"))
    assert not (dists / "noble/extras").exists() and not list(dists.rglob("binary-riscv64"))
    assert (
        "extras" not in (dists / "noble/Release").read_text() and "riscv64" not in (dists / "noble/Release").read_text()
    )
    listing = subprocess.run(
        ["reprepro", "-b", str(ws.enclave / "deb" / "repo"), "dumpreferences"], capture_output=True, text=True
    )
    assert listing.returncode == 0 and "jammy" not in listing.stdout


def test_a_bundle_without_deb_content_leaves_the_repository_alone(
    upstream: tuple[Archive, FakeServer], ws: Workspace, tmp_path: Path
) -> None:
    archive, srv = upstream
    (ws.src / "motd").write_text("hello\n")
    files = f'[[files]]\nname = "motd"\npath = "etc"\nsource = "{ws.src}"\n'
    ws.export(ws.write_spec(archive_section(archive, srv, ["hello"]) + files), tmp_path / "b1")
    ws.import_(tmp_path / "b1")
    before = snapshot(ws.enclave / "deb")
    ws.export(ws.write_spec(files), tmp_path / "b2")
    r = ws.import_(tmp_path / "b2")
    assert "carries no Debian packages" in r.stderr
    assert snapshot(ws.enclave / "deb") == before
