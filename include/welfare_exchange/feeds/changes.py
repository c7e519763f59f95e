"""What changed in the entitlements of a municipality's children, as the agency recorded it during
a feed interval — whatever the valid dates of the change.

**The municipality's picture.** After the feed of an interval ``[start, end)`` the municipality
knows, for each of its children and each supplement, who was entitled on which day before
``end``, as the agency knew it at the end of the interval; a right still running on the last day
is *ongoing* (a later end date is not disclosed yet). Each feed reports the difference between
the picture after the previous interval (the knowledge at ``start``, days before ``start``) and
the new one (the knowledge at ``end``, days before ``end``). That covers both kinds of news:

* what happened in the interval — a right that starts, ends or changes beneficiary in it;
* what was *recorded* in the interval about earlier days — a right granted or ended
  retroactively, withdrawn, or corrected to another beneficiary. Such a row is marked
  **met terugwerkende kracht** (retroactive): its period begins before the interval.

One row per stretch of days whose picture changed (per beneficiary):

=========================  ===================================================================
``nieuw``                  entitled on days it was not (the period is the stretch)
``begunstigde gewijzigd``  paid to another *begunstigde* over the stretch (the row names the
                           new one)
``beëindigd``              no longer entitled from a day on, and not again: the period is the
                           right's last stretch, ending on its last day
``onderbroken``            not entitled over days between two stretches that are
``ingetrokken``            a right, or a part of it, withdrawn: as now known it never ran
=========================  ===================================================================

A split record with the same beneficiary is no change; a period continuing with another
beneficiary is one change. Days follow the shared rule of
:mod:`welfare_exchange.entitlements.periods`, knowledge :mod:`welfare_exchange.entitlements.history`.

**Same file, whenever it is built.** Both pictures are read "as known at" a moment the interval
fixes, so a back-fill or re-run of a past interval gives the same rows however much was recorded
since. Before the store's first recording (its history starts at migration 0008 or the first
load) nothing can be read as known: such moments read the first knowledge the store has — what
the feeds showed before the store kept history.

Detection is one set query for every municipality of the run (the children with a version
recorded or superseded during the interval, or a period starting or ending in it, then all
their versions known at either moment), never a scan of the store in Python and never one
query per municipality.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from welfare_exchange.entitlements import history, periods
from welfare_exchange.feeds.interval import FeedInterval

NEW, BENEFICIARY_CHANGED, INTERRUPTED, WITHDRAWN, ENDED = (
    "nieuw", "begunstigde gewijzigd", "onderbroken", "ingetrokken", "beëindigd",
)
KINDS = (NEW, BENEFICIARY_CHANGED, INTERRUPTED, WITHDRAWN, ENDED)
#: Sort order of changes of the same child, supplement and day.
_ORDER = {kind: i for i, kind in enumerate(KINDS)}
RETROACTIVE = "met terugwerkende kracht"

#: (start, end or None, beneficiary INSZ)
Span = tuple[dt.date, "dt.date | None", str]


@dataclass(frozen=True, order=True)
class FeedChange:
    """One change: what happened, to which child, with which beneficiary, over which period.

    ``period_end`` is ``None`` when the period was still running at the end of the interval;
    ``retroactive`` when the period begins before the interval.
    """

    child_insz: str
    supplement: str
    period_start: dt.date
    order: int
    change: str
    beneficiary_insz: str
    period_end: dt.date | None
    retroactive: bool = False

    def __repr__(self) -> str:  # a change in a traceback must not show whom it is about
        return f"FeedChange({self.change!r}, {self.supplement}, {self.period_start}..{self.period_end})"


def _date(value) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def knowledge_moments(session: Session, interval: FeedInterval) -> tuple[dt.datetime, dt.datetime] | None:
    """The moments whose knowledge the interval's feed compares: its start and its end, never
    before the store's first recording (``None``: the store is empty)."""
    first = history.history_start(session)
    if first is None:
        return None
    return max(history.moment(interval.start_moment), first), max(history.moment(interval.end_moment), first)


def knowledge_moment(session: Session, interval_end: dt.date) -> dt.datetime | None:
    """The moment whose knowledge the feed of the interval ending on ``interval_end`` delivers
    (the feed exchange's ``exchange_date``); ``None``: the store is empty."""
    first = history.history_start(session)
    end = history.moment(dt.datetime.combine(interval_end, dt.time(), tzinfo=history.BRUSSELS))
    return None if first is None else max(end, first)


