"""Carry specs: ``manifests/*.toml`` files that say what to bring across.

Top level::

    series = "site-a"          # required: the stream of bundles this spec feeds
    expires_days = 30          # optional: how long a bundle stays importable (0: never expires)
    chunk_size = "1G"          # optional default for --chunk-size

    [[files]]                  # one array of tables per content kind (see each kind's docs)
    ...

Strings may use ``${VAR}`` to take a value from the environment (an unset variable is an error).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.errors import SpecError
from bundler.format.layout import SERIES_RE
from bundler.kinds import REGISTRY
from bundler.units import parse_size

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP = {"series", "expires_days", "chunk_size", "description"}


@dataclass(frozen=True)
class CarrySpec:
    path: Path
    series: str
    expires_days: int
    chunk_size: int | None
    sections: tuple[tuple[str, dict[str, Any]], ...]  # (kind, checked section), in file order per kind

    @property
    def directory(self) -> Path:
        return self.path.parent


def load_spec(path: Path) -> CarrySpec:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError(f"carry spec {path} does not exist", remedy="see manifests/ for examples") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"carry spec {path} is not valid TOML: {exc}") from exc
    doc = _expand(raw, str(path))
    unknown = set(doc) - _TOP - set(REGISTRY)
    if unknown:
        raise SpecError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}",
            remedy=f"top-level keys: {sorted(_TOP)}; content kinds: {sorted(REGISTRY)}",
        )
    series = doc.get("series")
    if not isinstance(series, str) or not SERIES_RE.fullmatch(series):
        raise SpecError(
            f"{path}: 'series' is required: lower-case letters, digits, '.', '_' or '-' (at most 64)",
            remedy='add for example: series = "site-a"',
        )
    expires = doc.get("expires_days", 30)
    if not isinstance(expires, int) or isinstance(expires, bool) or expires < 0:
        raise SpecError(f"{path}: expires_days must be a whole number of days (0: never)")
    chunk = doc.get("chunk_size")
    chunk_size = None if chunk is None else parse_size(chunk)
    sections: list[tuple[str, dict[str, Any]]] = []
    for kind_name, kind in REGISTRY.items():
        tables = doc.get(kind_name, [])
        if not isinstance(tables, list):
            raise SpecError(f"{path}: '{kind_name}' must be an array of tables: write [[{kind_name}]]")
        for i, table in enumerate(tables, 1):
            if not isinstance(table, dict):
                raise SpecError(f"{path}: [[{kind_name}]] #{i} is not a table")
            where = f"{path.name} [[{kind_name}]] #{i}"
            sections.append((kind_name, dict(kind.check_section(table, where))))
    if not sections:
        raise SpecError(f"{path}: the carry spec names no content", remedy="add a section such as [[files]]")
    return CarrySpec(
        path=path.resolve(), series=series, expires_days=expires, chunk_size=chunk_size, sections=tuple(sections)
    )


def _expand(value: Any, where: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise SpecError(f"{where}: ${{{name}}} is used but not set in the environment")
            return os.environ[name]

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    return value
