"""The data interval of a feed run, as Belgian calendar days.

A feed is about the days ``start`` (inclusive) to ``end`` (exclusive) — for the monthly
schedule, one calendar month. It is taken from the run's data interval, never from the wall
clock or the logical date (a scheduled run's logical date is the interval's start, a manual
or ``dag.test()`` run's is its end), so a re-run or back-fill of a month decides exactly as
its first run did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from welfare_exchange.feeds.config import TIMEZONE

BRUSSELS = ZoneInfo(TIMEZONE)


@dataclass(frozen=True, order=True)
class FeedInterval:
    """``[start, end)`` in Belgian calendar days."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise ValueError(f"a feed interval must end after it starts, got {self.start} .. {self.end}")

    @classmethod
    def from_context(cls, context: Any) -> FeedInterval:
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None:
            raise ValueError("this run has no data interval: trigger the feed for a month (a logical date), not without one")
        return cls(start.astimezone(BRUSSELS).date(), end.astimezone(BRUSSELS).date())

    @classmethod
    def parse(cls, text: str) -> FeedInterval:
        """From ``"2026-08-01/2026-09-01"`` (the form used in XCom and the ledger)."""
        start, end = text.split("/")
        return cls(dt.date.fromisoformat(start), dt.date.fromisoformat(end))

    @property
    def last_day(self) -> dt.date:
        return self.end - dt.timedelta(days=1)

    @property
    def start_moment(self) -> dt.datetime:
        """Midnight in Brussels at the start of the interval."""
        return dt.datetime.combine(self.start, dt.time(), tzinfo=BRUSSELS)

    @property
    def end_moment(self) -> dt.datetime:
        """Midnight in Brussels at the end of the interval (when its feed becomes due)."""
        return dt.datetime.combine(self.end, dt.time(), tzinfo=BRUSSELS)

    def __str__(self) -> str:
        return f"{self.start.isoformat()}/{self.end.isoformat()}"

    def exchange_key(self, protocol_id: int) -> str:
        """The feed's stand-in for a request hash: the same (protocol, interval) is the same exchange."""
        return hashlib.sha256(f"structural:{protocol_id}:{self}".encode()).hexdigest()
