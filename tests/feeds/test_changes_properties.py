"""The feed's rows are exactly the news: applied to the municipality's previous picture they give
the new one, day by day — checked with hypothesis against pictures computed one day at a time,
without the production rule.

A picture (what the municipality knows after a feed of ``[start, end)``): for each day before
``end`` the beneficiary paid, as known at the end; from ``end`` on, whoever was paid the day
before goes on if the child is still entitled on ``end`` (a later end is not disclosed yet).
"""

from __future__ import annotations

import datetime as dt

from hypothesis import example, given, settings
from hypothesis import strategies as st

from welfare_exchange.feeds.changes import BENEFICIARY_CHANGED, ENDED, INTERRUPTED, NEW, WITHDRAWN, classify
from welfare_exchange.feeds.interval import FeedInterval

DAY0 = dt.date(2026, 8, 1)
INTERVAL = FeedInterval(dt.date(2026, 9, 1), dt.date(2026, 10, 1))
LAST = dt.date(2026, 10, 10)  # the pictures are constant from the interval's end on: a few days more suffice
ONE = dt.timedelta(days=1)


def _day(n: int) -> dt.date:
    return DAY0 + dt.timedelta(days=n)


@st.composite
def timelines(draw):
    """Periods paid to one beneficiary at a time: segments with gaps (or touching), some split in two records."""
    spans, day = [], draw(st.integers(0, 20))
    for i in range(draw(st.integers(0, 4))):
        length = draw(st.integers(0, 25))
        holder = draw(st.sampled_from("AB"))
        last = i == 3 or draw(st.booleans())
        start, end = _day(day), None if last and draw(st.booleans()) else _day(day + length)
        if end is not None and length >= 2 and draw(st.booleans()):  # a split record, touching or overlapping
            cut = _day(day + length // 2)
            spans += [(start, cut, holder), (cut + ONE * draw(st.sampled_from([0, 1])), end, holder)]
        else:
            spans.append((start, end, holder))
        if end is None:
            break
        day += length + draw(st.integers(1, 15))
    return spans


def picture(spans, horizon: dt.date) -> dict[dt.date, frozenset[str]]:
    """Oracle: the municipality's picture, one day at a time."""
    def covering(day):
        return frozenset(h for s, e, h in spans if s <= day and (e is None or day <= e))

    out, day = {}, _day(-1)
    while day <= LAST:
        if day < horizon:
            out[day] = covering(day)
        else:
            out[day] = out[horizon - ONE] if covering(horizon) else frozenset()
        day += ONE
    return out


def apply(rows, old: dict[dt.date, frozenset[str]]) -> dict[dt.date, frozenset[str]]:
    """What the municipality's case worker does with the rows."""
    new = dict(old)
    for row in rows:
        first = row.period_end + ONE if row.change == ENDED else row.period_start
        last = LAST if row.change == ENDED or row.period_end is None else row.period_end
        day = first
        while day <= last:
            if row.change in (NEW, BENEFICIARY_CHANGED):
                new[day] = frozenset({row.beneficiary_insz})
            elif row.change in (ENDED, WITHDRAWN, INTERRUPTED):
                new[day] = frozenset()
            day += ONE
    return new


@settings(max_examples=400, deadline=None)
@given(before=timelines(), after=timelines())
@example(  # a right cut short before another beneficiary's resumes: not an end
    before=[(_day(0), _day(1), "A"), (_day(2), _day(3), "B")], after=[(_day(0), _day(0), "A"), (_day(3), _day(3), "B")],
)
def test_the_rows_turn_the_old_picture_into_the_new_one(before, after):
    rows = classify("child", "sociale_toeslag", before, after, INTERVAL)
    old, new = picture(before, INTERVAL.start), picture(after, INTERVAL.end)
    assert apply(rows, old) == new
    for row in rows:
        first = row.period_end + ONE if row.change == ENDED else row.period_start
        assert row.retroactive == (first < INTERVAL.start)


@settings(max_examples=200, deadline=None)
@given(spans=timelines())
def test_known_all_along_only_what_happens_in_the_interval_is_news(spans):
    rows = classify("child", "sociale_toeslag", spans, spans, INTERVAL)
    assert not any(r.retroactive for r in rows)
    assert apply(rows, picture(spans, INTERVAL.start)) == picture(spans, INTERVAL.end)