def detect(
    session: Session, nis_codes: Iterable[str], interval: FeedInterval, supplements: Sequence[str] = ("sociale_toeslag",)
) -> dict[str, list[FeedChange]]:
    """The sorted changes per NIS code (every code asked for is a key, possibly with no rows)."""
    codes = sorted(set(nis_codes))
    result: dict[str, list[FeedChange]] = {code: [] for code in codes}
    moments = knowledge_moments(session, interval)
    if not codes or not supplements or moments is None:
        return result
    before, after = moments
    params: dict[str, object] = {"s": interval.start, "e": interval.end, "k0": before, "k1": after}
    params.update({f"sup{i}": s for i, s in enumerate(supplements)})
    params.update({f"nis{i}": c for i, c in enumerate(codes)})
    sups = ", ".join(f":sup{i}" for i in range(len(supplements)))
    nis = ", ".join(f":nis{i}" for i in range(len(codes)))
    known_k1 = history.known_at_text("t", "k1")
    # SQLite: drive from the few touched children through the indexes (as the Method 1 match does).
    drive = "CROSS JOIN" if session.connection().dialect.name == "sqlite" else "JOIN"
    # Each branch of the UNION reads one index: recorded_from, recorded_to, (supplement, dates).
    query = sa.text(
        f"""
        SELECT c.nis_code, c.insz, b.insz, e.supplement, e.start_date, e.end_date, e.recorded_from, e.recorded_to
        FROM (
            SELECT t.child_id FROM entitlement t
            WHERE t.recorded_from > :k0 AND t.recorded_from <= :k1 AND t.supplement IN ({sups})
            UNION SELECT t.child_id FROM entitlement t
            WHERE t.recorded_to > :k0 AND t.recorded_to <= :k1 AND t.supplement IN ({sups})
            UNION SELECT t.child_id FROM entitlement t
            WHERE t.supplement IN ({sups}) AND t.start_date >= :s AND t.start_date < :e AND {known_k1}
            UNION SELECT t.child_id FROM entitlement t
            WHERE t.supplement IN ({sups}) AND t.end_date >= :s AND t.end_date < :e AND {known_k1}
        ) touched
        {drive} child c ON c.id = touched.child_id
        {drive} entitlement e ON e.child_id = touched.child_id AND e.supplement IN ({sups})
        JOIN beneficiary b ON b.id = e.beneficiary_id
        WHERE c.nis_code IN ({nis})
          AND (({history.known_at_text("e", "k0")}) OR ({history.known_at_text("e", "k1")}))
        """
    ).bindparams(
        sa.bindparam("s", type_=sa.Date), sa.bindparam("e", type_=sa.Date),
        sa.bindparam("k0", type_=history.MOMENT), sa.bindparam("k1", type_=history.MOMENT),
    )
    spans: dict[tuple[str, str, str], tuple[list[Span], list[Span]]] = defaultdict(lambda: ([], []))
    for code, child, beneficiary, supplement, start, end, recorded_from, recorded_to in session.execute(query, params):
        recorded_from = history.moment(recorded_from)
        recorded_to = None if recorded_to is None else history.moment(recorded_to)
        span = (_date(start), _date(end), beneficiary)
        old, new = spans[(code, child, supplement)]
        for moment, into in ((before, old), (after, new)):
            if history.was_known(recorded_from, recorded_to, moment):
                into.append(span)
    for (code, child, supplement), (old, new) in spans.items():
        result[code].extend(classify(child, supplement, old, new, interval))
    for rows in result.values():
        rows.sort()
    return result


def _picture(spans: Sequence[Span], horizon: dt.date) -> list[tuple[dt.date, dt.date | None, frozenset[str]]]:
    """Who is entitled on which day before ``horizon``; from ``horizon`` on, whoever was paid the
    day before goes on if the child is still entitled that day (a later end, or a change of
    beneficiary on that very day, is the next interval's news)."""
    last = horizon - periods.ONE_DAY
    runs = periods.holders(
        (start, last if end is None or end > last else end, beneficiary) for start, end, beneficiary in spans if start <= last
    )
    if runs and runs[-1][1] == last and periods.entitled_on(((s, e) for s, e, _ in spans), horizon):
        runs[-1] = (runs[-1][0], None, runs[-1][2])
    return runs


