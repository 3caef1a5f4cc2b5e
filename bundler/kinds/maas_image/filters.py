"""The simplestreams filter syntax that ``sstream-mirror`` and MAAS operators use (pure).

A filter is ``key=value``, ``key!=value``, ``key~regex`` or ``key!~regex``; a list of filters
is ANDed. As in simplestreams ``filters.py``, a filter is matched against the *flattened*
item: the products file's top-level fields, then the product's, the version's and the item's
scalar fields (later levels win), plus ``product_name``, ``version_name`` and ``item_name``.
A missing key reads as ``""``; values are compared as strings; ``~`` is an unanchored
``re.search``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Filter", "FilterError", "flatten", "matches_all", "parse_filter", "parse_filters"]

# simplestreams: r"([\w|\-]+)[ ]*([!]{0,1}[=~])[ ]*(.*)[ ]*$"
_EXPR = re.compile(r"([\w|\-]+)[ ]*(!?[=~])[ ]*(.*)[ ]*$")


class FilterError(ValueError):
    """A filter expression that cannot be parsed (or whose regex does not compile)."""


@dataclass(frozen=True)
class Filter:
    key: str
    op: str
    """One of ``=``, ``!=``, ``~``, ``!~``."""
    value: str
    pattern: re.Pattern[str] | None

    def matches(self, flat: Mapping[str, str]) -> bool:
        got = flat.get(self.key, "")
        hit = self.pattern.search(got) is not None if self.pattern is not None else got == self.value
        return hit != self.op.startswith("!")

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value}"


def parse_filter(text: str) -> Filter:
    m = _EXPR.match(text)
    if m is None:
        raise FilterError(f"filter {text!r} is not 'key=value', 'key!=value', 'key~regex' or 'key!~regex'")
    key, op, value = m.groups()
    pattern = None
    if op.endswith("~"):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise FilterError(f"filter {text!r}: {value!r} is not a valid regular expression ({exc})") from exc
    return Filter(key=key, op=op, value=value, pattern=pattern)


def parse_filters(texts: Iterable[str]) -> tuple[Filter, ...]:
    return tuple(parse_filter(t) for t in texts)


def matches_all(filters: Sequence[Filter], flat: Mapping[str, str]) -> bool:
    return all(f.matches(flat) for f in filters)


def _scalars(d: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, str | int | float | bool) or v is None:
            out[k] = str(v)
    return out


def flatten(
    top: Mapping[str, Any],
    product_name: str,
    product: Mapping[str, Any],
    version_name: str,
    version: Mapping[str, Any],
    item_name: str,
    item: Mapping[str, Any],
) -> dict[str, str]:
    """simplestreams ``util.products_exdata`` for one item."""
    flat = _scalars(top)
    flat["product_name"] = product_name
    flat.update(_scalars(product))
    flat["version_name"] = version_name
    flat.update(_scalars(version))
    flat["item_name"] = item_name
    flat.update(_scalars(item))
    return flat
