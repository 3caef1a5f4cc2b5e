"""Everything the operator sees: tqdm bars, warnings, summaries and --json output.

The only module that imports tqdm. Bars go to stderr and only when stderr is a
terminal (and not with --quiet or --json); summaries go to stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

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
                tqdm.write(f"warning: {message}", file=sys.stderr)
            else:
                print(f"warning: {message}", file=sys.stderr)


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def emit_lines(lines: list[str]) -> None:
    sys.stdout.write("".join(line + "\n" for line in lines))


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
