"""Enclave side of the ``snap`` kind: an offline snap repository, and the Enterprise Store.

Target options (``bundle import -o KEY=VALUE``, i.e. ``TargetContext.options``; defaults from
the optional file ``<enclave>/snap/target.toml`` with the same keys without the ``snap_``
prefix, which the command line overrides)::

    snap_target        "offline" (default) or "proxy"
    snap_root          default <enclave>/snap
    snap_proxy_command default "enterprise-store" (the older proxy: "snap-proxy"); a path works too
    snap_push_dir      default /var/snap/enterprise-store/common/snaps-to-push
                       (/var/snap/snap-store-proxy/common/snaps-to-push for snap-proxy)

Offline repository (both targets; the proxy host side-loads its own snaps from it)::

    <root>/repo -> repo.<id>     a symlink, swapped atomically to a complete new generation
    <root>/repo.<id>/install.sh  ack + install in order (snapd, bases, providers, the rest)
    <root>/repo.<id>/index.json  what is there: snap, channel, arch, revision, sha3-384
    <root>/repo.<id>/<arch>/<snap>_<revision>.snap and .assert

Before anything is written every carried snap is checked again: its sha3-384 and size
against its snap-revision assertion (and the manifest), the assertion's snap id and
revision, the snap-declaration's snap id and name, and every signature up to the root
key the exporter trusted. One mismatch refuses the whole import of this kind.

Enterprise Store (``proxy``): each store-admin tarball is kept under
``<root>/store-admin/``, copied into the push directory and pushed with
``<command> push-snap <file>``; ``<command> list-pushed-snaps`` must then list the snap.
Results are recorded per tarball in ``<root>/proxy-state.json``, so a re-run pushes only
what did not arrive. Failures are reported per snap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.errors import DigestError, PreflightError, PublishError, VerificationError
from bundler.fsio import install_file, require_writable
from bundler.kinds.base import Change, PublishReport, TargetContext
from bundler.kinds.snap.assertions import Assertion, AssertionProblem, parse_stream, select
from bundler.kinds.snap.install_script import RepoSnap, render
from bundler.kinds.snap.signature import verify_chain
from bundler.kinds.snap.trusted import CANONICAL_ACCOUNT, CANONICAL_ROOT_ACCOUNT_KEY
from bundler.model import Entry, FileRecord
from bundler.paths import resolve_inside

__all__ = ["SnapTarget", "TargetConfig"]

TARGETS = ("offline", "proxy")
_SNAP_KEYS = ("snap", "snap-id", "revision", "channel", "sha3-384", "size")


@dataclass(frozen=True)
class TargetConfig:
    target: str
    root: Path
    proxy_command: tuple[str, ...]
    push_dir: Path

    @classmethod
    def load(cls, ctx: TargetContext) -> TargetConfig:
        opts: dict[str, Any] = {}
        root = Path(ctx.options.get("snap_root") or ctx.enclave / "snap")
        conf = root / "target.toml"
        if conf.is_file():
            try:
                raw = tomllib.loads(conf.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise PreflightError(f"snap: {conf} cannot be read: {exc}") from exc
            unknown = set(raw) - {"target", "proxy_command", "push_dir"}
            if unknown:
                raise PreflightError(f"snap: {conf}: unknown key(s) {', '.join(sorted(unknown))}")
            opts.update({f"snap_{k}": v for k, v in raw.items()})
        opts.update({k: v for k, v in ctx.options.items() if k.startswith("snap_") and v is not None})
        target = opts.get("snap_target", "offline")
        if target not in TARGETS:
            raise PreflightError(f"snap: unknown target {target!r}", remedy="snap target is 'offline' or 'proxy'")
        command = opts.get("snap_proxy_command", "enterprise-store")
        argv = tuple(shlex.split(command)) if isinstance(command, str) else tuple(map(str, command))
        if not argv:
            raise PreflightError("snap: the proxy command is empty")
        legacy = Path(argv[0]).name in ("snap-proxy", "snap-store-proxy")
        default_dir = f"/var/snap/{'snap-store-proxy' if legacy else 'enterprise-store'}/common/snaps-to-push"
        return cls(
            target=str(target),
            root=root,
            proxy_command=argv,
            push_dir=Path(opts.get("snap_push_dir") or default_dir),
        )


@dataclass(frozen=True)
class _Checked:
    snap: RepoSnap
    snap_sha: str
    assert_sha: str


class SnapTarget:
    def __init__(self, ctx: TargetContext) -> None:
        self.ctx = ctx
        self.conf = TargetConfig.load(ctx)
        self.root = self.conf.root
        self.repo = self.root / "repo"
        self.archive = self.root / "store-admin"
        self.state_file = self.root / "proxy-state.json"
        self._checked_for: tuple[Change, tuple[dict[str, Path], list[_Checked]]] | None = None

    # -- Target protocol ---------------------------------------------------------------

    def preflight(self, entries: Sequence[Entry]) -> None:
        require_writable(self.root, "snap")
        exports = []
        for e in entries:
            role = e.metadata.get("role")
            if role == "snap":
                missing = [k for k in _SNAP_KEYS if k not in e.metadata]
                if missing or len(e.files) != 2:
                    raise PreflightError(f"snap entry {e.name} lacks {missing or 'its .snap and .assert files'}")
            elif role == "store-admin":
                exports.append(e)
            else:
                raise PreflightError(f"snap entry {e.name} has no valid metadata role ({role!r})")
            for f in e.files:
                resolve_inside(self.root, f.path, what=f"snap/{e.name}")
        if exports and self.conf.target != "proxy":
            raise PreflightError(
                f"snap: this bundle carries store-admin exports ({', '.join(e.metadata['snap'] for e in exports)}) "
                "that only an Enterprise Store (Snap Store Proxy) can take, but the snap target is 'offline'",
                remedy="import into the proxy host with the snap target 'proxy' "
                f'(target = "proxy" in {self.root / "target.toml"})',
            )
        if exports:
            exe = self.conf.proxy_command[0]
            if shutil.which(exe) is None:
                raise PreflightError(
                    f"snap: the Enterprise Store command {exe!r} is not installed",
                    remedy="install the enterprise-store snap (or set proxy_command, e.g. snap-proxy)",
                )
            if not self.conf.push_dir.is_dir() or not os.access(self.conf.push_dir, os.W_OK):
                raise PreflightError(
                    f"snap: the push directory {self.conf.push_dir} is missing or not writable",
                    remedy="run the import as root on the store host, or set push_dir",
                )

    def locate(self, entry: Entry, file: FileRecord) -> Path | None:
        if entry.metadata.get("role") == "store-admin":
            p = self.archive / Path(file.path).name
        else:
            p = self.repo / file.path
        return p if p.is_file() else None

    def check(self, change: Change) -> None:
        """Re-check every snap against its assertions (the importer runs this for every kind
        before any kind publishes); publish reuses the result."""
        self._checked_for = (change, self._check_all(change))

    def _check_all(self, change: Change) -> tuple[dict[str, Path], list[_Checked]]:
        snaps = [e for e in change.entries if e.metadata.get("role") == "snap"]
        sources = {f.sha256: self._source(change, e, f) for e in change.entries for f in e.files}
        return sources, [self._check(e, sources) for e in snaps]

    def publish(self, change: Change) -> PublishReport:
        snaps = [e for e in change.entries if e.metadata.get("role") == "snap"]
        exports = [e for e in change.entries if e.metadata.get("role") == "store-admin"]
        done = self._checked_for
        # Everything is checked before anything is written (by check(), or here if not run).
        sources, checked = done[1] if done is not None and done[0] is change else self._check_all(change)
        notes: list[str] = []
        if snaps or any(e.metadata.get("role") == "snap" for e in change.previous):
            notes.append(self._publish_repo(checked, sources))
        if exports or any(e.metadata.get("role") == "store-admin" for e in change.previous):
            notes.extend(self._push(exports, sources))
        added = change.added()
        return PublishReport(
            kind="snap",
            added=tuple(_label(e) for e in added),
            removed=tuple(_label(e) for e in change.removed()),
            unchanged=len(change.entries) - len(added),
            notes=tuple(notes),
        )

    # -- checks ---------------------------------------------------------------------------

    def _source(self, change: Change, e: Entry, f: FileRecord) -> Path:
        src = change.staged.get(f.sha256) or self.locate(e, f)
        if src is None:
            raise PublishError(
                f"snap {e.name}: no verified copy of {f.path}",
                remedy="the enclave lost a file a delta relies on: ask for a full export (--full)",
            )
        return src

    def _check(self, e: Entry, sources: Mapping[str, Path]) -> _Checked:
        m = e.metadata
        what = f"snap {m['snap']} {m['channel']} ({e.arch}, revision {m['revision']})"
        snap_file = next((f for f in e.files if f.path.endswith(".snap")), None)
        assert_file = next((f for f in e.files if f.path.endswith(".assert")), None)
        if snap_file is None or assert_file is None:
            raise VerificationError(f"{what}: the entry lacks its .snap or .assert file")
        digest, size = _sha3_384(sources[snap_file.sha256])
        if digest != m["sha3-384"] or size != m["size"] or size != snap_file.size:
            raise DigestError(
                f"{what}: the file has sha3-384 {digest} and {size} bytes, the store said {m['sha3-384']} "
                f"and {m['size']} bytes",
                remedy="the bundle is inconsistent: export it again. Nothing was published.",
            )
        try:
            stream = parse_stream(sources[assert_file.sha256].read_bytes())
            chosen = select(
                stream,
                name=m["snap"],
                snap_id=m["snap-id"],
                revision=int(m["revision"]),
                sha3_384_hex=digest,
                size=size,
            )
            verify_chain(chosen.ordered(), _anchors(m))
        except AssertionProblem as exc:
            raise VerificationError(
                f"{what}: {exc}",
                remedy="its assertions do not vouch for this file (snapd would refuse it): export it again. "
                "Nothing was published.",
            ) from exc
        snap = RepoSnap(
            name=m["snap"],
            channel=m["channel"],
            arch=e.arch,
            revision=int(m["revision"]),
            type=str(m.get("type") or "app"),
            confinement=str(m.get("confinement") or "strict"),
            stem=Path(snap_file.path).name[: -len(".snap")],
            providers=tuple(m.get("default-providers") or ()),
        )
        return _Checked(snap, snap_file.sha256, assert_file.sha256)

    # -- offline repository ---------------------------------------------------------------

    def _publish_repo(self, checked: list[_Checked], sources: Mapping[str, Path]) -> str:
        snaps = [c.snap for c in checked]
        files = sorted(
            {(f"{c.snap.arch}/{c.snap.stem}.snap", c.snap_sha) for c in checked}
            | {(f"{c.snap.arch}/{c.snap.stem}.assert", c.assert_sha) for c in checked}
        )
        index = {
            "snaps": [
                {
                    "name": s.name,
                    "channel": s.channel,
                    "arch": s.arch,
                    "revision": s.revision,
                    "type": s.type,
                    "confinement": s.confinement,
                    "snap": f"{s.arch}/{s.stem}.snap",
                    "assert": f"{s.arch}/{s.stem}.assert",
                }
                for s in sorted(snaps, key=lambda s: (s.arch, s.name, s.channel))
            ],
            "files": {path: sha for path, sha in files},
        }
        data = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()
        gen = "repo." + hashlib.sha256(data).hexdigest()[:16]
        final = self.root / gen
        if self.repo.is_symlink() and os.readlink(self.repo) == gen and final.is_dir():
            return f"offline snap repository {self.repo} unchanged ({len(snaps)} snap(s))"
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{gen}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for path, sha in files:
            dest = resolve_inside(tmp, path, what="snap repository")
            dest.parent.mkdir(parents=True, exist_ok=True)
            install_file(sources[sha], dest)
        (tmp / "install.sh").write_text(render(snaps))
        os.chmod(tmp / "install.sh", 0o755)
        (tmp / "index.json").write_bytes(data)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        link = self.root / ".repo.link.tmp"
        link.unlink(missing_ok=True)
        os.symlink(gen, link)
        if self.repo.exists() and not self.repo.is_symlink():
            raise PublishError(f"snap: {self.repo} is not a symlink", remedy="move it away, then re-run the import")
        os.replace(link, self.repo)
        for old in self.root.glob("repo.*"):
            if old.name != gen and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return f"offline snap repository {self.repo} ({len(snaps)} snap(s)); on each machine run {self.repo}/install.sh"

    # -- Enterprise Store -------------------------------------------------------------

    def _push(self, exports: list[Entry], sources: Mapping[str, Path]) -> list[str]:
        state = self._load_state()
        listed = self._listed() if exports else set()
        pushed: list[str] = []
        kept: list[str] = []
        failed: list[str] = []
        for e in sorted(exports, key=lambda e: e.name):
            f = e.files[0]
            name = e.metadata["snap"]
            archived = self.archive / Path(f.path).name
            if not archived.is_file():
                self.archive.mkdir(parents=True, exist_ok=True)
                install_file(sources[f.sha256], archived)
            if f.sha256 in state and name in listed:
                kept.append(name)
                continue
            dest = self.conf.push_dir / Path(f.path).name
            tmp = dest.with_name(f".{dest.name}.bundler-tmp")
            shutil.copyfile(archived, tmp)
            os.replace(tmp, dest)
            proc = subprocess.run(
                [*self.conf.proxy_command, "push-snap", str(dest)], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                failed.append(f"{name}: push-snap exited {proc.returncode}: {tail}")
                continue
            state[f.sha256] = {"snap": name, "file": dest.name}
            self._save_state(state)
            pushed.append(name)
        listed = self._listed() if pushed else listed
        for name in list(pushed):
            if name not in listed:
                pushed.remove(name)
                failed.append(f"{name}: push-snap succeeded but list-pushed-snaps does not list it")
                for sha in [s for s, v in state.items() if v.get("snap") == name]:
                    del state[sha]
        current = {e.files[0].sha256 for e in exports}
        for sha in [s for s in state if s not in current]:
            del state[sha]
        self._save_state(state)
        for old in self.archive.glob("*.tar.gz") if self.archive.is_dir() else ():
            if old.name not in {Path(e.files[0].path).name for e in exports}:
                old.unlink()
        if failed:
            raise PublishError(
                f"snap: {len(failed)} of {len(exports)} store-admin export(s) did not reach the Enterprise Store: "
                + "; ".join(failed),
                remedy="fix the cause (see `enterprise-store status`), then re-run the same import: only these "
                "are pushed again" + (f" ({len(pushed) + len(kept)} arrived)" if pushed or kept else ""),
            )
        return [
            f"Enterprise Store: pushed {', '.join(pushed) or 'nothing new'}"
            + (f"; already there: {', '.join(kept)}" if kept else "")
        ]

    def _listed(self) -> set[str]:
        argv = [*self.conf.proxy_command, "list-pushed-snaps"]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise PublishError(
                f"snap: {' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}",
                remedy="check the store with `enterprise-store status`, then re-run the import",
            )
        return {tok.strip(",;:") for line in proc.stdout.splitlines() for tok in line.split()}

    def _load_state(self) -> dict[str, dict[str, str]]:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PublishError(f"snap: {self.state_file} is unreadable ({exc})", remedy="remove it and re-run") from exc
        pushed = raw.get("pushed", {}) if isinstance(raw, dict) else {}
        return {str(k): dict(v) for k, v in pushed.items() if isinstance(v, dict)}

    def _save_state(self, state: Mapping[str, Mapping[str, str]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({"pushed": state}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.state_file)


def _anchors(metadata: Mapping[str, Any]) -> list[Assertion]:
    carried = metadata.get("root-account-keys")
    if carried:
        return [a for text in carried for a in parse_stream(str(text).encode())]
    return parse_stream(CANONICAL_ROOT_ACCOUNT_KEY + b"\n" + CANONICAL_ACCOUNT)


def _sha3_384(path: Path) -> tuple[str, int]:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha3_384").hexdigest(), os.fstat(fh.fileno()).st_size


def _label(e: Entry) -> str:
    m = e.metadata
    if m.get("role") == "store-admin":
        return f"{m.get('snap')} (store-admin export {e.version})"
    return f"{m.get('snap')} {m.get('channel')} revision {e.version} ({e.arch})"
