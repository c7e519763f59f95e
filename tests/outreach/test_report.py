"""The municipality's report: counts only, small counts suppressed so no family can be singled out."""

from __future__ import annotations

import datetime as dt

import pytest

from welfare_exchange.outreach.report import PRIMARY, SECONDARY, render, suppress


def test_counts_of_ten_and_more_are_shown():
    assert suppress({"email": 120, "letter": 45, "bounced": 10}) == {
        "email": "120", "letter": "45", "bounced": "10", "total": "175",
    }


def test_one_small_count_hides_another_so_it_cannot_be_worked_out():
    shown = suppress({"email": 120, "letter": 45, "bounced": 3, "uncertain": 0})
    assert shown["bounced"] == PRIMARY
    assert shown["letter"] == SECONDARY  # the smallest other count: 120 + 45 + x = 168 no longer gives x
    assert shown["email"] == "120" and shown["uncertain"] == "0" and shown["total"] == "168"


def test_small_counts_that_together_reach_ten_need_no_second_hiding():
    shown = suppress({"email": 120, "bounced": 6, "uncertain": 5})
    assert shown == {"email": "120", "bounced": PRIMARY, "uncertain": PRIMARY, "total": "131"}


def test_a_small_total_is_hidden_too():
    assert suppress({"email": 4, "letter": 2, "bounced": 0}) == {
        "email": PRIMARY, "letter": PRIMARY, "bounced": "0", "total": PRIMARY,
    }


@pytest.mark.parametrize("n", range(1, 10))
def test_no_count_under_ten_is_ever_printed(n):
    data, shown = render(
        municipality="Testgemeente", nis_code="99999", protocol_id=5, exchange_id=8,
        reference_date=dt.date(2026, 10, 1), campaign_date=dt.date(2026, 11, 2), offer_title="Gratis zwemmen",
        counts={"email": 250, "letter": n, "bounced": 0, "uncertain": 0, "unreachable": 0},
    )
    text = data.decode()
    assert shown["letter"] == PRIMARY and shown["email"] == SECONDARY
    assert "250" not in text and f"{250 + n}" in text
    table = [line for line in text.splitlines() if line.startswith("  ")]
    assert not any(line.split()[-1] == str(n) for line in table)
