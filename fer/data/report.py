"""Reporting of bad rows and unreadable images: each is logged with file and line, skipped and counted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

__all__ = ["Problem", "DataReport", "logger"]

logger = logging.getLogger("fer.data")


@dataclass(frozen=True)
class Problem:
    """One skipped row or image.

    Attributes:
        file: the file that holds the bad entry (a label/CSV file, or the image itself).
        line: 1-based line number in ``file`` (None for an image file).
        reason: one-line description.
    """

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}"


@dataclass
class DataReport:
    """Problems met while reading a dataset, in the order they were found.

    Attributes:
        problems: every skipped entry.
        loaded: number of usable samples.
    """

    problems: list[Problem] = field(default_factory=list)
    loaded: int = 0

    def add(self, file: str, line: int | None, reason: str) -> None:
        """Record (and log at WARNING level) one skipped entry."""
        p = Problem(str(file), line, " ".join(str(reason).split()))
        self.problems.append(p)
        logger.warning("skipped %s", p)

    @property
    def skipped(self) -> int:
        """Number of skipped entries."""
        return len(self.problems)

    def summary(self, max_listed: int = 3) -> str:
        """One line: counts plus the first few problems."""
        if not self.problems:
            return f"{self.loaded} samples, nothing skipped"
        listed = "; ".join(str(p) for p in self.problems[:max_listed])
        more = f" (+{self.skipped - max_listed} more)" if self.skipped > max_listed else ""
        return f"{self.loaded} samples, skipped {self.skipped}: {listed}{more}"
