"""BackgroundSync: chunk data goes to the media while more is compressed, not all at the end."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bundler import fsio


def test_background_sync_runs_once_enough_was_written_and_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    synced = threading.Event()

    def record(path: Path) -> None:  # stands in for syncfs(2) so that the calls can be counted
        calls.append(path)
        synced.set()

    monkeypatch.setattr(fsio, "sync_filesystem", record)
    with fsio.BackgroundSync(tmp_path, every=1000) as bg:
        bg.wrote(600)
        time.sleep(0.2)
        assert calls == []  # below the threshold: nothing yet
        bg.wrote(600)
        assert synced.wait(5), "no sync after 1200 bytes with a threshold of 1000"
    assert calls == [tmp_path]
    assert not any(t.name == "writeback" for t in threading.enumerate())
