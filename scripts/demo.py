#!/usr/bin/env python3
"""The embedded default, end to end and offline (run it through ./scripts/demo).

1. Generate small upstreams and serve them over HTTP on 127.0.0.1: plain files (deterministic
   content, so manifests/demo.toml can pin sha256s) and a signed APT archive (real .debs,
   clearsigned InRelease by a throwaway key; the generator the tests use, tests/fakes/).
2. Create a throwaway bundle signing key; its public key goes into the enclave's trusted keys.
3. ``bundle export manifests/demo.toml`` onto several volumes, ``bundle verify``, ``bundle inspect``.
4. ``bundle import`` one volume per run into a fresh enclave, then show what arrived, and
   let a real apt-get that trusts only the enclave key fetch ``hello`` from the enclave's
   reprepro repository.
Everything lives under .demo/ (removed at the start of each run).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from contextlib import ExitStack
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
sys.path.insert(0, str(ROOT))

from tests.fakes.apt_archive import build_archive, serve_archive  # noqa: E402  (the tests' generators)
from tests.fakes.apt_client import IsolatedApt  # noqa: E402
from tests.fakes.gpg import GpgHome  # noqa: E402
from tests.fakes.http_server import serve_directory  # noqa: E402
from tests.fakes.maas_reader import MaasReader, Selection  # noqa: E402
from tests.fakes.simplestreams import generate_stream  # noqa: E402
from tests.fakes.snap_store import demo_store, serve_snap_store  # noqa: E402


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
    generate_stream(upstream)  # a signed MAAS image stream; keyring in .demo/upstream-keyring.gpg
    stack = ExitStack()
    apt_gpg = stack.enter_context(GpgHome())
    apt_fpr = apt_gpg.generate("Demo Archive Signing Key <archive@demo.invalid>")
    archive = build_archive(WORK / "apt-archive", apt_gpg, apt_fpr)
    apt_srv = stack.enter_context(serve_archive(archive))
    os.environ.update(
        BUNDLER_DEMO_APT_URL=apt_srv.base_url,
        BUNDLER_DEMO_APT_KEYRING=str(archive.keyring),
        BUNDLER_DEMO_APT_FINGERPRINT=apt_fpr,
    )
    snap_srv = stack.enter_context(serve_snap_store(demo_store(WORK / "snap-store")))
    os.environ["BUNDLER_DEMO_SNAP_STORE"] = snap_srv.url
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
        stack.close()
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
    debs = show_apt_fetch(WORK / "enclave")
    snaps = show_snap_install(WORK / "enclave")
    images = show_image_mirror(WORK / "enclave")
    print(
        f"\ndemo OK: exported, carried on {len(list((WORK / 'media').iterdir()))} volumes, verified and "
        f"imported; {len(expected)} files arrived byte for byte, apt-get fetched {debs} package(s) "
        f"from the enclave repository, a MAAS-like reader selects {images} boot image product(s) from the "
        f"enclave mirror, and the offline snap repository installs {snaps} snap(s)"
    )


def show_image_mirror(enclave: Path) -> int:
    """Read the enclave's image mirror over HTTP the way MAAS does (tests/fakes/maas_reader.py):
    gpgv on every .sjson with the mirror's keyring, index -> products -> items, every item's
    sha256 and size, then the products a boot-source selection of noble/amd64 syncs."""
    prefix = "ephemeral-v3/stable"
    mirror = enclave / "maas-images"
    keyring = mirror / prefix / "keyring.gpg"
    with serve_directory(mirror) as srv:
        url = srv.url(prefix) + "/"
        print(f"\n$ (MAAS-like reader) boot source {url} keyring_filename={keyring.relative_to(ROOT)}")
        reader = MaasReader(url, keyring)
        view = reader.read()
        chosen = reader.sync([Selection("ubuntu", "noble", ["amd64"])])
    for product, versions in sorted(view.versions().items()):
        print(f"  {product}: {', '.join(versions)}{'  <- selected' if product in chosen else ''}")
    if not chosen:
        sys.exit("demo: the MAAS-like reader selected nothing from the enclave mirror")
    return len(chosen)


def show_snap_install(enclave: Path) -> int:
    """What the offline snap repository's install.sh would run on a machine without the store
    (SNAP=echo prints the snap commands instead of running them)."""
    repo = enclave / "snap" / "repo"
    print(f"\n$ SNAP=echo {repo.relative_to(ROOT)}/install.sh --arch amd64")
    out = subprocess.run(
        [str(repo / "install.sh"), "--arch", "amd64"],
        env=dict(os.environ, SNAP="echo"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print("".join(f"  {line}\n" for line in out.splitlines()), end="")
    installs = [line for line in out.splitlines() if " install " in f" {line} "]
    if not any("maas" in line for line in installs):
        sys.exit("demo: the offline snap repository does not install maas")
    return len(installs)


def show_apt_fetch(enclave: Path) -> int:
    """A real apt-get, isolated from the host and trusting only the enclave key, fetches from
    the enclave's reprepro repository (served here on 127.0.0.1, as a site would over HTTP)."""
    key = enclave / "signing" / "enclave-key.gpg"
    with serve_directory(enclave / "deb" / "repo") as repo:
        apt = IsolatedApt(
            WORK / "apt-client",
            [(repo.base_url, ["noble", "noble-updates"], ["main", "universe"], key)],
            architectures=["amd64"],
        )
        print(
            f"\n$ apt-get update && apt-get install --download-only hello"
            f"   # from {repo.base_url}, signed-by {key.name} only"
        )
        apt.update()
        got = apt.download(["hello"])
    for p in got:
        print(f"  fetched {p.name}  {p.stat().st_size} bytes")
    if not any(p.name.startswith("hello_") for p in got):
        sys.exit("demo: apt-get did not fetch hello from the enclave repository")
    return len(got)


if __name__ == "__main__":
    main()
