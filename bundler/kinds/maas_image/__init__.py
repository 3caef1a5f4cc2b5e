"""The ``maas_image`` kind: MAAS boot images from a signed simplestreams source into a local
mirror that MAAS uses as its boot source (docs/FORMAT.md section 13.3).

Carry spec section ``[[maas_image]]``::

    [[maas_image]]
    url = "http://images.maas.io/ephemeral-v3/stable"    # default; the stream root (holds streams/v1/)
    keyring = "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg"   # default; binary or armored
    fingerprints = []            # optional: accepted primary key fingerprints
    filters = ["os=ubuntu", "release~(jammy|noble)", "arch=amd64"]  # sstream-mirror syntax, ANDed
    keep = 1                     # versions kept per product (the newest), default 1
    bootloaders = true           # carry the bootloader products of the stream, default true
    bootloader_filters = []      # filters for the bootloader products only (default: all of them)
    path = "ephemeral-v3/stable" # where the stream lands under the mirror root; default: the URL's path

Contract between the source (connected side) and the target (enclave), i.e. what the
manifest's ``maas_image`` entries look like:

Stream entries, one per section:
    kind "maas_image", name "<path>", version = first 16 hex of sha256(index.sjson),
    arch "index", metadata {"role": "stream", "url", "path", "keep", "filters", "bootloaders",
    "bootloader_filters", "fingerprints": [primary fingerprints that signed the files],
    "products_files": [paths the signed index names]}
    files: "<path>/streams/v1/index.sjson" and every products file the signed index names
    ("<path>/streams/v1/<content_id>.sjson"), upstream bytes verbatim, and
    "<path>/upstream-keyring.gpg" (the binary keyring the exporter verified them with).

Image entries, one per selected (product, version):
    kind "maas_image", name "<path>/<product name>/<version name>", version = the version name,
    arch = the product's arch ("all" if it has none), metadata {"role": "image",
    "stream": "<path>", "content_id", "product", "version", "items": [selected item names]}
    files: "<path>/<item path>" with the sha256 and size of the signed products file. A file
    shared by several products (one squashfs for every kernel variant) appears in each of
    their entries with the same path and sha256; it travels once.

The manifest lists the full resulting state: the ``keep`` newest selected versions per
product that the *current* signed upstream lists. A version upstream no longer lists leaves
the mirror with the next bundle (see docs/FORMAT.md section 13.3, "Keeping versions").
"""

from bundler.kinds.base import Kind, connected_side, enclave_side

KIND = Kind(
    name="maas_image",
    check_section=connected_side("bundler.kinds.maas_image.source", "check_section"),
    declare=connected_side("bundler.kinds.maas_image.source", "declare"),
    target=enclave_side("bundler.kinds.maas_image.target", "MaasImageTarget"),
    summary="MAAS boot images from a signed simplestreams source into a mirror under <enclave>/maas-images/",
)
