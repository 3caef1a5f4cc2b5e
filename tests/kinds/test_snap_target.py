"""The snap target and its install script, driven directly with entries a real export made."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bundler.errors import DigestError, PreflightError, VerificationError
from bundler.fetch import Fetcher
from bundler.kinds.base import Change, SourceContext, TargetContext
from bundler.kinds.snap.install_script import RepoSnap, install_order, render
from bundler.kinds.snap.source import check_section, declare
from bundler.kinds.snap.target import SnapTarget
from bundler.model import Declared, Entry, FileRecord
from tests.fakes.snap_store import demo_store, serve_snap_store
from tests.helpers import snapshot


@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> list[Declared]:
    tmp = tmp_path_factory.mktemp("snaps")
    store = demo_store(tmp / "store")
    section = {
        "snaps": [{"name": "maas", "channel": "3.6/stable"}, {"name": "lxd", "channel": "5.21/stable"}],
        "root_keys": [str(store.root_assert)],
    }
    with serve_snap_store(store) as srv, Fetcher(tmp / "cache") as f:
        section["store"] = srv.url
        return list(declare(check_section(section, "t"), SourceContext(f, tmp, tmp / "work")))


def entries_and_staged(declared: list[Declared]) -> tuple[tuple[Entry, ...], dict[str, Path]]:
    entries = tuple(
        Entry(
            d.kind,
            d.name,
            d.version,
            d.arch,
            tuple(FileRecord(a.path, a.sha256, a.size, ()) for a in d.artifacts),
            dict(d.metadata),
        )
        for d in declared
    )
    staged = {a.sha256: a.local for d in declared for a in d.artifacts if a.local is not None}
    return entries, staged


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for the `snap` command: appends its arguments to a log."""
    log = tmp_path / "snap-calls.log"
    exe = tmp_path / "snap"
    exe.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    exe.chmod(0o755)
    return exe, log


def test_publish_writes_a_repository_that_installs_in_order(declared: list[Declared], tmp_path: Path) -> None:
    entries, staged = entries_and_staged(declared)
    target = SnapTarget(TargetContext(enclave=tmp_path / "enc"))
    target.preflight(entries)
    report = target.publish(Change(entries=entries, previous=(), staged=staged))
    assert len(report.added) == len(entries) == 6
    repo = tmp_path / "enc" / "snap" / "repo"
    assert repo.is_symlink()
    maas = next(e for e in entries if e.name == "maas/3.6/stable")
    assert (repo / maas.files[0].path).read_bytes() == staged[maas.files[0].sha256].read_bytes()

    exe, log = recorder(tmp_path)
    subprocess.run([str(repo / "install.sh"), "--arch", "amd64"], check=True, env=dict(os.environ, SNAP=str(exe)))
    calls = log.read_text().splitlines()
    installs = [c.split()[-1].rsplit("/", 1)[-1].split("_")[0] for c in calls if c.startswith("install")]
    assert installs == ["snapd", "core22", "core24", "maas-content", "lxd", "maas"]
    assert (
        calls[0] == f"ack {repo}/amd64/snapd_{next(e for e in entries if e.name.startswith('snapd/')).version}.assert"
    )
    assert "switch --channel=3.6/stable maas" in calls
    # Each install is preceded by the ack of its own assertions.
    for i, c in enumerate(calls):
        if c.startswith("install"):
            assert calls[i - 1] == "ack " + c.split()[-1].replace(".snap", ".assert")

    # Twice equals once.
    before = snapshot(tmp_path / "enc")
    again = target.publish(Change(entries=entries, previous=entries, staged=staged))
    assert snapshot(tmp_path / "enc") == before and "unchanged" in again.notes[0]


