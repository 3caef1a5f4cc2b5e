"""How library code tells the operator what is happening without printing.

The library receives a :class:`Reporter`; the CLI passes one that draws tqdm bars
and prints warnings (``bundler.ui``), tests pass :class:`RecordingReporter`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Advance = Callable[[int], None]


class Reporter(Protocol):
    def task(self, label: str, total: int | None, unit: str = "B") -> AbstractContextManager[Advance]:
        """A unit of long work; the returned callable advances it by n units."""
        ...

    def warn(self, message: str) -> None:
        """Something the operator should know that does not stop the work."""
        ...


class NullReporter:
    """Reports nothing; the default for library calls."""

    @contextmanager
    def task(self, label: str, total: int | None, unit: str = "B") -> Iterator[Advance]:
        yield lambda n: None

    def warn(self, message: str) -> None:
        pass


class RecordingReporter(NullReporter):
    """Keeps warnings and task labels, for tests and for ``--json`` summaries."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.tasks: list[str] = []

    @contextmanager
    def task(self, label: str, total: int | None, unit: str = "B") -> Iterator[Advance]:
        self.tasks.append(label)
        yield lambda n: None

    def warn(self, message: str) -> None:
        self.warnings.append(message)
