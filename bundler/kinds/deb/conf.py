"""The reprepro configuration an import writes (shared/reference/apt-and-reprepro.md, section 4).

``conf/distributions``: one stanza per distribution. Every suite the bundle carries,
plus every pocket MAAS writes into deployed machines' sources for its release
(``<release>``, ``-updates``, ``-security``, ``-backports``), each with at least the
components MAAS writes (``main restricted universe multiverse``), so apt with
``--error-on=any`` finds every Release and index even when a pocket or component is
empty. Origin and Label are upstream's (unattended-upgrades matches them). No
``ValidFor``: an air-gapped repository must not expire.

``conf/updates``: one rule per carried (archive, suite): a ``file://`` partial mirror
(the bundle's upstream-verbatim files), ``VerifyRelease`` with the pinned upstream keys,
``FilterList`` = the carried ``name = version`` lines, and a ``ListShellHook`` that strips
``Phased-Update-Percentage`` (phasing is decided on the connected side; machines in the
enclave must take what was carried). A distribution fed by rules is made exactly their
result (``Update: - rules``).

``conf/override.<suite>``: Section/Priority for loose debs whose control file lacks them
(``misc``/``optional``), as reprepro refuses a .deb without either.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bundler.errors import PublishError
from bundler.model import Entry

#: What MAAS writes into deployed machines' sources: these must exist even when empty.
MAAS_POCKETS = ("", "-updates", "-security", "-backports")
MAAS_COMPONENTS = ("main", "restricted", "universe", "multiverse")
STRIP_PHASING = "sed '/^Phased-Update-Percentage:/d'"
_GENERATED = ("selection-", "override.")


@dataclass(frozen=True)
class Rule:
    """One ``conf/updates`` rule: a carried (archive, suite) index entry."""

    entry: Entry

    @property
    def archive(self) -> str:
        return str(self.entry.metadata["archive"])

    @property
    def suite(self) -> str:
        return str(self.entry.metadata["suite"])

    @property
    def name(self) -> str:
        return f"{self.archive}-{self.suite}"


@dataclass(frozen=True)
class RepoConf:
    """Every file of ``conf/`` an import writes, by name."""

    files: Mapping[str, str]
    suites: tuple[str, ...]
    """Every distribution (codename), sorted."""
    update_suites: tuple[str, ...]
    """Distributions fed by ``reprepro update``."""
    components: tuple[str, ...] = ()
    """Every distribution's components."""
    architectures: tuple[str, ...] = ()
    """Every distribution's binary architectures (``source`` aside)."""


def release_of(suite: str) -> str:
    """``noble-updates`` -> ``noble``."""
    return suite.split("-")[0]


