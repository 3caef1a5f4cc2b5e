"""Bad input gets a specific error, names the problem, and leaves the enclave byte-for-byte unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bundler.format.signing import generate_keypair
from tests.helpers import ROOT, Workspace, chunk_files, resign, run_cli, snapshot, volumes


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace(tmp_path)
    (w.src / "a.bin").write_bytes(os.urandom(700_000))
    (w.src / "b.txt").write_text("some text\n" * 5000)
    # The enclave already holds bundle #1, so "unchanged" covers published files and state.
    w.export(w.tree_spec(), tmp_path / "b1")
    w.import_(tmp_path / "b1")
    (w.src / "c.bin").write_bytes(os.urandom(300_000))
    w.export(w.tree_spec(), tmp_path / "b2", "--chunk-size", "256K")
    return w


def refused(ws: Workspace, vols: Any, code: int, *needles: str, extra: tuple[str, ...] = ()) -> str:
    before = snapshot(ws.enclave)
    args = vols if isinstance(vols, list) else [vols]
    r = ws.import_(*args, check=code, extra=extra)
    for n in needles:
        assert n in r.stderr, f"{n!r} not in:\n{r.stderr}"
    assert "what to do:" in r.stderr
    assert snapshot(ws.enclave) == before, "the enclave changed although the import was refused"
    return r.stderr


def b2(ws: Workspace) -> Path:
    return volumes(ws.root / "b2")[0]


def test_flipped_byte_in_a_chunk(ws: Workspace) -> None:
    victim = chunk_files(b2(ws))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    refused(ws, b2(ws), 22, f"chunk {victim.name}", "volume 1", "damaged", "it carries files tree")
    r = ws.verify(b2(ws), check=22)
    assert victim.name in r.stderr


def test_truncated_chunk(ws: Workspace) -> None:
    victim = chunk_files(b2(ws))[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    refused(ws, b2(ws), 22, f"chunk {victim.name}", "truncated")


def test_missing_chunk(ws: Workspace) -> None:
    victim = chunk_files(b2(ws))[0]
    victim.unlink()
    refused(ws, b2(ws), 23, f"chunk {victim.name} of volume 1 is missing")


def test_tampered_manifest(ws: Workspace) -> None:
    m = b2(ws) / "manifest.json"
    m.write_bytes(m.read_bytes().replace(b'"sequence": 2', b'"sequence": 9'))
    refused(ws, b2(ws), 21, "does not verify", "altered")


def test_signature_by_untrusted_key(ws: Workspace, tmp_path: Path) -> None:
    generate_keypair("mallory", tmp_path / "mallory-priv", tmp_path / "mallory-pub")
    resign([b2(ws)], tmp_path / "mallory-priv/mallory.key", lambda d: None)
    refused(ws, b2(ws), 21, "not among the 1 trusted keys")


def test_missing_signature(ws: Workspace) -> None:
    (b2(ws) / "manifest.sig").unlink()
    refused(ws, b2(ws), 21, "unsigned")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d.update(schema=2), "schema version 2 is not supported"),
        (lambda d: d.update(features=["xattrs-v9"]), "features this bundler does not know: xattrs-v9"),
    ],
)
def test_unknown_schema_or_feature(ws: Workspace, edit: Any, needle: str) -> None:
    resign([b2(ws)], ws.key, edit)
    refused(ws, b2(ws), 24, needle, "upgrade bundler")


def test_unknown_kind_needs_a_newer_bundler(ws: Workspace) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["entries"][0]["kind"] = "hologram"

    resign([b2(ws)], ws.key, edit)
    refused(ws, b2(ws), 24, "kind 'hologram'", "upgrade bundler")
    assert "kind 'hologram'" in ws.verify(b2(ws), check=24).stderr


def test_trusted_signature_that_is_not_base64(ws: Workspace) -> None:
    sig = b2(ws) / "manifest.sig"
    doc = json.loads(sig.read_text())
    doc["signatures"][0]["signature"] = "not base64!"
    sig.write_text(json.dumps(doc))
    refused(ws, b2(ws), 21, "not valid base64")


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/etc/passwd", "is absolute"),
        ("data/../../../etc/x", "'..' component"),
        ("data\\..\\x", "backslash"),
    ],
)
def test_escaping_paths_are_refused(ws: Workspace, path: str, needle: str) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["entries"][0]["files"][0]["path"] = path

    resign([b2(ws)], ws.key, edit)
    refused(ws, b2(ws), 29, needle)


def test_path_through_a_symlink_in_the_target_tree(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws.enclave / "files" / "data" / "sub").symlink_to(outside)

    def edit(d: dict[str, Any]) -> None:
        d["entries"][0]["files"][0]["path"] = "data/sub/evil"

    resign([b2(ws)], ws.key, edit)
    refused(ws, b2(ws), 29, "would land outside")
    assert list(outside.iterdir()) == []


def test_symlink_on_the_media(ws: Workspace, tmp_path: Path) -> None:
    victim = chunk_files(b2(ws))[0]
    copy = tmp_path / "elsewhere"
    copy.write_bytes(victim.read_bytes())
    victim.unlink()
    victim.symlink_to(copy)
    refused(ws, b2(ws), 29, "symlink")


def test_symlinked_manifest_on_the_media(ws: Workspace, tmp_path: Path) -> None:
    m = b2(ws) / "manifest.json"
    (tmp_path / "m.json").write_bytes(m.read_bytes())
    m.unlink()
    m.symlink_to(tmp_path / "m.json")
    refused(ws, b2(ws), 29, "symlink")


def test_oversized_manifest(ws: Workspace) -> None:
    m = b2(ws) / "manifest.json"
    with open(m, "ab") as fh:
        fh.truncate(64 * 1024 * 1024 + 1)
    refused(ws, b2(ws), 29, "over the 67108864-byte cap")


def test_replayed_older_sequence(ws: Workspace) -> None:
    ws.import_(b2(ws))
    refused(ws, ws.root / "b1", 25, "older than #2")


def test_fork_same_sequence_other_content(ws: Workspace, tmp_path: Path) -> None:
    ws.import_(b2(ws))
    resign([b2(ws)], ws.key, lambda d: d.update(generator="another exporter"))
    refused(ws, b2(ws), 26, "differs from the #2")


def test_delta_on_a_base_the_enclave_does_not_hold(ws: Workspace, tmp_path: Path) -> None:
    (ws.src / "d.bin").write_bytes(os.urandom(1000))
    ws.export(ws.tree_spec(), tmp_path / "b3")  # a delta on #2, which the enclave has not imported
    refused(ws, tmp_path / "b3", 27, "builds on #2", "import bundles #2 to #2 first")


def test_expired_bundle_and_the_override(ws: Workspace, tmp_path: Path) -> None:
    resign([b2(ws)], ws.key, lambda d: d.update(expires="2020-01-01T00:00:00Z"))
    refused(ws, b2(ws), 28, "expired at 2020-01-01", "--allow-expired")
    r = ws.import_(b2(ws), extra=("--allow-expired",))
    assert "imported test #2" in r.stdout


def test_files_on_the_media_that_the_manifest_does_not_name_are_ignored(ws: Workspace) -> None:
    junk = b2(ws) / "System Volume Information"
    junk.mkdir()
    (junk / "IndexerVolumeGuid").write_text("{guid}")
    stray = b2(ws) / "chunks" / "00" / ("0" * 64)
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"not ours")
    r = ws.import_(b2(ws))
    assert "ignoring System Volume Information/IndexerVolumeGuid" in r.stderr
    assert f"ignoring chunks/00/{'0' * 64}" in r.stderr
    assert (ws.enclave / "files/data/c.bin").read_bytes() == (ws.src / "c.bin").read_bytes()


def test_volumes_of_different_bundles_in_one_run(ws: Workspace) -> None:
    refused(ws, [b2(ws), volumes(ws.root / "b1")[0]], 29, "belongs to another bundle")


def test_interrupted_publish_then_second_run_completes(ws: Workspace, tmp_path: Path) -> None:
    """A target that dies after the first file (a failing double), then a normal re-run."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "from bundler.kinds.files import target\n"
        "real = target.install_file\n"
        "calls = []\n"
        "def dying(src, dest):\n"
        "    real(src, dest)\n"
        "    calls.append(dest)\n"
        "    if len(calls) == 1:\n"
        "        os._exit(137)\n"
        "target.install_file = dying\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{hook}:{ROOT}")
    proc = subprocess.run(
        [sys.executable, "-m", "bundler", "import", str(b2(ws)), "--enclave", str(ws.enclave), "--keys", str(ws.keys)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 137, proc.stderr
    state = json.loads((ws.enclave / "state/series/test.json").read_text())
    assert state["sequence"] == 1  # not recorded: the import did not finish
    r = ws.import_(b2(ws))
    assert "imported test #2" in r.stdout
    for name in ("a.bin", "b.txt", "c.bin"):
        assert (ws.enclave / "files/data" / name).read_bytes() == (ws.src / name).read_bytes()
    assert json.loads((ws.enclave / "state/series/test.json").read_text())["sequence"] == 2


def test_killed_while_unpacking_then_second_run_completes(ws: Workspace, tmp_path: Path) -> None:
    """SIGKILL the real importer part-way through unpacking; the re-run resumes from staging."""
    big = ws.src / "big.bin"
    big.write_bytes(os.urandom(48 * 1024 * 1024))
    ws.export(ws.tree_spec(), tmp_path / "b3", "--chunk-size", "64K")
    ws.import_(b2(ws))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bundler",
            "import",
            str(tmp_path / "b3"),
            "--enclave",
            str(ws.enclave),
            "--keys",
            str(ws.keys),
        ],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    done_logs = list((ws.enclave / "staging").glob("*/*/done"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        done_logs = list((ws.enclave / "staging").glob("*/*/done"))
        if done_logs and len(done_logs[0].read_text().split()) >= 20:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the import finished before it could be interrupted"
    assert not (ws.enclave / "files/data/big.bin").exists()
    r = ws.import_(tmp_path / "b3")
    assert "imported test #3" in r.stdout
    assert (ws.enclave / "files/data/big.bin").read_bytes() == big.read_bytes()


def test_export_refuses_a_local_file_that_differs_from_its_spec_digest(ws: Workspace, tmp_path: Path) -> None:
    f = ws.src / "a.bin"
    spec = ws.write_spec(f'[[files]]\nname = "a"\npath = "a.bin"\nsource = "{f}"\nsha256 = "{"0" * 64}"\n')
    r = ws.export(spec, tmp_path / "bad", check=32)
    assert "the carry spec expects 000000" in r.stderr


def test_export_spec_errors_name_the_section(ws: Workspace, tmp_path: Path) -> None:
    spec = ws.write_spec('[[files]]\nname = "x"\npath = "x"\nurl = "https://example.invalid/x"\n')
    r = ws.export(spec, tmp_path / "bad", check=10)
    assert "[[files]] #1: a URL needs its expected 'sha256'" in r.stderr
    r = run_cli("export", ws.root / "nope.toml", "--out", tmp_path / "o", "--key", ws.key, check=10)
    assert "does not exist" in r.stderr


def test_file_digest_that_its_chunks_do_not_rebuild(ws: Workspace) -> None:
    """A signed manifest whose file digest disagrees with its (valid) chunks: caught, nothing published."""

    def edit(d: dict[str, Any]) -> None:
        for f in d["entries"][0]["files"]:
            if f["path"] == "data/c.bin":
                f["sha256"] = "ab" * 32

    resign([b2(ws)], ws.key, edit)
    refused(ws, b2(ws), 22, "file data/c.bin rebuilt from its chunks", "expected abab")


def test_delta_whose_base_content_was_deleted_from_the_enclave(ws: Workspace) -> None:
    """b2 does not carry a.bin (the enclave has it since b1); if someone deleted it, the import
    says which file and how to recover, and publishes nothing (c.bin stays absent)."""
    (ws.enclave / "files/data/a.bin").unlink()
    published, state = snapshot(ws.enclave / "files"), snapshot(ws.enclave / "state")
    r = ws.import_(b2(ws), check=52)
    assert "data/a.bin is not carried by this delta" in r.stderr and "export --full" in r.stderr
    # Published content and state are untouched; the verified staging stays for the re-run.
    assert snapshot(ws.enclave / "files") == published and snapshot(ws.enclave / "state") == state
    assert not (ws.enclave / "files/data/c.bin").exists()
    (ws.enclave / "files/data/a.bin").write_bytes((ws.src / "a.bin").read_bytes())  # restored from backup
    ws.import_(b2(ws))
    assert (ws.enclave / "files/data/c.bin").read_bytes() == (ws.src / "c.bin").read_bytes()
