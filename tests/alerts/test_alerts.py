"""Failure alerts by webhook and e-mail, on loopback receivers.

Unit tests call :func:`welfare_exchange.alerts.send_failure_alert` directly; the end-to-end
test lets a real Method 1 run fail (a request encrypted with the wrong password) and checks
that the failure callback produced exactly one alert per channel, with no INSZ in it.
"""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest

from tests.alerts.conftest import ALERT_TO
from welfare_exchange import alerts, insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import SideEffect

RUNBOOK = "docs/RUNBOOK.md § 'A request was refused'"
NUMBER = insz.make(dt.date(2014, 2, 3), 555)  # checksum-valid, synthetic


def _alert(**overrides):
    args = dict(dag_id="method1_99001_testgemeente_p1", run_id="manual__2026-11-02T09:00:00+00:00",
                task_id="decrypt_and_validate", try_number=1, protocol_id=1, exchange_id=7,
                reason="ExchangeRefused: the password does not open the file (wrong_password)", runbook=RUNBOOK)
    args.update(overrides)
    return alerts.send_failure_alert(**args)


def test_webhook_and_email_carry_the_facts_and_the_runbook_step(sqlite_db, webhook, smtp):
    assert _alert() == {"webhook": "sent", "email": "sent"}

    [body] = webhook.received
    assert body["event"] == "welfare_exchange.task_failed"
    assert (body["dag_id"], body["task_id"], body["try_number"]) == ("method1_99001_testgemeente_p1", "decrypt_and_validate", 1)
    assert (body["protocol_id"], body["exchange_id"]) == (1, 7)
    assert body["reason"].startswith("ExchangeRefused") and body["runbook"] == RUNBOOK
    assert body["run_path"] == "/dags/method1_99001_testgemeente_p1/runs/manual__2026-11-02T09%3A00%3A00%2B00%3A00"
    assert webhook.headers[0]["Authorization"] == "Bearer test-webhook-token"

    [message] = smtp.messages
    assert smtp.envelopes == [("welfare-exchange@agency.test", ALERT_TO)]
    assert message["Subject"] == "[welfare-exchange] decrypt_and_validate failed: method1_99001_testgemeente_p1 (exchange 7)"
    text = message.get_content()
    for expected in ("Task:       decrypt_and_validate (try 1)", "Exchange:   7", RUNBOOK, "wrong_password",
                     "/dags/method1_99001_testgemeente_p1/runs/"):
        assert expected in text, expected


def test_personal_data_in_any_field_is_withheld(sqlite_db, webhook, smtp):
    _alert(reason=f"ValueError: row 4 holds {NUMBER}", run_id=f"manual__{NUMBER}")
    sent = json.dumps(webhook.received) + smtp.messages[0].as_string()
    assert insz.find_insz_shaped(sent) == []
    assert "row 4 holds [withheld]" in webhook.received[0]["reason"]


def test_one_alert_per_failed_try(sqlite_db, webhook, smtp):
    assert _alert()["webhook"] == "sent"
    assert _alert() == {"webhook": "already sent", "email": "already sent"}  # the same try, again
    assert _alert(try_number=2)["webhook"] == "sent"  # cleared by an operator and failed again
    assert len(webhook.received) == 2 and len(smtp.messages) == 2
    with session_scope() as session:
        assert session.query(SideEffect).filter_by(kind="alert", state="done").count() == 2


def test_each_failing_municipality_of_a_mapped_task_is_alerted(sqlite_db, webhook, smtp):
    """One feed per municipality: two map indexes failing on the same try are two alerts."""
    args = dict(dag_id="structural_feeds", task_id="deliver_feed", exchange_id=None)
    assert _alert(**args, map_index=0)["webhook"] == "sent"
    assert _alert(**args, map_index=1)["webhook"] == "sent"
    assert _alert(**args, map_index=1)["webhook"] == "already sent"
    assert len(webhook.received) == 2


def test_the_exchange_is_found_in_the_ledger_by_run(sqlite_db, webhook):
    from tests.ui.seed import RUN_ID, seed

    seeded = seed()
    _alert(dag_id=seeded.dag_id, run_id=RUN_ID, exchange_id=None)
    assert webhook.received[0]["exchange_id"] == seeded.exchange_id


def test_no_channel_configured_is_not_an_error(sqlite_db, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_ALERT_WEBHOOK", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_ALERT_SMTP", raising=False)
    assert _alert() == {"webhook": "not configured", "email": "not configured"}


def test_a_dead_webhook_does_not_stop_the_email_and_never_raises(sqlite_db, webhook, smtp, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_WEBHOOK", json.dumps({**webhook.connection(), "port": closed_port}))
    assert _alert() == {"webhook": "failed: ConnectError", "email": "sent"}
    webhook.status = 500
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_WEBHOOK", json.dumps(webhook.connection()))
    assert _alert(try_number=2)["webhook"] == "failed: HTTPStatusError"


def test_alerts_still_go_out_when_the_project_database_is_down(webhook, smtp, monkeypatch, tmp_path):
    monkeypatch.setenv("WELFARE_EXCHANGE_DB_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    assert _alert(exchange_id=None) == {"webhook": "sent", "email": "sent"}
    assert webhook.received[0]["exchange_id"] is None


@pytest.mark.parametrize(
    ("conn", "url"),
    [
        ({"host": "127.0.0.1", "port": 8080, "schema": "http", "extra": {"endpoint": "hook"}}, "http://127.0.0.1:8080/hook"),
        ({"host": "https://alerts.example.test/x", "extra": {}}, "https://alerts.example.test/x"),
        ({"host": "127.0.0.1", "schema": None, "extra": {"endpoint": "/a/b"}}, "http://127.0.0.1/a/b"),
    ],
)
def test_webhook_url(conn, url):
    from welfare_exchange.connections import Connection

    connection = Connection(conn_id="alert_webhook", conn_type="http", host=conn["host"], port=conn.get("port"),
                            schema=conn.get("schema"), extra=conn["extra"])
    assert alerts.webhook_url(connection) == url
