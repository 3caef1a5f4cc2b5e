"""An export whose manifest cannot fit the importers' cap is refused before anything is compressed.

Every importer refuses a manifest.json over MANIFEST_MAX_BYTES (FORMAT.md §9.1). Without an
early check, an export too large for one bundle would compress for hours and fail at its end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bundler import exporter
from bundler.errors import UsageError
from bundler.exporter import export_bundle
from bundler.format.layout import MANIFEST_NAME
from bundler.format.state import StateStore
from tests.helpers import Workspace


def _workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path)
    (ws.src / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 77))  # three 2 MiB segments
    (ws.src / "empty").write_bytes(b"")
    for i in range(30):
        (ws.src / "small" / f"{i:02d}").parent.mkdir(exist_ok=True)
        (ws.src / "small" / f"{i:02d}").write_bytes(os.urandom(100 + 37 * i))
    return ws


def _floor_seen(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    real = exporter._manifest_floor

    def spy(*args: object, **kw: object) -> int:
        seen.append(real(*args, **kw))  # type: ignore[arg-type]
        return seen[-1]

    monkeypatch.setattr(exporter, "_manifest_floor", spy)
    return seen


def test_the_floor_is_below_the_real_manifest_and_a_bundle_at_the_cap_is_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _workspace(tmp_path)
    seen = _floor_seen(monkeypatch)
    first = export_bundle(ws.export_options(tmp_path / "b1"))
    actual = len((first.volumes[0] / MANIFEST_NAME).read_bytes())
    assert len(seen) == 1 and 0.8 * actual < seen[0] <= actual, (seen, actual)
    # Exactly at the cap: allowed (the manifest of a --full re-export differs only in numbers).
    monkeypatch.setattr(exporter, "MANIFEST_MAX_BYTES", actual + 64)
    again = export_bundle(ws.export_options(tmp_path / "b2", full=True))
    assert again.sequence == 2


def test_a_bundle_whose_manifest_cannot_fit_is_refused_before_any_chunk_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _workspace(tmp_path)
    seen = _floor_seen(monkeypatch)
    monkeypatch.setattr(exporter, "MANIFEST_MAX_BYTES", 5000)
    compressed: list[object] = []
    monkeypatch.setattr(exporter, "write_many", lambda *a, **kw: compressed.append(a))
    out = tmp_path / "b"
    with pytest.raises(
        UsageError, match=r"\(32 files\) needs a manifest of at least \d+ bytes, over the 5000-byte cap"
    ) as e:
        export_bundle(ws.export_options(out))
    assert e.value.exit_code == 11
    assert "split the carry spec" in (e.value.remedy or "")
    assert seen and seen[0] > 5000
    assert compressed == [], "chunks were compressed for a bundle that could never be imported"
    assert not any(p.is_file() for p in out.rglob("*")), "the refused export left files on the media"
    assert StateStore(ws.state).get(ws.series) is None, "the ledger recorded a refused export"
