"""The real CLI end to end: export -> verify -> import, byte-identical, across volumes and deltas."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes.http_server import serve_directory
from tests.helpers import Workspace, chunk_files, run_cli, snapshot, volumes


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def _mixed(path: Path, size: int, seed: int) -> None:
    """Half random, half compressible, deterministic per seed."""
    rnd = hashlib.sha256(str(seed).encode()).digest() * 32
    text = b"".join(b"line %08d of seed %d: the quick brown fox\n" % (i, seed) for i in range(2000))
    with open(path, "wb") as fh:
        written = 0
        while written < size:
            block = os.urandom(64 * 1024) + rnd + text
            block = block[: size - written]
            fh.write(block)
            written += len(block)


def test_large_file_over_three_volumes_one_volume_per_run(ws: Workspace, tmp_path: Path) -> None:
    big = ws.src / "big.bin"
    _mixed(big, 1024 * 1024, seed=1)
    with open(big, "ab") as fh:  # mostly incompressible: 4.6 MiB does not fit on two 2 MiB volumes
        fh.write(os.urandom(3 * 1024 * 1024 + 123_457))
    (ws.src / "small.txt").write_text("hello enclave\n")
    (ws.src / "empty").write_bytes(b"")
    (ws.src / "sub").mkdir()
    (ws.src / "sub" / "nested.txt").write_text("nested\n" * 1000)
    out = tmp_path / "out"
    info = ws.export_json(ws.tree_spec(), out, "--chunk-size", "1M", "--volume-size", "2M")
    vols = volumes(out)
    assert len(vols) == 3 == len(info["volumes"])
    for v in vols:  # every medium stays within its size, manifest included
        used = sum(p.stat().st_size for p in v.rglob("*") if p.is_file())
        assert used <= 2 * 1024 * 1024, (v, used)
        assert all(p.stat().st_size <= 1024 * 1024 for p in chunk_files(v))
    manifest = json.loads((vols[0] / "manifest.json").read_text())
    big_rec = next(f for e in manifest["entries"] for f in e["files"] if f["path"] == "data/big.bin")
    assert len({c["volume"] for c in manifest["chunks"] if c["id"] in big_rec["chunks"]}) >= 2

    # Each volume verifies on its own.
    for v in vols:
        assert "OK" in ws.verify(v).stdout

    # One volume per run, out of order: nothing is published until the last one.
    r = ws.import_(vols[2], check=3)
    assert "still needed: volume(s) [1, 2]" in r.stdout
    assert not (ws.enclave / "files").exists() or not any((ws.enclave / "files").rglob("*.bin"))
    r = ws.import_(vols[0], check=3)
    assert "still needed: volume(s) [2]" in r.stdout
    r = ws.import_(vols[1])
    assert "imported test #1" in r.stdout
    for p in ws.src.rglob("*"):
        if p.is_file():
            dest = ws.enclave / "files" / "data" / p.relative_to(ws.src)
            assert dest.read_bytes() == p.read_bytes(), p
    assert not any((ws.enclave / "staging").iterdir())
    # The media were only read.
    assert all(len(chunk_files(v)) > 0 for v in vols)

    # The same bundle again is a no-op that says so.
    before = snapshot(ws.enclave)
    r = ws.import_(out)
    assert "already applied" in r.stdout
    assert snapshot(ws.enclave) == before


def test_media_holds_the_exact_chunk_digests(ws: Workspace, tmp_path: Path) -> None:
    (ws.src / "a").write_bytes(os.urandom(300_000))
    out = tmp_path / "out"
    ws.export(ws.tree_spec(), out)
    for p in chunk_files(volumes(out)[0]):
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name  # sha256sum alone audits the media


def test_http_source_downloads_once_and_delta_carries_only_changes(ws: Workspace, tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    iso = upstream / "tool.iso"
    iso.write_bytes(os.urandom(400_000))
    sha = hashlib.sha256(iso.read_bytes()).hexdigest()
    (ws.src / "keep.txt").write_text("unchanged\n")
    (ws.src / "gone.txt").write_text("removed in the next bundle\n")
    with serve_directory(upstream) as srv:
        body = (
            f'[[files]]\nname = "iso"\npath = "isos/tool.iso"\nurl = "{srv.url("tool.iso")}"\nsha256 = "{sha}"\n'
            f'[[files]]\nname = "tree"\npath = "data"\nsource = "{ws.src}"\n'
        )
        spec = ws.write_spec(body)
        first = ws.export_json(spec, tmp_path / "b1")
        assert len(srv.requests_for("tool.iso")) >= 1
        ws.import_(tmp_path / "b1")
        assert (ws.enclave / "files/isos/tool.iso").read_bytes() == iso.read_bytes()

        # Second export: the download cache answers, and the delta carries only the new file.
        srv.clear_requests()
        (ws.src / "gone.txt").unlink()
        (ws.src / "new.txt").write_text("new in bundle 2\n")
        second = ws.export_json(spec, tmp_path / "b2")
        assert srv.requests_for("tool.iso") == []
    assert first["base"] is None and first["files_carried"] == 3
    assert second["base"]["sequence"] == 1
    assert second["files_carried"] == 1 and second["files"] == 3
    r = ws.import_(tmp_path / "b2", extra=("--json",))
    reports = {rep["kind"]: rep for rep in json.loads(r.stdout)["reports"]}
    # The iso entry is the same content (recorded with chunks in b1, without in b2): unchanged, not re-added.
    assert [a.split()[0] for a in reports["files"]["added"]] == ["tree"]
    assert reports["files"]["unchanged"] == 1
    data = ws.enclave / "files" / "data"
    assert sorted(p.name for p in data.iterdir()) == ["keep.txt", "new.txt"]
    assert (ws.enclave / "files/isos/tool.iso").read_bytes() == iso.read_bytes()
    st = json.loads((ws.enclave / "state/series/test.json").read_text())
    assert st["sequence"] == 2 and st["digest"] == second["digest"]


def test_delta_reuses_content_already_in_the_enclave_at_a_new_path(ws: Workspace, tmp_path: Path) -> None:
    payload = os.urandom(200_000)
    (ws.src / "a.bin").write_bytes(payload)
    spec = ws.tree_spec()
    ws.export(spec, tmp_path / "b1")
    ws.import_(tmp_path / "b1")
    (ws.src / "copy-of-a.bin").write_bytes(payload)  # same content, new path: nothing needs to travel
    info = ws.export_json(spec, tmp_path / "b2")
    assert info["files_carried"] == 0 and info["chunks"] == 0
    ws.import_(tmp_path / "b2")
    assert (ws.enclave / "files/data/copy-of-a.bin").read_bytes() == payload


def test_inspect_and_json_outputs(ws: Workspace, tmp_path: Path) -> None:
    (ws.src / "x").write_text("x" * 10_000)
    ws.export(ws.tree_spec(), tmp_path / "b")
    d = json.loads(run_cli("inspect", tmp_path / "b", "--keys", ws.keys, "--json").stdout)
    assert d["series"] == "test" and d["sequence"] == 1 and d["base"] is None
    assert d["kinds"]["files"]["files"] == 1 and d["kinds"]["files"]["bytes"] == 10_000
    v = json.loads(run_cli("verify", tmp_path / "b", "--keys", ws.keys, "--json").stdout)
    assert v["ok"] is True and v["files_checked"] == 1
    i = json.loads(ws.import_(tmp_path / "b", extra=("--json",)).stdout)
    assert i["status"] == "applied" and i["reports"][0]["kind"] == "files"


def test_keys_generate_never_writes_private_keys_into_keys_dir(tmp_path: Path) -> None:
    r = run_cli(
        "keys", "generate", "x", "--private-dir", tmp_path / "keys", "--public-dir", tmp_path / "keys", check=12
    )
    assert "refusing to write a private key" in r.stderr
    run_cli("keys", "generate", "site", "--private-dir", tmp_path / "priv", "--public-dir", tmp_path / "keys")
    assert oct((tmp_path / "priv/site.key").stat().st_mode & 0o777) == "0o600"
    assert "PRIVATE" not in (tmp_path / "keys/site.pub").read_text()
    listing = json.loads(
        run_cli("keys", "list", "--keys", tmp_path / "keys", "--private-dir", tmp_path / "priv", "--json").stdout
    )["keys"]
    assert {k["type"] for k in listing} == {"public (trusted)", "private"}
    assert len({k["keyid"] for k in listing}) == 1  # the pair shares one key id
    # Any directory that already holds public keys is refused as a private-key home, whatever its name.
    r = run_cli(
        "keys", "generate", "y", "--private-dir", tmp_path / "keys", "--public-dir", tmp_path / "pub2", check=12
    )
    assert "public-key directory" in r.stderr


def test_keys_generate_default_private_dir_works(tmp_path: Path) -> None:
    """The default private home (~/.config/bundler/keys) is named "keys" but holds no public keys."""
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": ""}
    d = json.loads(run_cli("keys", "generate", "site", "--public-dir", tmp_path / "pub", "--json", env=env).stdout)
    priv = Path(d["private"])
    assert priv == tmp_path / "home/.config/bundler/keys/site.key"
    assert oct(priv.stat().st_mode & 0o777) == "0o600" and (tmp_path / "pub/site.pub").is_file()


@pytest.fixture
def read_only_mounts(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Bind-mount directories read-only, as removable media often are; unmount afterwards."""
    mounted: list[Path] = []

    def mount(src: Path) -> Path:
        dst = tmp_path / f"ro-{len(mounted)}"
        dst.mkdir()
        r = subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(dst)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot bind-mount read-only here: {r.stderr.strip()}")
        mounted.append(dst)
        return dst

    yield mount
    for m in reversed(mounted):
        subprocess.run(["umount", str(m)], check=False)


