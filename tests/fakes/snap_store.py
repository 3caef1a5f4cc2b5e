"""A Snap Store on 127.0.0.1 for tests and the demo: real .snap files, real assertion text.

What it implements (see /work/shared/reference/snaps-and-snap-store-proxy.md):

* ``POST /v2/snaps/refresh`` with ``download`` actions. Required headers are enforced:
  ``User-Agent``, ``Snap-Device-Series: 16`` and ``Snap-Device-Architecture``; a missing or
  wrong one is answered 400 with ``{"error-list": [...]}``. Per-action errors are
  ``name-not-found`` and ``revision-not-found`` (with ``extra.releases``), as the store does.
* ``GET /api/v1/snaps/download/<snap-id>_<revision>.snap`` with ``Range: bytes=N-`` (206).
* ``GET /v2/assertions/<type>/<primary key...>``; ``Accept: application/x.ubuntu.assertion``
  is required (406 otherwise); unknown keys are 404 ``{"error-list": [{"code": "not-found"}]}``.

Snaps are built at test time with ``mksquashfs`` from a directory holding ``meta/snap.yaml``
(name, version, type, base, architectures, content plugs with a default-provider).
Assertions are signed with throwaway RSA keys made here: a root account-key (give its
``.assert`` file to the exporter as ``root_keys``) signs a store key, which signs the
snap-revision, snap-declaration and account assertions. The OpenPGP encoding is written
here independently of bundler's verifier (which is also checked against Canonical's real
root assertions in the unit tests).

    store = SnapStore(tmp_path / "store")
    store.add("maas", "3.6.1", channels={"3.6/stable": ["amd64", "arm64"]}, base="core24", providers=["gtk-common"])
    with serve_snap_store(store) as srv:
        ... srv.url ...
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["SnapStore", "StoreServer", "serve_snap_store"]

ROOT_ACCOUNT = "testrootorg"
_FIXED = 1451606400


def _wrap(data: bytes) -> bytes:
    text = base64.b64encode(b"\x01" + data)
    return b"\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def _mpi(n: int) -> bytes:
    return struct.pack(">H", n.bit_length()) + n.to_bytes((n.bit_length() + 7) // 8, "big")


def _pkt(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 192:
        head = bytes([0xC0 | tag, n])
    elif n < 8384:
        head = bytes([0xC0 | tag, ((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        head = bytes([0xC0 | tag, 255]) + struct.pack(">I", n)
    return head + body


def b64url(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Key:
    """A throwaway RSA signing key in snapd's encoding."""

    def __init__(self, bits: int = 2048) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pub = self.private.public_key().public_numbers()
        self.packet = _pkt(6, bytes([4]) + struct.pack(">I", _FIXED) + bytes([1]) + _mpi(pub.n) + _mpi(pub.e))
        self.id = b64url(hashlib.sha3_384(b"\x01" + self.packet).digest())
        self.body = _wrap(self.packet)

    def sign(self, content: bytes) -> bytes:
        hashed = bytes([5, 2]) + struct.pack(">I", int(time.time()))
        head = bytes([4, 0, 1, 10]) + struct.pack(">H", len(hashed)) + hashed
        data = content + head + b"\x04\xff" + struct.pack(">I", len(head))
        sig = self.private.sign(data, padding.PKCS1v15(), hashes.SHA512())
        left16 = hashlib.sha512(data).digest()[:2]
        packet = _pkt(2, head + struct.pack(">H", 0) + left16 + _mpi(int.from_bytes(sig, "big")))
        return _wrap(packet)


def assertion(headers: list[tuple[str, str]], key: Key, body: bytes = b"") -> bytes:
    """Assemble and sign one assertion in the text format (headers, body, signature)."""
    lines = [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"body-length: {len(body)}")
    lines.append(f"sign-key-sha3-384: {key.id}")
    content = "\n".join(lines).encode() + (b"\n\n" + body if body else b"")
    return content + b"\n\n" + key.sign(content)


def _now() -> str:
    return "2024-01-01T00:00:00Z"


@dataclass
class Revision:
    name: str
    arch: str
    revision: int
    path: Path
    sha3_384: str
    size: int


