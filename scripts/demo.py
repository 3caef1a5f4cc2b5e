#!/usr/bin/env python3
"""The embedded default, end to end and offline (run it through ./scripts/demo).

1. Generate a small upstream (deterministic content, so manifests/demo.toml can pin sha256s)
   and serve it over HTTP on 127.0.0.1.
2. Create a throwaway signing key; its public key goes into the demo enclave's trusted keys.
3. ``bundle export manifests/demo.toml`` onto two volumes, ``bundle verify``, ``bundle inspect``.
4. ``bundle import`` one volume per run into a fresh enclave, then show what arrived.
Everything lives under .demo/ (removed at the start of each run).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"


def stream(seed: str, size: int, text: bool) -> bytes:
    """Deterministic bytes: compressible text or incompressible hash output."""
    out = bytearray()
    i = 0
    while len(out) < size:
        h = hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()
        out += f"{seed} line {i}: {h[:24]}\n".encode() if text else bytes.fromhex(h)
        i += 1
    return bytes(out[:size])


UPSTREAM_FILES = {
    "isos/rocky-mini.iso": stream("iso", 3 * 1024 * 1024, text=False),
    "yum/repodata/repomd.xml": stream("repomd", 40_000, text=True),
}
SITE_TOOLS = {
    "README.txt": b"Tools carried into the enclave by the bundler demo.\n",
    "bin/collect-logs.sh": b"#!/bin/sh\ntar czf /tmp/logs.tgz /var/log/maas\n",
}


def bundle(*args: object) -> None:
    cmd = [sys.executable, "-m", "bundler", *map(str, args)]
    print(f"\n$ bundle {' '.join(map(str, args))}".replace(str(ROOT) + "/", ""), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc not in (0, 3):
        sys.exit(f"demo: 'bundle {args[0]}' failed with exit code {rc}")


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    upstream, tools = WORK / "upstream", WORK / "site-tools"
    for base, files in ((upstream, UPSTREAM_FILES), (tools, SITE_TOOLS)):
        for rel, data in files.items():
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).write_bytes(data)
    handler = partial(SimpleHTTPRequestHandler, directory=str(upstream))
    SimpleHTTPRequestHandler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    os.environ["BUNDLER_DEMO_UPSTREAM"] = f"http://127.0.0.1:{server.server_address[1]}"
    os.environ["BUNDLER_DEMO_DIR"] = str(WORK)
    os.environ.update(
        BUNDLER_KEY=str(WORK / "exporter-private" / "demo.key"),
        BUNDLER_KEYS=str(WORK / "enclave-trusted-keys"),
        BUNDLER_STATE=str(WORK / "exporter-state"),
        BUNDLER_CACHE=str(WORK / "cache"),
    )
    try:
        print(f"demo upstream: {os.environ['BUNDLER_DEMO_UPSTREAM']} (127.0.0.1 only); work dir: .demo/")
        bundle(
            "keys",
            "generate",
            "demo",
            "--private-dir",
            WORK / "exporter-private",
            "--public-dir",
            WORK / "enclave-trusted-keys",
        )
        out = WORK / "media"
        bundle("export", ROOT / "manifests" / "demo.toml", "--out", out, "--volume-size", "2M", "--chunk-size", "1M")
        bundle("verify", out)
        bundle("inspect", out / "vol-001")
        enclave = WORK / "enclave"
        for vol in sorted(out.iterdir()):
            bundle("import", vol, "--enclave", enclave)
        bundle("import", out, "--enclave", enclave)
    finally:
        server.shutdown()
        server.server_close()
    print("\nwhat arrived in the enclave (.demo/enclave/files):")
    files_root = WORK / "enclave" / "files"
    for p in sorted(files_root.rglob("*")):
        if p.is_file():
            print(
                f"  {p.relative_to(files_root)}  {p.stat().st_size} bytes  "
                f"sha256 {hashlib.sha256(p.read_bytes()).hexdigest()[:16]}"
            )
    expected = {**UPSTREAM_FILES, **{f"site-tools/{k}": v for k, v in SITE_TOOLS.items()}}
    for rel, data in expected.items():
        if (files_root / rel).read_bytes() != data:
            sys.exit(f"demo: {rel} did not arrive intact")
    print(f"\ndemo OK: {len(expected)} files exported, carried on 2 volumes, verified and imported byte for byte")


if __name__ == "__main__":
    main()
