"""REGISTRY: the explicit list of content kinds. Adding a kind is one line here."""

from __future__ import annotations

from bundler.errors import SpecError
from bundler.kinds.base import Kind
from bundler.kinds.files import KIND as FILES

REGISTRY: dict[str, Kind] = {k.name: k for k in (FILES,)}


def get_kind(name: str) -> Kind:
    try:
        return REGISTRY[name]
    except KeyError:
        raise SpecError(
            f"unknown content kind {name!r}",
            remedy=f"known kinds: {', '.join(sorted(REGISTRY))}",
        ) from None
