"""The cockpit's routes in process, against Airflow's own API server app (SimpleAuthManager tokens):
the retry's guards (operator level, CSRF token, refused and unknown exchanges, all audited),
the history's filters and lookup, the processing register's filters, pages and CSV — the same
CSV as ``welfare-exchange audit export`` — and no personal data on any page.

The scheduler-driven retry that delivers is in ``test_cockpit_browser.py``.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.ui.conftest import airflow_token
from welfare_exchange import audit, cli, failures, insz, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Protocol
from welfare_exchange.ui import app as ui_app
from welfare_exchange.ui import create_app, queries
from welfare_exchange.orchestration.airflow_api import AirflowApi, Run, Task


@pytest.fixture
def cockpit(airflow_app):
    """The view's app, calling Airflow's API app in process as the caller (tokens validated by Airflow)."""
    airflow = TestClient(airflow_app)
    return TestClient(create_app(airflow=lambda request, token: AirflowApi("http://testserver", token, client=airflow)))


def _as(client: TestClient, role: str, csrf: str | None = "t0ken") -> dict[str, str]:
    client.cookies.clear()
    if csrf is not None:
        client.cookies.set(ui_app.CSRF_COOKIE, csrf)
    return {"Authorization": f"Bearer {airflow_token(role, username=f'wx-{role}')}"}


def _retries() -> list[tuple[str, str, str]]:
    with session_scope() as session:
        return [(r.actor, r.outcome, r.message) for r in
                session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "exchange.retry_requested"))]


def test_retry_needs_the_operator_level_and_the_pages_csrf_token(cockpit, seeded):
    url = f"/api/exchanges/{seeded.exchange_id}/retry"
    viewer = _as(cockpit, "viewer")
    assert cockpit.post(url, headers={**viewer, "X-CSRF-Token": "t0ken"}).status_code == 403
    operator = _as(cockpit, "user")
    for headers in ({}, {"X-CSRF-Token": "another"}, {"X-CSRF-Token": "t0ken", "Origin": "https://evil.example"}):
        resp = cockpit.post(url, headers={**operator, **headers})
        assert resp.status_code == 403 and "Forbidden" in resp.json()["detail"], headers
    assert _retries() == []  # refused before anything was asked of Airflow

    # Past the guards: Airflow has no such run (no scheduler here) — said, and audited with the operator's name.
    resp = cockpit.post(url, headers={**operator, "X-CSRF-Token": "t0ken"})
    assert resp.status_code == 404 and "Airflow knows no run" in resp.json()["detail"]
    assert _retries() == [("wx-user", "refused", resp.json()["detail"] + " (through the Exchanges view)")]


def test_a_refused_request_and_an_unknown_exchange_are_not_retried(cockpit, seeded):
    with session_scope() as session:
        protocol = session.get(Protocol, seeded.protocol_id)
        exchange, _ = ledger.open_exchange(session, protocol, request_sha256="cd" * 32, request_name=None, request_size=10,
                                           dag_id=seeded.dag_id, run_id="manual__refused", exchange_date=dt.date(2026, 11, 3))
        ledger.update_exchange(session, exchange, state="quarantined", failure_code="not_encrypted")
        refused = exchange.id
    headers = {**_as(cockpit, "admin"), "X-CSRF-Token": "t0ken"}
    resp = cockpit.post(f"/api/exchanges/{refused}/retry", headers=headers)
    assert resp.status_code == 409 and "its request was refused" in resp.json()["detail"]
    assert cockpit.post("/api/exchanges/9999/retry", headers=headers).status_code == 404
    assert [outcome for _, outcome, _ in _retries()] == ["refused"]


def test_the_cli_needs_credentials_and_says_where_to_put_them(seeded, capsys, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AIRFLOW_API", raising=False)
    assert cli.main(["exchange", "retry", str(seeded.exchange_id)]) == 2
    assert "create the connection 'airflow_api'" in capsys.readouterr().err


def test_history_filters_and_lookup(cockpit, seeded):
    headers = _as(cockpit, "viewer")
    body = cockpit.get("/api/history", params={"who": "99101", "since": "2026-01-01"}, headers=headers).json()
    assert body["airflow"] == "ok"  # Airflow answered: it simply has no run of the seeded exchange
    assert [r["exchange_id"] for r in body["rows"]] == [seeded.exchange_id]
    assert body["rows"][0]["state"] == "unknown" and "entitlements matched" in body["rows"][0]["label"]
    for params, expected in (({"who": "zonnedorp", "since": "2026-01-01"}, 1), ({"who": "Maanbeek", "since": "2026-01-01"}, 0),
                             ({"kind": "method2", "since": "2026-01-01"}, 0), ({"state": "delivered", "since": "2026-01-01"}, 0),
                             ({"exchange": str(seeded.exchange_id)}, 1)):
        assert cockpit.get("/api/history", params=params, headers=headers).json()["total"] == expected, params
    assert cockpit.get("/api/history", params={"state": "lost"}, headers=headers).status_code == 400
    assert cockpit.get("/api/history", params={"since": "yesterday"}, headers=headers).status_code == 400
    detail = cockpit.get(f"/api/exchanges/{seeded.exchange_id}", headers=headers).json()
    assert detail["exchange_id"] == seeded.exchange_id and detail["facts"] == []
    assert cockpit.get("/api/exchanges/9999", headers=headers).status_code == 404


def test_the_register_filters_pages_and_exports_what_the_cli_exports(cockpit, seeded, capsys):
    headers = _as(cockpit, "viewer")
    everything = cockpit.get("/api/audit", headers=headers).json()
    with session_scope() as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(AuditRecord))
    assert everything["total"] == total and everything["rows"][0]["id"] == total  # newest first
    lifecycle = cockpit.get("/api/audit", params={"action": "protocol.", "protocol": seeded.revoked_protocol_id},
                            headers=headers).json()
    assert [r["action"] for r in lifecycle["rows"]] == ["protocol.revoke", "protocol.sign", "protocol.advise",
                                                        "protocol.submit", "protocol.created"]
    assert cockpit.get("/api/audit", params={"action": "protocol.sign"}, headers=headers).json()["total"] == 2
    assert cockpit.get("/api/audit", params={"since": "2999-01-01"}, headers=headers).json()["total"] == 0

    exported = cockpit.get("/api/audit.csv", headers=headers)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert cli.main(["audit", "export", "--format", "csv"]) == 0
    assert exported.text.replace("\r\n", "\n") == capsys.readouterr().out.replace("\r\n", "\n")
    one = cockpit.get("/api/audit.csv", params={"protocol": seeded.revoked_protocol_id}, headers=headers).text
    assert len(one.strip().splitlines()) == 1 + 5


def test_every_page_renders_without_personal_data(cockpit, seeded):
    headers = _as(cockpit, "viewer")
    with session_scope() as session:  # a message that is fine, next to a person's keyed reference
        audit.record(session, "subject.access", actor=audit.Actor.current_user(), subject=insz.make(dt.date(2015, 6, 7), 777),
                     message="access request answered")
    for path in ("/", "/history?since=2026-01-01", "/audit", f"/exchanges/{seeded.exchange_id}", "/runbook",
                 "/api/exchanges", "/api/history?since=2026-01-01", "/api/audit", "/api/audit.csv"):
        resp = cockpit.get(path, headers=headers)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
        assert insz.find_insz_shaped(resp.text) == [] and seeded.request_name not in resp.text, path
    assert cockpit.get("/api/exchanges", headers=headers).json()["airflow"] == "ok"  # every call Airflow accepted
    page = cockpit.get("/", headers=headers)
    assert 'name="csrf-token"' in page.text and page.cookies.get(ui_app.CSRF_COOKIE)
    assert "data-poll=" in page.text  # the page refreshes itself from the JSON API


class _Airflow(AirflowApi):
    """Airflow's answers for one page, as plain values (what the REST API returned in the browser test)."""

    def __init__(self, active=(), last_failed=(), tasks=None):
        super().__init__("http://unused", "token")
        self.active, self.last_failed, self.tasks = list(active), list(last_failed), tasks or {}

    def runs(self, dag_ids, *, states=None, since=None, until=None, limit=1000):
        pool = self.active if set(states or ()) & {"queued", "running"} else self.last_failed
        return [r for r in pool if r.dag_id in set(dag_ids)]

    def dags_last_run(self, state, dag_ids):
        return {r.dag_id for r in self.last_failed} & set(dag_ids)

    def task_instances(self, runs):
        return {key: self.tasks[key] for key in runs if key in self.tasks}


