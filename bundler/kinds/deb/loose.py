"""Loose .deb files: local builds or PPA downloads that have no signed upstream index.

Carry spec::

    [[deb]]
    name = "site-debs"              # archive id (as for an archive section): unique per spec
    suite = "noble"                 # the enclave distribution (codename) they go into
    component = "main"              # default "main"
    debs = ["build/tool_1.2-1_amd64.deb"]   # files, relative to the spec (or absolute)
    debs_dir = "build/debs"         # and/or: every *.deb below this directory

At least one of ``debs`` and ``debs_dir``; the archive keys (``url``, ``suites``,
``packages``...) do not apply. The exporter reads each file's control fields with
``dpkg-deb -f`` (Package, Version, Architecture, Source, Section, Priority) and records
its sha256 and size; nothing vouches for these files but the exporter's own signature on
the manifest, so carry only debs you built or checked.

One entry per file (contract in :mod:`bundler.kinds.deb`): name ``<archive>/<suite>/<package>``,
the deb's version and architecture, metadata role ``loose``, one file at the pool path
reprepro gives it, ``<archive>/pool/<component>/<prefix>/<source>/<package>_<version>_<arch>.deb``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.errors import SourceError, SpecError, UpstreamContentError
from bundler.hashing import sha256_file
from bundler.kinds.base import SourceContext
from bundler.kinds.deb import names
from bundler.kinds.deb.deb822 import StanzaError, parse_stanzas
from bundler.model import Artifact, Declared

__all__ = ["LOOSE_KEYS", "DebControl", "check_section", "declare", "is_loose", "read_control"]

LOOSE_KEYS = frozenset({"name", "suite", "component", "debs", "debs_dir"})
_FIELDS = ("Package", "Version", "Architecture", "Source", "Section", "Priority")
_WORKERS = max(2, min(8, 2 * (os.cpu_count() or 1)))


def is_loose(section: Mapping[str, Any]) -> bool:
    """A ``[[deb]]`` table that names local .deb files rather than an archive."""
    return "debs" in section or "debs_dir" in section


def check_section(section: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """Validate a loose-deb ``[[deb]]`` table; return it normalised (component filled in)."""
    unknown = set(section) - LOOSE_KEYS
    if unknown:
        raise SpecError(
            f"{where}: a [[deb]] section with 'debs'/'debs_dir' carries local .deb files; "
            f"{', '.join(sorted(unknown))} do(es) not apply to it",
            remedy=f"allowed here: {sorted(LOOSE_KEYS)}; packages from an archive need a section of their own",
        )
    name = section.get("name")
    if not isinstance(name, str) or not names.NAME.fullmatch(name):
        raise SpecError(
            f"{where}: 'name' is required: an id of lower-case letters, digits, '.' and '-' (e.g. \"site-debs\"), "
            f"got {name!r}"
        )
    suite = section.get("suite")
    if not isinstance(suite, str) or not names.SUITE.fullmatch(suite):
        raise SpecError(
            f"{where}: 'suite' is required: the enclave distribution the debs go into (e.g. \"noble\"), got {suite!r}",
            remedy='loose debs have no upstream index to say where they belong: write suite = "noble"',
        )
    component = section.get("component", "main")
    if not isinstance(component, str) or not names.COMPONENT.fullmatch(component):
        raise SpecError(f"{where}: 'component' must be a component name (e.g. \"main\"), got {component!r}")
    out: dict[str, Any] = {"name": name, "suite": suite, "component": component}
    debs = section.get("debs")
    if debs is not None:
        if not isinstance(debs, list) or not debs or not all(isinstance(d, str) and d for d in debs):
            raise SpecError(f"{where}: 'debs' must be a non-empty list of .deb file paths, got {debs!r}")
        bad = [d for d in debs if not d.endswith(".deb")]
        if bad:
            raise SpecError(f"{where}: 'debs' entry {bad[0]!r} does not name a .deb file")
        if len(set(debs)) != len(debs):
            raise SpecError(f"{where}: 'debs' names a file twice: {debs!r}")
        out["debs"] = list(debs)
    debs_dir = section.get("debs_dir")
    if debs_dir is not None:
        if not isinstance(debs_dir, str) or not debs_dir:
            raise SpecError(f"{where}: 'debs_dir' must be a directory path (string), got {debs_dir!r}")
        out["debs_dir"] = debs_dir
    return out


@dataclass(frozen=True)
class DebControl:
    """The control fields of one .deb that decide where reprepro puts it."""

    package: str
    version: str
    architecture: str
    source: str
    section: str
    priority: str


def read_control(path: Path, what: str) -> DebControl:
    """Read ``path``'s control fields with ``dpkg-deb -f``; refuse a file that is no usable .deb."""
    try:
        proc = subprocess.run(
            ["dpkg-deb", "-f", "--", str(path), *_FIELDS], capture_output=True, timeout=120, check=False
        )
    except FileNotFoundError as exc:
        raise SourceError(
            "dpkg-deb is not installed: loose .deb files cannot be read", remedy="apt-get install dpkg"
        ) from exc
    detail = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise UpstreamContentError(
            f"{what}: {path} is not a readable .deb (dpkg-deb -f exited {proc.returncode}: "
            f"{detail[-1] if detail else 'no message'})",
            remedy="rebuild the package or remove it from the carry spec",
        )
    try:
        stanzas = parse_stanzas(proc.stdout.decode("utf-8", errors="replace"), f"{path} control")
    except StanzaError as exc:
        raise UpstreamContentError(f"{what}: {path}: unreadable control fields: {exc}") from exc
    st = stanzas[0] if stanzas else {}
    package, version, arch = st.get("Package", ""), st.get("Version", ""), st.get("Architecture", "")
    source_field = st.get("Source", "").split()  # "name" or "name (version)"
    source = source_field[0] if source_field else package
    problems = []
    if not names.PKG_RE.fullmatch(package):
        problems.append(f"Package {package!r}")
    if not names.VERSION_RE.fullmatch(version) or not version[:1].isdigit():
        problems.append(f"Version {version!r}")
    if arch != "all" and not names.ARCH.fullmatch(arch):
        problems.append(f"Architecture {arch!r}")
    if not names.PKG_RE.fullmatch(source):
        problems.append(f"Source {source!r}")
    if problems:
        raise UpstreamContentError(
            f"{what}: {path} has an unusable control file: {', '.join(problems)}",
            remedy="fix debian/control and rebuild the package",
        )
    return DebControl(package, version, arch, source, st.get("Section", ""), st.get("Priority", ""))


