"""Everything the operator sees: tqdm bars, warnings, summaries and --json output.

The only module that imports tqdm, and only once a bar is shown. Bars go to stderr and only
when stderr is a terminal (and not with --quiet or --json); summaries go to stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from bundler.events import Advance


class TerminalReporter:
    def __init__(self, *, quiet: bool = False, bars: bool | None = None) -> None:
        self.quiet = quiet
        self.bars = (sys.stderr.isatty() and not quiet) if bars is None else bars
        self.warnings: list[str] = []

    @contextmanager
    def task(self, label: str, total: int | None, unit: str = "B") -> Iterator[Advance]:
        if not self.bars:
            yield lambda n: None
            return
        from tqdm import tqdm  # 20 ms of start-up that a run without bars does not pay

        bar = tqdm(
            total=total,
            desc=label,
            unit=unit,
            unit_scale=unit == "B",
            unit_divisor=1024,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        try:
            yield bar.update
        finally:
            bar.close()

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if not self.quiet:
            if self.bars:
                from tqdm import tqdm

                tqdm.write(f"warning: {message}", file=sys.stderr)
            else:
                print(f"warning: {message}", file=sys.stderr)


def emit_json(obj: dict[str, Any]) -> None:
    """One JSON document; times as ``YYYY-MM-DDTHH:MM:SSZ`` (as in manifests), paths as strings,
    durations (``seconds``) rounded to milliseconds."""
    sys.stdout.write(json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        return sorted(items) if isinstance(value, set | frozenset) else items
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)


def emit_lines(lines: list[str]) -> None:
    sys.stdout.write("".join(line + "\n" for line in lines))


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
