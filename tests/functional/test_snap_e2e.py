"""Snaps end to end with the real CLI: a Snap Store on 127.0.0.1 (real squashfs snaps, signed
assertions in the real text format) -> export -> verify -> import into an offline snap
repository, whose install script is run with a stand-in `snap`; and store-admin exports
into an Enterprise Store.

The Enterprise Store's `push-snap` is proprietary and cannot run here: the proxy tests use
a stand-in executable, generated below, that checks its arguments, records every call to a
file, can be made to fail for one snap, and answers `list-pushed-snaps` from what it took.
The snap target is chosen with ``<enclave>/snap/target.toml`` because the CLI has no
target options yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler.kinds.snap.assertions import b64_to_hex, parse_stream
from tests.fakes.snap_store import StoreServer, demo_store, serve_snap_store
from tests.fakes.snap_store import store_admin_export as make_export
from tests.helpers import Workspace, resign, snapshot, volumes


@pytest.fixture
def served(tmp_path: Path) -> Iterator[StoreServer]:
    with serve_snap_store(demo_store(tmp_path / "store")) as srv:
        yield srv


def store_spec(ws: Workspace, srv: StoreServer, snaps: str = "maas=3.6/stable lxd=5.21/stable") -> Path:
    items = ", ".join(f'{{ name = "{n}", channel = "{c}" }}' for n, c in (s.split("=") for s in snaps.split()))
    return ws.write_spec(
        "[[snap]]\n"
        f"snaps = [{items}]\n"
        'architectures = ["amd64"]\n'
        f'store = "{srv.url}"\n'
        f'root_keys = ["{srv.store.root_assert}"]\n'
    )


def check_repo(repo: Path) -> dict[str, Any]:
    """Independently of bundler: every .snap's sha3-384 and size is what its snap-revision assertion says."""
    index = json.loads((repo / "index.json").read_text())
    for s in index["snaps"]:
        data = (repo / s["snap"]).read_bytes()
        rev = next(a for a in parse_stream((repo / s["assert"]).read_bytes()) if a.type == "snap-revision")
        assert b64_to_hex(rev.get("snap-sha3-384")) == hashlib.sha3_384(data).hexdigest()
        assert rev.get("snap-size") == str(len(data)) and rev.get("snap-revision") == str(s["revision"])
    return index


def run_install(repo: Path, tmp_path: Path) -> list[str]:
    log = tmp_path / "snap.log"
    log.unlink(missing_ok=True)
    exe = tmp_path / "snap-standin"
    exe.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    exe.chmod(0o755)
    subprocess.run([str(repo / "install.sh"), "--arch", "amd64"], check=True, env=dict(os.environ, SNAP=str(exe)))
    return log.read_text().splitlines()


