"""Enclave side of the ``deb`` kind: a reprepro repository signed with the enclave key.

Layout under ``<enclave>/deb/``::

    repo/          the reprepro base directory that deployed machines use (serve it over HTTP)
    upstream/      the upstream-verbatim partial mirror of the last import (signed indexes)
    incoming/      the partial mirror being imported (hard links), gone after the import
    rollback/      copies of repo/conf, db and dists while an import runs (rollback.py)
    lists/         reprepro's downloaded-index cache while an import runs

The signing key and the upstream archive keys reprepro checks with live in the enclave's
GnuPG home, ``<enclave>/signing/`` (bundler/openpgp/enclave_key.py), beside the exported
public key ``enclave-key.gpg`` / ``.asc`` for apt Signed-By and MAAS.

One import, all or nothing (:class:`~bundler.kinds.deb.rollback.RepoSnapshot`):

1. ``reprepro update`` from the partial mirror the bundle carried, one rule per (archive,
   suite) (:mod:`bundler.kinds.deb.conf`): reprepro checks the upstream InRelease signature
   (``VerifyRelease`` with the pinned keys) and every index and pool file checksum again
   inside the enclave, and installs nothing when anything is wrong;
2. loose .debs no longer carried are removed, then the carried ones go in with exactly one
   ``reprepro -C <component> includedeb <codename> <files...>`` per (distribution,
   component) (split only if the command line would exceed ``_MAX_ARGS`` bytes);
3. one ``reprepro export`` writes and signs every distribution, empty ones included;
4. every carried package must be listed at its version in the exported indexes
   (:mod:`bundler.kinds.deb.listing`): reprepro exits 0 for "already there" and "older";
5. only then is the snapshot dropped and unreferenced pool files deleted.

Any failure restores ``conf/``, ``db/`` and ``dists/`` and deletes new pool files: the
repository's files and signed indexes are exactly as before. The report lists what changed
in the exported indexes (added, upgraded, removed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bundler.errors import PreflightError, PublishError
from bundler.kinds.base import Change, PublishReport, TargetContext
from bundler.kinds.deb import names
from bundler.kinds.deb.conf import MAAS_COMPONENTS, MAAS_POCKETS, RepoConf, build_conf, write_conf
from bundler.kinds.deb.listing import Listed, describe_changes, read_exported
from bundler.kinds.deb.rollback import RepoSnapshot
from bundler.kinds.deb.version import compare_versions
from bundler.model import Entry, FileRecord
from bundler.openpgp.enclave_key import ensure_enclave_key, gpg, short_home, signing_dir
from bundler.paths import check_relpath

__all__ = ["MAAS_COMPONENTS", "MAAS_POCKETS", "DebTarget"]

ROLES = ("index", "package", "loose")
_MAX_ARGS = 512 * 1024
"""Bytes of file names per includedeb call (the kernel allows ~2 MiB of arguments)."""
_TEXT_FIELDS = ("origin", "label")
_ACTIONS = frozenset({"update", "includedeb", "remove", "export", "clearvanished", "deleteunreferenced"})


class DebTarget:
    def __init__(self, ctx: TargetContext) -> None:
        self.ctx = ctx
        self.root = Path(ctx.options.get("deb_root") or ctx.enclave / "deb")
        self.repo = self.root / "repo"
        self.upstream = self.root / "upstream"
        self.incoming = self.root / "incoming"
        self.lists = self.root / "lists"
        self.snapshot = RepoSnapshot(self.repo, self.root / "rollback")
        self.gnupg = signing_dir(ctx.enclave) / "gnupg"
        self._labels: dict[str, str] = {}
        """file path (or a name reprepro derives from an index) -> the entry, for error messages."""
        self._signed: dict[str, str] = {}
        """index entry -> its signed Release file."""
        self._checked: set[int] = set()
        """The entries (by identity) preflight has checked."""

    # -- Target protocol ---------------------------------------------------------------

    def preflight(self, entries: Sequence[Entry]) -> None:
        for tool, pkg in (("reprepro", "reprepro"), ("gpg", "gnupg"), ("gpgv", "gpgv")):
            if shutil.which(tool) is None:
                raise PreflightError(f"deb: {tool} is not installed", remedy=f"apt-get install {pkg}")
        check_entries(entries)
        self._checked = {id(e) for e in entries}

    def locate(self, entry: Entry, file: FileRecord) -> Path | None:
        if entry.metadata.get("role") == "index":
            p = self.upstream / file.path
        else:
            p = self.repo / file.path.split("/", 1)[1]
        return p if p.is_file() else None

    def publish(self, change: Change) -> PublishReport:
        if not change.entries:
            # No deb content at all (the carry spec dropped every [[deb]] section): emptying the
            # repository would break every deployed machine's apt sources; leave it, and say so.
            if change.previous:
                self.ctx.reporter.warn(
                    f"deb: this bundle carries no Debian packages; {self.repo} is left as it was "
                    "(remove it by hand if it is no longer wanted)"
                )
            return PublishReport(kind="deb", notes=(f"repository {self.repo} left as it was",))
        if not all(id(e) in self._checked for e in change.entries):  # not the entries preflight saw
            check_entries(change.entries)
        key = ensure_enclave_key(self.ctx.enclave)
        indexes = list(_role(change.entries, "index"))
        packages = list(_role(change.entries, "package"))
        loose = list(_role(change.entries, "loose"))
        if self.snapshot.recover():
            self.ctx.reporter.warn(f"deb: rolled {self.repo} back from an import that was interrupted")
        before = read_exported(self.repo)
        distributions = self.repo / "conf" / "distributions"
        old_distributions = distributions.read_text() if distributions.is_file() else None
        self.snapshot.take()
        try:
            self._build_incoming(change, indexes + packages + loose)
            conf = build_conf(key.fingerprint, self.incoming, indexes, packages, loose)
            write_conf(self.repo / "conf", conf)
            self._apply(conf, indexes, loose, change.previous, before, old_distributions)
            _prune_dists(self.repo / "dists", conf)
            after = read_exported(self.repo)
            self._check_listed(after, packages + loose)
            self._warn_downgrades(before, after)
        except BaseException:
            self.snapshot.restore()
            self.snapshot.drop()
            shutil.rmtree(self.incoming, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(self.lists, ignore_errors=True)
        self.snapshot.drop()
        self._delete_unreferenced()
        # The imported indexes become the upstream copy that later deltas reuse.
        shutil.rmtree(self.upstream, ignore_errors=True)
        for archive_dir in self.incoming.iterdir():
            shutil.rmtree(archive_dir / "pool", ignore_errors=True)
        os.replace(self.incoming, self.upstream)
        added, removed, unchanged = describe_changes(before, after)
        return PublishReport(
            kind="deb",
            added=tuple(added),
            removed=tuple(removed),
            unchanged=unchanged,
            notes=(
                f"repository {self.repo} signed by {key.fingerprint}: {len(after)} packages in "
                f"{len(conf.suites)} distributions ({', '.join(conf.suites)})",
                f"apt: deb [signed-by={key.binary}] http://<this host>/<path to {self.repo.name}> <suite> <components>",
            ),
        )

    # -- steps ---------------------------------------------------------------------------

    def _apply(
        self,
        conf: RepoConf,
        indexes: Sequence[Entry],
        loose: Sequence[Entry],
        previous: Iterable[Entry],
        before: Mapping[Listed, str],
        old_distributions: str | None,
    ) -> None:
        """Every reprepro call of an import, in order; the last one exports and signs."""
        with short_home(self.gnupg) as home:
            # reprepro's VerifyRelease looks the pinned upstream keys up in its GnuPG home (the
            # enclave's); only public keys are added, and only ones the bundle carried.
            for keyring in sorted({f.path for e in indexes for f in e.files if f.path.endswith("/keyring.gpg")}):
                gpg(home, "--import", str(self.incoming / keyring))
            if old_distributions not in (None, conf.files["distributions"]):
                # A distribution, component or architecture may have gone: reprepro refuses to
                # work until its database forgets them (no-op when nothing vanished).
                self._reprepro(home, "--delete", "clearvanished")
            if conf.update_suites:
                self._reprepro(home, "--noskipold", "update")
            self._remove_stale_loose(home, previous, loose, before, conf)
            for (suite, component), files in _batches(loose, self.incoming):
                self._reprepro(home, "-C", component, "includedeb", suite, *files)
            self._reprepro(home, "export")

    def _build_incoming(self, change: Change, entries: Iterable[Entry]) -> None:
        shutil.rmtree(self.incoming, ignore_errors=True)
        self.incoming.mkdir(parents=True)
        made: set[Path] = set()
        self._labels, self._signed = {}, {}
        for e in entries:
            m = e.metadata
            label = e.name if m["role"] == "index" else f"{e.name} {e.version} ({e.arch})"
            if m["role"] == "index":
                # reprepro names an update rule's files after the rule: lists/<rule>_<suite>_InRelease
                signed = next(f.path for f in e.files if f.path.endswith(("/InRelease", "/Release")))
                self._labels[f"{m['archive']}-{m['suite']}_"] = label
                self._labels[f"remote repository {m['archive']}-{m['suite']} "] = label
                self._signed[label] = signed
            for f in e.files:
                self._labels[f.path] = label
                src = change.staged.get(f.sha256) or self.locate(e, f)
                if src is None:
                    raise PublishError(
                        f"deb: no verified copy of {f.path} ({e.name})",
                        remedy="the enclave lost a file a delta relies on: ask for a full export (--full)",
                    )
                # incoming/ is made afresh here and holds only directories and links made here: the
                # lexical checks (check_entries) keep every path inside it; no symlink can be on the way.
                dest = self.incoming / f.path
                if dest.parent not in made:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    made.add(dest.parent)
                try:
                    os.link(src, dest)
                except FileExistsError:
                    pass
                except OSError:
                    shutil.copyfile(src, dest)

    def _remove_stale_loose(
        self,
        home: Path,
        previous: Iterable[Entry],
        loose: Sequence[Entry],
        before: Mapping[Listed, str],
        conf: RepoConf,
    ) -> None:
        """Make distributions without an upstream rule exactly their carried loose debs, as
        ``Update: -`` does for the others: loose packages the last import published and this one
        no longer carries leave, and so do those carried at another version (includedeb would
        skip an older one), one ``remove`` per (distribution, component)."""
        fed = set(conf.update_suites)
        now = {(e.metadata["suite"], e.metadata["component"], e.metadata["package"]): e for e in loose}
        stale: dict[tuple[str, str], set[str]] = defaultdict(set)
        for e in _role(previous, "loose"):
            k = (e.metadata["suite"], e.metadata["component"], e.metadata["package"])
            if k not in now and k[0] in conf.suites and k[0] not in fed:
                stale[(k[0], k[1])].add(k[2])
        for (suite, component, package), e in now.items():
            have = before.get(Listed(suite, component, package, e.arch))
            if suite not in fed and have is not None and have != e.version:
                stale[(suite, component)].add(package)
        for (suite, component), pkgs in sorted(stale.items()):
            self._reprepro(home, "-C", component, "remove", suite, *sorted(pkgs))

    def _warn_downgrades(self, before: Mapping[Listed, str], after: Mapping[Listed, str]) -> None:
        down = [
            f"{k.package} ({k.arch}) in {k.suite}/{k.component} from {before[k]} to {v}"
            for k, v in sorted(after.items())
            if k in before and compare_versions(v, before[k]) < 0
        ]
        if down:
            more = f" and {len(down) - 3} more" if len(down) > 3 else ""
            self.ctx.reporter.warn(
                f"deb: {len(down)} package(s) went back to the older version carried: {'; '.join(down[:3])}{more}. "
                "Machines that installed the newer version keep it (apt does not downgrade)."
            )

    def _check_listed(self, listed: Mapping[Listed, str], carried: Sequence[Entry]) -> None:
        missing = []
        for e in carried:
            m = e.metadata
            have = listed.get(Listed(m["suite"], m["component"], m["package"], e.arch))
            if have != e.version:
                state = f"the repository has {have}" if have else "it is not listed"
                missing.append(f"{e.name} {e.version} ({e.arch}) in {m['suite']}/{m['component']}: {state}")
        if missing:
            more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
            raise PublishError(
                f"deb: after the import, {len(missing)} carried package(s) are not published at their version: "
                + "; ".join(missing[:3])
                + more,
                remedy="reprepro installs a package only at a version the carried, upstream-signed index lists, and "
                "exits 0 when it does not: the bundle does not match what upstream signed; export it again. "
                "The repository was left as it was.",
            )

    def _delete_unreferenced(self) -> None:
        proc = self._run("deleteunreferenced")
        if proc.returncode != 0:
            self.ctx.reporter.warn(
                f"deb: reprepro deleteunreferenced failed (exit {proc.returncode}); unused pool files remain until "
                "the next import: " + _tail(proc)
            )

    # -- running reprepro ----------------------------------------------------------------

    def _run(self, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
        cmd = ["reprepro", "-b", str(self.repo), "--listdir", str(self.lists)]
        if home is not None:
            cmd += ["--gnupghome", str(home)]
        if "deleteunreferenced" not in args:
            # Nothing leaves the pool while the import can still be rolled back; one export at the end.
            cmd.append("--keepunreferencedfiles")
            if "export" not in args:
                cmd.append("--export=silent-never")
        cmd += args
        return subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)

    def _reprepro(self, home: Path, *args: str) -> None:
        proc = self._run(*args, home=home)
        if proc.returncode != 0:
            action = next((a for a in args if a in _ACTIONS), args[0])
            output = proc.stdout + proc.stderr
            named = self._named_in(output)
            what = f" on {named}" if named else ""
            remedy = "the repository was left as it was before this import. "
            if "Not enough signatures found" in output:
                remedy += (
                    "The upstream Release the bundle carries is not validly signed by the pinned upstream key: it "
                    "was altered after upstream signed it. Do not use this bundle; export again."
                )
            elif "can only be included again, if they are the same" in output:
                remedy += "A package was rebuilt with different content but the same version: give it a new version."
            else:
                remedy += (
                    "If a file or index is named, the bundle does not match what upstream signed: export it again."
                )
            raise PublishError(
                f"deb: reprepro {action} failed (exit {proc.returncode}){what}: {_tail(proc)}", remedy=remedy
            )

    def _named_in(self, output: str) -> str:
        """The carried entries whose files reprepro's output mentions (what it refused), with the file."""
        hits: dict[str, str] = {}
        for path, label in self._labels.items():
            in_pool = path.split("/", 1)[1] if "/" in path else path
            if path in output or (in_pool.startswith("pool/") and in_pool in output):
                hits.setdefault(label, path if "/" in path else self._signed[label])
        return "; ".join(f"{label} [{path}]" for label, path in list(hits.items())[:5])


