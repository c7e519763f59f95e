"""Progress of a long store operation: a bar on a terminal, and log lines for the task log.

Shows how much is done, the speed in rows per second and the time left (ETA), estimated from
the share of the work done — bytes of the file read by an import, children made by the
generator. Counts only: nothing here ever shows a value from the data.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger(__name__)

#: Seconds between two progress lines in the log.
LOG_EVERY = 10.0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Reports ``rows`` done and the share of ``total`` units done (units: bytes, children, …).

    :param what: the activity, e.g. ``"importing entitlement rows"``.
    :param total: the units of the whole work (the file's size, the children to make).
    :param bar: a progress bar on stderr; default only when stderr is a terminal. Log lines go
        to the logger whatever the choice (that is the task log under Airflow).
    """

    def __init__(self, what: str, total: int, *, bar: bool | None = None, unit: str = "rows") -> None:
        self.what, self.total, self.unit = what, max(total, 1), unit
        self.rows = self.done = 0
        self.started = self._logged = time.monotonic()
        self._bar = None
        if sys.stderr.isatty() if bar is None else bar:
            from rich.console import Console
            from rich.progress import BarColumn, Progress as Bar, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Bar(
                TextColumn("{task.description}"), BarColumn(bar_width=20), TaskProgressColumn(),
                TextColumn("{task.fields[rows]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._task = self._bar.add_task(what, total=self.total, rows="")
            self._bar.start()

    def advance(self, rows: int, done: int) -> None:
        """``rows`` more rows handled; ``done`` units of ``total`` done so far."""
        self.rows += rows
        self.done = min(done, self.total)
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rows=f"{self.rows:,} {self.unit}, {self.rate():,.0f} {self.unit}/s")
        if now - self._logged >= LOG_EVERY:
            self._logged = now
            log.info("%s", self.line())

    def phase(self, text: str, short: str | None = None) -> None:
        """A step after the counted work (checking, applying): in the log, and ``short`` on the bar."""
        log.info("%s: %s", self.what, text)
        if self._bar is not None:
            self._bar.update(self._task, description=short or text)

    def rate(self) -> float:
        """Rows per second so far."""
        return self.rows / max(time.monotonic() - self.started, 1e-9)

    def eta(self) -> float | None:
        """Seconds left, from the share done so far (``None`` before anything is done)."""
        if not self.done:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed * (self.total - self.done) / self.done

    def line(self) -> str:
        eta = self.eta()
        return (
            f"{self.what}: {self.rows:,} {self.unit} ({100 * self.done / self.total:.0f} %), "
            f"{self.rate():,.0f} {self.unit}/s, ETA {_duration(eta) if eta is not None else '?'}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=f"{self.what}: done")
            self._bar.stop()
            self._bar = None
        log.info("%s: done, %s %s in %.1f s (%s/s)", self.what, f"{self.rows:,}", self.unit,
                 time.monotonic() - self.started, f"{self.rate():,.0f}")
