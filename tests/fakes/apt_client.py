"""A real ``apt-get`` confined to one directory (shared/reference/apt-and-reprepro.md, section 3).

::

    apt = IsolatedApt(tmp_path / "apt", [(srv.base_url, ["noble", "noble-updates"], ["main"], keyring)],
                      architectures=["amd64", "arm64"])
    apt.update()                                  # apt-get update --error-on=any
    apt.simulate_install(["hello"])               # {"hello": "2.10-3ubuntu2", ...}
    apt.download(["hello"])                       # debs in <root>/cache/archives/

``APT_CONFIG`` points at ``<root>/apt.conf``, so the host's /etc/apt is not read; the
dpkg status is an empty file (a fresh machine); each source trusts only its
``Signed-By`` keyring. The first architecture is the native one.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

__all__ = ["AptError", "AptSource", "Inst", "IsolatedApt"]

_INST = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+) (.*?) ?\[(\S+)\]\)", re.MULTILINE)
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class AptSource(NamedTuple):
    url: str
    suites: Sequence[str]
    components: Sequence[str]
    keyring: Path
    """``Signed-By:``: a binary keyring (``*.gpg``) or an armored ``*.asc`` file."""
    architectures: Sequence[str] | None = None


class AptError(RuntimeError):
    def __init__(self, cmd: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr


@dataclass(frozen=True)
class Inst:
    """One ``Inst`` line of ``apt-get -s``: ``name`` carries ``:arch`` for a foreign arch."""

    name: str
    version: str
    origins: str
    """As apt prints it, e.g. ``Ubuntu:24.04/noble-updates``."""
    arch: str


class IsolatedApt:
    def __init__(
        self,
        root: Path,
        sources: Iterable[AptSource | tuple[str, Sequence[str], Sequence[str], Path]],
        architectures: Sequence[str] = ("amd64",),
        options: Mapping[str, str] | None = None,
    ) -> None:
        """``options``: extra ``apt.conf`` scalars, e.g. ``{"Acquire::Retries": "2"}``."""
        self.root = Path(root).resolve()
        self.sources = [AptSource(*s) for s in sources]
        self.architectures = list(architectures)
        for d in (
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "etc/sources.list.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
        ):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "status").write_text("")
        (self.root / "etc" / "sources.list").write_text("")
        r = self.root
        conf = {
            "Dir::Etc": f"{r}/etc/",
            "Dir::Etc::main": "apt.conf",
            "Dir::Etc::parts": "apt.conf.d",
            "Dir::Etc::sourcelist": "sources.list",
            "Dir::Etc::sourceparts": "sources.list.d",
            "Dir::Etc::preferences": "preferences",
            "Dir::Etc::preferencesparts": "preferences.d",
            "Dir::Etc::trusted": "trusted.gpg",
            "Dir::Etc::trustedparts": "trusted.gpg.d",
            "Dir::State": f"{r}/state/",
            "Dir::State::status": f"{r}/status",
            "Dir::Cache": f"{r}/cache/",
            "Dir::Log": f"{r}/log/",
            "APT::Architecture": self.architectures[0],
            "APT::Install-Recommends": "false",
            "Acquire::Languages": "none",
            "Acquire::Retries": "0",
            "APT::Sandbox::User": "root",
            "Debug::NoLocking": "true",
            **(options or {}),
        }
        lines = [f'{k} "{v}";' for k, v in conf.items()]
        lines.append("APT::Architectures { " + " ".join(f'"{a}";' for a in self.architectures) + " };")
        self.config = self.root / "apt.conf"
        self.config.write_text("\n".join(lines) + "\n")
        stanzas = []
        for s in self.sources:
            stanza = (
                f"Types: deb\nURIs: {s.url}\nSuites: {' '.join(s.suites)}\n"
                f"Components: {' '.join(s.components)}\nSigned-By: {Path(s.keyring).resolve()}\n"
            )
            if s.architectures:
                stanza += f"Architectures: {' '.join(s.architectures)}\n"
            stanzas.append(stanza)
        (self.root / "etc" / "sources.list.d" / "test.sources").write_text("\n".join(stanzas))

    @property
    def archives_dir(self) -> Path:
        """Where ``download`` leaves the debs."""
        return self.root / "cache" / "archives"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
        env.update(APT_CONFIG=str(self.config), LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``apt-get ARGS`` in this configuration; AptError on a non-zero exit when ``check``."""
        cmd = ["apt-get", *args]
        proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AptError(cmd, proc)
        return proc

    def update(self, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``apt-get update --error-on=any``: exit 100 on any failed fetch or signature."""
        return self.run("update", "--error-on=any", check=check)

    def simulate(self, packages: Iterable[str]) -> list[Inst]:
        """``apt-get install -s -y PKGS`` against the empty status: the full closure."""
        out = self.run("install", "-s", "-y", *packages).stdout
        return [Inst(m[1], m[3], m[4], m[5]) for m in _INST.finditer(out)]

    def simulate_install(self, packages: Iterable[str]) -> dict[str, str]:
        """``{name: version}`` of what ``apt-get install`` would install (``name:arch`` if foreign)."""
        return {i.name: i.version for i in self.simulate(packages)}

    def download(self, packages: Iterable[str]) -> list[Path]:
        """``apt-get install --download-only -y PKGS`` (apt checks sizes and hashes); returns
        every deb now in :attr:`archives_dir` (file names carry ``%3a`` for an epoch's colon)."""
        self.run("install", "--download-only", "-y", *packages)
        return sorted(self.archives_dir.glob("*.deb"))
