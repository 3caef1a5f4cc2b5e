"""Shared pieces of the deb functional tests: a signed upstream on 127.0.0.1, carry-spec
sections, and an apt client that trusts only the enclave key."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.fakes.apt_archive import Archive, build_archive, serve_archive
from tests.fakes.apt_client import IsolatedApt
from tests.fakes.gpg import GpgHome
from tests.fakes.http_server import FakeServer
from tests.helpers import Workspace

SUITES = ("noble", "noble-updates")
MAAS_SUITES = ("noble", "noble-updates", "noble-security", "noble-backports")
MAAS_COMPONENTS = ("main", "restricted", "universe", "multiverse")


@contextmanager
def upstream_archive(root: Path) -> Iterator[tuple[Archive, FakeServer]]:
    """The default test archive (tests/fakes/apt_archive.py), signed by a throwaway key, served."""
    with GpgHome() as g:
        fpr = g.generate("Test Archive Signing Key <archive@example.invalid>")
        archive = build_archive(root, g, fpr)
        with serve_archive(archive) as srv:
            yield archive, srv


def archive_section(
    archive: Archive, srv: FakeServer, packages: Sequence[str], suites: Sequence[str] = SUITES, name: str = "ubuntu"
) -> str:
    return (
        "[[deb]]\n"
        f'name = "{name}"\n'
        f'url = "{srv.base_url}"\n'
        f"suites = {json.dumps(list(suites))}\n"
        'components = ["main", "universe"]\n'
        'architectures = ["amd64", "arm64"]\n'
        f'keyring = "{archive.keyring}"\n'
        f'fingerprints = ["{archive.fingerprint}"]\n'
        f"packages = {json.dumps(list(packages))}\n"
    )


def loose_section(
    name: str, suite: str, *, debs: Sequence[Path] = (), debs_dir: Path | None = None, component: str | None = None
) -> str:
    text = f'[[deb]]\nname = "{name}"\nsuite = "{suite}"\n'
    if component is not None:
        text += f'component = "{component}"\n'
    if debs:
        text += f"debs = {json.dumps([str(d) for d in debs])}\n"
    if debs_dir is not None:
        text += f'debs_dir = "{debs_dir}"\n'
    return text


def enclave_client(
    ws: Workspace, url: str, root: Path, architectures: Sequence[str] = ("amd64", "arm64")
) -> IsolatedApt:
    """An isolated apt that trusts ONLY the enclave key, with every pocket and component MAAS writes."""
    return IsolatedApt(
        root,
        [(url, list(MAAS_SUITES), list(MAAS_COMPONENTS), ws.enclave / "signing" / "enclave-key.gpg")],
        architectures=list(architectures),
    )
