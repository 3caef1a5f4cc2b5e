"""What the importer unpacks is what it verified: small chunks are read from the media once
(kept in memory between the check and the unpack), larger ones are hashed again while unpacked.

A medium that answers differently on a second read (a failing stick, a malicious device) is
simulated by rewriting every chunk file between the verification and the unpack."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import bundler.importer as importer
from bundler.errors import DigestError
from bundler.format.state import StateStore
from tests.helpers import Workspace, chunk_files, volumes


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace(tmp_path)
    for i in range(5):
        (w.src / f"f{i}.bin").write_bytes(os.urandom(20_000 + i))
    w.export(w.tree_spec(), tmp_path / "b1")
    return w


def _swap_chunks_before_unpack(monkeypatch: pytest.MonkeyPatch, vol: Path) -> list[Path]:
    """Make the media answer with other bytes (same sizes) once verification is over."""
    real = importer._unpack
    swapped: list[Path] = []

    def unpack(*args: Any, **kwargs: Any) -> None:
        for chunk in chunk_files(vol):
            chunk.write_bytes(os.urandom(chunk.stat().st_size))
            swapped.append(chunk)
        real(*args, **kwargs)

    monkeypatch.setattr(importer, "_unpack", unpack)
    return swapped


def _import(ws: Workspace, vol: Path) -> importer.ImportResult:
    opts = importer.ImportOptions(volumes=(vol,), enclave=ws.enclave, keys=ws.keys, now=datetime.now(UTC))
    return importer.import_bundle(opts)


def test_small_chunks_are_unpacked_from_the_bytes_that_were_verified(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    vol = volumes(ws.root / "b1")[0]
    swapped = _swap_chunks_before_unpack(monkeypatch, vol)
    result = _import(ws, vol)
    assert result.status == "applied"
    assert len(swapped) == 5
    for i in range(5):
        assert (ws.enclave / "files" / "data" / f"f{i}.bin").read_bytes() == (ws.src / f"f{i}.bin").read_bytes()


def test_chunks_not_kept_in_memory_are_checked_again_while_unpacked(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    vol = volumes(ws.root / "b1")[0]
    monkeypatch.setattr(importer, "KEEP_BYTES", 0)
    _swap_chunks_before_unpack(monkeypatch, vol)
    with pytest.raises(DigestError, match="is damaged"):
        _import(ws, vol)
    published = ws.enclave / "files"
    assert not published.exists() or not any(published.rglob("*.bin"))
    assert StateStore(ws.enclave / "state").series() == {}
