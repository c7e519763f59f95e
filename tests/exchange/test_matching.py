"""The Method 1 set join: one row per continuous period (gaps kept), read as the store knew it at
the exchange's moment — against a day-by-day oracle, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from welfare_exchange import insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Beneficiary, Child, Entitlement
from welfare_exchange.exchange import matching

UTC = dt.timezone.utc
REFERENCE = dt.date(2020, 3, 1)
EXCHANGE = dt.date(2020, 6, 1)
KIDS = [insz.make(dt.date(2012, 1, 1) + dt.timedelta(days=i), 500) for i in range(2)]
PARENTS = [insz.make(dt.date(1980, 1, 1) + dt.timedelta(days=i), 500) for i in range(2)]


def _store(session, periods) -> None:
    session.execute(sa.delete(Entitlement))
    session.execute(sa.delete(Child))
    session.execute(sa.delete(Beneficiary))
    kids = [Child(insz=n, birth_date=dt.date(2012, 1, 1), nis_code="11002") for n in KIDS]
    parents = [Beneficiary(insz=n) for n in PARENTS]
    session.add_all(kids + parents)
    session.flush()
    for kid, parent, supplement, start, end, recorded_from, recorded_to in periods:
        session.add(Entitlement(child_id=kids[kid].id, beneficiary_id=parents[parent].id, supplement=supplement,
                                start_date=start, end_date=end, recorded_from=recorded_from, recorded_to=recorded_to))
    session.flush()


def _oracle(periods, at: dt.datetime) -> list[tuple]:
    """Day by day, only versions known at ``at``: runs of entitled days per (child, parent)."""
    rows = []
    for kid in range(len(KIDS)):
        for parent in range(len(PARENTS)):
            known = [(s, e) for k, p, sup, s, e, f, t in periods
                     if (k, p, sup) == (kid, parent, "sociale_toeslag") and f <= at and (t is None or t > at)]
            day, run = REFERENCE, None
            while day <= EXCHANGE:
                if any(s <= day and (e is None or day <= e) for s, e in known):
                    run = [day, day] if run is None else [run[0], day]
                elif run is not None:
                    rows.append((KIDS[kid], PARENTS[parent], run[0], run[1]))
                    run = None
                day += dt.timedelta(days=1)
            if run is not None:
                rows.append((KIDS[kid], PARENTS[parent], run[0], None))
    return sorted(rows)


moments = st.sampled_from([dt.datetime(2020, m, 1, tzinfo=UTC) for m in (1, 4, 7)])


@st.composite
def histories(draw):
    out = []
    for _ in range(draw(st.integers(0, 7))):
        start = REFERENCE + dt.timedelta(days=draw(st.integers(-40, 110)))
        end = draw(st.one_of(st.none(), st.integers(0, 80).map(lambda n, s=start: s + dt.timedelta(days=n))))
        recorded_from = draw(moments)
        recorded_to = draw(st.one_of(st.none(), moments.filter(lambda m, f=recorded_from: m > f)))
        out.append((draw(st.integers(0, 1)), draw(st.integers(0, 1)), draw(st.sampled_from(["sociale_toeslag", "zorgtoeslag"])),
                    start, end, recorded_from, recorded_to))
    # One current version per entitlement, as the store guarantees.
    seen, kept = set(), []
    for row in out:
        key = (row[0], row[1], row[2], row[3])
        if row[6] is None:
            if key in seen:
                continue
            seen.add(key)
        kept.append(row)
    return kept


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(periods=histories(), at=st.sampled_from([dt.datetime(2020, m, 15, tzinfo=UTC) for m in (2, 5, 8)]))
def test_match_is_the_day_by_day_truth_as_known_at_the_moment(project_db, periods, at):
    with session_scope() as session:
        _store(session, periods)
        found = matching.match(session, KIDS, supplements=["sociale_toeslag"], reference_date=REFERENCE,
                               exchange_date=EXCHANGE, known_at=at)
    got = [(r.child_insz, r.beneficiary_insz, r.period_start, r.period_end) for r in found]
    assert got == _oracle(periods, at)


def test_a_gap_is_two_rows_and_a_later_correction_changes_only_later_matches(project_db):
    t1, t2 = dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2020, 5, 1, tzinfo=UTC)
    periods = [
        (0, 0, "sociale_toeslag", dt.date(2020, 1, 1), dt.date(2020, 3, 31), t1, None),
        (0, 0, "sociale_toeslag", dt.date(2020, 4, 1), dt.date(2020, 4, 10), t1, None),  # touching: one period
        (0, 0, "sociale_toeslag", dt.date(2020, 5, 1), None, t1, t2),  # after a gap; ended retroactively at t2
        (0, 0, "sociale_toeslag", dt.date(2020, 5, 1), dt.date(2020, 5, 20), t2, None),
    ]
    with session_scope() as session:
        _store(session, periods)
        before = matching.match(session, KIDS, supplements=["sociale_toeslag"], reference_date=REFERENCE,
                                exchange_date=EXCHANGE, known_at=t2 - dt.timedelta(seconds=1))
        after = matching.match(session, KIDS, supplements=["sociale_toeslag"], reference_date=REFERENCE,
                               exchange_date=EXCHANGE, known_at=t2)
        now = matching.match(session, KIDS, supplements=["sociale_toeslag"], reference_date=REFERENCE, exchange_date=EXCHANGE)
    assert [(r.period_start, r.period_end) for r in before] == [(REFERENCE, dt.date(2020, 4, 10)), (dt.date(2020, 5, 1), None)]
    assert [(r.period_start, r.period_end) for r in after] == [(REFERENCE, dt.date(2020, 4, 10)),
                                                               (dt.date(2020, 5, 1), dt.date(2020, 5, 20))]
    assert now == after