# --- entry checks -------------------------------------------------------------------------


def check_entries(entries: Sequence[Entry]) -> None:
    """Refuse entries that cannot be published, naming them, before anything changes: unknown
    roles, values that could not safely go into reprepro's configuration or command line, an
    index entry without its signed Release or one of its Packages files, a package without
    its index, a package carried both loose and from an archive."""
    index_suites: set[tuple[str, str]] = set()
    owners: dict[tuple[str, str, str], str] = {}
    for e in entries:
        role = e.metadata.get("role")
        if role not in ROLES:
            raise PreflightError(f"deb entry {e.name} has no valid metadata role ({role!r})")
        _check_values(e)
        _check_paths(e)
        if role == "index":
            _check_index(e)
            index_suites.add((e.metadata["archive"], e.metadata["suite"]))
        elif len(e.files) != 1 or not e.files[0].path.endswith(".deb"):
            raise PreflightError(
                f"deb entry {e.name} {e.version} ({e.arch}) must carry exactly one .deb file, it carries "
                f"{[f.path for f in e.files]}",
                remedy="the bundle is malformed: export it again",
            )
    for e in entries:
        m = e.metadata
        if m["role"] == "package" and (m["archive"], m["suite"]) not in index_suites:
            raise PreflightError(
                f"deb entry {e.name} {e.version} ({e.arch}): the bundle carries no index for "
                f"{m['archive']}/{m['suite']}",
                remedy="the bundle is malformed: export it again",
            )
        if m["role"] in ("package", "loose"):
            k = (m["suite"], m["package"], e.arch)
            prior = owners.setdefault(k, e.name)
            if prior != e.name:
                raise PreflightError(
                    f"deb: {m['package']} ({e.arch}) is carried twice into {m['suite']}: as {prior} and as {e.name}",
                    remedy="a distribution holds one version of a package: drop one of them from the carry spec",
                )


