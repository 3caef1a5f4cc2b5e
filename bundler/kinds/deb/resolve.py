"""Dependency closure with a real ``apt-get`` confined to one directory.

(shared/reference/apt-and-reprepro.md, section 3.) ``APT_CONFIG`` points at a config that
names every ``Dir`` under the resolver's root, so the host's /etc/apt, /var/lib/apt,
/var/cache/apt and /var/lib/dpkg are neither read nor written. The only source is a
``file://`` mirror holding exactly the verified InRelease (or Release + Release.gpg) and
the verified Packages files, trusted through ``Signed-By`` = the binary keyring; apt checks
the signature and every index hash once more.

Resolution runs once per architecture with that architecture native and alone
(``APT::Architectures`` = it), so each architecture gets what a machine of that
architecture installs. Phased updates are always included (the machine id of the
exporting host must not decide what is carried). Recommends are not followed.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from bundler.errors import SourceError, UpstreamContentError

__all__ = ["AptResolver", "Selected", "write_status"]

_INST = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+) (.*?) ?\[(\S+)\]\)", re.MULTILINE)
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/+,=@~-]+")
_DROP_ENV = ("APT_CONFIG", "http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")
_TIMEOUT = 1800.0


@dataclass(frozen=True, order=True)
class Selected:
    """A binary package version apt selected: ``arch`` as apt prints it (``amd64``, ``all``...)."""

    name: str
    version: str
    arch: str


def write_status(path: Path, packages: Iterable[tuple[str, str, str]]) -> Path:
    """A dpkg status file listing ``(name, version, architecture)`` as installed."""
    stanzas = [
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: misc\n"
        f"Architecture: {arch}\nVersion: {version}\nMaintainer: unknown <unknown@example.invalid>\n"
        "Description: installed on the fleet\n"
        for name, version, arch in packages
    ]
    path.write_text("\n".join(stanzas))
    return path


class AptResolver:
    """An isolated apt under ``root`` whose only source is the ``file://`` mirror ``mirror``."""

    def __init__(
        self,
        root: Path,
        mirror: Path,
        suites: Sequence[str],
        components: Sequence[str],
        architectures: Sequence[str],
        keyring: Path,
        what: str,
    ) -> None:
        self.root = root.resolve()
        self.what = what
        self.architectures = list(architectures)
        for p in (self.root, mirror.resolve(), keyring.resolve()):
            if not _SAFE_PATH.fullmatch(str(p)):
                raise SourceError(
                    f"{what}: the work path {p} has characters apt configuration cannot carry (spaces, quotes)",
                    remedy="use a state directory whose path has only letters, digits and ._/+,=@~-",
                )
        r = self.root
        for d in (
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "etc/sources.list.d",
            "etc/auth.conf.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
        ):
            (r / d).mkdir(parents=True, exist_ok=True)
        self.empty_status = r / "status"
        self.empty_status.write_text("")
        (r / "etc" / "sources.list").write_text("")
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
            "Dir::Etc::netrc": "auth.conf",
            "Dir::Etc::netrcparts": "auth.conf.d",
            "Dir::State": f"{r}/state/",
            "Dir::State::lists": f"{r}/state/lists/",
            "Dir::State::status": str(self.empty_status),
            "Dir::State::extended_states": f"{r}/state/extended_states",
            "Dir::Cache": f"{r}/cache/",
            "Dir::Cache::archives": f"{r}/cache/archives/",
            "Dir::Cache::pkgcache": "",
            "Dir::Log": f"{r}/log/",
            "APT::Architecture": self.architectures[0],
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            "APT::Get::Always-Include-Phased-Updates": "true",
            "Acquire::Languages": "none",
            "Acquire::GzipIndexes": "true",
            "Acquire::By-Hash": "no",
            "Acquire::Retries": "0",
            "APT::Sandbox::User": "root",
            "Debug::NoLocking": "true",
        }
        lines = [f'{k} "{v}";' for k, v in conf.items()]
        lines.append("APT::Architectures { " + " ".join(f'"{a}";' for a in self.architectures) + " };")
        self.config = r / "apt.conf"
        self.config.write_text("\n".join(lines) + "\n")
        (r / "etc" / "sources.list.d" / "bundler.sources").write_text(
            f"Types: deb\nURIs: {mirror.resolve().as_uri()}\nSuites: {' '.join(suites)}\n"
            f"Components: {' '.join(components)}\nSigned-By: {keyring.resolve()}\n"
        )

    # -- running apt ----------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV and k.lower() not in _DROP_ENV}
        env.update(APT_CONFIG=str(self.config), LC_ALL="C", LANG="C", DEBIAN_FRONTEND="noninteractive")
        return env

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [tool, *args]
        try:
            return subprocess.run(
                cmd, env=self._env(), capture_output=True, text=True, errors="replace", timeout=_TIMEOUT, check=False
            )
        except FileNotFoundError as exc:
            raise SourceError(
                f"{self.what}: {tool} is not installed; the deb kind resolves dependencies with apt",
                remedy="run the exporter on Debian or Ubuntu with apt installed",
            ) from exc

    @staticmethod
    def _arch_opts(arch: str, status: Path | None) -> list[str]:
        opts = ["-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures={arch}"]
        if status is not None:
            opts += ["-o", f"Dir::State::status={status}"]
        return opts

    def _fail(self, doing: str, proc: subprocess.CompletedProcess[str], remedy: str) -> UpstreamContentError:
        return UpstreamContentError(f"{self.what}: {doing} failed: {apt_message(proc)}", remedy=remedy)

    def update(self) -> None:
        """``apt-get update --error-on=any`` against the verified mirror."""
        proc = self.run("apt-get", "update", "--error-on=any")
        if proc.returncode != 0:
            raise self._fail(
                "apt-get update (reading the verified indexes)",
                proc,
                "the signed Release and its indexes did not satisfy apt (an expired Valid-Until, a Release "
                "for another suite?); check the message, the suite names and the system clock",
            )

    def install(self, arch: str, packages: Sequence[str], status: Path | None = None) -> list[Selected]:
        """What ``apt-get install -s -y PACKAGES`` installs on a machine of ``arch`` with ``status``."""
        proc = self.run("apt-get", *self._arch_opts(arch, status), "install", "-s", "-y", *packages)
        if proc.returncode != 0:
            raise self._fail(
                f"resolving {' '.join(packages)} for {arch}",
                proc,
                "check the package names and '=version' pins against the archive; a package missing on one "
                "architecture can be qualified (name:amd64); a dependency that is 'not installable' lives in "
                "a suite or component the carry spec does not list (add it, e.g. universe or -updates)",
            )
        return parse_inst(proc.stdout)

    def dist_upgrade(self, arch: str, status: Path) -> list[Selected]:
        """What ``apt-get -s dist-upgrade`` brings to a machine of ``arch`` with ``status`` installed."""
        proc = self.run("apt-get", *self._arch_opts(arch, status), "dist-upgrade", "-s", "-y")
        if proc.returncode != 0:
            raise self._fail(
                f"upgrading the installed set for {arch}",
                proc,
                "the fleet's installed packages cannot be upgraded together from these suites; check the "
                "'installed' file and the suites",
            )
        return parse_inst(proc.stdout)

    def candidates(self, arch: str, packages: Sequence[str]) -> list[Selected]:
        """The versions apt would pick for ``packages`` on ``arch``, without dependencies.

        ``apt-get download --print-uris`` (nothing is downloaded) refuses unknown names,
        missing pinned versions and purely virtual packages, unlike ``apt-cache show``, which
        exits 0 with no output for ``name=<missing version>``. Its second field is the local
        file name ``<name>_<version, ':' as %3a>_<arch>.deb``.
        """
        proc = self.run("apt-get", *self._arch_opts(arch, None), "download", "--print-uris", *packages)
        if proc.returncode != 0:
            raise self._fail(
                f"looking up {' '.join(packages)} for {arch}",
                proc,
                "check the package names and '=version' pins against the archive (apt-cache policy NAME); a "
                "package missing on one architecture can be qualified (name:amd64)",
            )
        found: list[Selected] = []
        for line in proc.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 2 and line.startswith("'"):
                stem = unquote(fields[1]).removesuffix(".deb")
                parts = stem.split("_")
                if len(parts) == 3:
                    found.append(Selected(*parts))
        return found


