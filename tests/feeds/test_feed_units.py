"""The feed workbook, the interval, the configuration and the deadline check."""

from __future__ import annotations

import datetime as dt
import io
import types

import pytest
import python_calamine
import sqlalchemy as sa

from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord
from welfare_exchange.feeds import config, deadline, workbook
from welfare_exchange.feeds.changes import NEW, FeedChange
from welfare_exchange.feeds.interval import BRUSSELS, FeedInterval
from welfare_exchange.orchestration import deadline as airflow_deadline

D = dt.date
OCT = FeedInterval(D(2026, 10, 1), D(2026, 11, 1))


def _protocol(fields):
    return types.SimpleNamespace(
        id=7, nis_code="44021", municipality="Gent", legal_basis="Groeipakketdecreet", purpose="lokaal sociaal beleid",
        supplements=["sociale_toeslag"], allowed_fields=fields,
    )


ROWS = [FeedChange("child-number", "sociale_toeslag", D(2026, 10, 3), 0, NEW, "parent-number", None)]


def test_the_workbook_is_byte_identical_when_built_twice():
    protocol = _protocol(["child_insz", "beneficiary_insz", "period_start", "period_end"])
    first = workbook.build_workbook(protocol, OCT, ROWS, D(2027, 1, 30))
    assert workbook.build_workbook(protocol, OCT, ROWS, D(2027, 1, 30)) == first


def test_the_workbook_carries_only_the_allowed_fields():
    data = workbook.build_workbook(_protocol(["child_insz"]), OCT, ROWS, D(2027, 1, 30))
    book = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
    assert book.get_sheet_by_name("Wijzigingen").to_python() == [
        ["Wijziging", "Met terugwerkende kracht", "INSZ kind"], [NEW, "nee", "child-number"]]


def test_file_name_names_municipality_protocol_and_days():
    assert workbook.feed_file_name(_protocol([]), OCT) == "groeipakket_structureel_44021_p7_2026-10-01_2026-10-31.xlsx"


def test_interval_from_a_scheduled_runs_context_in_brussels_days():
    start = dt.datetime(2026, 9, 30, 22, tzinfo=dt.timezone.utc)  # midnight in Brussels (CEST)
    end = dt.datetime(2026, 10, 31, 23, tzinfo=dt.timezone.utc)  # midnight in Brussels (CET)
    interval = FeedInterval.from_context({"data_interval_start": start, "data_interval_end": end})
    assert interval == OCT and FeedInterval.parse(str(interval)) == interval
    assert interval.exchange_key(3) == FeedInterval.parse("2026-10-01/2026-11-01").exchange_key(3) != interval.exchange_key(4)
    with pytest.raises(ValueError, match="no data interval"):
        FeedInterval.from_context({"data_interval_start": None, "data_interval_end": None})


def test_config_from_environment(monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_SCHEDULE", "0 6 1 */3 *")
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_DEADLINE_HOURS", "48")
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_START_DATE", "2025-07-01")
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_CATCHUP", "false")
    got = config.get_feed_config()
    assert (got.schedule, got.deadline, got.start_date, got.catchup) == ("0 6 1 */3 *", dt.timedelta(hours=48), D(2025, 7, 1), False)
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_SNAPSHOT_POLICY", "sometimes")
    with pytest.raises(ValueError, match="SNAPSHOT_POLICY"):
        config.get_feed_config()


def test_the_deadline_alert_covers_the_longest_month_plus_the_delay(monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_DEADLINE_HOURS", "24")
    assert deadline.longest_interval("0 0 1 * *") == dt.timedelta(days=31)
    alert = airflow_deadline.deadline_alert()
    assert alert.interval == dt.timedelta(days=32)
    assert deadline.due(OCT) == dt.datetime(2026, 11, 2, tzinfo=BRUSSELS)


def test_check_records_a_missed_deadline_once(sqlite_db, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_DEADLINE_HOURS", "24")
    actor = audit.Actor(type="system", name="airflow", dag_id="structural_feeds", run_id="r", task_id="t")
    before = deadline.check(OCT, [1, 2], actor, now=dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc))
    assert before["missed"] is False
    for _ in range(2):
        after = deadline.check(OCT, [1, 2], actor, now=dt.datetime(2026, 11, 3, tzinfo=dt.timezone.utc))
        assert after == {"due": "2026-11-02T00:00:00+01:00", "missed": True, "waiting": 2, "late": 0}
    with session_scope() as session:
        facts = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "feed.deadline_missed")).all()
        assert len(facts) == 1 and facts[0].counts["not_delivered"] == 2