def _files(section: Mapping[str, Any], ctx: SourceContext, what: str) -> list[Path]:
    files: list[Path] = []
    for raw in section.get("debs", []):
        path = ctx.spec_dir / os.path.expanduser(raw)
        if not path.is_file():
            raise SpecError(
                f"{what}: {path} does not exist or is not a file",
                remedy="fix the path in 'debs' (relative paths start at the carry spec's directory)",
            )
        files.append(path)
    raw_dir = section.get("debs_dir")
    if raw_dir is not None:
        directory = ctx.spec_dir / os.path.expanduser(raw_dir)
        if not directory.is_dir():
            raise SpecError(f"{what}: debs_dir {directory} is not a directory", remedy="fix 'debs_dir'")
        found = []
        for p in sorted(directory.rglob("*.deb")):
            if p.is_symlink():
                ctx.reporter.warn(f"{what}: skipping symlink {p} (name the file itself in 'debs' to carry it)")
            elif p.is_file():
                found.append(p)
        if not found:
            raise SpecError(f"{what}: debs_dir {directory} holds no .deb file", remedy="build the packages first")
        files += found
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique


def declare(section: Mapping[str, Any], ctx: SourceContext) -> Iterator[Declared]:
    """One ``loose`` entry per .deb file of the section, with the file's own sha256 and size."""
    archive, suite, component = section["name"], section["suite"], section["component"]
    what = f"deb {archive} (loose debs for {suite}/{component})"
    files = _files(section, ctx, what)

    def read(path: Path) -> tuple[Path, DebControl, str, int]:
        control = read_control(path, what)
        digest, size = sha256_file(path)
        return path, control, digest, size

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        results = list(pool.map(read, files))
    seen: dict[tuple[str, str], Path] = {}
    for path, c, _digest, _size in results:
        prior = seen.setdefault((c.package, c.architecture), path)
        if prior != path:
            raise SpecError(
                f"{what}: {c.package} ({c.architecture}) is given twice: {prior} and {path}",
                remedy="a reprepro distribution holds one version of a package per component: keep one file",
            )
    for path, c, digest, size in sorted(results, key=lambda r: (r[1].package, r[1].architecture)):
        filename = names.pool_path(component, c.source, c.package, c.version, c.architecture)
        yield Declared(
            kind="deb",
            name=f"{archive}/{suite}/{c.package}",
            version=c.version,
            arch=c.architecture,
            artifacts=(Artifact(path=f"{archive}/{filename}", sha256=digest, size=size, local=path),),
            metadata={
                "role": "loose",
                "archive": archive,
                "suite": suite,
                "component": component,
                "package": c.package,
                "source": c.source,
                "section": c.section,
                "priority": c.priority,
                "filename": filename,
            },
        )