def test_import_straight_from_read_only_media(ws: Workspace, tmp_path: Path, read_only_mounts) -> None:  # type: ignore[no-untyped-def]
    (ws.src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    out = tmp_path / "out"
    ws.export(ws.tree_spec(), out, "--volume-size", "2M", "--chunk-size", "512K")
    before = snapshot(out)
    ro = [read_only_mounts(v) for v in volumes(out)]
    with pytest.raises(OSError):
        (ro[0] / "probe").write_text("x")  # the media really are read-only
    for v in ro[:-1]:
        ws.import_(v, check=3)
    ws.import_(ro[-1])
    assert (ws.enclave / "files/data/big.bin").read_bytes() == (ws.src / "big.bin").read_bytes()
    assert snapshot(out) == before  # nothing joined, written or deleted on the media


def test_json_times_use_one_format(ws: Workspace, tmp_path: Path) -> None:
    (ws.src / "a.txt").write_text("a\n")
    spec = ws.write_spec(f'[[files]]\nname = "tree"\npath = "data"\nsource = "{ws.src}"\n', expires_days=30)
    e = ws.export_json(spec, tmp_path / "b")
    i = json.loads(run_cli("inspect", tmp_path / "b" / "vol-001", "--keys", ws.keys, "--json").stdout)
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    assert stamp.fullmatch(e["expires"]) and e["expires"] == i["expires"]
    assert stamp.fullmatch(i["created"])
    assert isinstance(e["seconds"], float) and e["seconds"] == round(e["seconds"], 3)


def test_staging_of_bundles_the_series_moved_past_is_removed(ws: Workspace, tmp_path: Path) -> None:
    (ws.src / "a.txt").write_text("a\n")
    ws.export(ws.tree_spec(), tmp_path / "b1")
    abandoned = ws.enclave / "staging" / ws.series / ("ab" * 32)
    (abandoned / "files").mkdir(parents=True)
    (abandoned / "files" / "junk").write_bytes(b"x" * 1000)
    other_series = ws.enclave / "staging" / "other-site" / ("cd" * 32)
    other_series.mkdir(parents=True)
    r = ws.import_(tmp_path / "b1")
    assert not abandoned.exists() and "removed the staging of bundle abababab" in r.stderr
    assert other_series.is_dir(), "staging of another series was touched"


def test_chunks_of_another_volume_copied_into_a_volume_dir_are_used_or_named(ws: Workspace, tmp_path: Path) -> None:
    (ws.src / "a.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    out = tmp_path / "out"
    ws.export(ws.tree_spec(), out, "--chunk-size", "512K", "--volume-size", "2M")
    vols = volumes(out)
    assert len(vols) >= 3 and len(chunk_files(vols[2])) >= 2
    merged = tmp_path / "merged"
    shutil.copytree(vols[0], merged)  # keeps vol-001's volume.json, which claims volume 1
    for c in chunk_files(vols[1]):  # all of volume 2
        dest = merged / c.relative_to(vols[1])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(c, dest)
    partial = chunk_files(vols[2])[0]  # one chunk of volume 3: not usable on its own
    dest = merged / partial.relative_to(vols[2])
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(partial, dest)
    r = ws.import_(merged, check=3)
    assert "staged volume(s) [1, 2]" in r.stdout
    assert f"holds 1 of the {len(chunk_files(vols[2]))} chunks of volume 3" in r.stderr


def test_an_entry_declared_twice_identically_is_carried_once(ws: Workspace, tmp_path: Path) -> None:
    """Two sections may pull in the same dependency (snapd for two snaps): identical
    declarations merge; the same entry with other content is a carry-spec error."""
    (ws.src / "a.txt").write_text("a\n")
    same = f'[[files]]\nname = "tree"\npath = "data"\nsource = "{ws.src}"\n'
    info = ws.export_json(ws.write_spec(same + same), tmp_path / "b1")
    assert info["entries"] == 1 and info["files"] == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("b\n")
    clash = same + f'[[files]]\nname = "tree"\npath = "data"\nsource = "{other}"\n'
    r = ws.export(ws.write_spec(clash), tmp_path / "b2", check=10)
    assert "files entry 'tree' (all) is named twice" in r.stderr


def test_target_option_must_be_key_value(ws: Workspace, tmp_path: Path) -> None:
    (ws.src / "a.txt").write_text("a\n")
    ws.export(ws.tree_spec(), tmp_path / "b1")
    r = ws.import_(tmp_path / "b1", check=11, extra=("-o", "snap_target"))
    assert "'snap_target' is not KEY=VALUE" in r.stderr
    assert not ws.enclave.exists() or not (ws.enclave / "files").exists()
