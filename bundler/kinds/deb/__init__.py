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

Loose entries, one per local .deb file of a section with ``debs``/``debs_dir`` (no
upstream index; :mod:`bundler.kinds.deb.loose`):
    kind "deb", name "<archive>/<suite>/<package>", version and arch from the deb's control
    file (``dpkg-deb -f``), metadata {"role": "loose", "archive", "suite", "component",
    "package", "source", "section", "priority" ("" when the control file has none),
    "filename"}
    files: "<archive>/<filename>", filename = the pool path reprepro gives it,
    "pool/<component>/<prefix>/<source>/<package>_<version without epoch>_<arch>.deb",
    with the file's own SHA256 and size. ``suite`` is the enclave distribution (codename)
    and ``component`` the component they go into.

``<archive>`` is the ``name`` of the carry-spec section (``ubuntu``, ``ubuntu-ports``...);
every file of an entry lies under ``<archive>/`` (index files under
``<archive>/dists/<suite>/`` or ``<archive>/keyring.gpg``, debs under ``<archive>/pool/``),
and the target refuses anything else.

Enclave side (:mod:`bundler.kinds.deb.target`): index and package entries go in with one
``reprepro update`` (reprepro re-checks the upstream signature and every checksum); loose
entries with exactly one ``reprepro -C <component> includedeb <codename> <files...>`` per
(distribution, component); then one ``export``, a check that every carried package is
listed at its version, and on any failure a rollback to the repository as it was.
Full description: docs/FORMAT.md section 13.2 (deb).
"""

from collections.abc import Mapping

from bundler.kinds.base import Kind, TargetContext, connected_side, enclave_side


def _init(ctx: TargetContext) -> Mapping[str, str]:
    from bundler.openpgp.enclave_key import ensure_enclave_key  # enclave side only

    key = ensure_enclave_key(ctx.enclave)
    return {
        "enclave signing key": key.fingerprint,
        "enclave public key (apt Signed-By, MAAS keyring_filename=)": str(key.binary),
        "enclave public key (armored, MAAS key=)": str(key.armored),
    }


KIND = Kind(
    name="deb",
    check_section=connected_side("bundler.kinds.deb.source", "check_section"),
    declare=connected_side("bundler.kinds.deb.source", "declare"),
    target=enclave_side("bundler.kinds.deb.target", "DebTarget"),
    summary="Debian packages from signed APT archives into a reprepro repository under <enclave>/deb/",
    init=_init,
)
