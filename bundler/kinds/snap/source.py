"""Connected side of the ``snap`` kind: the Snap Store (or store-admin exports) -> entries.

Store mode, per architecture:

1. resolve every requested (snap, channel) with the store's refresh endpoint (download
   actions), then follow what they need: ``snapd``, each snap's base (from the store's
   ``base`` field; ``core`` when an app names none) and each content plug's
   ``default-provider`` (from the store's ``snap-yaml``), until nothing new comes up;
2. download each ``.snap`` (resumable) and check its size and sha3-384 against the store's
   answer (:meth:`bundler.fetch.Fetcher.fetch_sha3_384`);
3. fetch its assertions (snap-revision by digest, snap-declaration, the publisher's account,
   and every account-key that signed them), check that the snap-revision names this file's
   digest, size, snap id and revision and that the declaration names this snap id and name,
   check every signature up to the trusted root key, and write the ``.assert`` file the way
   ``snap download`` does (prerequisites first).

Store-admin mode carries ``store-admin export snaps`` tarballs as opaque files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.errors import SpecError, UpstreamContentError, UpstreamDigestError, UpstreamSignatureError
from bundler.hashing import sha256_file
from bundler.kinds.base import SourceContext
from bundler.kinds.snap.assertions import (
    Assertion,
    AssertionProblem,
    encode_stream,
    hex_to_b64,
    parse_stream,
    select,
)
from bundler.kinds.snap.signature import verify_chain
from bundler.kinds.snap.store import DEFAULT_API, StoreClient, StoreSnap, normalise_channel
from bundler.kinds.snap.trusted import CANONICAL_ACCOUNT, CANONICAL_ROOT_ACCOUNT_KEY
from bundler.model import Artifact, Declared

__all__ = ["check_section", "declare", "parse_export_name"]

_KEYS = {
    "name",
    "channel",
    "snaps",
    "architectures",
    "store",
    "store_id",
    "root_keys",
    "dependencies",
    "store_admin_exports",
}
_NAME = re.compile(r"[a-z0-9](?:-?[a-z0-9])*")
_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*){0,2}")
_ARCH = re.compile(r"[a-z0-9][a-z0-9-]*")
_EXPORT = re.compile(r"(?P<name>[a-z0-9](?:-?[a-z0-9])*)-(?P<ts>\d{8}T\d{6})\.tar\.gz")
DEPENDENCY_CHANNEL = "latest/stable"


# --- carry spec -------------------------------------------------------------------------


def check_section(section: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """Validate one ``[[snap]]`` table and return it with every default filled in."""
    unknown = set(section) - _KEYS
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", remedy=f"allowed: {sorted(_KEYS)}")
    if "store_admin_exports" in section:
        clash = {"name", "channel", "snaps", "root_keys", "dependencies"} & set(section)
        if clash:
            raise SpecError(
                f"{where}: store_admin_exports cannot be mixed with {', '.join(sorted(clash))}",
                remedy="write one [[snap]] section for the store and another for store-admin exports",
            )
        exports = section["store_admin_exports"]
        if not isinstance(exports, list) or not exports or not all(isinstance(p, str) and p for p in exports):
            raise SpecError(f"{where}: store_admin_exports must be a non-empty list of paths (files or directories)")
        return {"store_admin_exports": list(exports)}

    snaps: list[dict[str, str]] = []
    if "snaps" in section:
        if "name" in section or "channel" in section:
            raise SpecError(f"{where}: give either 'name' (and 'channel') or 'snaps', not both")
        raw = section["snaps"]
        if not isinstance(raw, list) or not raw:
            raise SpecError(f"{where}: 'snaps' must be a non-empty list of {{ name = ..., channel = ... }}")
        for item in raw:
            if not isinstance(item, dict) or set(item) - {"name", "channel"}:
                raise SpecError(f'{where}: each of \'snaps\' is {{ name = "maas", channel = "3.6/stable" }}')
            snaps.append(_one(item, where))
    else:
        snaps.append(_one(section, where))
    pairs = [(s["name"], s["channel"]) for s in snaps]
    if len(set(pairs)) != len(pairs):
        raise SpecError(f"{where}: a snap is named twice with the same channel in one section: {pairs}")
    arches = section.get("architectures", ["amd64"])
    if (
        not isinstance(arches, list)
        or not arches
        or not all(isinstance(a, str) and _ARCH.fullmatch(a) for a in arches)
        or len(set(arches)) != len(arches)
    ):
        raise SpecError(f'{where}: architectures must be a non-empty list of distinct names, e.g. ["amd64"]')
    store = section.get("store", DEFAULT_API)
    if not isinstance(store, str) or not re.fullmatch(r"https?://[^\s?#]+", store):
        raise SpecError(f"{where}: store must be the http(s) URL of the store API, got {store!r}")
    store_id = section.get("store_id", "")
    if not isinstance(store_id, str):
        raise SpecError(f"{where}: store_id must be a string")
    roots = section.get("root_keys", [])
    if not isinstance(roots, list) or not all(isinstance(p, str) and p for p in roots):
        raise SpecError(f"{where}: root_keys must be a list of paths to .assert files holding account-keys")
    deps = section.get("dependencies", True)
    if not isinstance(deps, bool):
        raise SpecError(f"{where}: dependencies must be true or false")
    return {
        "snaps": snaps,
        "architectures": list(arches),
        "store": store.rstrip("/"),
        "store_id": store_id,
        "root_keys": list(roots),
        "dependencies": deps,
    }


def _one(table: Mapping[str, Any], where: str) -> dict[str, str]:
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 40:
        raise SpecError(f"{where}: 'name' must be a snap name (lower-case letters, digits, '-'), got {name!r}")
    channel = table.get("channel", DEPENDENCY_CHANNEL)
    if not isinstance(channel, str) or not _CHANNEL.fullmatch(channel):
        raise SpecError(
            f"{where}: channel {channel!r} of snap {name} is not a channel",
            remedy='write track/risk, e.g. channel = "3.6/stable"',
        )
    return {"name": name, "channel": normalise_channel(channel)}


def parse_export_name(filename: str) -> tuple[str, str] | None:
    """(snap name, timestamp) of a ``store-admin export snaps`` tarball name, else None."""
    m = _EXPORT.fullmatch(filename)
    return (m["name"], m["ts"]) if m else None


# --- declare ----------------------------------------------------------------------------


@dataclass
class _Resolved:
    snap: StoreSnap
    requested: bool
    required_by: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)


def declare(section: Mapping[str, Any], ctx: SourceContext) -> Iterator[Declared]:
    if "store_admin_exports" in section:
        yield from _declare_exports(section["store_admin_exports"], ctx)
        return
    client = StoreClient(ctx.fetcher, section["store"], section["store_id"] or None)
    anchors = _anchors(section["root_keys"], ctx)
    for arch in section["architectures"]:
        resolved = _resolve(client, section["snaps"], arch, section["dependencies"])
        for key in sorted(resolved):
            yield _declare_one(client, resolved[key], anchors, ctx)


def _anchors(paths: list[str], ctx: SourceContext) -> list[Assertion]:
    if not paths:
        return parse_stream(CANONICAL_ROOT_ACCOUNT_KEY + b"\n" + CANONICAL_ACCOUNT)
    out: list[Assertion] = []
    for p in paths:
        path = ctx.spec_dir / os.path.expanduser(p)
        try:
            found = parse_stream(path.read_bytes())
        except (OSError, AssertionProblem) as exc:
            raise SpecError(f"snap: root key file {path} cannot be read as assertions: {exc}") from exc
        if not any(a.type == "account-key" for a in found):
            raise SpecError(f"snap: root key file {path} holds no account-key assertion")
        out.extend(found)
    return out


def _resolve(
    client: StoreClient, wanted: list[dict[str, str]], arch: str, deps: bool
) -> dict[tuple[str, str], _Resolved]:
    """(name, channel) -> what the store answered, for the wanted snaps and (with ``deps``)
    everything they need. A dependency already carried in any channel is not added again."""
    requested = {(w["name"], w["channel"]) for w in wanted}
    resolved: dict[tuple[str, str], _Resolved] = {}
    todo: list[tuple[str, str, str | None]] = [(n, c, None) for n, c in sorted(requested)]
    if deps and "snapd" not in {n for n, _c in requested}:
        todo.append(("snapd", DEPENDENCY_CHANNEL, "every snap (installed first)"))
    while todo:
        carried = {key[0]: key for key in resolved}
        batch: dict[tuple[str, str], list[str]] = {}
        for name, channel, reason in todo:
            if reason is None:
                key = (name, channel)
            else:
                key = carried.get(name) or next((k for k in batch if k[0] == name), (name, channel))
            if key in resolved:
                if reason and reason not in resolved[key].required_by:
                    resolved[key].required_by.append(reason)
                continue
            batch.setdefault(key, [])
            if reason and reason not in batch[key]:
                batch[key].append(reason)
        todo = []
        if not batch:
            break
        for key, snap in client.resolve(list(batch), arch).items():
            item = _Resolved(snap=snap, requested=key in requested, required_by=sorted(batch[key]))
            item.providers = _default_providers(snap.snap_yaml)
            resolved[key] = item
            if not deps:
                continue
            base = snap.base or ("core" if snap.type == "app" else None)
            if base and base != "none":
                todo.append((base, DEPENDENCY_CHANNEL, f"base of {snap.name}"))
            for provider in item.providers:
                todo.append((provider, DEPENDENCY_CHANNEL, f"content provider for {snap.name}"))
    for item in resolved.values():
        item.required_by.sort()
    return resolved


def _default_providers(snap_yaml: str) -> list[str]:
    """Snaps named by ``default-provider`` in snap.yaml (content plugs), without the slot part."""
    out = []
    for m in re.finditer(r"^\s*default-provider:\s*['\"]?([a-z0-9-]+)", snap_yaml, re.MULTILINE):
        if m[1] not in out:
            out.append(m[1])
    return out


def _declare_one(client: StoreClient, item: _Resolved, anchors: list[Assertion], ctx: SourceContext) -> Declared:
    s = item.snap
    what = f"snap {s.name} {s.channel} ({s.arch}, revision {s.revision})"
    try:
        got = client.fetcher.fetch_sha3_384(s.url, s.sha3_384, s.size)
    except UpstreamDigestError as exc:
        raise UpstreamDigestError(f"{what}: {exc.message}", remedy=exc.remedy) from exc
    stream = _fetch_assertions(client, s, anchors, what)
    try:
        chosen = select(
            stream, name=s.name, snap_id=s.snap_id, revision=s.revision, sha3_384_hex=s.sha3_384, size=s.size
        )
        verify_chain(chosen.ordered(), anchors)
    except AssertionProblem as exc:
        raise UpstreamSignatureError(
            f"{what}: {exc}",
            remedy="the store's signed assertions do not vouch for this file: do not carry it; re-run later "
            "and report it to the store if it persists",
        ) from exc
    data = encode_stream(chosen.ordered())
    assert_dir = ctx.work_dir / "snap" / "assert"
    assert_dir.mkdir(parents=True, exist_ok=True)
    assert_path = assert_dir / f"{s.name}_{s.revision}_{s.sha3_384[:16]}.assert"
    tmp = assert_path.with_name(assert_path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, assert_path)
    a_sha, a_size = sha256_file(assert_path)
    stem = f"{s.arch}/{s.name}_{s.revision}"
    builtin = {a.get("public-key-sha3-384") for a in parse_stream(CANONICAL_ROOT_ACCOUNT_KEY)}
    roots = [a for a in anchors if a.type == "account-key"]
    metadata: dict[str, Any] = {
        "role": "snap",
        "snap": s.name,
        "snap-id": s.snap_id,
        "revision": s.revision,
        "channel": s.channel,
        "type": s.type,
        "base": s.base,
        "confinement": s.confinement,
        "version": s.version,
        "sha3-384": s.sha3_384,
        "size": s.size,
        "default-providers": item.providers,
        "requested": item.requested,
        "required-by": item.required_by,
        "root-keys": sorted(a.get("public-key-sha3-384") for a in roots),
    }
    if {a.get("public-key-sha3-384") for a in roots} != builtin:
        metadata["root-account-keys"] = [a.raw.decode() for a in roots]
    return Declared(
        kind="snap",
        name=f"{s.name}/{s.channel}",
        version=str(s.revision),
        arch=s.arch,
        artifacts=(
            Artifact(path=f"{stem}.snap", sha256=got.sha256, size=s.size, local=got.path),
            Artifact(path=f"{stem}.assert", sha256=a_sha, size=a_size, local=assert_path),
        ),
        metadata=metadata,
    )


def _fetch_assertions(client: StoreClient, s: StoreSnap, anchors: list[Assertion], what: str) -> list[Assertion]:
    known = {a.get("public-key-sha3-384") for a in anchors if a.type == "account-key"}

    def get(type_: str, *key: str) -> list[Assertion]:
        try:
            found = parse_stream(client.assertions(type_, *key))
        except UpstreamContentError as exc:
            raise UpstreamContentError(f"{what}: {exc.message}", remedy=exc.remedy) from exc
        except AssertionProblem as exc:
            raise UpstreamSignatureError(f"{what}: the store's {type_} assertion is malformed: {exc}") from exc
        if not found:
            raise UpstreamContentError(f"{what}: the store sent no {type_} assertion for {'/'.join(key)}")
        return found

    stream = get("snap-revision", hex_to_b64(s.sha3_384))
    stream += get("snap-declaration", "16", s.snap_id)
    accounts = {a.headers.get("publisher-id") for a in stream if a.type == "snap-declaration"}
    accounts |= {a.headers.get("developer-id") for a in stream if a.type == "snap-revision"}
    for account in sorted(a for a in accounts if a and a != "canonical"):
        stream += get("account", account)
    for _round in range(4):
        have = {a.get("public-key-sha3-384") for a in stream if a.type == "account-key"} | known
        need = sorted({a.get("sign-key-sha3-384") for a in stream if "sign-key-sha3-384" in a.headers} - have)
        if not need:
            break
        for key_id in need:
            try:
                stream += get("account-key", key_id)
            except UpstreamContentError:
                known.add(key_id)  # not served: the chain check below says it is not trusted
    return stream


def _declare_exports(paths: list[str], ctx: SourceContext) -> Iterator[Declared]:
    found: dict[str, tuple[str, Path]] = {}
    for p in paths:
        path = (ctx.spec_dir / os.path.expanduser(p)).resolve()
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.name.endswith(".tar.gz") and f.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise SpecError(f"snap: store-admin export {path} does not exist")
        for f in files:
            parsed = parse_export_name(f.name)
            if parsed is None:
                raise SpecError(
                    f"snap: {f} is not named like a store-admin export (<snap>-<YYYYMMDDTHHMMSS>.tar.gz)",
                    remedy="carry the tarballs exactly as `store-admin export snaps` named them",
                )
            name, ts = parsed
            if name in found and found[name][0] >= ts:
                ctx.reporter.warn(f"snap: {f.name} is older than {found[name][1].name}: carrying the newer one")
                continue
            if name in found:
                ctx.reporter.warn(f"snap: {found[name][1].name} is older than {f.name}: carrying the newer one")
            found[name] = (ts, f)
    for name, (ts, f) in sorted(found.items()):
        sha, size = sha256_file(f)
        yield Declared(
            kind="snap",
            name=f"store-admin/{name}",
            version=ts,
            arch="all",
            artifacts=(Artifact(path=f"store-admin/{f.name}", sha256=sha, size=size, local=f),),
            metadata={"role": "store-admin", "snap": name, "file": f.name},
        )
