"""The ``maas_image`` target: publish into a mirror, read back by a MAAS-like checking reader.

Entries come from the real source against a signed stream on 127.0.0.1 and are handed to
the target as the importer would (``Change.staged``: sha256 -> verified local file)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import PreflightError, PublishError, UpstreamSignatureError
from bundler.fetch import Fetcher, Want
from bundler.kinds.base import Change, PublishReport, SourceContext, TargetContext
from bundler.kinds.maas_image.mirror import Transaction
from bundler.kinds.maas_image.source import check_section, declare
from bundler.kinds.maas_image.target import MaasImageTarget
from bundler.model import Entry, FileRecord
from tests.fakes.http_server import FakeServer, serve_directory
from tests.fakes.maas_reader import MaasReader, MaasReadError, Selection
from tests.fakes.simplestreams import IMAGES_CID, Stream, signed_stream
from tests.helpers import snapshot

PREFIX = "ephemeral-v3/stable"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Stream, FakeServer]]:
    with signed_stream(tmp_path / "up") as up:
        yield up


def collect(stream: Stream, srv: FakeServer, tmp_path: Path, **section: Any) -> tuple[list[Entry], dict[str, Path]]:
    """Declare, download, and turn into (entries, staged) as the importer would."""
    checked = check_section({"url": srv.url(stream.prefix), "keyring": str(stream.keyring), **section}, "t")
    with Fetcher(tmp_path / "cache", retries=0) as f:
        ctx = SourceContext(fetcher=f, spec_dir=tmp_path, work_dir=tmp_path / "work")
        declared = list(declare(checked, ctx))
        fetched = f.fetch_many([Want(a.url, a.sha256, a.size) for d in declared for a in d.artifacts if a.url])
    staged: dict[str, Path] = dict(fetched)
    for d in declared:
        for a in d.artifacts:
            if a.local is not None:
                keep = tmp_path / "staged" / a.sha256  # the work dir is reused by the next declare
                keep.parent.mkdir(parents=True, exist_ok=True)
                if not keep.exists():
                    keep.write_bytes(a.local.read_bytes())
                staged[a.sha256] = keep
    entries = [
        Entry(
            d.kind,
            d.name,
            d.version,
            d.arch,
            tuple(FileRecord(a.path, a.sha256, a.size, ()) for a in d.artifacts),
            d.metadata,
        )
        for d in declared
    ]
    return entries, staged


def target(tmp_path: Path) -> MaasImageTarget:
    return MaasImageTarget(TargetContext(enclave=tmp_path / "enclave"))


def publish(
    t: MaasImageTarget, entries: list[Entry], staged: dict[str, Path], previous: Sequence[Entry] = ()
) -> PublishReport:
    t.preflight(entries)
    return t.publish(Change(entries=tuple(entries), previous=tuple(previous), staged=staged))


@pytest.fixture
def mirror_srv(tmp_path: Path) -> Iterator[FakeServer]:
    root = tmp_path / "enclave" / "maas-images"
    root.mkdir(parents=True)
    with serve_directory(root) as srv:
        yield srv


def test_filtered_selection_is_regenerated_and_signed_by_the_enclave_key(
    upstream: tuple[Stream, FakeServer], mirror_srv: FakeServer, tmp_path: Path
) -> None:
    stream, srv = upstream
    entries, staged = collect(stream, srv, tmp_path, filters=["release=jammy", "arch=amd64"])
    t = target(tmp_path)
    report = publish(t, entries, staged)
    enclave_key = tmp_path / "enclave" / "signing" / "enclave-key.gpg"
    url = mirror_srv.url(PREFIX)
    view = MaasReader(url, enclave_key).read()  # every .sjson, every item's sha256 and size
    assert sorted(view.all_products()) == [
        "com.ubuntu.maas.stable:1:grub-efi-signed:uefi:amd64",
        "com.ubuntu.maas.stable:1:pxelinux:pxe:i386",
        "com.ubuntu.maas.stable:v3:boot:22.04:amd64:ga-22.04",
        "com.ubuntu.maas.stable:v3:boot:22.04:amd64:hwe-22.04",
    ]
    assert set(view.versions()["com.ubuntu.maas.stable:v3:boot:22.04:amd64:ga-22.04"]) == {"20250718"}
    # what MAAS would import for a jammy/amd64 selection, and nothing for noble
    synced = MaasReader(url, enclave_key).sync([Selection("ubuntu", "jammy", ["amd64"])])
    assert synced["com.ubuntu.maas.stable:v3:boot:22.04:amd64:hwe-22.04"] == "20250718"
    assert not MaasReader(url, enclave_key).sync([Selection("ubuntu", "noble")]).keys() - {
        "com.ubuntu.maas.stable:1:grub-efi-signed:uefi:amd64",
        "com.ubuntu.maas.stable:1:pxelinux:pxe:i386",
    }
    # the upstream key alone cannot verify the regenerated files; the mirror's keyring can
    with pytest.raises(MaasReadError, match="gpgv refused"):
        MaasReader(url, stream.keyring).read(check_items=False)
    MaasReader(url, t.root / PREFIX / "keyring.gpg").read(check_items=False)
    notes = "\n".join(report.notes)
    assert "regenerated and signed by the enclave key" in notes
    assert (
        f"maas $PROFILE boot-sources create url=$MIRROR_URL/{PREFIX}/ keyring_filename={t.root}/{PREFIX}/keyring.gpg"
        in notes
    )
    assert (
        "boot-source-selections create $SOURCE_ID os=ubuntu release=jammy arches=amd64 subarches='*' labels='*'"
        in notes
    )
    assert "release=noble" not in notes
    assert not (t.root / ".bundler" / "tmp").exists()


def test_the_whole_snapshot_is_published_verbatim(
    upstream: tuple[Stream, FakeServer], mirror_srv: FakeServer, tmp_path: Path
) -> None:
    stream, srv = upstream
    entries, staged = collect(stream, srv, tmp_path, keep=2)
    t = target(tmp_path)
    report = publish(t, entries, staged)
    for rel in ("streams/v1/index.sjson", f"streams/v1/{IMAGES_CID}.sjson"):
        assert (t.root / PREFIX / rel).read_bytes() == (stream.base / rel).read_bytes()
    view = MaasReader(mirror_srv.url(PREFIX), stream.keyring).read()  # the stock (upstream) keyring verifies
    assert len(view.all_products()) == 2 * 2 * 2 + 2
    assert all(v == ["20250701", "20250718"] for n, v in view.versions().items() if ":v3:" in n)
    assert "upstream signatures kept verbatim" in "\n".join(report.notes)
    assert "release=noble arches=amd64,arm64" in "\n".join(report.notes)


def test_publish_twice_equals_once(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    entries, staged = collect(stream, srv, tmp_path, filters=["release=noble"])
    t = target(tmp_path)
    publish(t, entries, staged)
    once = snapshot(t.root)
    report = publish(t, entries, staged, entries)
    assert snapshot(t.root) == once  # not even re-signed
    assert report.notes[-1].startswith("0 file(s) written, 0 removed")


def test_tampered_products_file_is_refused_and_the_mirror_is_unchanged(
    upstream: tuple[Stream, FakeServer], tmp_path: Path
) -> None:
    stream, srv = upstream
    entries, staged = collect(stream, srv, tmp_path, filters=["release=noble"])
    t = target(tmp_path)
    publish(t, entries, staged)
    before = snapshot(t.root)
    assert before
    stream.add_version("20250801")
    new, staged2 = collect(stream, srv, tmp_path, filters=["release=noble"])
    products = next(f for e in new for f in e.files if f.path.endswith(f"{IMAGES_CID}.sjson"))
    p = staged2[products.sha256]
    p.write_bytes(p.read_bytes().replace(b'"label": "stable"', b'"label": "daily"', 1))
    with pytest.raises(UpstreamSignatureError, match=f"{IMAGES_CID}.sjson fails its upstream signature check"):
        publish(t, new, staged2, entries)
    assert snapshot(t.root) == before


def test_a_failure_mid_publish_undoes_every_write(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    entries, staged = collect(stream, srv, tmp_path, filters=["release=noble"])
    t = target(tmp_path)
    publish(t, entries, staged)
    before = snapshot(t.root)
    stream.add_version("20250801")
    new, staged2 = collect(stream, srv, tmp_path, filters=["release=noble"])
    # the last item of the last image is not staged: every earlier item was already written
    last = [e for e in new if e.metadata["role"] == "image"][-1].files[-1]
    del staged2[last.sha256]
    with pytest.raises(PublishError, match="no verified copy"):
        publish(t, new, staged2, entries)
    assert snapshot(t.root) == before
    # and into an empty mirror: nothing at all is left behind
    t2 = MaasImageTarget(TargetContext(enclave=tmp_path / "enclave2"))
    with pytest.raises(PublishError):
        publish(t2, new, staged2)
    assert snapshot(t2.root) == {}


def test_an_entry_the_signed_products_do_not_list_is_refused(
    upstream: tuple[Stream, FakeServer], tmp_path: Path
) -> None:
    stream, srv = upstream
    entries, staged = collect(stream, srv, tmp_path, filters=["release=noble"])
    i = next(n for n, e in enumerate(entries) if e.metadata["role"] == "image")
    evil = b"not the kernel"
    (tmp_path / "evil").write_bytes(evil)
    sha = hashlib.sha256(evil).hexdigest()
    files = (FileRecord(entries[i].files[0].path, sha, len(evil), ()), *entries[i].files[1:])
    entries[i] = replace(entries[i], files=files)
    staged[sha] = tmp_path / "evil"
    t = target(tmp_path)
    with pytest.raises(PublishError, match="does not match the signed upstream products file"):
        publish(t, entries, staged)
    assert snapshot(t.root) == {}


def test_preflight_refuses_more_versions_than_keep_and_hidden_paths(
    upstream: tuple[Stream, FakeServer], tmp_path: Path
) -> None:
    stream, srv = upstream
    entries, _staged = collect(stream, srv, tmp_path, filters=["release=noble"], keep=2, bootloaders=False)
    t = target(tmp_path)
    t.preflight(entries)
    s = entries[0]
    with pytest.raises(PreflightError, match="more versions than the stream's keep = 1"):
        t.preflight([replace(s, metadata={**s.metadata, "keep": 1}), *entries[1:]])
    bad = replace(entries[1], files=(FileRecord(".bundler/x", "a" * 64, 1, ()),))
    with pytest.raises(PreflightError, match=r"starts with '\.'"):
        t.preflight([s, bad])
    orphan = replace(entries[1], metadata={**entries[1].metadata, "stream": "elsewhere"})
    with pytest.raises(PreflightError, match="belongs to no stream"):
        t.preflight([s, orphan])


def test_keyring_is_binary(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    entries, staged = collect(stream, srv, tmp_path, filters=["release=noble"])
    t = target(tmp_path)
    publish(t, entries, staged)
    keyring = t.root / PREFIX / "keyring.gpg"
    assert keyring.read_bytes()[0] & 0x80  # an OpenPGP packet, not armor
    listing = subprocess.run(["gpg", "--show-keys", "--with-colons", str(keyring)], capture_output=True, text=True)
    assert (
        stream.fingerprint in listing.stdout and listing.stdout.count("\nfpr:") + listing.stdout.startswith("fpr:") >= 2
    )


def test_a_publish_killed_mid_way_is_finished_by_the_next_run(
    upstream: tuple[Stream, FakeServer], mirror_srv: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, srv = upstream
    entries, staged = collect(stream, srv, tmp_path, filters=["release=jammy", "arch=amd64"])
    t = target(tmp_path)
    real = Transaction.put_bytes
    calls = []

    def dying(self: Transaction, data: bytes, dest: Path) -> bool:
        calls.append(dest)
        if len(calls) == 3:  # the keyring and one products file are in place, the index is not
            raise KeyboardInterrupt
        return real(self, data, dest)

    monkeypatch.setattr(Transaction, "put_bytes", dying)
    monkeypatch.setattr(Transaction, "rollback", lambda self: None)  # as if the process died
    with pytest.raises(KeyboardInterrupt):
        publish(t, entries, staged)
    assert (t.root / ".bundler" / "tmp").is_dir() and not (t.root / PREFIX / "streams/v1/index.sjson").exists()
    monkeypatch.undo()
    publish(t, entries, staged)
    MaasReader(mirror_srv.url(PREFIX), tmp_path / "enclave" / "signing" / "enclave-key.gpg").read()
    assert not (t.root / ".bundler" / "tmp").exists()


def test_a_transaction_clears_the_scratch_a_killed_run_left(tmp_path: Path) -> None:
    scratch = tmp_path / ".bundler" / "tmp"
    scratch.mkdir(parents=True)
    for stale in ("t1", "b2", "t3"):
        (scratch / stale).write_bytes(b"stale")
    dest = tmp_path / "a" / "index.sjson"
    dest.parent.mkdir()
    dest.write_bytes(b"old")
    txn = Transaction(scratch)
    assert txn.put_bytes(b"new", dest) and dest.read_bytes() == b"new"
    txn.rollback()
    assert dest.read_bytes() == b"old" and not scratch.exists()


def test_preflight_fails_cleanly_without_gpgv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bundler.kinds.maas_image.target as target_mod

    real = target_mod.shutil.which
    monkeypatch.setattr(target_mod.shutil, "which", lambda name: None if name == "gpgv" else real(name))
    with pytest.raises(PreflightError, match="gpgv is not installed") as info:
        target(tmp_path).preflight([])
    assert info.value.remedy == "apt-get install gpgv"
    assert not (tmp_path / "enclave").exists()


def test_a_stream_dropped_from_the_carry_spec_is_removed(upstream: tuple[Stream, FakeServer], tmp_path: Path) -> None:
    stream, srv = upstream
    entries, staged = collect(stream, srv, tmp_path, filters=["release=noble"])
    t = target(tmp_path)
    publish(t, entries, staged)
    assert (t.root / PREFIX / "streams/v1/index.sjson").is_file()
    report = publish(t, [], {}, entries)
    assert [p for p in t.root.rglob("*") if p.is_file()] == []
    assert len(report.removed) == len([e for e in entries if e.metadata["role"] == "image"])