def build_conf(
    fingerprint: str, incoming: Path, indexes: Sequence[Entry], packages: Sequence[Entry], loose: Sequence[Entry]
) -> RepoConf:
    """The configuration for a repository whose content is exactly these entries."""
    rules = [Rule(e) for e in indexes]
    by_suite: dict[str, list[Rule]] = defaultdict(list)
    for r in rules:
        by_suite[r.suite].append(r)
    loose_suites = {str(e.metadata["suite"]) for e in loose}
    archs = sorted(
        {a for r in rules for a in r.entry.metadata.get("architectures", [])} | {e.arch for e in loose} - {"all"}
    ) or ["amd64"]
    extra = {c for r in rules for c in r.entry.metadata.get("components", [])} | {
        str(e.metadata["component"]) for e in loose
    }
    comps = list(MAAS_COMPONENTS) + sorted(extra - set(MAAS_COMPONENTS))
    releases = {release_of(s) for s in set(by_suite) | loose_suites}
    suites = sorted(set(by_suite) | loose_suites | {b + p for b in releases for p in MAAS_POCKETS})
    overrides = _overrides(loose)

    stanzas = []
    for suite in suites:
        meta = next((r.entry.metadata for r in by_suite.get(suite, [])), None) or next(
            (r.entry.metadata for r in rules if release_of(r.suite) == release_of(suite)), {}
        )
        lines = [
            f"Origin: {meta.get('origin') or 'Ubuntu'}",
            f"Label: {meta.get('label') or 'Ubuntu'}",
            f"Suite: {suite}",
            f"Codename: {suite}",
            f"Architectures: {' '.join(archs)} source",
            f"Components: {' '.join(comps)}",
            "DebIndices: Packages Release . .gz .xz",
            f"SignWith: {fingerprint}",
        ]
        if suite in overrides:
            lines.append(f"DebOverride: override.{suite}")
        if suite in by_suite:
            lines.append("Update: - " + " ".join(r.name for r in by_suite[suite]))
        stanzas.append("\n".join(lines))
    files: dict[str, str] = {"distributions": "\n\n".join(stanzas) + "\n", "options": "waitforlock 3\n"}
    for suite, text in overrides.items():
        files[f"override.{suite}"] = text

    selections: dict[str, dict[str, str]] = {r.name: {} for r in rules}
    for e in packages:
        rule = f"{e.metadata['archive']}-{e.metadata['suite']}"
        sel = selections.setdefault(rule, {})
        name = str(e.metadata["package"])
        if sel.setdefault(name, e.version) != e.version:
            raise PublishError(
                f"deb: {name} is carried at two versions ({sel[name]}, {e.version}) in "
                f"{e.metadata['archive']}/{e.metadata['suite']}",
                remedy="reprepro holds one version per package, suite and component: split the carry spec",
            )
    blocks = []
    for r in rules:
        m = r.entry.metadata
        forms = {Path(f.path).suffix for f in r.entry.files if "/binary-" in f.path}
        lists_as = ".xz" if ".xz" in forms else ".gz" if ".gz" in forms else "."
        blocks.append(
            "\n".join(
                [
                    f"Name: {r.name}",
                    f"Method: file://{incoming.resolve()}/{r.archive}",
                    f"Suite: {r.suite}",
                    f"Components: {' '.join(m.get('components', []))}",
                    f"Architectures: {' '.join(m.get('architectures', []))}",
                    # "+": a signature by a subkey of a pinned primary key counts (archives sign with subkeys).
                    "VerifyRelease: " + "|".join(f"{fp[-16:]}+" for fp in m.get("fingerprints", [])),
                    f"DownloadListsAs: {lists_as}",
                    f"FilterList: deinstall selection-{r.name}",
                    f"ListShellHook: {STRIP_PHASING}",
                ]
            )
        )
        files[f"selection-{r.name}"] = "".join(f"{n} = {v}\n" for n, v in sorted(selections[r.name].items()))
    if blocks:
        files["updates"] = "\n\n".join(blocks) + "\n"
    return RepoConf(
        files=files,
        suites=tuple(suites),
        update_suites=tuple(sorted(by_suite)),
        components=tuple(comps),
        architectures=tuple(archs),
    )


def _overrides(loose: Sequence[Entry]) -> dict[str, str]:
    lines: dict[str, set[str]] = defaultdict(set)
    for e in loose:
        suite, name = str(e.metadata["suite"]), str(e.metadata["package"])
        if not e.metadata.get("section"):
            lines[suite].add(f"{name} Section misc\n")
        if not e.metadata.get("priority"):
            lines[suite].add(f"{name} Priority optional\n")
    return {suite: "".join(sorted(text)) for suite, text in lines.items()}


def write_conf(conf_dir: Path, conf: RepoConf) -> None:
    """Write ``conf`` into ``conf_dir``; drop generated files (selections, overrides) it no longer has."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    for p in conf_dir.iterdir():
        if (p.name.startswith(_GENERATED) or p.name == "updates") and p.name not in conf.files:
            p.unlink()
    for name, text in conf.files.items():
        path = conf_dir / name
        if path.is_file() and path.read_text() == text:
            continue
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