def _differences(old, new) -> list[tuple[dt.date, dt.date | None, frozenset[str], frozenset[str]]]:
    """Maximal stretches ``(first, last or None, old holders, new holders)`` where two pictures differ."""
    cuts = sorted({run[0] for run in old + new} | {run[1] + periods.ONE_DAY for run in old + new if run[1] is not None})
    out: list[list] = []
    for i, day in enumerate(cuts):
        last = cuts[i + 1] - periods.ONE_DAY if i + 1 < len(cuts) else None
        was, now = periods.holders_on(old, day), periods.holders_on(new, day)
        if was == now:
            continue
        if out and out[-1][2:] == [was, now] and out[-1][1] == day - periods.ONE_DAY:
            out[-1][1] = last
        else:
            out.append([day, last, was, now])
    return [tuple(stretch) for stretch in out]


def _gap(picture, day: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """The stretch without any right around ``day`` (which has none) in ``picture``: (first day,
    last day), ``None`` for "since always" / "for good"."""
    first = max((end + periods.ONE_DAY for _, end, _ in picture if end is not None and end < day), default=None)
    last = min((start - periods.ONE_DAY for start, _, _ in picture if start > day), default=None)
    return first, last


def _run_start(picture, day: dt.date) -> dt.date:
    """The first day of the run of ``picture`` that holds ``day``."""
    return next(start for start, end, _ in picture if start <= day and (end is None or end >= day))


def classify(
    child: str, supplement: str, before: Sequence[Span], after: Sequence[Span], interval: FeedInterval
) -> list[FeedChange]:
    """The changes of one child's supplement: ``before`` are its periods as known at the interval's
    start, ``after`` as known at its end (see the module docstring)."""
    old, new = _picture(before, interval.start), _picture(after, interval.end)
    changes = []

    def add(kind: str, beneficiary: str, first: dt.date, last: dt.date | None) -> None:
        changes.append(FeedChange(child, supplement, first, _ORDER[kind], kind, beneficiary, last, first < interval.start))

    def ended(last_day: dt.date, beneficiaries, first: dt.date) -> None:
        for beneficiary in sorted(beneficiaries):
            changes.append(FeedChange(child, supplement, _run_start(new, last_day), _ORDER[ENDED], ENDED, beneficiary,
                                      last_day, first < interval.start))

    for first, last, was, now in _differences(old, new):
        day_before = periods.holders_on(new, first - periods.ONE_DAY)
        if now:
            if not was:
                kind = BENEFICIARY_CHANGED if day_before and not now <= day_before else NEW
            else:
                kind, now = BENEFICIARY_CHANGED, now - was or now
            for beneficiary in sorted(now):
                add(kind, beneficiary, first, last)
            after = None if last is None else last + periods.ONE_DAY
            if after is not None and not periods.holders_on(new, after) and _gap(new, after) == (after, None):
                # It also ends, and nothing follows: said as well (once, if the days after changed too).
                ended(last, periods.holders_on(new, last), last + periods.ONE_DAY)
        else:
            # No right any more over the stretch: how the new picture looks around it decides the word.
            gap_first, gap_last = _gap(new, first)
            if gap_first == first and gap_last is None and day_before:  # nothing from here on
                ended(first - periods.ONE_DAY, day_before, first)
                continue
            kind = INTERRUPTED if gap_first is not None and gap_last is not None else WITHDRAWN
            for beneficiary in sorted(was):
                add(kind, beneficiary, first, last)
    return sorted(set(changes))


def counts(changes: Sequence[FeedChange]) -> dict[str, int]:
    """Counts per kind of change, and of retroactive ones, for the audit and the workbook (no personal data)."""
    out = {"rows": len(changes), "children": len({c.child_insz for c in changes}), **dict.fromkeys(KINDS, 0), RETROACTIVE: 0}
    for change in changes:
        out[change.change] += 1
        out[RETROACTIVE] += change.retroactive
    return out


def serialise(changes: Sequence[FeedChange]) -> bytes:
    """Compact text form, for the (encrypted) staging file."""
    return "\n".join(
        "\t".join(
            (c.child_insz, c.supplement, c.period_start.isoformat(), str(c.order), c.change, c.beneficiary_insz,
             c.period_end.isoformat() if c.period_end else "", "1" if c.retroactive else "0")
        )
        for c in changes
    ).encode("utf-8")


def deserialise(data: bytes) -> list[FeedChange]:
    rows = []
    for line in data.decode("utf-8").splitlines():
        child, supplement, start, order, change, beneficiary, end, *retroactive = line.split("\t")
        rows.append(
            FeedChange(child, supplement, dt.date.fromisoformat(start), int(order), change, beneficiary,
                       dt.date.fromisoformat(end) if end else None, retroactive == ["1"])
        )
    return rows
