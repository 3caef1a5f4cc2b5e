"""The contract every registered kind keeps, whatever it carries.

Each kind's own suites prove its formats end to end; this one proves the shared rules the
core relies on, for every kind in the registry, so a new kind cannot forget them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bundler.errors import BundlerError, PreflightError, SpecError
from bundler.kinds import REGISTRY
from bundler.kinds.base import TargetContext
from tests.helpers import ROOT, snapshot

KINDS = sorted(REGISTRY)


@pytest.mark.parametrize("name", KINDS)
def test_unknown_spec_keys_are_refused_by_name(name: str) -> None:
    kind = REGISTRY[name]
    with pytest.raises(SpecError) as info:
        kind.check_section({"no_such_key_xyz": 1}, f"{name}[1]")
    assert str(info.value)  # a message an operator can act on
    assert info.value.exit_code == 10


@pytest.mark.parametrize("name", KINDS)
def test_building_a_target_changes_nothing(name: str, tmp_path: Path) -> None:
    enclave = tmp_path / "enclave"
    enclave.mkdir()
    (enclave / "marker").write_text("x")
    before = snapshot(tmp_path)
    REGISTRY[name].target(TargetContext(enclave=enclave))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", KINDS)
def test_preflight_without_tools_fails_cleanly_and_writes_nothing(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no external program on PATH, preflight either passes (a kind that needs none)
    or raises PreflightError naming what to install: never another exception, never a write."""
    enclave = tmp_path / "enclave"
    enclave.mkdir()
    before = snapshot(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    target = REGISTRY[name].target(TargetContext(enclave=enclave))
    try:
        target.preflight([])
    except PreflightError as exc:
        assert exc.remedy, f"{name}: preflight error without a remedy: {exc}"
    except BundlerError as exc:  # pragma: no cover - the assertion is the point
        pytest.fail(f"{name}: preflight raised {type(exc).__name__}, not PreflightError: {exc}")
    assert snapshot(tmp_path) == before
    assert os.environ["PATH"] == str(tmp_path / "empty-bin")


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_is_documented_in_the_format(name: str) -> None:
    kind = REGISTRY[name]
    assert kind.summary, f"{name} has no summary for --help"
    text = (ROOT / "docs" / "FORMAT.md").read_text()
    assert re.search(rf"^### 13\.\d+ {re.escape(name)}\b", text, re.MULTILINE), f"FORMAT.md has no section for {name}"
