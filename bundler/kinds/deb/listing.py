"""What a reprepro repository publishes, read from its exported (signed) indexes.

The check after an import reads ``dists/<suite>/<component>/binary-<arch>/Packages``, the
very files apt clients get, rather than trusting reprepro's exit code: reprepro exits 0
when it skips a package that is already there or older than what it holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, order=True)
class Listed:
    """One binary package as an exported index lists it (``arch`` is its Architecture field)."""

    suite: str
    component: str
    package: str
    arch: str


def read_exported(repo: Path, suites: Iterable[str] | None = None) -> dict[Listed, str]:
    """``Listed -> version`` for every package in the exported indexes of ``suites`` (default: all)."""
    dists = repo / "dists"
    out: dict[Listed, str] = {}
    if not dists.is_dir():
        return out
    wanted = None if suites is None else set(suites)
    for suite_dir in sorted(p for p in dists.iterdir() if p.is_dir()):
        if wanted is not None and suite_dir.name not in wanted:
            continue
        for packages in sorted(suite_dir.glob("*/binary-*/Packages")):
            component = packages.parent.parent.name
            for name, version, arch in _scan(packages):
                out[Listed(suite_dir.name, component, name, arch)] = version
    return out


def _scan(path: Path) -> Iterable[tuple[str, str, str]]:
    """(Package, Version, Architecture) of each stanza; a fast line scan (reprepro writes one
    field per line, continuation lines start with a space)."""
    name = version = arch = ""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("Package: "):
                name = line[9:].strip()
            elif line.startswith("Version: "):
                version = line[9:].strip()
            elif line.startswith("Architecture: "):
                arch = line[14:].strip()
            elif line == "\n":
                if name:
                    yield name, version, arch
                name = version = arch = ""
    if name:
        yield name, version, arch


def describe_changes(before: Mapping[Listed, str], after: Mapping[Listed, str]) -> tuple[list[str], list[str], int]:
    """(added or changed, removed, unchanged count) between two listings, as report lines."""
    added = [
        f"{k.package} {v} {k.arch} ({k.suite}/{k.component})" + (f", was {before[k]}" if k in before else "")
        for k, v in sorted(after.items())
        if before.get(k) != v
    ]
    removed = [
        f"{k.package} {v} {k.arch} ({k.suite}/{k.component})" for k, v in sorted(before.items()) if k not in after
    ]
    unchanged = sum(1 for k, v in after.items() if before.get(k) == v)
    return added, removed, unchanged
