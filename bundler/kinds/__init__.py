"""REGISTRY: the explicit list of content kinds. Adding a kind is one line here."""

from __future__ import annotations

from pathlib import Path

from bundler.errors import SpecError
from bundler.kinds.base import Kind, TargetContext
from bundler.kinds.deb import KIND as DEB
from bundler.kinds.files import KIND as FILES

REGISTRY: dict[str, Kind] = {k.name: k for k in (FILES, DEB)}


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
