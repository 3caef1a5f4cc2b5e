"""What the operator runs on the MAAS host after an import (pure): the import report's notes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["MIRROR_KEYRING", "handoff"]

MIRROR_KEYRING = "keyring.gpg"
"""The binary keyring published beside the stream, for MAAS ``keyring_filename=``."""


def handoff(
    root: Path,
    prefix: str,
    mirror_url: str | None,
    *,
    verbatim: bool,
    versions: int,
    held: Sequence[Mapping[str, str]],
    fingerprint: str,
) -> list[str]:
    """The mode, the keyring, and the exact ``maas`` commands for the stream at ``root/prefix``.

    ``held`` is one flattened item per product the mirror holds (its os, release, arch...);
    ``mirror_url`` is the URL that serves ``root`` (``$MIRROR_URL`` in the commands when None).
    """
    base = (mirror_url or "$MIRROR_URL").rstrip("/")
    keyring = root / prefix / MIRROR_KEYRING
    mode = (
        "upstream signatures kept verbatim (the mirror is exactly the signed upstream snapshot)"
        if verbatim
        else f"index and products files regenerated and signed by the enclave key {fingerprint}"
    )
    notes = [f"mirror {root / prefix}: {versions} image version(s); {mode}"]
    if mirror_url is None:
        notes.append(f"MIRROR_URL is the http(s) URL at which this host serves {root}")
    notes.append(
        f"MAAS keyring: {keyring} (binary: the enclave key and the upstream keyring); a snap MAAS reads only "
        "/var/snap/maas/common/: copy it there and use that path"
    )
    notes.append(f"maas $PROFILE boot-sources create url={base}/{prefix}/ keyring_filename={keyring}")
    wanted: dict[tuple[str, str], set[str]] = defaultdict(set)
    for flat in held:
        if flat.get("release") and flat.get("os") and "bootloader-type" not in flat:
            wanted[(flat["os"], flat["release"])].add(flat.get("arch", ""))
    for (os_name, release), arches in sorted(wanted.items()):
        notes.append(
            f"maas $PROFILE boot-source-selections create $SOURCE_ID os={os_name} release={release} "
            f"arches={','.join(sorted(a for a in arches if a))} subarches='*' labels='*'"
        )
    if wanted:
        notes.append("SOURCE_ID is the id that boot-sources create prints")
    notes.append("maas $PROFILE boot-resources import")
    return notes