def test_install_script_needs_a_choice_when_a_snap_has_two_channels(tmp_path: Path) -> None:
    snaps = [
        RepoSnap("maas", "3.5/stable", "amd64", 5, "app", "strict", "maas_5"),
        RepoSnap("maas", "3.6/stable", "amd64", 6, "app", "strict", "maas_6"),
        RepoSnap("kubectl", "1.30/stable", "amd64", 7, "app", "classic", "kubectl_7"),
    ]
    script = tmp_path / "install.sh"
    script.write_text(render(snaps))
    script.chmod(0o755)
    (tmp_path / "amd64").mkdir()
    exe, log = recorder(tmp_path)
    env = dict(os.environ, SNAP=str(exe))
    r = subprocess.run([str(script), "--arch", "amd64"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "maas is carried in several channels" in r.stderr
    log.unlink(missing_ok=True)
    subprocess.run([str(script), "--arch=amd64", "maas=3.5/stable"], env=env, check=True)
    calls = log.read_text().splitlines()
    assert f"install --classic {tmp_path}/amd64/kubectl_7.snap" in calls
    assert f"install {tmp_path}/amd64/maas_5.snap" in calls and not any("maas_6" in c for c in calls)
    r = subprocess.run([str(script), "--arch", "riscv64"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "no snaps carried for riscv64" in r.stderr


def test_install_order_groups() -> None:
    snaps = [
        RepoSnap("app", "latest/stable", "amd64", 1, "app", "strict", "app_1", ("gtk",)),
        RepoSnap("gtk", "latest/stable", "amd64", 2, "app", "strict", "gtk_2"),
        RepoSnap("core", "latest/stable", "amd64", 3, "os", "strict", "core_3"),
        RepoSnap("snapd", "latest/stable", "amd64", 4, "snapd", "strict", "snapd_4"),
    ]
    assert [s.name for s in install_order(snaps)] == ["snapd", "core", "gtk", "app"]


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda m: m.update(revision=m["revision"] + 1), VerificationError, "revision"),
        (lambda m: m.update({"snap-id": "Q" * 32}), VerificationError, "snap id"),
        (lambda m: m.update({"sha3-384": "0" * 96}), DigestError, "sha3-384"),
        (lambda m: m.update(snap="maas2"), VerificationError, "maas2"),
    ],
)
def test_publish_refuses_a_mismatch_and_writes_nothing(
    declared: list[Declared], tmp_path: Path, edit: object, error: type[Exception], message: str
) -> None:
    entries, staged = entries_and_staged(declared)
    target = SnapTarget(TargetContext(enclave=tmp_path / "enc"))
    target.publish(Change(entries=entries, previous=(), staged=staged))
    before = snapshot(tmp_path / "enc")
    bad = next(e for e in entries if e.name == "maas/3.6/stable")
    edit(bad.metadata)  # type: ignore[operator]
    with pytest.raises(error, match=message):
        target.publish(Change(entries=entries, previous=(), staged=staged))
    assert snapshot(tmp_path / "enc") == before


def test_publish_refuses_another_snaps_assertions(declared: list[Declared], tmp_path: Path) -> None:
    entries, staged = entries_and_staged(declared)
    maas = next(e for e in entries if e.name == "maas/3.6/stable")
    lxd = next(e for e in entries if e.name == "lxd/5.21/stable")
    swapped = Entry(maas.kind, maas.name, maas.version, maas.arch, (maas.files[0], lxd.files[1]), maas.metadata)
    bad = tuple(swapped if e is maas else e for e in entries)
    with pytest.raises(VerificationError, match=r"snap maas 3.6/stable .*no snap-revision assertion for digest"):
        SnapTarget(TargetContext(enclave=tmp_path / "enc")).publish(Change(entries=bad, previous=(), staged=staged))
    assert not (tmp_path / "enc" / "snap").exists()


def test_offline_target_refuses_store_admin_exports(tmp_path: Path) -> None:
    e = Entry(
        "snap",
        "store-admin/maas",
        "20261101T101010",
        "all",
        (FileRecord("store-admin/maas-20261101T101010.tar.gz", "a" * 64, 1, ()),),
        {"role": "store-admin", "snap": "maas", "file": "x"},
    )
    with pytest.raises(PreflightError, match="only an Enterprise Store"):
        SnapTarget(TargetContext(enclave=tmp_path)).preflight([e])


def test_proxy_target_preflight_needs_the_push_command(tmp_path: Path) -> None:
    e = Entry(
        "snap",
        "store-admin/maas",
        "20261101T101010",
        "all",
        (FileRecord("store-admin/maas-20261101T101010.tar.gz", "a" * 64, 1, ()),),
        {"role": "store-admin", "snap": "maas", "file": "x"},
    )
    ctx = TargetContext(
        enclave=tmp_path,
        options={
            "snap_target": "proxy",
            "snap_proxy_command": "no-such-enterprise-store",
            "snap_push_dir": str(tmp_path),
        },
    )
    with pytest.raises(PreflightError, match="no-such-enterprise-store"):
        SnapTarget(ctx).preflight([e])
    with pytest.raises(PreflightError, match="unknown target"):
        SnapTarget(TargetContext(enclave=tmp_path, options={"snap_target": "cloud"}))
