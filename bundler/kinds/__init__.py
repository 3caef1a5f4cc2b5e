"""REGISTRY: the explicit list of content kinds. Adding a kind is one line here."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bundler.errors import SpecError, UnsupportedFormatError
from bundler.kinds.base import Kind, TargetContext
from bundler.kinds.deb import KIND as DEB
from bundler.kinds.files import KIND as FILES
from bundler.kinds.maas_image import KIND as MAAS_IMAGE
from bundler.kinds.snap import KIND as SNAP

REGISTRY: dict[str, Kind] = {k.name: k for k in (FILES, DEB, MAAS_IMAGE, SNAP)}


def init_enclave(enclave: Path) -> dict[str, str]:
    """Run every kind's one-time enclave set-up; idempotent."""
    ctx = TargetContext(enclave=enclave)
    info: dict[str, str] = {"enclave": str(enclave)}
    for kind in REGISTRY.values():
        if kind.init is not None:
            info.update(kind.init(ctx))
    return info


def get_kind(name: str) -> Kind:
    try:
        return REGISTRY[name]
    except KeyError:
        raise SpecError(
            f"unknown content kind {name!r}",
            remedy=f"known kinds: {', '.join(sorted(REGISTRY))}",
        ) from None


def require_known(kinds: Iterable[str]) -> None:
    """Refuse a bundle that carries a kind this bundler cannot publish (exit 24, before anything)."""
    unknown = sorted(set(kinds) - set(REGISTRY))
    if unknown:
        raise UnsupportedFormatError(
            f"the bundle carries content of kind {', '.join(map(repr, unknown))}, which this bundler does not know "
            f"(it knows {', '.join(sorted(REGISTRY))})",
            remedy="upgrade bundler in the enclave to the exporter's version, then import again",
        )
