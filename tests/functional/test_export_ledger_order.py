"""The exporter's ledger and the media never disagree in the dangerous direction.

A bundle on the media that the ledger does not know would let the next export reuse its
sequence (a fork the enclave must refuse forever). So the ledger records the bundle before
any manifest reaches the media, and an export that fails afterwards rewinds the ledger.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bundler import exporter
from bundler.exporter import export_bundle
from bundler.format.layout import MANIFEST_NAME
from bundler.format.state import StateStore
from tests.helpers import Workspace


def test_ledger_records_the_bundle_before_its_manifest_reaches_the_media(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(tmp_path)
    (ws.src / "a.bin").write_bytes(os.urandom(10_000))
    seen: list[Any] = []
    real = exporter.atomic_write

    def spy(path: Path, data: bytes, **kw: Any) -> None:
        if path.name == MANIFEST_NAME:
            seen.append(StateStore(ws.state).get(ws.series))
        real(path, data, **kw)

    monkeypatch.setattr(exporter, "atomic_write", spy)
    result = export_bundle(ws.export_options(tmp_path / "b1"))
    assert seen and seen[0] is not None, "manifest.json was written before the ledger knew the bundle"
    assert (seen[0].sequence, seen[0].digest) == (1, result.digest)


def test_a_failure_while_writing_the_media_rewinds_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace(tmp_path)
    (ws.src / "a.bin").write_bytes(os.urandom(10_000))
    first = export_bundle(ws.export_options(tmp_path / "b1"))
    (ws.src / "b.bin").write_bytes(os.urandom(10_000))
    real = exporter.atomic_write

    def failing(path: Path, data: bytes, **kw: Any) -> None:
        if path.name == MANIFEST_NAME:
            raise OSError(28, "No space left on device")
        real(path, data, **kw)

    monkeypatch.setattr(exporter, "atomic_write", failing)
    with pytest.raises(OSError, match="No space left"):
        export_bundle(ws.export_options(tmp_path / "b2"))
    st = StateStore(ws.state).get(ws.series)
    assert st is not None and (st.sequence, st.digest) == (1, first.digest)
    assert not any((tmp_path / "b2").iterdir()), "a failed export left volumes behind"
    monkeypatch.setattr(exporter, "atomic_write", real)
    again = export_bundle(ws.export_options(tmp_path / "b3"))
    assert again.sequence == 2 and again.base is not None and again.base.digest == first.digest
