"""Opt-in: the whole deb loop against the real Debian/Ubuntu archive this machine's apt uses.

Runs only with ``pytest -m network_archive`` (or BUNDLER_NETWORK_TESTS=1). The archive, its
suites and its keyring come from apt's own configuration (``apt-get indextargets`` and the
sources entry it names), never from a host written here: export ``hello`` and its closure
(native architecture, ``main``) through the real CLI, verify, import into reprepro, then a
real apt that trusts only the enclave key updates with --error-on=any and downloads them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.apt_client import IsolatedApt
from tests.fakes.http_server import serve_directory
from tests.helpers import Workspace

pytestmark = pytest.mark.network_archive

DEFAULT_KEYRINGS = ("/usr/share/keyrings/debian-archive-keyring.gpg", "/usr/share/keyrings/ubuntu-archive-keyring.gpg")
POCKETS = ("", "-updates", "-security", "-backports")


@dataclass(frozen=True)
class HostArchive:
    url: str
    suites: tuple[str, ...]
    arch: str
    keyring: Path


def _enabled(config: pytest.Config) -> bool:
    expr = str(config.getoption("markexpr") or "")
    return os.environ.get("BUNDLER_NETWORK_TESTS") == "1" or (
        "network_archive" in expr and "not network_archive" not in expr
    )


def _signed_by(entry: str, work: Path) -> Path | None:
    """The Signed-By keyring of apt's sources entry ``<file>:<n>`` (deb822 stanza n, or line n of a
    one-line file); an inline armored key is written to ``work``."""
    path, _, n = entry.rpartition(":")
    if not path or not n.isdigit() or not Path(path).is_file():
        return None
    text = Path(path).read_text()
    if path.endswith(".sources"):
        stanzas = [s for s in re.split(r"\n\s*\n", text) if re.search(r"^[A-Za-z-]+:", s, re.M)]
        if int(n) > len(stanzas):
            return None
        m = re.search(r"^Signed-By:[ \t]*(.*(?:\n[ \t]+.*)*)", stanzas[int(n) - 1], re.M | re.I)
        if m is None:
            return None
        value = m.group(1).strip()
        if value.startswith("-----BEGIN"):
            key = work / "inline.asc"
            key.write_text("\n".join(line.strip() if line.strip() != "." else "" for line in value.splitlines()))
            return key
        return Path(value.split()[0]) if value.startswith("/") else None
    line = text.splitlines()[int(n) - 1] if int(n) <= len(text.splitlines()) else ""
    m = re.search(r"signed-by=([^\s\]]+)", line)
    return Path(m.group(1)) if m else None


def host_archive(work: Path) -> HostArchive:
    """The first http(s) archive apt's configuration lists for the native architecture's ``main``."""
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    fmt = "$(REPO_URI)\t$(RELEASE)\t$(COMPONENT)\t$(ARCHITECTURE)\t$(SOURCESENTRY)"
    proc = subprocess.run(
        ["apt-get", "indextargets", "--format", fmt, "Created-By: Packages"], capture_output=True, text=True
    )
    rows = [line.split("\t") for line in proc.stdout.splitlines() if line.count("\t") == 4]
    rows = [r for r in rows if r[0].startswith(("http://", "https://")) and r[2] == "main" and r[3] == arch]
    if not rows:
        pytest.skip(f"apt's configuration lists no http(s) archive with main/{arch} (apt-get indextargets)")
    url, entry = rows[0][0], rows[0][4]
    release = rows[0][1].split("-")[0]
    suites = tuple(s for s in dict.fromkeys(r[1] for r in rows if r[0] == url) if s in {release + p for p in POCKETS})
    keyring = _signed_by(entry, work) or next((Path(k) for k in DEFAULT_KEYRINGS if Path(k).is_file()), None)
    if keyring is None or not keyring.is_file():
        pytest.skip(f"no keyring for {url} (no Signed-By in {entry}, no distribution archive keyring)")
    return HostArchive(url.rstrip("/"), suites, arch, keyring)


def test_hello_and_its_closure_from_the_hosts_archive(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if not _enabled(request.config):
        pytest.skip("opt-in: run with -m network_archive or BUNDLER_NETWORK_TESTS=1 (reaches the real archive)")
    for tool in ("apt-get", "gpgv", "reprepro", "dpkg"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    host = host_archive(tmp_path)
    ws = Workspace(tmp_path / "ws")
    spec = ws.write_spec(
        "[[deb]]\n"
        'name = "host"\n'
        f'url = "{host.url}"\n'
        f"suites = {json.dumps(list(host.suites))}\n"
        'components = ["main"]\n'
        f'architectures = ["{host.arch}"]\n'
        f'keyring = "{host.keyring}"\n'
        'packages = ["hello"]\n'
    )
    info = ws.export_json(spec, tmp_path / "b1")
    ws.verify(tmp_path / "b1")
    manifest = json.loads(next((tmp_path / "b1").glob("vol-*/manifest.json")).read_bytes())
    carried = {
        e["metadata"]["package"]: (e["version"], e["files"][0]["sha256"])
        for e in manifest["entries"]
        if e["metadata"]["role"] == "package"
    }
    assert "hello" in carried and len(carried) >= 2, carried  # hello needs at least libc6
    r = ws.import_(tmp_path / "b1")
    assert "hello" in r.stdout

    release = host.suites[0].split("-")[0]
    with serve_directory(ws.enclave / "deb" / "repo") as repo_srv:
        client = IsolatedApt(
            tmp_path / "client",
            [
                (
                    repo_srv.base_url,
                    [release + p for p in POCKETS],
                    ["main", "restricted", "universe", "multiverse"],
                    ws.enclave / "signing" / "enclave-key.gpg",
                )
            ],
            architectures=[host.arch],
            options={"Acquire::http::Proxy": "DIRECT"},
        )
        client.update()  # --error-on=any, trusting only the enclave key
        plan = client.simulate_install(["hello"])
        assert plan["hello"] == carried["hello"][0]
        debs = client.download(["hello"])
    got = {p.name.split("_")[0]: hashlib.sha256(p.read_bytes()).hexdigest() for p in debs}
    assert set(got) == set(plan)
    assert all(got[name] == carried[name][1] for name in got)  # the very bytes upstream signed for
    print(
        f"network_archive: {host.url} {list(host.suites)} {host.arch}: carried {sorted(carried)}; {info['files']} files"
    )
