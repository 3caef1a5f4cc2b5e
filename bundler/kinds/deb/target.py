"""Enclave side of the ``deb`` kind: a reprepro repository signed with the enclave key.

Layout under ``<enclave>/deb/``::

    repo/          the reprepro base directory that deployed machines use (serve it over HTTP)
    upstream/      the upstream-verbatim partial mirror of the last import (signed indexes)
    incoming/      the partial mirror being imported (hard links), gone after a good import

The signing key and the upstream archive keys reprepro checks with live in the enclave's
GnuPG home, ``<enclave>/signing/`` (bundler/openpgp/enclave_key.py), beside the exported
public key ``enclave-key.gpg`` / ``.asc`` for apt Signed-By and MAAS.

Publishing runs ``reprepro update`` from the partial mirror the bundle carried: reprepro
checks the upstream InRelease signature (``VerifyRelease`` with the pinned keys) and every
checksum again inside the enclave, and installs nothing when anything is wrong. Each
distribution is made exactly the carried selection (``Update: - rules``, one ``FilterList``
per archive and suite with ``pkg = version`` lines). Afterwards every carried package must
be listed at its version: reprepro's exit code alone proves nothing (it exits 0 for an
older version it skipped). On failure the configuration is restored, so the repository's
files and signed indexes are as they were.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundler.errors import PreflightError, PublishError
from bundler.kinds.base import Change, PublishReport, TargetContext
from bundler.model import Entry, FileRecord
from bundler.openpgp.enclave_key import EnclaveKey, ensure_enclave_key, gpg, short_home, signing_dir
from bundler.paths import resolve_inside

#: What MAAS writes into deployed machines' sources: these must exist even when empty.
MAAS_POCKETS = ("", "-updates", "-security", "-backports")
MAAS_COMPONENTS = ("main", "restricted", "universe", "multiverse")
_STRIP_PHASING = "sed '/^Phased-Update-Percentage:/d'"


@dataclass(frozen=True)
class _Index:
    entry: Entry
    archive: str
    suite: str

    @property
    def rule(self) -> str:
        return f"{self.archive}-{self.suite}"


class DebTarget:
    def __init__(self, ctx: TargetContext) -> None:
        self.ctx = ctx
        self.root = Path(ctx.options.get("deb_root") or ctx.enclave / "deb")
        self.repo = self.root / "repo"
        self.upstream = self.root / "upstream"
        self.incoming = self.root / "incoming"
        self.gnupg = signing_dir(ctx.enclave) / "gnupg"

    # -- Target protocol ---------------------------------------------------------------

    def preflight(self, entries: Sequence[Entry]) -> None:
        for tool, pkg in (("reprepro", "reprepro"), ("gpg", "gnupg"), ("gpgv", "gpgv")):
            if shutil.which(tool) is None:
                raise PreflightError(f"deb: {tool} is not installed", remedy=f"apt-get install {pkg}")
        for e in entries:
            role = e.metadata.get("role")
            if role not in ("index", "package"):
                raise PreflightError(f"deb entry {e.name} has no valid metadata role ({role!r})")
            for f in e.files:
                resolve_inside(self.incoming, f.path, what=f"deb/{e.name}")

    def locate(self, entry: Entry, file: FileRecord) -> Path | None:
        if entry.metadata.get("role") == "index":
            p = self.upstream / file.path
        else:
            p = self.repo / file.path.split("/", 1)[1]
        return p if p.is_file() else None

    def publish(self, change: Change) -> PublishReport:
        key = ensure_enclave_key(self.ctx.enclave)
        indexes = [_Index(e, e.metadata["archive"], e.metadata["suite"]) for e in _role(change.entries, "index")]
        packages = list(_role(change.entries, "package"))
        self._build_incoming(change, indexes, packages)
        conf = self.repo / "conf"
        backup = self.root / "conf.previous"
        shutil.rmtree(backup, ignore_errors=True)
        if conf.is_dir():
            shutil.copytree(conf, backup)
        try:
            self._write_conf(key, indexes, packages)
            with short_home(self.gnupg) as home:
                for keyring in {f.path for i in indexes for f in i.entry.files if f.path.endswith("/keyring.gpg")}:
                    gpg(home, "--import", str(self.incoming / keyring))
                if indexes:
                    self._reprepro(home, "--noskipold", "update")
                self._reprepro(home, "export")
            listed = self._listing({i.suite for i in indexes})
            missing = [
                f"{e.metadata['package']} {e.version} ({e.arch}) in {e.metadata['suite']}"
                for e in packages
                if not _listed(listed, e)
            ]
            if missing:
                raise PublishError(
                    f"deb: after reprepro update, {len(missing)} carried package(s) are not listed at their "
                    f"version, e.g. {missing[0]}",
                    remedy="a newer version may already be in the repository; see 'reprepro list'",
                )
        except BaseException:
            if backup.is_dir():
                shutil.rmtree(conf, ignore_errors=True)
                shutil.copytree(backup, conf)
            raise
        # The imported indexes become the upstream copy that later deltas reuse.
        shutil.rmtree(self.upstream, ignore_errors=True)
        shutil.rmtree(self.incoming / "pool", ignore_errors=True)
        for archive_dir in self.incoming.iterdir():
            shutil.rmtree(archive_dir / "pool", ignore_errors=True)
        os.replace(self.incoming, self.upstream)
        shutil.rmtree(backup, ignore_errors=True)
        added = [e for e in change.added() if e.metadata.get("role") == "package"]
        removed = [e for e in change.removed() if e.metadata.get("role") == "package"]
        return PublishReport(
            kind="deb",
            added=tuple(f"{e.metadata['package']} {e.version} {e.arch} ({e.metadata['suite']})" for e in added),
            removed=tuple(f"{e.metadata['package']} {e.version} {e.arch} ({e.metadata['suite']})" for e in removed),
            unchanged=len(packages) - len(added),
            notes=(
                f"repository {self.repo} signed by {key.fingerprint}",
                f"apt: deb [signed-by={key.binary}] http://<this host>/<path to {self.repo.name}> <suite> <components>",
            ),
        )

    # -- steps ---------------------------------------------------------------------------

    def _build_incoming(self, change: Change, indexes: list[_Index], packages: list[Entry]) -> None:
        shutil.rmtree(self.incoming, ignore_errors=True)
        self.incoming.mkdir(parents=True)
        for e in [i.entry for i in indexes] + packages:
            for f in e.files:
                src = change.staged.get(f.sha256) or self.locate(e, f)
                if src is None:
                    raise PublishError(
                        f"deb: no verified copy of {f.path} ({e.name})",
                        remedy="the enclave lost a file a delta relies on: ask for a full export (--full)",
                    )
                dest = resolve_inside(self.incoming, f.path, what=f"deb/{e.name}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.exists():
                    try:
                        os.link(src, dest)
                    except OSError:
                        shutil.copyfile(src, dest)

    def _write_conf(self, key: EnclaveKey, indexes: list[_Index], packages: list[Entry]) -> None:
        conf = self.repo / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        by_suite: dict[str, list[_Index]] = defaultdict(list)
        for i in indexes:
            by_suite[i.suite].append(i)
        archs = sorted({a for i in indexes for a in i.entry.metadata.get("architectures", [])} or {"amd64"})
        comps = list(MAAS_COMPONENTS) + sorted(
            {c for i in indexes for c in i.entry.metadata.get("components", [])} - set(MAAS_COMPONENTS)
        )
        bases = {s.split("-")[0] for s in by_suite}
        suites = sorted(set(by_suite) | {b + p for b in bases for p in MAAS_POCKETS})
        stanzas = []
        for suite in suites:
            meta = next((i.entry.metadata for i in by_suite.get(suite, [])), None) or next(
                (i.entry.metadata for i in indexes if i.suite.split("-")[0] == suite.split("-")[0]), {}
            )
            lines = [
                f"Origin: {meta.get('origin') or 'Ubuntu'}",
                f"Label: {meta.get('label') or 'Ubuntu'}",
                f"Suite: {suite}",
                f"Codename: {suite}",
                f"Architectures: {' '.join(archs)} source",
                f"Components: {' '.join(comps)}",
                "DebIndices: Packages Release . .gz .xz",
                f"SignWith: {key.fingerprint}",
            ]
            if suite in by_suite:
                lines.append("Update: - " + " ".join(i.rule for i in by_suite[suite]))
            stanzas.append("\n".join(lines))
        _write(conf / "distributions", "\n\n".join(stanzas) + "\n")

        rules = []
        selections: dict[str, dict[str, str]] = {i.rule: {} for i in indexes}
        for e in packages:
            sel = selections.setdefault(f"{e.metadata['archive']}-{e.metadata['suite']}", {})
            name = e.metadata["package"]
            if sel.setdefault(name, e.version) != e.version:
                raise PublishError(
                    f"deb: {name} is carried at two versions ({sel[name]}, {e.version}) in "
                    f"{e.metadata['archive']}/{e.metadata['suite']}",
                    remedy="reprepro holds one version per package, suite and component: split the carry spec",
                )
        for i in indexes:
            m = i.entry.metadata
            forms = {Path(f.path).suffix for f in i.entry.files if "/binary-" in f.path}
            lists_as = ".xz" if ".xz" in forms else ".gz" if ".gz" in forms else "."
            keyids = "|".join(fp[-16:] for fp in m.get("fingerprints", []))
            rule = [
                f"Name: {i.rule}",
                f"Method: file://{self.incoming.resolve()}/{i.archive}",
                f"Suite: {i.suite}",
                f"Components: {' '.join(m.get('components', []))}",
                f"Architectures: {' '.join(m.get('architectures', []))}",
                f"VerifyRelease: {keyids}" if keyids else "VerifyRelease: blindtrust",
                f"DownloadListsAs: {lists_as}",
                f"FilterList: deinstall selection-{i.rule}",
                f"ListShellHook: {_STRIP_PHASING}",
            ]
            if not keyids:
                raise PublishError(f"deb: index {i.entry.name} names no signing key fingerprint")
            rules.append("\n".join(rule))
            sel = selections[i.rule]
            _write(conf / f"selection-{i.rule}", "".join(f"{n} = {v}\n" for n, v in sorted(sel.items())))
        _write(conf / "updates", "\n\n".join(rules) + "\n")
        _write(conf / "options", "waitforlock 3\n")

    def _reprepro(self, home: Path, *args: str) -> str:
        proc = subprocess.run(
            ["reprepro", "-b", str(self.repo), "--gnupghome", str(home), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise PublishError(
                f"deb: reprepro {' '.join(args)} failed (exit {proc.returncode}): " + " | ".join(detail[-6:]),
                remedy="nothing was installed into the repository; fix the cause and re-run the import",
            )
        return proc.stdout

    def _listing(self, suites: Iterable[str]) -> set[tuple[str, str, str, str]]:
        out: set[tuple[str, str, str, str]] = set()
        for suite in sorted(suites):
            proc = subprocess.run(
                [
                    "reprepro",
                    "-b",
                    str(self.repo),
                    "--list-format=${package}\\t${version}\\t${$architecture}\\n",
                    "list",
                    suite,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            for line in proc.stdout.splitlines():
                parts = line.split("\t")
                if len(parts) == 3:
                    out.add((suite, parts[0], parts[1], parts[2]))
        return out


def _role(entries: Iterable[Entry], role: str) -> Iterable[Entry]:
    return (e for e in entries if e.metadata.get("role") == role)


def _listed(listed: set[tuple[str, str, str, str]], e: Entry) -> bool:
    suite, name = e.metadata["suite"], e.metadata["package"]
    if e.arch == "all":
        return any(s == suite and n == name and v == e.version for s, n, v, _a in listed)
    return (suite, name, e.version, e.arch) in listed


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
