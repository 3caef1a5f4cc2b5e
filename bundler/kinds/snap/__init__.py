"""The ``snap`` kind: snaps from the Snap Store into an offline snap repository, and
``store-admin export snaps`` tarballs into an Enterprise Store (Snap Store Proxy).

Carry spec (store mode)::

    [[snap]]
    name = "maas"                    # or: snaps = [{ name = "maas", channel = "3.6/stable" }, ...]
    channel = "3.6/stable"           # default latest/stable; "stable" = latest/stable, "3.6" = 3.6/stable
    architectures = ["amd64"]        # default ["amd64"]
    store = "https://api.snapcraft.io"   # default; a brand store or another store API
    store_id = ""                    # Snap-Device-Store header for a brand store
    root_keys = []                   # .assert files with the account-key(s) to trust instead of
                                     # Canonical's root key (built in, as in snapd)
    dependencies = true              # snapd, bases and content default-providers come along

Carry spec (store-admin mode)::

    [[snap]]
    store_admin_exports = ["exports/"]   # <snap>-<YYYYMMDDTHHMMSS>.tar.gz files or directories of them

Contract between the source and the target (docs/FORMAT.md section 13.4):

Store snap entries, one per (snap, channel, architecture):
    kind "snap", name "<snap>/<track>/<risk>", version = the store revision (string),
    arch = the architecture, metadata {"role": "snap", "snap", "snap-id", "revision" (int),
    "channel", "type", "base", "confinement", "version", "sha3-384" (hex), "size",
    "default-providers": [...], "requested" (bool: named in the carry spec),
    "required-by": [...], "root-keys": [public-key-sha3-384 of the trusted root key(s)],
    "root-account-keys": [assertion text] only when the root is not Canonical's}
    files: "<arch>/<snap>_<revision>.snap" and "<arch>/<snap>_<revision>.assert" (the
    assertions ``snap ack`` needs, prerequisites first, as ``snap download`` writes them).

Store-admin entries, one per snap:
    kind "snap", name "store-admin/<snap>", version = the export's timestamp, arch "all",
    metadata {"role": "store-admin", "snap", "file"}, files: "store-admin/<file name>".
"""

from bundler.kinds.base import Kind, connected_side, enclave_side

KIND = Kind(
    name="snap",
    check_section=connected_side("bundler.kinds.snap.source", "check_section"),
    declare=connected_side("bundler.kinds.snap.source", "declare"),
    target=enclave_side("bundler.kinds.snap.target", "SnapTarget"),
    summary="snaps from the Snap Store into an offline snap repository, or store-admin exports into an "
    "Enterprise Store (Snap Store Proxy)",
)