def test_store_snaps_into_an_offline_repository_then_an_update(served: StoreServer, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    spec = store_spec(ws, served)
    info = ws.export_json(spec, tmp_path / "b1")
    assert info["entries"] == 6  # maas, lxd, snapd, core24, core22, maas-content
    ws.verify(tmp_path / "b1")
    r = ws.import_(tmp_path / "b1")
    assert "maas 3.6/stable revision" in r.stdout and "install.sh" in r.stdout
    repo = ws.enclave / "snap" / "repo"
    index = check_repo(repo)
    assert {s["name"] for s in index["snaps"]} == {"maas", "lxd", "snapd", "core24", "core22", "maas-content"}
    calls = run_install(repo, tmp_path)
    order = [c.split("/")[-1].split("_")[0] for c in calls if c.startswith("install ")]
    assert order == ["snapd", "core22", "core24", "maas-content", "lxd", "maas"]
    assert "switch --channel=5.21/stable lxd" in calls

    # A new maas revision in the store: the next bundle is a delta carrying only it.
    old = served.store.revision("maas", "3.6/stable", "amd64")
    served.store.add("maas", "3.6.2", channels={"3.6/stable": ["amd64"]}, base="core24", providers=["maas-content"])
    new = served.store.revision("maas", "3.6/stable", "amd64")
    info2 = ws.export_json(spec, tmp_path / "b2")
    assert info2["files_carried"] == 2 and info2["files"] == 12
    ws.import_(tmp_path / "b2")
    assert (repo / f"amd64/maas_{new.revision}.snap").is_file()
    assert not (repo / f"amd64/maas_{old.revision}.snap").exists()
    check_repo(repo)
    assert [p.name for p in (ws.enclave / "snap").glob("repo.*")] == [os.readlink(repo)]
    again = ws.import_(tmp_path / "b2")
    assert "already applied" in again.stdout


@pytest.mark.parametrize(
    ("snaps", "code", "message"),
    [
        ("maas=9.9/stable", 34, "snap maas: no channel 9.9/stable"),
        ("no-such-snap=latest/stable", 34, "snap no-such-snap: unknown to the store"),
    ],
)
def test_export_refuses_bad_input_naming_the_snap(
    served: StoreServer, tmp_path: Path, snaps: str, code: int, message: str
) -> None:
    ws = Workspace(tmp_path / "ws")
    r = ws.export(store_spec(ws, served, snaps), tmp_path / "b1", check=code)
    assert message in r.stderr
    assert not volumes(tmp_path / "b1")


def test_export_refuses_a_tampered_download(served: StoreServer, tmp_path: Path) -> None:
    rev = served.store.revision("lxd", "5.21/stable", "amd64")
    served.store.blob_override[rev.path.name] = rev.path.read_bytes()[:-1] + b"X"
    ws = Workspace(tmp_path / "ws")
    r = ws.export(store_spec(ws, served, "lxd=5.21/stable"), tmp_path / "b1", check=32)
    assert "snap lxd 5.21/stable" in r.stderr and "sha3-384" in r.stderr and not volumes(tmp_path / "b1")


def _maas(m: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in m["entries"] if e["name"] == "maas/3.6/stable")


def _lxd(m: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in m["entries"] if e["name"] == "lxd/5.21/stable")


def _swap_assertions(m: dict[str, Any]) -> None:
    maas, lxd = _maas(m), _lxd(m)
    maas["files"][1], lxd["files"][1] = lxd["files"][1], maas["files"][1]


EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], int, str]] = {
    "revision": (lambda m: _maas(m)["metadata"].update(revision=_maas(m)["metadata"]["revision"] + 1), 20, "revision"),
    "snap-id": (lambda m: _maas(m)["metadata"].update({"snap-id": "Q" * 32}), 20, "snap id"),
    "digest": (lambda m: _maas(m)["metadata"].update({"sha3-384": "ab" * 48}), 22, "sha3-384"),
    "size": (lambda m: _maas(m)["metadata"].update(size=_maas(m)["metadata"]["size"] + 1), 22, "bytes"),
    "other-snap-assertions": (_swap_assertions, 20, "no snap-revision assertion for digest"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_import_refuses_a_mismatch_and_publishes_nothing(served: StoreServer, tmp_path: Path, case: str) -> None:
    """A bundle signed by a trusted key but whose snap does not match its assertions (an exporter
    bug or a compromised exporter) is refused in the enclave; the published repository stays as it was."""
    ws = Workspace(tmp_path / "ws")
    ws.export(store_spec(ws, served, "lxd=5.21/stable"), tmp_path / "b1")
    ws.import_(tmp_path / "b1")
    spec = store_spec(ws, served)
    (ws.src / "notes.txt").write_text("another kind in the same bundle\n")
    with spec.open("a") as fh:  # the files kind sorts before snap: it must not publish either
        fh.write(f'[[files]]\nname = "notes"\npath = "notes"\nsource = "{ws.src}"\n')
    ws.export(spec, tmp_path / "b2")
    edit, code, message = EDITS[case]
    resign(volumes(tmp_path / "b2"), ws.key, edit)
    before = snapshot(ws.enclave / "snap")
    r = ws.import_(tmp_path / "b2", check=code)
    named = "snap lxd 5.21/stable" if case == "other-snap-assertions" else "snap maas 3.6/stable"
    assert named in r.stderr and message in r.stderr
    assert snapshot(ws.enclave / "snap") == before
    assert not (ws.enclave / "files").exists(), "another kind published although the bundle was refused"


STANDIN = """#!/bin/sh
# Stand-in for the proprietary `enterprise-store` CLI (it cannot run here).
log={log}
pushed={pushed}
echo "$*" >> "$log"
case "$1" in
  push-snap)
    [ $# -eq 2 ] || {{ echo "usage: push-snap FILE" >&2; exit 64; }}
    case "$2" in {push_dir}/*.tar.gz) ;; *) echo "not in snaps-to-push: $2" >&2; exit 65 ;; esac
    gzip -t "$2" || {{ echo "not a tarball: $2" >&2; exit 66; }}
    name=$(basename "$2" | sed 's/-[0-9]\\{{8\\}}T[0-9]\\{{6\\}}\\.tar\\.gz$//')
    if [ -e "{fail_dir}/$name" ]; then echo "push of $name failed: store unavailable" >&2; exit 1; fi
    echo "Uploaded snap blob and assertions"
    echo "$name" >> "$pushed"
    ;;
  list-pushed-snaps)
    [ $# -eq 1 ] || exit 64
    echo "Name Revision Channels"
    [ -e "$pushed" ] && sort -u "$pushed" | sed 's/$/ 1 stable/'
    exit 0
    ;;
  *) echo "unknown command $1" >&2; exit 64 ;;
esac
"""


def test_store_admin_exports_pushed_into_the_enterprise_store(served: StoreServer, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    exports = tmp_path / "exports"
    make_export(exports, "maas", "20261101T101010")
    make_export(exports, "lxd", "20261101T101011")
    push_dir, fail_dir = tmp_path / "snaps-to-push", tmp_path / "fail"
    push_dir.mkdir()
    fail_dir.mkdir()
    log, pushed = tmp_path / "calls.log", tmp_path / "pushed"
    exe = tmp_path / "bin" / "enterprise-store"
    exe.parent.mkdir()
    exe.write_text(STANDIN.format(log=log, pushed=pushed, push_dir=push_dir, fail_dir=fail_dir))
    exe.chmod(0o755)
    (ws.enclave / "snap").mkdir(parents=True)
    # Settings once per enclave in target.toml; the command line (-o) overrides them.
    (ws.enclave / "snap" / "target.toml").write_text(f'target = "offline"\npush_dir = "{push_dir}"\n')
    opts = ("-o", "snap_target=proxy", "--target-option", f"snap_proxy_command={exe}")
    spec = ws.write_spec(
        f'[[snap]]\nstore_admin_exports = ["{exports}"]\n\n'
        f'[[snap]]\nname = "snapd"\nstore = "{served.url}"\nroot_keys = ["{served.store.root_assert}"]\n'
    )
    ws.export(spec, tmp_path / "b1")
    (fail_dir / "lxd").touch()
    r = ws.import_(tmp_path / "b1", check=42, extra=opts)
    assert "lxd: push-snap exited 1" in r.stderr and "push of lxd failed" in r.stderr
    assert "1 of 2 store-admin export(s)" in r.stderr
    calls = log.read_text().splitlines()
    assert f"push-snap {push_dir}/maas-20261101T101010.tar.gz" in calls

    # The store is back: the re-run pushes only lxd.
    (fail_dir / "lxd").unlink()
    log.unlink()
    r = ws.import_(tmp_path / "b1", extra=opts)
    calls = log.read_text().splitlines()
    assert [c for c in calls if c.startswith("push-snap")] == [f"push-snap {push_dir}/lxd-20261101T101011.tar.gz"]
    assert "pushed lxd; already there: maas" in r.stdout
    state = json.loads((ws.enclave / "snap" / "proxy-state.json").read_text())
    assert sorted(v["snap"] for v in state["pushed"].values()) == ["lxd", "maas"]
    # The proxy host also gets the offline repository for side-loading its own snaps.
    assert check_repo(ws.enclave / "snap" / "repo")["snaps"][0]["name"] == "snapd"
