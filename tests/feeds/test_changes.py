"""Change detection: the classification rules, and the set query on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.feeds.conftest import build_store
from welfare_exchange.db import session_scope
from welfare_exchange.feeds import changes
from welfare_exchange.feeds.changes import BENEFICIARY_CHANGED, ENDED, NEW, classify
from welfare_exchange.feeds.interval import FeedInterval

D = dt.date
OCT = FeedInterval(D(2026, 10, 1), D(2026, 11, 1))


def kinds(periods, interval=OCT):
    return [(c.change, c.beneficiary_insz, c.period_start, c.period_end) for c in classify("child", "sociale_toeslag", periods, interval)]


def test_a_period_starting_in_the_interval_is_new_and_its_later_end_is_not_disclosed():
    assert kinds([(D(2026, 10, 3), D(2026, 12, 31), "A")]) == [(NEW, "A", D(2026, 10, 3), None)]


def test_a_period_ending_in_the_interval_is_ended_on_its_last_day():
    assert kinds([(D(2024, 1, 1), D(2026, 10, 31), "A")]) == [(ENDED, "A", D(2024, 1, 1), D(2026, 10, 31))]


def test_a_new_beneficiary_is_one_change_reported_where_the_new_period_starts():
    periods = [(D(2024, 1, 1), D(2026, 9, 30), "A"), (D(2026, 10, 1), None, "B")]
    assert kinds(periods) == [(BENEFICIARY_CHANGED, "B", D(2026, 10, 1), None)]
    september = FeedInterval(D(2026, 9, 1), D(2026, 10, 1))
    assert kinds(periods, september) == []  # the old period's end is not an "ended"


def test_a_split_record_with_the_same_beneficiary_is_no_change():
    assert kinds([(D(2022, 1, 1), D(2026, 10, 9), "A"), (D(2026, 10, 10), None, "A")]) == []


def test_a_short_period_inside_the_interval_is_new_and_ended():
    got = kinds([(D(2026, 10, 5), D(2026, 10, 20), "A")])
    assert got == [(NEW, "A", D(2026, 10, 5), D(2026, 10, 20)), (ENDED, "A", D(2026, 10, 5), D(2026, 10, 20))]


def test_a_resumed_right_after_a_gap_is_new_again():
    periods = [(D(2025, 1, 1), D(2026, 9, 15), "A"), (D(2026, 10, 2), None, "A")]
    assert kinds(periods) == [(NEW, "A", D(2026, 10, 2), None)]


def test_nothing_outside_the_interval():
    assert kinds([(D(2020, 1, 1), None, "A"), (D(2019, 1, 1), D(2019, 12, 31), "B")]) == []


def test_serialise_round_trip():
    rows = classify("c", "sociale_toeslag", [(D(2026, 10, 5), D(2026, 10, 20), "b"), (D(2026, 10, 21), None, "x")], OCT)
    assert changes.deserialise(changes.serialise(rows)) == rows


@pytest.mark.parametrize("month, expected", [
    (FeedInterval(D(2026, 8, 1), D(2026, 9, 1)), [(NEW, "new", "parent_new")]),
    (FeedInterval(D(2026, 9, 1), D(2026, 10, 1)), [(ENDED, "ended", "parent_ended")]),
    (OCT, [(BENEFICIARY_CHANGED, "moved", "parent_moved_2")]),
    (FeedInterval(D(2026, 7, 1), D(2026, 8, 1)), []),
])
def test_detect_per_municipality_on_both_back_ends(project_db, month, expected):
    a, b = build_store("99901", 1), build_store("99902", 2)

    with session_scope() as session:
        found = changes.detect(session, ["99901", "99902", "99903"], month)

    assert set(found) == {"99901", "99902", "99903"} and found["99903"] == []
    for code, numbers in (("99901", a), ("99902", b)):
        assert [(c.change, c.child_insz, c.beneficiary_insz) for c in found[code]] == [
            (kind, numbers[child], numbers[parent]) for kind, child, parent in expected
        ]
    assert changes.counts(found["99901"])["rows"] == len(expected)