def parse_inst(stdout: str) -> list[Selected]:
    """The ``Inst name [old] (version origins [arch])`` lines of ``apt-get -s``.

    A line whose old and new versions are equal is skipped: apt "upgrades" an installed
    package to the same version when the status stanza differs from the index stanza
    (our status file knows no Multi-Arch or Depends), which is no update at all.
    """
    return [Selected(m[1].split(":", 1)[0], m[3], m[5]) for m in _INST.finditer(stdout) if m[2] != m[3]]


def apt_message(proc: subprocess.CompletedProcess[str]) -> str:
    """apt's own explanation, condensed: the unmet-dependency block and the E:/W: lines."""
    keep: list[str] = []
    in_unmet = False
    for line in proc.stdout.splitlines():
        if "have unmet dependencies" in line or line.startswith("Package ") or line.startswith("However "):
            in_unmet = True
            keep.append(line.strip())
        elif in_unmet and line.startswith(" "):
            keep.append(line.strip())
        else:
            in_unmet = False
    keep += [line.strip() for line in proc.stderr.splitlines() if line.startswith(("E:", "W:", "Err:"))]
    keep += [line.strip() for line in proc.stdout.splitlines() if line.startswith(("E:", "Err:"))]
    if not keep:
        keep = [line.strip() for line in (proc.stderr or proc.stdout).strip().splitlines()[-8:]]
    text = " | ".join(dict.fromkeys(k for k in keep if k))
    return f"{text} (exit {proc.returncode})"
