"""The reliability suite's shared parts: the figures it reports, and how long it runs.

Every test here adds what it did to `Figures` (requests tried, faults injected, rows checked, ...); pytest prints
the totals at the end of the run, so a green run also says how much it proved. ``VITRINE_RELIABILITY=full`` runs
the long versions (more generated requests, a longer load test); the default is sized for CI.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

FULL = os.environ.get("VITRINE_RELIABILITY", "").strip().lower() == "full"
"""Whether to run the long versions (``VITRINE_RELIABILITY=full``)."""


class Figures:
    """Counts of what the suite did, by name (``requests tried``, ``faults injected``, ``rows checked``)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.notes: list[str] = []

    def add(self, name: str, count: int = 1) -> None:
        """Add ``count`` to the figure ``name``."""
        self.counts[name] += count

    def note(self, line: str) -> None:
        """A line printed as is at the end (a measured p50/p99, a rate)."""
        self.notes.append(line)


FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    """The run's `Figures`."""
    return FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures after the test results."""
    if not FIGURES.counts and not FIGURES.notes:
        return
    terminalreporter.section("reliability figures" + (" (full)" if FULL else ""))
    for name, count in sorted(FIGURES.counts.items()):
        terminalreporter.write_line(f"{name:<40} {count:>10,}")
    for line in FIGURES.notes:
        terminalreporter.write_line(line)
