"""Change detection: the classification rules, and the set query on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.feeds.conftest import build_store
from welfare_exchange.db import session_scope
from welfare_exchange.feeds import changes
from welfare_exchange.feeds.changes import BENEFICIARY_CHANGED, ENDED, INTERRUPTED, NEW, WITHDRAWN, classify
from welfare_exchange.feeds.interval import FeedInterval

D = dt.date
OCT = FeedInterval(D(2026, 10, 1), D(2026, 11, 1))


def kinds(periods, interval=OCT, before=None):
    """The changes when the periods were known all along (``before`` = ``periods``) or changed."""
    rows = classify("child", "sociale_toeslag", periods if before is None else before, periods, interval)
    return [(c.change, c.beneficiary_insz, c.period_start, c.period_end, c.retroactive) for c in rows]


# -------------------------------------------------------------- what happens in the interval


def test_a_period_starting_in_the_interval_is_new_and_its_later_end_is_not_disclosed():
    assert kinds([(D(2026, 10, 3), D(2026, 12, 31), "A")]) == [(NEW, "A", D(2026, 10, 3), None, False)]


def test_a_period_ending_in_the_interval_is_ended_on_its_last_day():
    assert kinds([(D(2024, 1, 1), D(2026, 10, 31), "A")]) == [(ENDED, "A", D(2024, 1, 1), D(2026, 10, 31), False)]
    assert kinds([(D(2024, 1, 1), D(2026, 10, 15), "A")]) == [(ENDED, "A", D(2024, 1, 1), D(2026, 10, 15), False)]


def test_a_new_beneficiary_is_one_change_reported_where_the_new_period_starts():
    periods = [(D(2024, 1, 1), D(2026, 9, 30), "A"), (D(2026, 10, 1), None, "B")]
    assert kinds(periods) == [(BENEFICIARY_CHANGED, "B", D(2026, 10, 1), None, False)]
    september = FeedInterval(D(2026, 9, 1), D(2026, 10, 1))
    assert kinds(periods, september) == []  # the old period's end is not an "ended"


def test_a_split_record_with_the_same_beneficiary_is_no_change():
    assert kinds([(D(2022, 1, 1), D(2026, 10, 9), "A"), (D(2026, 10, 10), None, "A")]) == []


def test_a_short_period_inside_the_interval_is_new_and_ended():
    assert kinds([(D(2026, 10, 5), D(2026, 10, 20), "A")]) == [
        (NEW, "A", D(2026, 10, 5), D(2026, 10, 20), False), (ENDED, "A", D(2026, 10, 5), D(2026, 10, 20), False)]
    # A new beneficiary whose period also ends in the interval: the change and the end.
    assert kinds([(D(2024, 1, 1), D(2026, 10, 4), "A"), (D(2026, 10, 5), D(2026, 10, 20), "B")]) == [
        (BENEFICIARY_CHANGED, "B", D(2026, 10, 5), D(2026, 10, 20), False), (ENDED, "B", D(2026, 10, 5), D(2026, 10, 20), False)]


def test_a_resumed_right_after_a_gap_is_new_again_and_a_gap_inside_the_interval_an_interruption():
    assert kinds([(D(2025, 1, 1), D(2026, 9, 15), "A"), (D(2026, 10, 2), None, "A")]) == [(NEW, "A", D(2026, 10, 2), None, False)]
    assert kinds([(D(2025, 1, 1), D(2026, 10, 9), "A"), (D(2026, 10, 20), None, "A")]) == [
        (INTERRUPTED, "A", D(2026, 10, 10), D(2026, 10, 19), False)]


def test_nothing_outside_the_interval():
    assert kinds([(D(2020, 1, 1), None, "A"), (D(2019, 1, 1), D(2019, 12, 31), "B")]) == []


# -------------------------------------------------------------- recorded in the interval, effective before


def test_a_retroactive_grant():
    assert kinds([(D(2026, 9, 15), None, "A")], before=[]) == [(NEW, "A", D(2026, 9, 15), None, True)]


def test_a_retroactive_end():
    assert kinds([(D(2024, 1, 1), D(2026, 9, 20), "A")], before=[(D(2024, 1, 1), None, "A")]) == [
        (ENDED, "A", D(2024, 1, 1), D(2026, 9, 20), True)]


def test_a_withdrawn_right():
    assert kinds([], before=[(D(2025, 3, 1), None, "A")]) == [(WITHDRAWN, "A", D(2025, 3, 1), None, True)]
    assert kinds([], before=[(D(2025, 3, 1), D(2025, 6, 30), "A")]) == [(WITHDRAWN, "A", D(2025, 3, 1), D(2025, 6, 30), True)]
    # A start moved later: the days in between are withdrawn.
    assert kinds([(D(2025, 5, 1), None, "A")], before=[(D(2025, 3, 1), None, "A")]) == [
        (WITHDRAWN, "A", D(2025, 3, 1), D(2025, 4, 30), True)]


def test_a_corrected_beneficiary():
    assert kinds([(D(2025, 1, 1), None, "B")], before=[(D(2025, 1, 1), None, "A")]) == [
        (BENEFICIARY_CHANGED, "B", D(2025, 1, 1), None, True)]


def test_a_right_cut_short_before_it_resumes_is_interrupted_not_ended():
    before = [(D(2025, 1, 1), None, "A")]
    after = [(D(2025, 1, 1), D(2025, 5, 31), "A"), (D(2025, 9, 1), None, "B")]
    assert kinds(after, before=before) == [
        (INTERRUPTED, "A", D(2025, 6, 1), D(2025, 8, 31), True),
        (BENEFICIARY_CHANGED, "B", D(2025, 9, 1), None, True),
    ]


def test_a_retroactive_change_and_one_in_the_interval_together():
    before = [(D(2024, 1, 1), None, "A")]
    after = [(D(2024, 1, 1), D(2026, 6, 30), "A"), (D(2026, 8, 1), D(2026, 10, 10), "A")]
    assert kinds(after, before=before) == [
        (INTERRUPTED, "A", D(2026, 7, 1), D(2026, 7, 31), True),
        (ENDED, "A", D(2026, 8, 1), D(2026, 10, 10), False),
    ]


def test_serialise_round_trip_and_old_staged_rows():
    rows = classify("c", "sociale_toeslag", [], [(D(2026, 9, 5), D(2026, 10, 20), "b"), (D(2026, 10, 21), None, "x")], OCT)
    assert changes.deserialise(changes.serialise(rows)) == rows and any(r.retroactive for r in rows)
    old = b"c\tsociale_toeslag\t2026-10-05\t0\tnieuw\tb\t"  # staged before the retroactive flag existed
    assert changes.deserialise(old)[0].retroactive is False


# -------------------------------------------------------------- the set query


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


def test_an_empty_store_has_no_changes(project_db):
    with session_scope() as session:
        assert changes.detect(session, ["99901"], OCT) == {"99901": []}