def _check_values(e: Entry) -> None:
    m = e.metadata
    checks: list[tuple[str, object, bool]] = [
        ("archive", m.get("archive"), isinstance(m.get("archive"), str) and bool(names.NAME.fullmatch(m["archive"]))),
        ("suite", m.get("suite"), isinstance(m.get("suite"), str) and bool(names.SUITE.fullmatch(m["suite"]))),
    ]
    if m.get("role") == "index":
        for key, pattern in (
            ("components", names.COMPONENT),
            ("architectures", names.ARCH),
            ("fingerprints", names.FINGERPRINT),
        ):
            checks.append((key, m.get(key), _names_ok(m.get(key), pattern)))
        for key in _TEXT_FIELDS:
            v = m.get(key, "")
            checks.append((key, v, isinstance(v, str) and v.isprintable() and len(v) < 200))
    else:
        c, p = m.get("component"), m.get("package")
        checks += [
            ("component", c, isinstance(c, str) and bool(names.COMPONENT.fullmatch(c))),
            ("package", p, isinstance(p, str) and bool(names.PKG_RE.fullmatch(p))),
            ("version", e.version, bool(names.VERSION_RE.fullmatch(e.version))),
            ("arch", e.arch, e.arch == "all" or bool(names.ARCH.fullmatch(e.arch))),
        ]
        for key in ("section", "priority"):
            v = m.get(key, "")
            checks.append((key, v, isinstance(v, str) and all(ch.isalnum() or ch in "/._+-" for ch in v)))
    for key, value, ok in checks:
        if not ok:
            raise PreflightError(
                f"deb entry {e.name}: metadata {key} {value!r} is not valid",
                remedy="the bundle is malformed or from an incompatible bundler: export it again",
            )


