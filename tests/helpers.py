"""Helpers shared by the functional tests: run the real CLI, build specs, snapshot trees."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bundler.exporter import ExportOptions
from bundler.format.layout import MANIFEST_NAME, SIGNATURE_NAME
from bundler.format.signing import generate_keypair, load_signing_key, sign

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bundler`` as an operator would; assert the exit code unless ``check`` is None."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "bundler", *map(str, args)], capture_output=True, text=True, env=full_env, timeout=600
    )
    if check is not None and proc.returncode != check:
        raise AssertionError(
            f"bundle {' '.join(map(str, args))} exited {proc.returncode}, expected {check}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its type and content digest: equal snapshots mean byte-identical trees."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() + f":{oct(p.stat().st_mode & 0o777)}"
    return out


@dataclass
class Workspace:
    """A connected side (spec, key, ledger, cache) and an enclave, all under one tmp dir."""

    root: Path
    series: str = "test"
    spec_count: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = self.root / "keys"
        self.priv = self.root / "priv"
        self.key = self.priv / "exporter.key"
        generate_keypair("exporter", self.priv, self.keys)
        self.state = self.root / "ledger"
        self.cache = self.root / "cache"
        self.enclave = self.root / "enclave"
        self.src = self.root / "src"
        self.src.mkdir()

    def write_spec(self, body: str, *, expires_days: int | None = None) -> Path:
        self.spec_count += 1
        spec = self.root / f"spec{self.spec_count}.toml"
        head = f'series = "{self.series}"\n'
        if expires_days is not None:
            head += f"expires_days = {expires_days}\n"
        spec.write_text(head + body)
        return spec

    def export_options(self, out: Path, *, full: bool = False) -> ExportOptions:
        """Options for calling the library's export_bundle in-process (tests that patch it)."""
        return ExportOptions(
            spec=self.tree_spec(),
            out=out,
            key=self.key,
            state_dir=self.state,
            cache_dir=self.cache,
            now=datetime(2026, 11, 26, tzinfo=UTC),
            full=full,
        )

    def tree_spec(self, name: str = "tree", dest: str = "data") -> Path:
        return self.write_spec(f'[[files]]\nname = "{name}"\npath = "{dest}"\nsource = "{self.src}"\n')

    def export(self, spec: Path, out: Path, *extra: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "export",
            spec,
            "--out",
            out,
            "--key",
            self.key,
            "--state",
            self.state,
            "--cache",
            self.cache,
            *extra,
            env=self.env,
            check=check,
        )

    def export_json(self, spec: Path, out: Path, *extra: str) -> dict[str, Any]:
        return json.loads(self.export(spec, out, *extra, "--json").stdout)

    def import_(
        self, *vols: Path | str, check: int | None = 0, extra: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "import", *vols, "--enclave", self.enclave, "--keys", self.keys, *extra, env=self.env, check=check
        )

    def verify(self, *vols: Path | str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        return run_cli("verify", *vols, "--keys", self.keys, env=self.env, check=check)


def resign(volume_dirs: list[Path], key_path: Path, edit: Any) -> None:
    """Rewrite manifest.json in every volume with ``edit(dict)`` and sign it again with a trusted key:
    lets a test reach the checks that sit behind the signature."""
    first = json.loads((volume_dirs[0] / MANIFEST_NAME).read_bytes())
    edit(first)
    data = (json.dumps(first, sort_keys=True, indent=1) + "\n").encode()
    sig = sign(data, load_signing_key(key_path))
    for v in volume_dirs:
        (v / MANIFEST_NAME).write_bytes(data)
        (v / SIGNATURE_NAME).write_bytes(sig)


def volumes(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.startswith("vol-"))


def chunk_files(vol: Path) -> list[Path]:
    return sorted(p for p in (vol / "chunks").rglob("*") if p.is_file())
