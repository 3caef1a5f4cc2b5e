"""The ``deb`` kind: Debian packages from signed APT archives into a reprepro repository.

Contract between the source (connected side) and the target (enclave), i.e. what the
manifest's ``deb`` entries look like (docs/FORMAT.md, "Kind: deb"):

Index entries, one per (archive, suite):
    kind "deb", name "<archive>/<suite>", version = first 16 hex of sha256(InRelease),
    arch "index", metadata {"role": "index", "archive", "suite", "codename", "origin",
    "label", "url", "components": [...], "architectures": [...],
    "fingerprints": [primary key fingerprints that signed it, upper-case hex]}
    files: "<archive>/dists/<suite>/InRelease" (or Release + Release.gpg), every Packages
    index carried ("<archive>/dists/<suite>/<comp>/binary-<arch>/Packages.xz" or .gz, at its
    canonical path, not the by-hash path), and "<archive>/keyring.gpg" (the binary keyring
    the exporter verified with).

Package entries, one per binary package selected from a suite:
    kind "deb", name "<archive>/<suite>/<package>", version = the Debian version,
    arch = the package's Architecture (amd64, arm64, all, ...),
    metadata {"role": "package", "archive", "suite", "component", "package", "filename"}
    files: "<archive>/<Filename from the index>" (pool/<comp>/<prefix>/<source>/<file>.deb)
    with the index's SHA256 and Size.

``<archive>`` is the ``name`` of the carry-spec section (``ubuntu``, ``ubuntu-ports``...).
"""

from collections.abc import Mapping

from bundler.kinds.base import Kind, TargetContext
from bundler.kinds.deb.source import check_section, declare
from bundler.kinds.deb.target import DebTarget
from bundler.openpgp.enclave_key import ensure_enclave_key


def _init(ctx: TargetContext) -> Mapping[str, str]:
    key = ensure_enclave_key(ctx.enclave)
    return {
        "enclave signing key": key.fingerprint,
        "enclave public key (apt Signed-By, MAAS keyring_filename=)": str(key.binary),
        "enclave public key (armored, MAAS key=)": str(key.armored),
    }


KIND = Kind(
    name="deb",
    check_section=check_section,
    declare=declare,
    target=DebTarget,
    summary="Debian packages from signed APT archives into a reprepro repository under <enclave>/deb/",
    init=_init,
)
