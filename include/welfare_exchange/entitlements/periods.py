"""The one rule for "entitled to a supplement on a day / over a range", in SQL and in Python.

An entitlement period runs from ``start`` to ``end`` **inclusive**; ``end`` ``None`` means
ongoing. A child is entitled on a day when one of its periods of that supplement covers the day;
over a range when one covers any day of it. Periods that overlap or touch (one ends the day
before the next starts) form one **continuous period**; a day without any period is a gap, and a
gap is never bridged.

Method 1 (:mod:`welfare_exchange.exchange.matching`), Method 2
(:mod:`welfare_exchange.outreach.selection`) and the structural feeds
(:mod:`welfare_exchange.feeds.changes`) all decide with these functions: the SQL predicates select
the candidate rows in the database (on indexed columns), the Python functions merge them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

ONE_DAY = dt.timedelta(days=1)

#: ``(start, end)``, both inclusive; ``end`` ``None`` = ongoing.
Period = tuple[dt.date, "dt.date | None"]
H = TypeVar("H", bound=Hashable)


# --------------------------------------------------------------------------- SQL


def overlaps(start: Any, end: Any, first: Any, last: Any) -> sa.ColumnElement[bool]:
    """SQL: the period ``start..end`` (columns) covers at least one day of ``first..last``."""
    return sa.and_(start <= last, sa.or_(end.is_(None), end >= first))


def covers(start: Any, end: Any, day: Any) -> sa.ColumnElement[bool]:
    """SQL: the period ``start..end`` (columns) covers ``day``."""
    return overlaps(start, end, day, day)


def overlaps_text(alias: str, first: str, last: str) -> str:
    """:func:`overlaps` as SQL text for a textual query: ``alias.start_date`` / ``alias.end_date``
    against the bound parameters named ``first`` and ``last`` (bind them as dates)."""
    return sql_text(
        overlaps(sa.literal_column(f"{alias}.start_date"), sa.literal_column(f"{alias}.end_date"),
                 sa.bindparam(first, type_=sa.Date), sa.bindparam(last, type_=sa.Date))
    )


def sql_text(condition: sa.ColumnElement[bool]) -> str:
    """A condition rendered as SQL with ``:name`` parameters (for ``sa.text`` queries)."""
    return str(condition.compile(compile_kwargs={"render_postcompile": False}))


# --------------------------------------------------------------------------- Python


def entitled_on(periods: Iterable[Period], day: dt.date) -> bool:
    """Whether any of ``periods`` covers ``day``."""
    return any(start <= day and (end is None or end >= day) for start, end in periods)


def continuous(periods: Iterable[Period]) -> list[Period]:
    """The continuous periods: overlapping or adjacent periods merged, gaps kept, sorted."""
    periods = list(periods)
    if len(periods) == 1:  # the common case (Method 1 merges ~60,000 of them per request): nothing to merge
        return [(periods[0][0], periods[0][1])]
    return [(start, end) for start, end, _ in holders((start, end, True) for start, end in periods)]


def within(periods: Iterable[Period], first: dt.date, last: dt.date) -> list[Period]:
    """The continuous periods that cover a day of ``first..last``, as seen from that range.

    A start before ``first`` is shown as ``first`` (nothing before the range is disclosed); an
    end on or after ``last`` is shown as ``None``: the right was still running on ``last``.
    """
    out = []
    for start, end in continuous(periods):
        if start > last or (end is not None and end < first):
            continue
        out.append((max(start, first), end if end is not None and end < last else None))
    return out


def holders(periods: Iterable[tuple[dt.date, dt.date | None, H]]) -> list[tuple[dt.date, dt.date | None, frozenset[H]]]:
    """Who holds the right over time: maximal runs of days with the same non-empty set of holders.

    ``periods`` are ``(start, end, holder)`` (a holder is e.g. a beneficiary). The runs are sorted
    and never overlap; two consecutive runs may touch (the holder changed that day) or leave a
    gap (no right on the days between).
    """
    changes: dict[dt.date, list[tuple[int, H]]] = {}
    for start, end, holder in periods:
        changes.setdefault(start, []).append((1, holder))
        if end is not None:
            changes.setdefault(end + ONE_DAY, []).append((-1, holder))
    counts: dict[H, int] = {}
    runs: list[tuple[dt.date, dt.date | None, frozenset[H]]] = []
    current: frozenset[H] = frozenset()
    since: dt.date | None = None
    for day in sorted(changes):
        for step, holder in changes[day]:
            counts[holder] = counts.get(holder, 0) + step
        now = frozenset(h for h, n in counts.items() if n > 0)
        if now == current:
            continue
        if current:
            runs.append((since, day - ONE_DAY, current))
        current, since = now, day
    if current:
        runs.append((since, None, current))
    return runs


def holders_on(runs: Sequence[tuple[dt.date, dt.date | None, frozenset[H]]], day: dt.date) -> frozenset[H]:
    """The holders on ``day`` according to ``runs`` (from :func:`holders`)."""
    for start, end, who in runs:
        if start <= day and (end is None or end >= day):
            return who
    return frozenset()
