"""``welfare-exchange retention status|run``: the CLI contract (text, --json, exit codes)."""

from __future__ import annotations

import datetime as dt
import json

from tests.retention.helpers import EXCHANGE_DATE, exchange, item, schedule, signed_protocol, staging_with_files
from welfare_exchange.cli import main


def test_status_shows_what_is_due_when_per_protocol_and_run_deletes_it(sqlite_db, capsys, monkeypatch):
    pid = signed_protocol(delete_request_after_match=True)
    eid = exchange(pid)
    staging = staging_with_files(pid, eid, "result.xlsx")
    due = schedule(pid, eid, "staging", "local", str(staging.folder), EXCHANGE_DATE + dt.timedelta(days=90))
    monkeypatch.setenv("WELFARE_EXCHANGE_MAX_RETENTION_DAYS", "60")
    capsys.readouterr()

    assert main(["retention", "status", "--as-of", EXCHANGE_DATE.isoformat(), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    [protocol] = status["protocols"]
    assert protocol["protocol_id"] == pid and protocol["pending"] == 1 and protocol["overdue"] == 0
    assert protocol["next_deadline"] == (EXCHANGE_DATE + dt.timedelta(days=60)).isoformat()
    assert protocol["items"][0]["clamped"] is True and status["max_retention_days"] == 60

    assert main(["retention", "status", "--as-of", "2027-01-01"]) == 0
    text = capsys.readouterr().out
    assert f"protocol {pid} · Testgemeente 99901 (99901) · signed" in text
    assert "OVERDUE 2027-01-01  1 × staging (local)" in text and "clamped to the legal maximum: 60 days" in text

    assert main(["retention", "run", "--as-of", "2027-01-01"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["deletion"]["deleted"] == 1 and not staging.folder.exists()
    assert item(due).deletion_outcome == "deleted"


def test_bad_date_is_a_usage_error(sqlite_db, capsys):
    try:
        main(["retention", "status", "--as-of", "tomorrow"])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