def _check_paths(e: Entry) -> None:
    """Every file of an entry lives under its archive: ``<archive>/dists/<suite>/...`` and
    ``<archive>/keyring.gpg`` for an index, ``<archive>/pool/....deb`` for a package."""
    m = e.metadata
    index = m["role"] == "index"
    prefix = f"{m['archive']}/dists/{m['suite']}/" if index else f"{m['archive']}/pool/"
    keyring = f"{m['archive']}/keyring.gpg"
    for f in e.files:
        check_relpath(f.path, what=f"deb/{e.name}")
        if not (f.path.startswith(prefix) or (index and f.path == keyring)):
            raise PreflightError(
                f"deb entry {e.name}: file {f.path} is not under {prefix}" + (f" (nor {keyring})" if index else ""),
                remedy="the bundle is malformed: export it again",
            )


def _names_ok(value: object, pattern: re.Pattern[str]) -> bool:
    """A non-empty list of strings that all match ``pattern``."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(x, str) and pattern.fullmatch(x) is not None for x in value)
    )


def _check_index(e: Entry) -> None:
    m = e.metadata
    prefix = f"{m['archive']}/dists/{m['suite']}/"
    paths = {f.path for f in e.files}
    if prefix + "InRelease" not in paths and not {prefix + "Release", prefix + "Release.gpg"} <= paths:
        raise PreflightError(
            f"deb index {e.name}: the bundle carries neither {prefix}InRelease nor {prefix}Release + Release.gpg",
            remedy="the bundle is malformed: export it again",
        )
    if f"{m['archive']}/keyring.gpg" not in paths:
        raise PreflightError(f"deb index {e.name}: the bundle carries no {m['archive']}/keyring.gpg")
    for comp in m["components"]:
        for arch in m["architectures"]:
            base = f"{prefix}{comp}/binary-{arch}/Packages"
            if not any(base + ext in paths for ext in (".xz", ".gz", "")):
                raise PreflightError(
                    f"deb index {e.name}: the bundle carries no {base}(.xz/.gz), which reprepro needs to verify "
                    f"the {comp}/{arch} packages",
                    remedy="the bundle is incomplete: export it again",
                )


# --- helpers ------------------------------------------------------------------------------


def _role(entries: Iterable[Entry], role: str) -> Iterable[Entry]:
    return (e for e in entries if e.metadata.get("role") == role)


def _batches(loose: Sequence[Entry], incoming: Path) -> list[tuple[tuple[str, str], list[str]]]:
    """Loose debs grouped by (distribution, component): one includedeb call each (or a few, if
    the file names would not fit on one command line)."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for e in loose:
        groups[(e.metadata["suite"], e.metadata["component"])].append(str(incoming / e.files[0].path))
    out: list[tuple[tuple[str, str], list[str]]] = []
    for key in sorted(groups):
        batch: list[str] = []
        size = 0
        for f in sorted(groups[key]):
            if batch and size + len(f) + 1 > _MAX_ARGS:
                out.append((key, batch))
                batch, size = [], 0
            batch.append(f)
            size += len(f) + 1
        out.append((key, batch))
    return out


def _prune_dists(dists: Path, conf: RepoConf) -> None:
    """Remove exported directories of distributions, components and architectures the
    configuration no longer has (reprepro's export leaves them behind)."""
    if not dists.is_dir():
        return
    keep_dirs = {f"binary-{a}" for a in conf.architectures} | {"source"}
    for suite_dir in dists.iterdir():
        if suite_dir.name not in conf.suites:
            shutil.rmtree(suite_dir)
            continue
        for comp_dir in suite_dir.iterdir():
            if not comp_dir.is_dir():
                continue
            if comp_dir.name not in conf.components:
                shutil.rmtree(comp_dir)
                continue
            for sub in comp_dir.iterdir():
                if sub.is_dir() and sub.name not in keep_dirs:
                    shutil.rmtree(sub)


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (proc.stderr + "\n" + proc.stdout).splitlines() if line.strip()]
    return " | ".join(lines[-8:])
