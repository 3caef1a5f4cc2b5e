"""Sizes as operators write them (``700M``, ``4GiB``, ``1073741824``) and as we print them."""

from __future__ import annotations

import re

from bundler.errors import UsageError

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*(?:-\s*(\d+)\s*)?", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Parse a size; K/M/G/T are powers of 1024 (``4G`` == ``4GiB``); ``4G-1`` subtracts bytes."""
    if isinstance(text, int):
        return text
    m = _RE.fullmatch(text)
    if not m:
        raise UsageError(f"cannot read size {text!r}", remedy="write it like 700M, 4G or 1073741824")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()]) - int(m.group(3) or 0)
    if size < 0:
        raise UsageError(f"size {text!r} is negative")
    return size


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
