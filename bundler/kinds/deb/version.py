"""Debian version comparison (deb-version(7)), as ``dpkg --compare-versions`` does it."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"\d*")
_NON_DIGITS = re.compile(r"\D*")


def _split(version: str) -> tuple[int, str, str]:
    epoch, colon, rest = version.partition(":")
    if not colon:
        epoch, rest = "0", version
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, "0"
    return int(epoch or 0), upstream, revision


def _lead(pattern: re.Pattern[str], text: str) -> str:
    m = pattern.match(text)
    return m.group() if m else ""


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    while a or b:
        na, nb = _lead(_NON_DIGITS, a), _lead(_NON_DIGITS, b)
        a, b = a[len(na) :], b[len(nb) :]
        for i in range(max(len(na), len(nb))):
            oa = _order(na[i]) if i < len(na) else 0
            ob = _order(nb[i]) if i < len(nb) else 0
            if oa != ob:
                return -1 if oa < ob else 1
        da, db = _lead(_DIGITS, a), _lead(_DIGITS, b)
        a, b = a[len(da) :], b[len(db) :]
        ia, ib = int(da or 0), int(db or 0)
        if ia != ib:
            return -1 if ia < ib else 1
    return 0


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version ``a`` sorts before, equal to or after ``b``."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)