def test_a_new_run_waiting_for_a_request_replaces_the_delivered_exchange_before_it(seeded):
    with session_scope() as session:  # the seeded exchange was delivered
        exchange = ledger.get_exchange(session, seeded.exchange_id)
        ledger.update_exchange(session, exchange, state="delivered")
    now = dt.datetime(2026, 11, 28, 9, tzinfo=dt.timezone.utc)
    run = Run(seeded.dag_id, "scheduled__2026-11-28", "running", now, now, None)
    tasks = (Task("protocol_gate", "success", now, now, 1), Task("wait_for_request", "deferred", now, None, 1))
    api = _Airflow(active=[run], tasks={(run.dag_id, run.run_id): tasks})
    with session_scope() as session:
        [row] = [p for p in queries.overview(session, api=api, now=now).protocols if p.protocol_id == seeded.protocol_id]
    assert row.last_exchange.state == "delivered"
    assert (row.current.exchange_id, row.current.run_id, row.current.state["state"]) == (None, run.run_id, "waiting")
    assert row.current.state["until"] == "2026-11-29T09:00:00+00:00"  # the arrival window (24 h)

    # That run failed later, before it took a request (SFTP down): the row says so, with the cause.
    failed = Run(seeded.dag_id, run.run_id, "failed", now, now, now)
    tasks = (Task("protocol_gate", "success", now, now, 1), Task("wait_for_request", "failed", now, now, 2))
    with session_scope() as session:
        audit.record(session, "task.failed", "failure", actor=audit.Actor(name="airflow", dag_id=run.dag_id, run_id=run.run_id,
                                                                          task_id="wait_for_request", try_number=2),
                     message=failures.fact_message(failures.CAUSES["sftp_unreachable"], "NoValidConnectionsError: port 22"))
        [row] = [p for p in queries.overview(session, api=_Airflow(last_failed=[failed], tasks={(run.dag_id, run.run_id): tasks}),
                                             now=now).protocols if p.protocol_id == seeded.protocol_id]
    assert row.current.state["state"] == "failed" and row.current.state["failure"]["cause"] == "sftp_unreachable"
    assert row.current.state["retryable"] is True