@dataclass
class SnapSpec:
    name: str
    snap_id: str
    version: str
    type: str
    base: str | None
    confinement: str
    publisher: str
    providers: list[str]
    channels: dict[str, dict[str, Revision]] = field(default_factory=dict)
    """channel (track/risk) -> arch -> revision."""

    def snap_yaml(self, arch: str) -> str:
        lines = [f"name: {self.name}", f"version: '{self.version}'", f"type: {self.type}"]
        if self.base:
            lines.append(f"base: {self.base}")
        lines += [f"confinement: {self.confinement}", "architectures:", f"  - {arch}"]
        if self.providers:
            lines.append("plugs:")
            for p in self.providers:
                lines += [
                    f"  {p}-content:",
                    "    interface: content",
                    f"    target: $SNAP/data-dir/{p}",
                    f"    default-provider: {p}:{p}-slot",
                ]
        return "\n".join(lines) + "\n"


class SnapStore:
    """Snaps, revisions and signed assertions; served by :func:`serve_snap_store`."""

    def __init__(self, root: Path, bits: int = 2048) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.root_key = Key(bits)
        self.store_key = Key(bits)
        self.snaps: dict[str, SnapSpec] = {}
        self.next_revision = 10
        self.assertions: dict[tuple[str, ...], bytes] = {}
        self.blob_override: dict[str, bytes] = {}
        """download file name -> bytes served instead of the real file (a tampered CDN)."""
        self.size_override: dict[str, int] = {}
        """snap name -> size the refresh answer claims."""
        root_key = assertion(
            [
                ("type", "account-key"),
                ("authority-id", ROOT_ACCOUNT),
                ("public-key-sha3-384", self.root_key.id),
                ("account-id", ROOT_ACCOUNT),
                ("name", "root"),
                ("since", "2016-01-01T00:00:00Z"),
            ],
            self.root_key,
            self.root_key.body,
        )
        self.root_assert = self.root / "root.assert"
        self.root_assert.write_bytes(root_key + b"\n")
        self.assertions[("account-key", self.store_key.id)] = assertion(
            [
                ("type", "account-key"),
                ("authority-id", ROOT_ACCOUNT),
                ("public-key-sha3-384", self.store_key.id),
                ("account-id", ROOT_ACCOUNT),
                ("name", "store"),
                ("since", "2016-01-01T00:00:00Z"),
            ],
            self.root_key,
            self.store_key.body,
        )
        self._account(ROOT_ACCOUNT)

    def _account(self, account_id: str) -> None:
        self.assertions[("account", account_id)] = assertion(
            [
                ("type", "account"),
                ("authority-id", ROOT_ACCOUNT),
                ("account-id", account_id),
                ("display-name", account_id.title()),
                ("timestamp", _now()),
                ("username", account_id),
                ("validation", "verified"),
            ],
            self.store_key,
        )

    def add(
        self,
        name: str,
        version: str,
        *,
        channels: dict[str, list[str]],
        type: str = "app",
        base: str | None = None,
        confinement: str = "strict",
        providers: list[str] | None = None,
        publisher: str = "maas-publisher",
    ) -> SnapSpec:
        """Publish ``name`` (building one .snap per channel and architecture)."""
        snap_id = (hashlib.sha256(name.encode()).hexdigest() + "A" * 32)[:32].replace("0", "Z")
        spec = self.snaps.get(name) or SnapSpec(
            name, snap_id, version, type, base, confinement, publisher, list(providers or [])
        )
        spec.version = version
        self.snaps[name] = spec
        if ("account", publisher) not in self.assertions:
            self._account(publisher)
        self.assertions[("snap-declaration", "16", snap_id)] = assertion(
            [
                ("type", "snap-declaration"),
                ("authority-id", ROOT_ACCOUNT),
                ("series", "16"),
                ("snap-id", snap_id),
                ("snap-name", name),
                ("publisher-id", publisher),
                ("timestamp", _now()),
            ],
            self.store_key,
        )
        for channel, arches in channels.items():
            for arch in arches:
                spec.channels.setdefault(channel, {})[arch] = self._build(spec, arch)
        return spec

    def _build(self, spec: SnapSpec, arch: str) -> Revision:
        rev = self.next_revision
        self.next_revision += 1
        src = self.root / "src" / f"{spec.name}_{rev}"
        (src / "meta").mkdir(parents=True, exist_ok=True)
        (src / "meta" / "snap.yaml").write_text(spec.snap_yaml(arch))
        (src / "bin").mkdir(exist_ok=True)
        (src / "bin" / spec.name).write_text(f"#!/bin/sh\necho {spec.name} {spec.version} {arch} r{rev}\n")
        out = self.root / "blobs" / f"{spec.snap_id}_{rev}.snap"
        subprocess.run(
            [
                "mksquashfs",
                str(src),
                str(out),
                "-noappend",
                "-comp",
                "xz",
                "-all-root",
                "-no-xattrs",
                "-no-fragments",
                "-quiet",
            ],
            check=True,
            capture_output=True,
        )
        data = out.read_bytes()
        digest = hashlib.sha3_384(data).digest()
        self.assertions[("snap-revision", b64url(digest))] = assertion(
            [
                ("type", "snap-revision"),
                ("authority-id", ROOT_ACCOUNT),
                ("snap-sha3-384", b64url(digest)),
                ("developer-id", spec.publisher),
                ("snap-id", spec.snap_id),
                ("snap-revision", str(rev)),
                ("snap-size", str(len(data))),
                ("timestamp", _now()),
            ],
            self.store_key,
        )
        return Revision(spec.name, arch, rev, out, digest.hex(), len(data))

    def revision(self, name: str, channel: str, arch: str) -> Revision:
        return self.snaps[name].channels[channel][arch]

    def forge_revision(self, name: str, channel: str, arch: str, **changes: str) -> None:
        """Serve a correctly signed snap-revision for this file whose headers say something else
        (``snap_id``, ``snap_revision``, ``snap_size``, ``snap_sha3_384`` keyword arguments)."""
        r = self.revision(name, channel, arch)
        spec = self.snaps[name]
        fields = {
            "snap-sha3-384": b64url(bytes.fromhex(r.sha3_384)),
            "developer-id": spec.publisher,
            "snap-id": spec.snap_id,
            "snap-revision": str(r.revision),
            "snap-size": str(r.size),
        }
        fields.update({k.replace("_", "-"): v for k, v in changes.items()})
        self.assertions[("snap-revision", b64url(bytes.fromhex(r.sha3_384)))] = assertion(
            [("type", "snap-revision"), ("authority-id", ROOT_ACCOUNT), *fields.items(), ("timestamp", _now())],
            self.store_key,
        )

    # -- the API --------------------------------------------------------------------------

    def refresh(self, body: dict[str, Any], arch: str, base_url: str) -> dict[str, Any]:
        results = []
        for action in body.get("actions", []):
            key = action.get("instance-key")
            name = action.get("name")
            spec = self.snaps.get(name or "")
            if action.get("action") not in ("download", "install") or spec is None:
                results.append(
                    {
                        "result": "error",
                        "instance-key": key,
                        "name": name,
                        "error": {
                            "code": "name-not-found",
                            "message": f"No snap named '{name}' found in series '16'.",
                        },
                    }
                )
                continue
            channel = _norm(action.get("channel") or "latest/stable")
            rev = spec.channels.get(channel, {}).get(arch)
            if rev is None:
                releases = [{"architecture": a, "channel": c} for c, per in spec.channels.items() for a in per]
                results.append(
                    {
                        "result": "error",
                        "instance-key": key,
                        "name": name,
                        "snap-id": spec.snap_id,
                        "error": {
                            "code": "revision-not-found",
                            "message": "No revision was found in the Store.",
                            "extra": {"releases": releases},
                        },
                    }
                )
                continue
            results.append(
                {
                    "result": "download",
                    "instance-key": key,
                    "name": name,
                    "snap-id": spec.snap_id,
                    "effective-channel": channel,
                    "snap": {
                        "name": name,
                        "snap-id": spec.snap_id,
                        "revision": rev.revision,
                        "version": spec.version,
                        "type": spec.type,
                        "base": spec.base,
                        "confinement": spec.confinement,
                        "snap-yaml": spec.snap_yaml(arch),
                        "download": {
                            "url": f"{base_url}/api/v1/snaps/download/{spec.snap_id}_{rev.revision}.snap",
                            "sha3-384": rev.sha3_384,
                            "size": self.size_override.get(name, rev.size),
                            "deltas": [],
                        },
                    },
                }
            )
        return {"results": results, "error-list": []}


