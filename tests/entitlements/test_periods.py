"""The one period rule, against an oracle that counts days one by one (written without it).

Random period sets (hypothesis) over a small calendar: adjacent, overlapping, nested, ongoing
periods and gaps. The SQL form of the rule is checked against the Python form in SQLite.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from welfare_exchange.entitlements import periods

DAY0 = dt.date(2024, 1, 1)
SPAN = 60  # days of the calendar the periods live in
HORIZON = DAY0 + dt.timedelta(days=SPAN + 5)  # "ongoing" is checked up to here


def _day(n: int) -> dt.date:
    return DAY0 + dt.timedelta(days=n)


@st.composite
def period_sets(draw, holders=("A",)):
    out = []
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, SPAN))
        end = draw(st.one_of(st.none(), st.integers(start, SPAN)))
        out.append((_day(start), None if end is None else _day(end), draw(st.sampled_from(holders))))
    return out


def _covered(spans, day):
    """Oracle: the holders whose period covers ``day``."""
    return frozenset(h for start, end, h in spans if start <= day and (end is None or day <= end))


def _oracle_runs(spans, first=DAY0, last=HORIZON):
    """Oracle: maximal runs of days (first..last) with the same non-empty holders; a run reaching
    ``last`` is open (``None``)."""
    runs, day = [], first
    while day <= last:
        who = _covered(spans, day)
        if who and runs and runs[-1][2] == who and runs[-1][1] == day - dt.timedelta(days=1):
            runs[-1][1] = day
        elif who:
            runs.append([day, day, who])
        day += dt.timedelta(days=1)
    return [(s, None if e == last else e, w) for s, e, w in runs]


def _truncate(runs, last=HORIZON):
    """The production runs seen up to ``last`` (an end after it is open)."""
    return [(s, None if e is None or e >= last else e, w) for s, e, w in runs if s <= last]


@settings(max_examples=300, deadline=None)
@given(period_sets())
def test_continuous_periods_merge_touching_and_overlapping_and_keep_gaps(spans):
    got = periods.continuous((s, e) for s, e, _ in spans)
    assert [(s, e) for s, e, _ in _truncate([(s, e, True) for s, e in got])] == [(s, e) for s, e, _ in _oracle_runs(spans)]
    # Never two periods that touch or overlap.
    for (_, end), (start, _) in zip(got, got[1:]):
        assert end is not None and start > end + dt.timedelta(days=1)


@settings(max_examples=300, deadline=None)
@given(period_sets(), st.integers(0, SPAN), st.integers(0, 10))
def test_within_a_range_clips_the_start_and_opens_what_runs_on(spans, first, length):
    first_day, last_day = _day(first), _day(first + length)
    expected = [(s, e) for s, e, _ in _oracle_runs(spans, first_day, last_day)]
    assert periods.within([(s, e) for s, e, _ in spans], first_day, last_day) == expected


@settings(max_examples=300, deadline=None)
@given(period_sets(holders=("A", "B", "C")))
def test_holders_over_time(spans):
    assert _truncate(periods.holders(spans)) == _oracle_runs(spans)
    runs = periods.holders(spans)
    for n in range(SPAN + 3):
        assert periods.holders_on(runs, _day(n)) == _covered(spans, _day(n))
        assert periods.entitled_on([(s, e) for s, e, _ in spans], _day(n)) == bool(_covered(spans, _day(n)))


@settings(max_examples=200, deadline=None)
@given(period_sets(), st.integers(0, SPAN), st.integers(0, 10))
def test_the_sql_rule_is_the_python_rule(spans, first, length):
    first_day, last_day = _day(first), _day(first + length)
    table = sa.table("p", sa.column("start_date", sa.Date), sa.column("end_date", sa.Date), sa.column("n", sa.Integer))
    engine = _engine()
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM p")
        if spans:
            conn.execute(table.insert(), [{"start_date": s, "end_date": e, "n": i} for i, (s, e, _) in enumerate(spans)])
        found = set(conn.execute(sa.select(table.c.n).where(
            periods.overlaps(table.c.start_date, table.c.end_date, first_day, last_day))).scalars())
        text = conn.execute(sa.text(f"SELECT n FROM p WHERE {periods.overlaps_text('p', 'f', 'l')}").bindparams(
            sa.bindparam("f", type_=sa.Date), sa.bindparam("l", type_=sa.Date)), {"f": first_day, "l": last_day}).scalars()
    oracle = {i for i, (s, e, _) in enumerate(spans)
              if any(_covered([(s, e, 0)], first_day + dt.timedelta(days=k)) for k in range(length + 1))}
    assert found == set(text) == oracle


_ENGINE: list[sa.Engine] = []


def _engine() -> sa.Engine:
    if not _ENGINE:
        engine = sa.create_engine("sqlite://")
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE p (start_date TEXT, end_date TEXT, n INTEGER)")
        _ENGINE.append(engine)
    return _ENGINE[0]
