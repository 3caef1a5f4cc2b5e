"""Connected side of the ``deb`` kind: signed APT archive -> manifest entries.

Carry spec section ``[[deb]]``::

    [[deb]]
    name = "ubuntu"                 # archive id: [a-z0-9][a-z0-9.-]*
    url = "http://archive.ubuntu.com/ubuntu"   # default from the architectures (below)
    suites = ["noble", "noble-updates", "noble-security"]
    components = ["main", "universe"]          # default: main restricted universe multiverse
    architectures = ["amd64"]                  # default ["amd64"]
    keyring = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"   # default; relative to the spec
    fingerprints = ["F6ECB3762474EDA9D21B7022871920D1991BC93C"]   # accepted primary keys
    packages = ["hello", "curl=7.88.1-10", "intel-microcode:amd64", "foo/noble-backports"]
    closure = true                  # default: with dependencies (Depends, Pre-Depends)
    installed = "fleet-installed.txt"   # `dpkg-query -W` output: updates for it come along

Default ``url``: amd64/i386 -> http://archive.ubuntu.com/ubuntu, anything else ->
http://ports.ubuntu.com/ubuntu-ports; a mix of both needs two sections.

A section with ``debs`` or ``debs_dir`` instead names local .deb files (no archive, no
index): see :mod:`bundler.kinds.deb.loose`.

What :func:`declare` does (every download through ``ctx.fetcher``):

1. per suite, fetch ``dists/<suite>/InRelease`` (else ``Release`` + ``Release.gpg``), check it
   with gpgv against the keyring (and the pinned primary fingerprints), and parse only the
   payload gpgv put out;
2. fetch each ``<comp>/binary-<arch>/Packages.xz`` (else ``.gz``, else plain) by the hash and
   size the signed Release gives (by-hash when the archive offers it), into the cache;
3. resolve with a real apt confined to the work directory, over a ``file://`` mirror made of
   exactly those verified files (:mod:`bundler.kinds.deb.resolve`), once per architecture;
4. look every selected (package, version, architecture) up in the verified indexes, in every
   suite that lists it, and declare it with the index's Filename, SHA256 and Size.

Entries follow the contract in :mod:`bundler.kinds.deb`. No .deb is downloaded here: the core
fetches them afterwards with the declared digests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import os
import re
import shutil
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from bundler.errors import (
    FetchError,
    SpecError,
    UpstreamContentError,
    UpstreamDigestError,
    UpstreamSignatureError,
)
from bundler.fetch import Want
from bundler.kinds.base import SourceContext, local_artifact
from bundler.kinds.deb import names
from bundler.kinds.deb.deb822 import StanzaError, open_index, select_stanzas
from bundler.kinds.deb.loose import check_section as check_loose_section
from bundler.kinds.deb.loose import declare as declare_loose
from bundler.kinds.deb.loose import is_loose
from bundler.kinds.deb.release import HashEntry, Release, ReleaseError, parse_release
from bundler.kinds.deb.resolve import AptResolver, Selected, write_status
from bundler.model import Artifact, Declared
from bundler.openpgp.gpgv import (
    accept,
    binary_keyring,
    check_clearsigned_shape,
    gpgv,
    normalise_fingerprint,
)

__all__ = ["check_section", "declare"]

DEFAULT_KEYRING = "/usr/share/keyrings/ubuntu-archive-keyring.gpg"
DEFAULT_COMPONENTS = ("main", "restricted", "universe", "multiverse")
ARCHIVE_URL = "http://archive.ubuntu.com/ubuntu"
PORTS_URL = "http://ports.ubuntu.com/ubuntu-ports"
ARCHIVE_ARCHES = frozenset({"amd64", "i386"})
MAX_RELEASE = 32 << 20
"""Largest InRelease/Release/Release.gpg accepted (Ubuntu's noble InRelease is ~250 KiB)."""
MAX_INSTALLED = 64 << 20

_KEYS = {
    "name",
    "url",
    "suites",
    "components",
    "architectures",
    "keyring",
    "fingerprints",
    "packages",
    "closure",
    "installed",
}
_NAME, _SUITE, _COMPONENT, _ARCH = names.NAME, names.SUITE, names.COMPONENT, names.ARCH
_PACKAGE = re.compile(
    rf"(?P<name>{names.PKG})(?::(?P<arch>[a-z0-9-]+))?(?:=(?P<version>{names.VERSION})|/(?P<suite>[A-Za-z0-9._-]+))?"
)
_PKG_RE, _VERSION_RE, _HEX64 = names.PKG_RE, names.VERSION_RE, names.HEX64


# --- carry spec ---------------------------------------------------------------------------


def _str_list(section: Mapping[str, Any], key: str, where: str, default: Sequence[str] | None) -> list[str]:
    value = section.get(key)
    if value is None:
        if default is None:
            raise SpecError(f"{where}: '{key}' is required (a list of strings)")
        return list(default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: '{key}' must be a list of strings, got {value!r}")
    if len(set(value)) != len(value):
        raise SpecError(f"{where}: '{key}' names something twice: {value!r}")
    return list(value)


def _check_names(values: list[str], pattern: re.Pattern[str], key: str, where: str) -> None:
    for v in values:
        if not pattern.fullmatch(v):
            raise SpecError(f"{where}: {key} entry {v!r} is not a valid name ({pattern.pattern})")


def check_section(section: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """Validate one ``[[deb]]`` table and return it with every default filled in.

    A table with ``debs`` or ``debs_dir`` names loose .deb files (:mod:`bundler.kinds.deb.loose`)."""
    if is_loose(section):
        return check_loose_section(section, where)
    unknown = set(section) - _KEYS
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", remedy=f"allowed: {sorted(_KEYS)}")
    name = section.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(
            f"{where}: 'name' is required: the archive id, lower-case letters, digits, '.' and '-' "
            f'(e.g. "ubuntu"), got {name!r}'
        )
    suites = _str_list(section, "suites", where, None)
    if not suites:
        raise SpecError(f"{where}: 'suites' is empty", remedy='e.g. suites = ["noble", "noble-updates"]')
    _check_names(suites, _SUITE, "suites", where)
    components = _str_list(section, "components", where, DEFAULT_COMPONENTS)
    if not components:
        raise SpecError(f"{where}: 'components' is empty")
    _check_names(components, _COMPONENT, "components", where)
    arches = _str_list(section, "architectures", where, ["amd64"])
    if not arches:
        raise SpecError(f"{where}: 'architectures' is empty")
    _check_names(arches, _ARCH, "architectures", where)
    for special in ("all", "source", "any"):
        if special in arches:
            raise SpecError(
                f"{where}: architecture {special!r} cannot be asked for",
                remedy="list machine architectures (amd64, arm64...); 'all' packages come along with them",
            )

    url = section.get("url")
    if url is None:
        kinds = {a in ARCHIVE_ARCHES for a in arches}
        if len(kinds) > 1:
            raise SpecError(
                f"{where}: architectures {arches} live in two Ubuntu archives ({ARCHIVE_URL} for amd64/i386, "
                f"{PORTS_URL} for the others)",
                remedy='write one [[deb]] section per archive (e.g. name "ubuntu" and "ubuntu-ports"), or set \'url\'',
            )
        url = ARCHIVE_URL if kinds == {True} else PORTS_URL
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s?#]+", url):
        raise SpecError(f"{where}: url must be an http(s) URL of the archive base, got {url!r}")
    url = url.rstrip("/")

    keyring = section.get("keyring", DEFAULT_KEYRING)
    if not isinstance(keyring, str) or not keyring:
        raise SpecError(f"{where}: keyring must be a path (string), got {keyring!r}")

    fingerprints: list[str] = []
    for raw in _str_list(section, "fingerprints", where, []):
        fpr = normalise_fingerprint(raw)
        if fpr is None:
            raise SpecError(
                f"{where}: fingerprint {raw!r} is not a full key fingerprint (40 or 64 hex digits)",
                remedy="short key ids can be forged; list full fingerprints (gpg --show-keys KEYRING)",
            )
        fingerprints.append(fpr)

    packages = _str_list(section, "packages", where, [])
    pins: dict[tuple[str, str | None], str] = {}
    for spec in packages:
        m = _PACKAGE.fullmatch(spec)
        if m is None:
            raise SpecError(
                f"{where}: package {spec!r} is not 'name', 'name=version', 'name:arch' or 'name/suite'",
                remedy='e.g. packages = ["hello", "curl=7.88.1-10", "intel-microcode:amd64"]',
            )
        if m["arch"] and m["arch"] not in arches:
            raise SpecError(f"{where}: package {spec!r} names architecture {m['arch']!r}, not in {arches}")
        if m["suite"] and m["suite"] not in suites:
            raise SpecError(f"{where}: package {spec!r} names suite {m['suite']!r}, not in {suites}")
        key = (m["name"], m["arch"])
        if key in pins:
            raise SpecError(f"{where}: package {m['name']} is listed twice ({pins[key]!r} and {spec!r})")
        pins[key] = spec

    closure = section.get("closure", True)
    if not isinstance(closure, bool):
        raise SpecError(f"{where}: closure must be true or false, got {closure!r}")
    installed = section.get("installed")
    if installed is not None and (not isinstance(installed, str) or not installed):
        raise SpecError(f"{where}: installed must be a path (string) to `dpkg-query -W` output")
    if not packages and installed is None:
        raise SpecError(
            f"{where}: nothing to carry: 'packages' is empty and no 'installed' file is given",
            remedy='add e.g. packages = ["openssh-server"]',
        )
    out: dict[str, Any] = {
        "name": name,
        "url": url,
        "suites": suites,
        "components": components,
        "architectures": arches,
        "keyring": keyring,
        "fingerprints": fingerprints,
        "packages": packages,
        "closure": closure,
    }
    if installed is not None:
        out["installed"] = installed
    return out


# --- declare ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Want:
    """A package asked for in the carry spec."""

    name: str
    arch: str | None
    version: str | None
    suite: str | None

    def apt_arg(self) -> str:
        if self.version:
            return f"{self.name}={self.version}"
        if self.suite:
            return f"{self.name}/{self.suite}"
        return self.name


@dataclass
class _Index:
    """One verified Packages file of one suite."""

    suite: str
    component: str
    arch: str
    entry: HashEntry
    """The compressed (or plain) file as the signed Release lists it."""
    plain: HashEntry | None
    """The uncompressed ``Packages`` entry, when the Release lists it."""
    path: Path | None = None
    """The verified copy in the fetcher's cache."""


@dataclass
class _Suite:
    name: str
    release: Release
    signers: list[str]
    signed_files: list[tuple[str, Path]]
    """(name under dists/<suite>/, local path): InRelease, or Release and Release.gpg."""
    version: str
    indexes: list[_Index] = field(default_factory=list)


@dataclass(frozen=True)
class _Found:
    suite: str
    component: str
    name: str
    version: str
    arch: str
    filename: str
    sha256: str
    size: int


class _Exporter:
    def __init__(self, section: Mapping[str, Any], ctx: SourceContext) -> None:
        self.ctx = ctx
        self.name: str = section["name"]
        self.url: str = section["url"]
        self.suites: list[str] = list(section["suites"])
        self.components: list[str] = list(section["components"])
        self.arches: list[str] = list(section["architectures"])
        self.fingerprints: list[str] = list(section["fingerprints"])
        self.closure: bool = section["closure"]
        self.wants = [_parse_want(p) for p in section["packages"]]
        self.keyring_src = ctx.spec_dir / os.path.expanduser(section["keyring"])
        installed = section.get("installed")
        self.installed_src = None if installed is None else ctx.spec_dir / os.path.expanduser(installed)
        tag = hashlib.sha256(json.dumps(dict(section), sort_keys=True).encode()).hexdigest()[:12]
        self.root = ctx.work_dir / "deb" / f"{self.name}-{tag}"
        self.mirror = self.root / "mirror"
        """The file:// mirror apt reads: links to the verified files, removed after resolving."""
        self.signed = self.root / "signed"
        """The InRelease (or Release + Release.gpg) files the index entries carry."""
        self.keyring = self.root / "keyring.gpg"
        self.what = f"deb {self.name}"

    # -- 1. signed Release ------------------------------------------------------------------

    def run(self) -> list[Declared]:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        binary_keyring(self.keyring_src, self.keyring)
        installed = self._read_installed() if self.installed_src is not None else []
        suites = [self._suite(s) for s in self.suites]
        self._fetch_indexes(suites)
        selected = self._resolve(suites, installed)
        found = self._lookup(suites, selected)
        # Only the carried files stay: the signed Release files and the keyring here, the
        # Packages files in the fetcher's cache.
        for scratch in ("apt", "mirror", "verified", "gnupg"):
            shutil.rmtree(self.root / scratch, ignore_errors=True)
        return [self._index_entry(s) for s in suites] + [self._package_entry(f) for f in found]

    def _get(self, url: str, what: str) -> bytes | None:
        """The body at ``url``, or None when the server says it does not exist (404/410)."""
        try:
            return self.ctx.fetcher.get_bytes_if_present(url, max_size=MAX_RELEASE)
        except FetchError as exc:
            raise FetchError(f"{what}: {exc.message}", remedy=exc.remedy) from exc
        except UpstreamDigestError as exc:  # larger than MAX_RELEASE
            raise UpstreamContentError(f"{what}: {exc.message}", remedy=exc.remedy) from exc

    def _suite(self, suite: str) -> _Suite:
        what = f"{self.what}: suite {suite}"
        dist_url = f"{self.url}/dists/{suite}"
        dist = self.signed / suite
        dist.mkdir(parents=True)
        verified = self.root / "verified" / f"{suite}.Release"
        verified.parent.mkdir(parents=True, exist_ok=True)
        home = self.root / "gnupg"

        inrelease = self._get(f"{dist_url}/InRelease", what)
        if inrelease is not None:
            url = f"{dist_url}/InRelease"
            check_clearsigned_shape(inrelease, what, url)
            local = dist / "InRelease"
            local.write_bytes(inrelease)
            result = gpgv(self.keyring, local, output=verified, homedir=home)
            signers = accept(result, self.fingerprints, what, url)
            payload = verified.read_bytes()
            signed_files = [("InRelease", local)]
            version = hashlib.sha256(inrelease).hexdigest()[:16]
        else:
            url = f"{dist_url}/Release"
            release = self._get(url, what)
            if release is None:
                raise UpstreamContentError(
                    f"{what}: the archive has no such suite: neither {dist_url}/InRelease nor {url} exists",
                    remedy=f"check the suite name and the url ({self.url}) in the carry spec",
                )
            signature = self._get(f"{url}.gpg", what)
            if signature is None:
                raise UpstreamSignatureError(
                    f"{what}: {url} is not signed: there is no InRelease and no Release.gpg",
                    remedy="an unsigned archive cannot be carried; check the url",
                )
            local = dist / "Release"
            local.write_bytes(release)
            (dist / "Release.gpg").write_bytes(signature)
            result = gpgv(self.keyring, dist / "Release.gpg", data=local, homedir=home)
            signers = accept(result, self.fingerprints, what, f"{url}.gpg")
            payload = release
            signed_files = [("Release", local), ("Release.gpg", dist / "Release.gpg")]
            version = hashlib.sha256(release).hexdigest()[:16]

        try:
            parsed = parse_release(payload.decode("utf-8", errors="replace"))
        except ReleaseError as exc:
            raise UpstreamContentError(f"{what}: the signed Release at {url} is unusable: {exc}") from exc
        if not parsed.matches(suite):
            raise UpstreamSignatureError(
                f"{what}: the signed Release at {url} is for suite {parsed.suite!r} (codename "
                f"{parsed.codename!r}), not {suite!r}",
                remedy="a validly signed file of another suite is being served in its place (a mirror error "
                "or a replay); check the url and try another mirror",
            )
        if parsed.valid_until is not None and parsed.valid_until < datetime.now(UTC):
            raise UpstreamSignatureError(
                f"{what}: the signed Release at {url} expired on {parsed.valid_until.isoformat()} (Valid-Until)",
                remedy="the mirror serves stale metadata (or the clock is wrong): try another mirror, check the clock",
            )
        known_comps = set(parsed.components)
        for comp in self.components:
            if known_comps and comp not in known_comps:
                raise UpstreamContentError(
                    f"{what}: component {comp!r} is not in the archive (its Release lists "
                    f"{', '.join(parsed.components)})",
                    remedy="remove it from 'components' or fix the suite",
                )
        known_arches = set(parsed.architectures)
        for arch in self.arches:
            if known_arches and arch not in known_arches:
                hint = f" (Ubuntu's {arch} packages are at {PORTS_URL})" if self.url == ARCHIVE_URL else ""
                raise UpstreamContentError(
                    f"{what}: architecture {arch!r} is not in the archive (its Release lists "
                    f"{', '.join(parsed.architectures)}){hint}",
                    remedy="fix 'architectures' or 'url'",
                )
        for name, path in signed_files:
            _place(path, self.mirror / "dists" / suite / name)
        info = _Suite(suite, parsed, signers, signed_files, version)
        for comp in self.components:
            for arch in self.arches:
                base = f"{comp}/binary-{arch}/Packages"
                forms = (parsed.sha256.get(base + ext) for ext in (".xz", ".gz", ""))
                entry = next((e for e in forms if e is not None), None)
                if entry is None:
                    raise UpstreamContentError(
                        f"{what}: the signed Release lists no {base}(.xz/.gz): component {comp!r} has no "
                        f"{arch} packages here",
                        remedy="check 'components' and 'architectures' against the archive",
                    )
                info.indexes.append(_Index(suite, comp, arch, entry, parsed.sha256.get(base)))
        return info

    # -- 2. Packages indexes ----------------------------------------------------------------

    def _index_urls(self, s: _Suite, idx: _Index) -> list[str]:
        dist_url = f"{self.url}/dists/{s.name}"
        canonical = f"{dist_url}/{idx.entry.path}"
        if s.release.acquire_by_hash:
            directory = idx.entry.path.rsplit("/", 1)[0]
            return [f"{dist_url}/{directory}/by-hash/SHA256/{idx.entry.sha256}", canonical]
        return [canonical]

    def _fetch_indexes(self, suites: list[_Suite]) -> None:
        # All at once first (parallel); then one by one, so that a failure names its index
        # and a by-hash file the mirror lacks falls back to the canonical path.
        wants = [Want(self._index_urls(s, i)[0], i.entry.sha256, i.entry.size) for s in suites for i in s.indexes]
        with contextlib.suppress(FetchError, UpstreamDigestError):
            self.ctx.fetcher.fetch_many(wants)
        for s in suites:
            for idx in s.indexes:
                idx.path = self._fetch_index(s, idx)
                _place(idx.path, self.mirror / "dists" / s.name / idx.entry.path)

    def _fetch_index(self, s: _Suite, idx: _Index) -> Path:
        what = f"{self.what}: suite {s.name}: {idx.entry.path}"
        urls = self._index_urls(s, idx)
        for n, url in enumerate(urls):
            try:
                return self.ctx.fetcher.fetch(Want(url, idx.entry.sha256, idx.entry.size))
            except FetchError as exc:
                if n + 1 < len(urls):
                    continue
                raise FetchError(f"{what}: {exc.message}", remedy=exc.remedy) from exc
            except UpstreamDigestError as exc:
                raise UpstreamDigestError(
                    f"{what} does not match the sha256/size its signed Release gives: {exc.message}",
                    remedy="the mirror is inconsistent (mid-sync?) or the file was altered: re-run later or "
                    "use another mirror. Nothing was cached.",
                ) from exc
        raise AssertionError("unreachable")

    # -- 3. resolution ----------------------------------------------------------------------

    def _read_installed(self) -> list[tuple[str, str | None, str]]:
        assert self.installed_src is not None
        src = self.installed_src
        try:
            if src.stat().st_size > MAX_INSTALLED:
                raise SpecError(f"{self.what}: installed file {src} is larger than {MAX_INSTALLED} bytes")
            text = src.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise SpecError(
                f"{self.what}: installed file {src} does not exist",
                remedy="write it on a fleet machine: dpkg-query -W > fleet-installed.txt",
            ) from exc
        out: list[tuple[str, str | None, str]] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = [p.strip() for p in (line.split("\t") if "\t" in line else line.split())]
            if len(parts) == 2 and parts[0] and not parts[1]:
                continue  # known to dpkg but not installed (dpkg-query -W prints an empty version)
            name, _, arch = parts[0].partition(":")
            version = parts[1] if len(parts) == 2 else ""
            bad_arch = bool(arch) and not _ARCH.fullmatch(arch)
            if len(parts) != 2 or not _PKG_RE.fullmatch(name) or not _VERSION_RE.fullmatch(version) or bad_arch:
                raise SpecError(
                    f"{self.what}: {src}, line {lineno}: expected 'name[:arch]<TAB>version', got {line[:120]!r}",
                    remedy="write the file with: dpkg-query -W > fleet-installed.txt",
                )
            out.append((name, arch or None, version))
        foreign = sorted({a for _, a, _ in out if a and a not in self.arches})
        if foreign:
            self.ctx.reporter.warn(
                f"{self.what}: installed packages of architecture(s) {', '.join(foreign)} are not upgraded "
                f"(not in this section's architectures {self.arches})"
            )
        return out

    def _resolve(self, suites: list[_Suite], installed: list[tuple[str, str | None, str]]) -> set[Selected]:
        resolver = AptResolver(
            self.root / "apt", self.mirror, self.suites, self.components, self.arches, self.keyring, self.what
        )
        resolver.update()
        selected: set[Selected] = set()
        for arch in self.arches:
            args = [w.apt_arg() for w in self.wants if w.arch in (None, arch)]
            if args:
                picked = resolver.install(arch, args) if self.closure else resolver.candidates(arch, args)
                if not self.closure:
                    names = {w.name for w in self.wants}
                    picked = [p for p in picked if p.name in names]
                selected.update(picked)
            fleet = [(n, v, arch) for n, a, v in installed if a in (None, arch)]
            if fleet:
                status = write_status(self.root / "apt" / f"status-{arch}", fleet)
                selected.update(resolver.dist_upgrade(arch, status))
        return selected

    # -- 4. lookup --------------------------------------------------------------------------

    def _lookup(self, suites: list[_Suite], selected: set[Selected]) -> list[_Found]:
        wanted = {(s.name, s.version, s.arch) for s in selected}
        names = {s.name for s in selected}
        found: dict[tuple[str, str, str], _Found] = {}
        seen: set[tuple[str, str, str]] = set()
        for s in suites:
            for idx in s.indexes:
                assert idx.path is not None
                for f in self._scan(idx, names, wanted):
                    seen.add((f.name, f.version, f.arch))
                    key = (f.suite, f.name, f.arch)
                    prior = found.setdefault(key, f)
                    if prior.version != f.version:
                        raise UpstreamContentError(
                            f"{self.what}: suite {f.suite}: {f.name} ({f.arch}) is selected at two versions, "
                            f"{prior.version} and {f.version}",
                            remedy="reprepro keeps one version per package and suite: drop a '=version' pin or "
                            "split the carry spec",
                        )
        missing = sorted(wanted - seen)
        if missing:
            n, v, a = missing[0]
            raise UpstreamContentError(
                f"{self.what}: apt selected {n} {v} ({a}), but no verified index lists it",
                remedy="report this as a bug, with the carry spec",
            )
        return [found[k] for k in sorted(found)]

    def _scan(self, idx: _Index, names: set[str], wanted: set[tuple[str, str, str]]) -> Iterator[_Found]:
        assert idx.path is not None
        where = f"{self.what}: suite {idx.suite}: {idx.entry.path}"
        hits: list[_Found] = []
        try:
            with open_index(idx.path, _compression(idx.entry.path)) as (text, reader):
                for st in select_stanzas(text, "Package", names, where):
                    if (st["Package"], st.get("Version", ""), st.get("Architecture", "")) in wanted:
                        hits.append(self._found(idx, st, where))
                digest, size = reader.drain()
        except (StanzaError, lzma.LZMAError, EOFError, zlib.error, OSError, UnicodeError) as exc:
            raise UpstreamContentError(
                f"{where} cannot be read: {exc}",
                remedy="the verified index is damaged or not in the format its name says; report it to the mirror",
            ) from exc
        if idx.plain is not None and (digest, size) != (idx.plain.sha256, idx.plain.size):
            raise UpstreamDigestError(
                f"{where} decompresses to content that does not match the signed Release's entry for "
                f"{idx.plain.path} (sha256 {digest}, {size} bytes; expected {idx.plain.sha256}, {idx.plain.size})",
                remedy="the mirror is inconsistent; re-run later or use another mirror",
            )
        return iter(hits)

    def _found(self, idx: _Index, st: Mapping[str, str], where: str) -> _Found:
        name, version, arch = st["Package"], st["Version"], st["Architecture"]
        filename = st.get("Filename", "")
        sha = st.get("SHA256", "").lower()
        size = st.get("Size", "")
        pure = PurePosixPath(filename)
        if (
            not filename
            or filename.startswith("/")
            or "\\" in filename
            or any(p in ("..", ".") for p in pure.parts)
            or not filename.endswith(".deb")
        ):
            raise UpstreamContentError(f"{where}: {name} {version} has an unusable Filename {filename!r}")
        if not _HEX64.fullmatch(sha) or not size.isdigit():
            raise UpstreamContentError(f"{where}: {name} {version} has no usable SHA256/Size fields")
        return _Found(idx.suite, idx.component, name, version, arch, filename, sha, int(size))

    # -- entries ----------------------------------------------------------------------------

    def _index_entry(self, s: _Suite) -> Declared:
        prefix = f"{self.name}/dists/{s.name}"
        artifacts = [local_artifact(f"{prefix}/{name}", path) for name, path in s.signed_files]
        for idx in s.indexes:
            assert idx.path is not None
            e = idx.entry
            artifacts.append(Artifact(path=f"{prefix}/{e.path}", sha256=e.sha256, size=e.size, local=idx.path))
        artifacts.append(local_artifact(f"{self.name}/keyring.gpg", self.keyring))
        r = s.release
        return Declared(
            kind="deb",
            name=f"{self.name}/{s.name}",
            version=s.version,
            arch="index",
            artifacts=tuple(artifacts),
            metadata={
                "role": "index",
                "archive": self.name,
                "suite": s.name,
                "codename": r.codename,
                "origin": r.origin,
                "label": r.label,
                "url": self.url,
                "components": list(self.components),
                "architectures": list(self.arches),
                "fingerprints": list(s.signers),
            },
        )

    def _package_entry(self, f: _Found) -> Declared:
        return Declared(
            kind="deb",
            name=f"{self.name}/{f.suite}/{f.name}",
            version=f.version,
            arch=f.arch,
            artifacts=(
                Artifact(
                    path=f"{self.name}/{f.filename}",
                    sha256=f.sha256,
                    size=f.size,
                    url=f"{self.url}/{quote(f.filename, safe='/+~:@=,')}",
                ),
            ),
            metadata={
                "role": "package",
                "archive": self.name,
                "suite": f.suite,
                "component": f.component,
                "package": f.name,
                "filename": f.filename,
            },
        )


def _parse_want(spec: str) -> _Want:
    m = _PACKAGE.fullmatch(spec)
    if m is None:  # check_section refused it already
        raise SpecError(f"deb: package {spec!r} is not valid")
    return _Want(m["name"], m["arch"], m["version"], m["suite"])


def _place(src: Path, dest: Path) -> None:
    """Put ``src`` at ``dest``: a hard link (no copy of a large index), else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _compression(path: str) -> str:
    return "xz" if path.endswith(".xz") else "gz" if path.endswith(".gz") else ""


def declare(section: Mapping[str, Any], ctx: SourceContext) -> Iterator[Declared]:
    """Declare the index and package entries of one checked ``[[deb]]`` section (or the entries of
    its loose .deb files)."""
    if is_loose(section):
        yield from declare_loose(section, ctx)
        return
    yield from _Exporter(section, ctx).run()
