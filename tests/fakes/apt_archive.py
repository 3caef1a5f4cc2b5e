"""A small but real, signed APT archive, generated at test time.

::

    with GpgHome() as gpg:
        fpr = gpg.generate("Test Archive <archive@example.invalid>")
        archive = build_archive(tmp_path / "ubuntu", gpg, fpr)     # default: DEFAULT_SPEC
        with serve_archive(archive) as srv:
            ...srv.base_url is the archive base (``deb <base_url> noble main``)...

Layout (see docs in shared/reference/apt-and-reprepro.md, section 1)::

    <root>/dists/<suite>/{InRelease,Release,Release.gpg}
    <root>/dists/<suite>/<comp>/binary-<arch>/Packages{,.gz,.xz} and by-hash/SHA256/<hex>
    <root>/pool/<comp>/<prefix>/<source>/<name>_<version without epoch>_<arch>.deb

The debs are real (``dpkg-deb --build``), the indexes come from ``apt-ftparchive``, the
Release files are signed with the given throwaway key. The binary keyring is written
next to ``root`` (``<root>-keyring.gpg``), outside the served tree.

Default content (:data:`DEFAULT_SPEC`), architectures amd64 and arm64:

============  ====================  ==========  ===================================================
suite         package               arch        relations / notes
============  ====================  ==========  ===================================================
noble         hello 2.10-3ubuntu1   any         Depends: libgreet1 (>= 1.0) | libgreet-compat,
                                                greet-data
noble         libgreet1 1.2-1       any         Source: greet; Pre-Depends: libc-dummy
noble         libc-dummy 1:2.39-…   any         epoch: pool file name has no ``1:``
noble         greet-data 1.2-1      all         Source: greet (pool/main/g/greet/)
noble         virtual-user 1.0-1    any         Depends: mail-transport-agent (virtual)
noble         tiny-mta 0.9-1        any         Provides: mail-transport-agent
noble         cowsay-lite 3.03-8    all         universe; Depends: greet-data
noble-upd.    hello 2.10-3ubuntu2   any         index only: Phased-Update-Percentage: 50
noble-upd.    libgreet1 1.2-1ub0.1  any         Source: greet
============  ====================  ==========  ===================================================

Negative-test helpers on :class:`Archive`: ``tamper_deb``, ``tamper_inrelease``,
``resign_inrelease``, ``corrupt_index``; ``add_package`` + ``refresh`` for a second export.

Loose debs (no archive): :func:`build_loose_debs` builds specs with ``dpkg-deb`` into one
flat directory. For thousands of packages (scripts/bench), ``ArchiveSpec(fast_debs=True)``
writes each deb in Python (:func:`write_deb`: the same ar/tar format, ~1000 debs/s).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.gpg import GpgHome
from tests.fakes.http_server import FakeServer, serve_directory

__all__ = [
    "DEFAULT_PACKAGES",
    "DEFAULT_SPEC",
    "Archive",
    "ArchivePackage",
    "ArchiveSpec",
    "PackageSpec",
    "build_archive",
    "build_loose_debs",
    "serve_archive",
    "write_deb",
]

SOURCE_DATE_EPOCH = 1714000000  # fixed mtimes: the same spec gives byte-identical debs


@dataclass(frozen=True)
class PackageSpec:
    """One binary package in one suite/component. ``architecture`` is ``"any"`` (one deb per
    archive architecture), ``"all"`` (one deb, listed in every architecture's index) or a
    concrete architecture."""

    name: str
    version: str
    suite: str
    component: str = "main"
    architecture: str = "any"
    source: str | None = None
    """Source package name (pool directory); defaults to ``name``."""
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    section: str = "misc"
    """Empty: no Section field in the deb (reprepro then needs an override)."""
    priority: str = "optional"
    """Empty: no Priority field in the deb."""
    control: tuple[tuple[str, str], ...] = ()
    """Extra control-file fields (in the deb and therefore in the index)."""
    index_fields: tuple[tuple[str, str], ...] = ()
    """Fields added to the Packages stanza only, not to the deb (e.g. Phased-Update-Percentage)."""

    @property
    def source_name(self) -> str:
        return self.source or self.name

    def arches(self, archive_arches: Iterable[str]) -> list[str]:
        return list(archive_arches) if self.architecture == "any" else [self.architecture]

    def pool_path(self, arch: str) -> str:
        """``pool/<comp>/<prefix>/<source>/<name>_<version sans epoch>_<arch>.deb``"""
        src = self.source_name
        prefix = src[:4] if src.startswith("lib") and len(src) > 3 else src[0]
        version = self.version.split(":", 1)[-1]
        return f"pool/{self.component}/{prefix}/{src}/{self.name}_{version}_{arch}.deb"

    def control_text(self, arch: str) -> str:
        fields: list[tuple[str, str]] = [("Package", self.name)]
        if self.source:
            fields.append(("Source", self.source))
        fields += [
            ("Version", self.version),
            ("Architecture", arch),
            ("Maintainer", "Bundler Tests <tests@example.invalid>"),
            ("Installed-Size", "1"),
        ]
        for name, value in (("Pre-Depends", self.pre_depends), ("Depends", self.depends), ("Provides", self.provides)):
            if value:
                fields.append((name, value))
        fields += [*self.control]
        fields += [(k, v) for k, v in (("Section", self.section), ("Priority", self.priority)) if v]
        fields.append(("Description", f"{self.name} test package\n Generated by tests/fakes/apt_archive.py."))
        return "".join(f"{k}: {v}\n" for k, v in fields)


_D, _G = "libgreet1 (>= 1.0) | libgreet-compat, greet-data", "greet"
DEFAULT_PACKAGES: tuple[PackageSpec, ...] = (
    PackageSpec("hello", "2.10-3ubuntu1", "noble", depends=_D, section="devel"),
    PackageSpec(
        "libgreet1",
        "1.2-1",
        "noble",
        source=_G,
        pre_depends="libc-dummy",
        section="libs",
        control=(("Multi-Arch", "same"),),
    ),
    PackageSpec("libc-dummy", "1:2.39-0ubuntu8", "noble", section="libs", control=(("Multi-Arch", "same"),)),
    PackageSpec("greet-data", "1.2-1", "noble", architecture="all", source=_G, control=(("Multi-Arch", "foreign"),)),
    PackageSpec("virtual-user", "1.0-1", "noble", depends="mail-transport-agent"),
    PackageSpec("tiny-mta", "0.9-1", "noble", provides="mail-transport-agent", section="mail"),
    PackageSpec(
        "cowsay-lite", "3.03+dfsg2-8", "noble", "universe", architecture="all", depends="greet-data", section="games"
    ),
    PackageSpec(
        "hello",
        "2.10-3ubuntu2",
        "noble-updates",
        depends=_D,
        section="devel",
        index_fields=(("Phased-Update-Percentage", "50"),),
    ),
    PackageSpec(
        "libgreet1",
        "1.2-1ubuntu0.1",
        "noble-updates",
        source=_G,
        pre_depends="libc-dummy",
        section="libs",
        control=(("Multi-Arch", "same"),),
    ),
)


@dataclass(frozen=True)
class ArchiveSpec:
    suites: tuple[str, ...] = ("noble", "noble-updates")
    components: tuple[str, ...] = ("main", "universe")
    architectures: tuple[str, ...] = ("amd64", "arm64")
    origin: str = "Ubuntu"
    label: str = "Ubuntu"
    version: str = "24.04"
    release_sha512: bool = False
    """Ubuntu's Release lists MD5Sum, SHA1, SHA256 only (apt then fetches by-hash/SHA256);
    True adds SHA512 (and by-hash/SHA512, which apt then prefers)."""
    packages: tuple[PackageSpec, ...] = DEFAULT_PACKAGES
    fast_debs: bool = False
    """Write the debs in Python (:func:`write_deb`) instead of one ``dpkg-deb --build`` each: the
    same format, ~100x faster, for archives of thousands of packages (scripts/bench)."""


DEFAULT_SPEC = ArchiveSpec()


@dataclass(frozen=True)
class ArchivePackage:
    """One deb as listed in one suite/component's indexes. ``arch`` is the deb's
    Architecture (``all`` debs are listed once here, but appear in every arch's index)."""

    suite: str
    component: str
    arch: str
    name: str
    version: str
    filename: str
    """Relative to the archive root, as in the index's ``Filename:``."""
    sha256: str
    size: int


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    if not data:
        raise ValueError(f"{path} is empty: no byte to change")
    pos = len(data) // 2 if offset is None else offset
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


def _run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> bytes:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')}")
    return proc.stdout


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _stanza_field(stanza: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}: *(.*)$", stanza, re.MULTILINE)
    if match is None:
        raise KeyError(name)
    return match.group(1).strip()


@dataclass
class Archive:
    root: Path
    spec: ArchiveSpec
    gpg: GpgHome
    fingerprint: str
    keyring: Path
    """Binary export of the signing key (gpgv --keyring, apt Signed-By)."""
    packages: list[ArchivePackage] = field(default_factory=list)
    """What the current indexes list (updated by :meth:`refresh`)."""
    _active: list[PackageSpec] = field(default_factory=list, repr=False)

    @property
    def suites(self) -> tuple[str, ...]:
        return self.spec.suites

    @property
    def components(self) -> tuple[str, ...]:
        return self.spec.components

    @property
    def architectures(self) -> tuple[str, ...]:
        return self.spec.architectures

    def dist(self, suite: str) -> Path:
        return self.root / "dists" / suite

    def index_dir(self, suite: str, component: str, arch: str) -> Path:
        return self.dist(suite) / component / f"binary-{arch}"

    def apt_source(self, url: str) -> tuple[str, tuple[str, ...], tuple[str, ...], Path]:
        """``(url, suites, components, keyring)`` as :class:`tests.fakes.apt_client.IsolatedApt` takes it."""
        return url, self.suites, self.components, self.keyring

    # --- listing ----------------------------------------------------------------------

    def index(self, suite: str, component: str, arch: str) -> list[ArchivePackage]:
        """Entries of ``dists/<suite>/<component>/binary-<arch>/Packages`` (``all`` included)."""
        return [p for p in self.packages if p.suite == suite and p.component == component and p.arch in (arch, "all")]

    def find(self, name: str, suite: str | None = None, arch: str | None = None) -> list[ArchivePackage]:
        """Listed debs of ``name`` (``arch`` also matches ``all`` debs)."""
        return [
            p
            for p in self.packages
            if p.name == name and suite in (None, p.suite) and (arch is None or p.arch in (arch, "all"))
        ]

    def get(self, name: str, suite: str, arch: str) -> ArchivePackage:
        found = self.find(name, suite, arch)
        if len(found) != 1:
            raise KeyError(f"{name} in {suite} for {arch}: {found}")
        return found[0]

    # --- negative-test helpers --------------------------------------------------------

    def tamper_deb(self, name: str, suite: str, arch: str) -> Path:
        """Flip one byte in the middle of the pool file (same size); indexes untouched."""
        path = self.root / self.get(name, suite, arch).filename
        _flip_byte(path)
        return path

    def tamper_inrelease(self, suite: str) -> Path:
        """Change one digit of the ``Date:`` line inside InRelease's signed text: the file
        still parses, hashes are unchanged, the signature no longer verifies."""
        path = self.dist(suite) / "InRelease"
        text = path.read_text()
        match = re.search(r"^Date: .*?(\d)(?=\D*$)", text, re.MULTILINE)
        if match is None:
            raise ValueError(f"no Date: line in {path}")
        digit = str((int(match.group(1)) + 1) % 10)
        path.write_text(text[: match.start(1)] + digit + text[match.end(1) :])
        return path

    def resign_inrelease(self, suite: str, other_gpg: GpgHome, other_fpr: str, *, detached: bool = True) -> None:
        """Sign InRelease (and Release.gpg unless ``detached=False``) validly with another key."""
        dist = self.dist(suite)
        other_gpg.clearsign(dist / "Release", dist / "InRelease", other_fpr)
        if detached:
            other_gpg.detach_sign(dist / "Release", dist / "Release.gpg", other_fpr)

    def corrupt_index(self, suite: str, component: str, arch: str, name: str = "Packages.xz") -> list[Path]:
        """Flip a byte in ``<index dir>/<name>`` and in its by-hash copies (the ones apt
        fetches when Acquire-By-Hash is on); Release is not updated. Returns the files changed."""
        directory = self.index_dir(suite, component, arch)
        path = directory / name
        digests = (hashlib.sha256(path.read_bytes()).hexdigest(), hashlib.sha512(path.read_bytes()).hexdigest())
        changed = [path]
        for algo, digest in zip(("SHA256", "SHA512"), digests, strict=True):
            copy = directory / "by-hash" / algo / digest
            if copy.exists():
                changed.append(copy)
        for p in changed:
            _flip_byte(p)
        return changed

    # --- second export ----------------------------------------------------------------

    def add_package(self, *specs: PackageSpec, replace: bool = True) -> list[Path]:
        """Build the debs of ``specs`` into the pool now; they are listed after :meth:`refresh`.
        With ``replace`` (as in a real pocket), other versions of the same name in the same
        suite/component leave the index (their pool files stay). Returns the new pool files."""
        for spec in specs:
            if spec.suite not in self.suites or spec.component not in self.components:
                raise ValueError(f"{spec.name}: {spec.suite}/{spec.component} is not in this archive")
            if replace:
                self._active = [
                    s
                    for s in self._active
                    if not (s.name == spec.name and s.suite == spec.suite and s.component == spec.component)
                ]
            self._active.append(spec)
        return _build_debs(self.root, specs, self.architectures, fast=self.spec.fast_debs)

    def refresh(self) -> None:
        """Rewrite every index, Release, InRelease and Release.gpg from the current packages."""
        self.packages = _write_indexes(self.root, self.spec, self._active)
        for suite in self.suites:
            _write_release(self.root, self.spec, suite)
            dist = self.dist(suite)
            self.gpg.clearsign(dist / "Release", dist / "InRelease", self.fingerprint)
            self.gpg.detach_sign(dist / "Release", dist / "Release.gpg", self.fingerprint)


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{SOURCE_DATE_EPOCH:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def _tar_gz(members: Iterable[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs: set[str] = set()
        for name, data in members:
            parts = name.split("/")
            for i in range(2, len(parts)):
                d = "/".join(parts[:i]) + "/"
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, SOURCE_DATE_EPOCH
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, SOURCE_DATE_EPOCH
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def write_deb(path: Path, control: str, files: Iterable[tuple[str, bytes]] = ()) -> Path:
    """Write a binary package in Python: an ``ar`` archive of ``debian-binary``, ``control.tar.gz``
    (``./control``) and ``data.tar.gz`` (``files``: paths like ``./usr/share/doc/x/README``), owned
    by root, with fixed mtimes. dpkg-deb, apt-ftparchive, apt and reprepro read it like any deb."""
    members = [
        _ar_member("debian-binary", b"2.0\n"),
        _ar_member("control.tar.gz", _tar_gz([("./control", control.encode())])),
        _ar_member("data.tar.gz", _tar_gz(files)),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"!<arch>\n" + b"".join(members))
    return path


def build_loose_debs(directory: Path, specs: Iterable[PackageSpec], arches: Iterable[str] = ("amd64",)) -> list[Path]:
    """Build ``specs`` with ``dpkg-deb`` as loose files ``<directory>/<name>_<version>_<arch>.deb``
    (no archive, no index): what a local build leaves behind."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    with tempfile.TemporaryDirectory(prefix="loose.") as tmp:
        for built in _build_debs(Path(tmp), specs, arches):
            dest = directory / built.name
            shutil.move(built, dest)
            out.append(dest)
    return out


def _build_debs(root: Path, specs: Iterable[PackageSpec], arches: Iterable[str], *, fast: bool = False) -> list[Path]:
    """``dpkg-deb --build`` each (spec, arch) in a temp dir (or :func:`write_deb` when ``fast``);
    move the debs into the pool. A pool file that already exists is kept (the same spec gives
    the same bytes)."""
    jobs = list({s.pool_path(a): (s, a) for s in specs for a in s.arches(arches)}.values())
    if fast:
        return [
            p
            if (p := root / s.pool_path(a)).exists()
            else write_deb(
                p, s.control_text(a), [(f"./usr/share/doc/{s.name}/README", f"{s.name} {s.version} {a}\n".encode())]
            )
            for s, a in jobs
        ]
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
    with tempfile.TemporaryDirectory(prefix="debs.") as tmp:

        def build(job: tuple[int, tuple[PackageSpec, str]]) -> Path:
            i, (spec, arch) = job
            target = root / spec.pool_path(arch)
            if target.exists():
                return target
            tree = Path(tmp) / str(i)
            (tree / "DEBIAN").mkdir(parents=True)
            (tree / "DEBIAN" / "control").write_text(spec.control_text(arch))
            doc = tree / "usr" / "share" / "doc" / spec.name
            doc.mkdir(parents=True)
            (doc / "README").write_text(f"{spec.name} {spec.version} {arch}\n")
            for p in [tree, *tree.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
                os.utime(p, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
            out = Path(tmp) / f"{i}.deb"
            _run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(out)], env=env)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(out, target)
            return target

        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            return list(pool.map(build, enumerate(jobs)))


def _write_indexes(root: Path, spec: ArchiveSpec, active: list[PackageSpec]) -> list[ArchivePackage]:
    """One ``apt-ftparchive packages pool`` scan, split into per-(suite, comp, arch) indexes."""
    scanned: dict[str, str] = {}
    for stanza in _run(["apt-ftparchive", "packages", "pool"], cwd=root).decode().split("\n\n"):
        if stanza.strip():
            scanned[_stanza_field(stanza, "Filename")] = stanza.strip("\n") + "\n"

    listing: list[ArchivePackage] = []
    stanzas: dict[tuple[str, str, str], list[tuple[str, str, str]]] = {}  # (suite, comp, arch) -> sortable
    for pkg in active:
        for deb_arch in pkg.arches(spec.architectures):
            filename = pkg.pool_path(deb_arch)
            stanza = scanned[filename]
            if pkg.component != "main":  # as Ubuntu: "Section: universe/games"
                stanza = re.sub(r"^Section: (?!.*/)", f"Section: {pkg.component}/", stanza, flags=re.MULTILINE)
            stanza += "".join(f"{k}: {v}\n" for k, v in pkg.index_fields)
            listing.append(
                ArchivePackage(
                    suite=pkg.suite,
                    component=pkg.component,
                    arch=deb_arch,
                    name=pkg.name,
                    version=pkg.version,
                    filename=filename,
                    sha256=_stanza_field(stanza, "SHA256"),
                    size=int(_stanza_field(stanza, "Size")),
                )
            )
            for arch in spec.architectures if deb_arch == "all" else [deb_arch]:
                stanzas.setdefault((pkg.suite, pkg.component, arch), []).append((pkg.name, pkg.version, stanza))

    for suite in spec.suites:
        for comp in spec.components:
            for arch in spec.architectures:
                entries = sorted(stanzas.get((suite, comp, arch), []))
                text = "\n".join(s for _, _, s in entries).encode()
                directory = root / "dists" / suite / comp / f"binary-{arch}"
                directory.mkdir(parents=True, exist_ok=True)
                _write_atomic(directory / "Packages", text)
                _write_atomic(directory / "Packages.gz", gzip.compress(text, mtime=0))
                _write_atomic(directory / "Packages.xz", lzma.compress(text, preset=6))
    return listing


def _write_release(root: Path, spec: ArchiveSpec, suite: str) -> None:
    dist = root / "dists" / suite
    for old in ("Release", "InRelease", "Release.gpg"):
        (dist / old).unlink(missing_ok=True)
    opts = {
        "Origin": spec.origin,
        "Label": spec.label,
        "Suite": suite,
        "Codename": suite,
        "Version": spec.version,
        "Architectures": " ".join(spec.architectures),
        "Components": " ".join(spec.components),
        "Description": f"{spec.origin} test archive {suite}",
    }
    cmd = ["apt-ftparchive", "-o", "APT::FTPArchive::DoByHash=true"]
    if not spec.release_sha512:
        cmd += ["-o", "APT::FTPArchive::Release::SHA512=false"]
    for key, value in opts.items():
        cmd += ["-o", f"APT::FTPArchive::Release::{key}={value}"]
    release = _run([*cmd, "release", f"dists/{suite}"], cwd=root)
    text = release.decode()
    if "\nAcquire-By-Hash: yes\n" not in "\n" + text:
        raise RuntimeError(f"apt-ftparchive wrote no 'Acquire-By-Hash: yes' for {suite}:\n{text}")
    _write_atomic(dist / "Release", release)
    # apt-ftparchive writes by-hash copies itself (apt 2.6); make sure, and fill any gap.
    sha256 = text.split("\nSHA256:\n", 1)[1]
    for line in sha256.splitlines():
        if not line.startswith(" "):
            break
        digest, _size, rel = line.split()
        target = dist / rel
        by_hash = target.parent / "by-hash" / "SHA256" / digest
        if not by_hash.exists():
            by_hash.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target, by_hash)


def build_archive(
    root: Path,
    gpg: GpgHome,
    fpr: str,
    spec: ArchiveSpec | None = None,
    *,
    keyring: Path | None = None,
) -> Archive:
    """Build the archive under ``root`` (created; must not hold another archive) and sign it
    with ``fpr`` from ``gpg``. The binary keyring goes to ``keyring`` or ``<root>-keyring.gpg``."""
    spec = spec or DEFAULT_SPEC
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    keyring = gpg.export_binary(fpr, keyring or root.with_name(root.name + "-keyring.gpg"))
    archive = Archive(root=root, spec=spec, gpg=gpg, fingerprint=fpr, keyring=keyring)
    archive.add_package(*spec.packages, replace=False)
    archive.refresh()
    return archive


@contextmanager
def serve_archive(archive: Archive) -> Iterator[FakeServer]:
    """Serve the archive root over HTTP on 127.0.0.1; ``srv.base_url`` is the apt URI."""
    with serve_directory(archive.root) as srv:
        yield srv