def _norm(channel: str) -> str:
    parts = channel.split("/")
    if len(parts) == 1:
        return f"latest/{channel}" if channel in ("stable", "candidate", "beta", "edge") else f"{channel}/stable"
    return channel


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: SnapStore) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = store
        self.requests: list[Request] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: with Nagle's algorithm and the client's
        # delayed ACK, every keep-alive response after the first waited 40 ms (measured).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _log(self) -> None:
        with self.server.lock:
            self.server.requests.append(Request(self.command, self.path, {k: v for k, v in self.headers.items()}))

    def _send(
        self, status: int, body: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, json.dumps({"error-list": [{"code": code, "message": message}]}).encode())

    def _common_headers_ok(self) -> bool:
        if not self.headers.get("User-Agent"):
            self._error(400, "missing-header", "User-Agent header is required")
            return False
        if self.headers.get("Snap-Device-Series") != "16":
            self._error(400, "invalid-header", "Snap-Device-Series must be 16")
            return False
        return True

    def do_POST(self) -> None:
        self._log()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v2/snaps/refresh":
            self._error(404, "not-found", "not found")
            return
        if not self._common_headers_ok():
            return
        arch = self.headers.get("Snap-Device-Architecture")
        if not arch:
            self._error(400, "missing-header", "Snap-Device-Architecture header is required")
            return
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            self._error(400, "invalid-header", "Content-Type must be application/json")
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._error(400, "invalid-request", "body is not JSON")
            return
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._send(200, json.dumps(self.server.store.refresh(body, arch, base)).encode())

    def do_GET(self) -> None:
        self._log()
        store = self.server.store
        path = self.path.split("?", 1)[0]
        m = re.fullmatch(r"/api/v1/snaps/download/([A-Za-z0-9]+_\d+\.snap)", path)
        if m:
            self._download(m[1])
            return
        if path.startswith("/v2/assertions/"):
            if not self._common_headers_ok():
                return
            if self.headers.get("Accept") != "application/x.ubuntu.assertion":
                self._error(406, "invalid-accept", "Accept must be application/x.ubuntu.assertion")
                return
            key = tuple(path[len("/v2/assertions/") :].split("/"))
            data = store.assertions.get(key)
            if data is None:
                self._error(404, "not-found", f"{key[0]} assertion not found")
                return
            self._send(200, data + b"\n", "application/x.ubuntu.assertion")
            return
        self._error(404, "not-found", "not found")

    def _download(self, name: str) -> None:
        store = self.server.store
        f = store.root / "blobs" / name
        if not f.is_file():
            self._error(404, "not-found", "no such snap file")
            return
        data = store.blob_override.get(name) or f.read_bytes()
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and int(m[1]) < len(data):
            start = int(m[1])
            self._send(
                206,
                data[start:],
                "application/octet-stream",
                {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
            )
        elif m:
            self._send(416, b"", "application/octet-stream", {"Content-Range": f"bytes */{len(data)}"})
        else:
            self._send(200, data, "application/octet-stream")


class StoreServer:
    def __init__(self, server: _Server) -> None:
        self._server = server
        self.store = server.store
        self.url = f"http://127.0.0.1:{server.server_address[1]}"

    @property
    def requests(self) -> list[Request]:
        with self._server.lock:
            return list(self._server.requests)


@contextmanager
def serve_snap_store(store: SnapStore) -> Iterator[StoreServer]:
    server = _Server(store)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield StoreServer(server)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def demo_store(root: Path) -> SnapStore:
    """The store the demo and the end-to-end tests use: a MAAS region controller's snaps."""
    store = SnapStore(root)
    store.add("snapd", "2.66", channels={"latest/stable": ["amd64", "arm64"]}, type="snapd", publisher=ROOT_ACCOUNT)
    store.add("core24", "20240920", channels={"latest/stable": ["amd64", "arm64"]}, type="base", publisher=ROOT_ACCOUNT)
    store.add("core22", "20240823", channels={"latest/stable": ["amd64", "arm64"]}, type="base", publisher=ROOT_ACCOUNT)
    store.add("maas-content", "1.0", channels={"latest/stable": ["amd64", "arm64"]}, base="core24")
    store.add(
        "maas",
        "3.6.1",
        channels={"3.6/stable": ["amd64", "arm64"], "3.5/stable": ["amd64"]},
        base="core24",
        providers=["maas-content"],
    )
    store.add("lxd", "5.21.2", channels={"5.21/stable": ["amd64"]}, base="core22", publisher="canonical-lxd")
    return store


def store_admin_export(directory: Path, name: str, ts: str) -> Path:
    """A stand-in for a `store-admin export snaps` tarball (its real layout is undocumented;
    bundler carries it opaque): ``<name>-<ts>.tar.gz`` holding one small file."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = directory / f"{name}.snap"
    payload.write_bytes(f"{name} {ts}".encode())
    out = directory / f"{name}-{ts}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(payload, arcname=f"{name}/{name}.snap")
    payload.unlink()
    return out
