"""Which *sociale toeslag* entitlements changed during a feed interval, per municipality.

The entitlement store keeps periods, not a change log, so a change is read from the periods
themselves. For the interval ``[start, end)`` and a child domiciled in the municipality:

* **nieuw** (new) — a period starts in the interval and no period of the same supplement ran
  the day before;
* **begunstigde gewijzigd** (beneficiary changed) — a period starts in the interval and the
  period running the day before was paid to another *begunstigde*; the row names the new one;
* **beëindigd** (ended) — a period ends in the interval (its last day) and no period of the
  same supplement runs the day after. A period that continues with another beneficiary is
  reported once, as a beneficiary change, in the interval where the new period starts.

A period that continues with the same beneficiary (a split record) is no change. An end date
that lies after the interval is not disclosed (the row says "ongoing"): the feed of a month
shows only what was known to happen by its end.

Detection is one set query for every municipality of the run (children whose periods start or
end in the interval, then all their periods of those supplements), never a scan of the store
in Python and never one query per municipality.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.feeds.interval import FeedInterval

NEW, BENEFICIARY_CHANGED, ENDED = "nieuw", "begunstigde gewijzigd", "beëindigd"
#: Sort order of changes of the same child and day.
_ORDER = {NEW: 0, BENEFICIARY_CHANGED: 1, ENDED: 2}


@dataclass(frozen=True, order=True)
class FeedChange:
    """One change: what happened, to which child, with which beneficiary, over which period.

    ``period_end`` is ``None`` when the period was still running at the end of the interval.
    """

    child_insz: str
    supplement: str
    period_start: dt.date
    order: int
    change: str
    beneficiary_insz: str
    period_end: dt.date | None


def _date(value) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def detect(
    session: Session, nis_codes: Iterable[str], interval: FeedInterval, supplements: Sequence[str] = ("sociale_toeslag",)
) -> dict[str, list[FeedChange]]:
    """The sorted changes per NIS code (every code asked for is a key, possibly with no rows)."""
    codes = sorted(set(nis_codes))
    result: dict[str, list[FeedChange]] = {code: [] for code in codes}
    if not codes or not supplements:
        return result
    params: dict[str, object] = {"s": interval.start, "e": interval.end}
    params.update({f"sup{i}": s for i, s in enumerate(supplements)})
    params.update({f"nis{i}": c for i, c in enumerate(codes)})
    sups = ", ".join(f":sup{i}" for i in range(len(supplements)))
    nis = ", ".join(f":nis{i}" for i in range(len(codes)))
    # The inner query reads only the (supplement, start_date, end_date) index; the outer one
    # fetches all periods of the few children it found (index on child_id, supplement).
    query = sa.text(
        f"""
        SELECT c.nis_code, c.insz, b.insz, e.supplement, e.start_date, e.end_date
        FROM (
            SELECT DISTINCT t.child_id FROM entitlement t
            WHERE t.supplement IN ({sups})
              AND ((t.start_date >= :s AND t.start_date < :e) OR (t.end_date >= :s AND t.end_date < :e))
        ) touched
        JOIN child c ON c.id = touched.child_id
        JOIN entitlement e ON e.child_id = touched.child_id AND e.supplement IN ({sups})
        JOIN beneficiary b ON b.id = e.beneficiary_id
        WHERE c.nis_code IN ({nis})
        """
    )
    if session.connection().dialect.name == "sqlite":  # SQLite keeps dates as ISO text
        params = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in params.items()}
    periods: dict[tuple[str, str, str], list[tuple[dt.date, dt.date | None, str]]] = defaultdict(list)
    for code, child, beneficiary, supplement, start, end in session.execute(query, params):
        periods[(code, child, supplement)].append((_date(start), _date(end), beneficiary))
    for (code, child, supplement), rows in periods.items():
        result[code].extend(classify(child, supplement, rows, interval))
    for rows in result.values():
        rows.sort()
    return result


def _covers(period: tuple[dt.date, dt.date | None, str], day: dt.date) -> bool:
    start, end, _ = period
    return start <= day and (end is None or end >= day)


def classify(
    child: str, supplement: str, periods: Sequence[tuple[dt.date, dt.date | None, str]], interval: FeedInterval
) -> list[FeedChange]:
    """The changes of one child's periods of one supplement (see the module docstring)."""
    ordered = sorted(periods, key=lambda p: (p[0], p[1] or dt.date.max, p[2]))
    changes = []
    for i, period in enumerate(ordered):
        start, end, beneficiary = period
        others = ordered[:i] + ordered[i + 1 :]
        shown_end = end if end is not None and end < interval.end else None
        if interval.start <= start < interval.end:
            before = [p for p in others if p[0] < start and _covers(p, start - dt.timedelta(days=1))]
            if not before:
                changes.append(FeedChange(child, supplement, start, _ORDER[NEW], NEW, beneficiary, shown_end))
            elif all(p[2] != beneficiary for p in before):
                changes.append(
                    FeedChange(child, supplement, start, _ORDER[BENEFICIARY_CHANGED], BENEFICIARY_CHANGED, beneficiary, shown_end)
                )
        if end is not None and interval.start <= end < interval.end:
            if not any(_covers(p, end + dt.timedelta(days=1)) for p in others):
                changes.append(FeedChange(child, supplement, start, _ORDER[ENDED], ENDED, beneficiary, end))
    return sorted(changes)


def counts(changes: Sequence[FeedChange]) -> dict[str, int]:
    """Counts per kind of change, for the audit and the workbook (no personal data)."""
    out = {"rows": len(changes), "children": len({c.child_insz for c in changes}), NEW: 0, BENEFICIARY_CHANGED: 0, ENDED: 0}
    for change in changes:
        out[change.change] += 1
    return out


def serialise(changes: Sequence[FeedChange]) -> bytes:
    """Compact text form, for the (encrypted) staging file."""
    return "\n".join(
        "\t".join(
            (c.child_insz, c.supplement, c.period_start.isoformat(), str(c.order), c.change, c.beneficiary_insz,
             c.period_end.isoformat() if c.period_end else "")
        )
        for c in changes
    ).encode("utf-8")


def deserialise(data: bytes) -> list[FeedChange]:
    rows = []
    for line in data.decode("utf-8").splitlines():
        child, supplement, start, order, change, beneficiary, end = line.split("\t")
        rows.append(
            FeedChange(child, supplement, dt.date.fromisoformat(start), int(order), change, beneficiary,
                       dt.date.fromisoformat(end) if end else None)
        )
    return rows
