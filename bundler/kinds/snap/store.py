"""The Snap Store API client (connected side), over the shared :class:`~bundler.fetch.Fetcher`.

* ``POST <api>/v2/snaps/refresh`` with ``download`` actions resolves (snap, channel) for one
  architecture (``Snap-Device-Architecture``) to a revision, its download URL, size and
  hex sha3-384, and the metadata bundler follows (base, type, confinement, snap.yaml).
* ``GET <api>/v2/assertions/<type>/<primary key...>`` with
  ``Accept: application/x.ubuntu.assertion`` returns assertions in the text format.

Every request carries the headers the store requires (``User-Agent`` from the fetcher's
session, ``Snap-Device-Series: 16``, and ``Snap-Device-Store`` for a brand or proxy store).
Errors name the snap and say what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bundler.errors import FetchError, UpstreamContentError
from bundler.fetch import Fetcher

__all__ = ["DEFAULT_API", "StoreClient", "StoreSnap"]

DEFAULT_API = "https://api.snapcraft.io"
SERIES = "16"
ASSERTION_TYPE = "application/x.ubuntu.assertion"
MAX_JSON = 32 << 20
MAX_ASSERTIONS = 16 << 20
FIELDS = ["base", "confinement", "download", "name", "revision", "snap-id", "snap-yaml", "type", "version"]
_HEX96 = re.compile(r"[0-9a-f]{96}")


@dataclass(frozen=True)
class StoreSnap:
    """One snap revision as the store resolved it for (name, channel, architecture)."""

    name: str
    channel: str
    arch: str
    snap_id: str
    revision: int
    version: str
    type: str
    base: str | None
    confinement: str
    snap_yaml: str
    url: str
    sha3_384: str
    size: int


class StoreClient:
    def __init__(self, fetcher: Fetcher, api: str = DEFAULT_API, store_id: str | None = None) -> None:
        self.fetcher = fetcher
        self.api = api.rstrip("/")
        self.store_id = store_id

    def _headers(self, **extra: str) -> dict[str, str]:
        h = {"Snap-Device-Series": SERIES, **extra}
        if self.store_id:
            h["Snap-Device-Store"] = self.store_id
        return h

    def resolve(self, wants: Sequence[tuple[str, str]], arch: str) -> dict[tuple[str, str], StoreSnap]:
        """Resolve (name, channel) pairs for ``arch`` with one refresh request."""
        actions = [
            {"action": "download", "instance-key": f"dl-{i}", "name": name, "channel": channel, "epoch": None}
            for i, (name, channel) in enumerate(wants)
        ]
        url = f"{self.api}/v2/snaps/refresh"
        answer = self.fetcher.request(
            "POST",
            url,
            headers=self._headers(
                **{
                    "Snap-Device-Architecture": arch,
                    "Snap-Classic": "true",
                    "Accept": "application/json",
                    "Content-Type": "application/json",
                }
            ),
            json_body={"context": [], "actions": actions, "fields": FIELDS},
            max_size=MAX_JSON,
        )
        doc = _json(answer.body, url)
        if answer.status != 200:
            raise FetchError(
                f"snap store {self.api} refused the refresh request for {', '.join(n for n, _ in wants)} "
                f"({arch}): HTTP {answer.status} {_error_text(doc)}",
                remedy="check the store URL in the carry spec (an old Snap Store Proxy answers 400 with a "
                "Snap-Store-Version header) and that this host can reach it",
            )
        by_key = {f"dl-{i}": w for i, w in enumerate(wants)}
        out: dict[tuple[str, str], StoreSnap] = {}
        for r in doc.get("results", []) if isinstance(doc, dict) else []:
            want = by_key.get(r.get("instance-key", ""))
            if want is None:
                continue
            if r.get("result") == "error":
                raise _action_error(want, arch, r.get("error") or {})
            out[want] = _snap(want, arch, r)
        for err in doc.get("error-list", []) if isinstance(doc, dict) else []:
            raise UpstreamContentError(f"snap store answered an error: {_error_text({'error-list': [err]})}")
        missing = [w for w in wants if w not in out]
        if missing:
            name, channel = missing[0]
            raise UpstreamContentError(
                f"snap {name}: the store gave no answer for channel {channel} ({arch})",
                remedy="check the snap name and channel with `snap info` on a connected host",
            )
        return out

    def assertions(self, type_: str, *key: str) -> bytes:
        """The assertion(s) of ``type_`` with this primary key, as text; error when the store has none."""
        url = f"{self.api}/v2/assertions/{type_}/{'/'.join(key)}"
        answer = self.fetcher.request("GET", url, headers=self._headers(Accept=ASSERTION_TYPE), max_size=MAX_ASSERTIONS)
        if answer.status == 200:
            return answer.body
        detail = (
            _error_text(_json(answer.body, url))
            if answer.body[:1] == b"{"
            else answer.body[:200].decode("utf-8", "replace")
        )
        if answer.status == 404:
            raise UpstreamContentError(
                f"the store has no {type_} assertion {'/'.join(key)} ({detail})",
                remedy="the store may not have published it yet; re-run later, or report it to the publisher",
            )
        raise FetchError(f"{url}: the store answered HTTP {answer.status} {detail}", remedy="check the store URL")


def _json(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FetchError(f"{url}: the store's answer is not JSON", remedy="check the store URL") from exc


def _error_text(doc: Any) -> str:
    if isinstance(doc, dict):
        errs = doc.get("error-list") or ([doc["error"]] if isinstance(doc.get("error"), dict) else [])
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs if isinstance(e, dict))
    return ""


def _action_error(want: tuple[str, str], arch: str, err: dict[str, Any]) -> UpstreamContentError:
    name, channel = want
    code = err.get("code")
    if code in ("name-not-found", "id-not-found"):
        return UpstreamContentError(
            f"snap {name}: unknown to the store ({code}: {err.get('message')})",
            remedy="check the snap name in the carry spec (`snap find` on a connected host)",
        )
    releases = [r for r in (err.get("extra") or {}).get("releases", []) if isinstance(r, dict)]
    track_risk = channel if "/" in channel else f"latest/{channel}"
    same_channel = sorted({r.get("architecture", "?") for r in releases if _same(r.get("channel", ""), track_risk)})
    if same_channel:
        return UpstreamContentError(
            f"snap {name}: channel {channel} has no release for architecture {arch} "
            f"(it has: {', '.join(same_channel)})",
            remedy=f"remove {arch} from 'architectures' for {name}, or pick a channel that has it",
        )
    channels = sorted({r.get("channel", "?") for r in releases if r.get("architecture") == arch}) or sorted(
        {r.get("channel", "?") for r in releases}
    )
    return UpstreamContentError(
        f"snap {name}: no channel {channel} for {arch} ({code}: {err.get('message')})"
        + (f"; it is released in: {', '.join(channels)}" if channels else ""),
        remedy="fix 'channel' in the carry spec (`snap info " + name + "` lists the channels)",
    )


def _same(a: str, b: str) -> bool:
    return normalise_channel(a) == normalise_channel(b)


def normalise_channel(channel: str) -> str:
    """``stable`` -> ``latest/stable``; ``3.6`` -> ``3.6/stable``; ``3.6/stable`` stays."""
    risks = ("stable", "candidate", "beta", "edge")
    parts = channel.split("/")
    if len(parts) == 1:
        return f"latest/{channel}" if channel in risks else f"{channel}/stable"
    if parts[0] in risks:  # risk/branch
        return f"latest/{channel}"
    return channel


def _snap(want: tuple[str, str], arch: str, r: dict[str, Any]) -> StoreSnap:
    name, channel = want
    snap = r.get("snap") or {}
    dl = snap.get("download") or {}
    try:
        got = StoreSnap(
            name=str(snap.get("name") or r.get("name")),
            channel=str(r.get("effective-channel") or channel),
            arch=arch,
            snap_id=str(r.get("snap-id") or snap.get("snap-id")),
            revision=int(snap["revision"]),
            version=str(snap.get("version", "")),
            type=str(snap.get("type") or "app"),
            base=snap.get("base") or None,
            confinement=str(snap.get("confinement") or "strict"),
            snap_yaml=str(snap.get("snap-yaml") or ""),
            url=str(dl["url"]),
            sha3_384=str(dl["sha3-384"]).lower(),
            size=int(dl["size"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UpstreamContentError(
            f"snap {name}: the store's answer for {channel} ({arch}) lacks {exc}",
            remedy="the store answered something unexpected; check the store URL",
        ) from exc
    if got.name != name:
        raise UpstreamContentError(f"snap {name}: the store answered for another snap ({got.name})")
    if not _HEX96.fullmatch(got.sha3_384) or got.size < 0 or not re.fullmatch(r"[A-Za-z0-9]{32}", got.snap_id):
        raise UpstreamContentError(
            f"snap {name}: the store's answer for {channel} ({arch}) has a malformed digest, size or snap id"
        )
    return got
