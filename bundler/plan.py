"""Pure delta logic: what the carry spec declares vs what the enclave already holds -> what travels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bundler.format.manifest import Manifest
from bundler.model import Artifact, Declared


@dataclass(frozen=True)
class CarryPlan:
    #: sha256 of every distinct content that travels in this bundle, in declaration order.
    carry: tuple[str, ...]
    #: remote artifacts to download (one per distinct content).
    to_fetch: tuple[Artifact, ...]
    #: sha256 of content the base already delivered, which therefore stays behind.
    skipped: frozenset[str]


def carry_plan(declared: Sequence[Declared], base: Manifest | None) -> CarryPlan:
    """Content travels unless the base manifest's resulting state already holds the same sha256.

    The base manifest lists the *full* state the enclave reached with it, so every file
    it names is in the enclave (the importer enforces that a delta is applied exactly on
    top of its base).
    """
    have = {f.sha256 for e in base.entries for f in e.files} if base is not None else set()
    carry: list[str] = []
    fetch: list[Artifact] = []
    seen: set[str] = set()
    skipped: set[str] = set()
    for d in declared:
        for a in d.artifacts:
            if a.sha256 in have:
                skipped.add(a.sha256)
                continue
            if a.sha256 in seen:
                continue
            seen.add(a.sha256)
            carry.append(a.sha256)
            if a.local is None:
                fetch.append(a)
    return CarryPlan(carry=tuple(carry), to_fetch=tuple(fetch), skipped=frozenset(skipped))
