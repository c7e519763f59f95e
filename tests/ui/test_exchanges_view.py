"""The Exchanges view's app, in process: content, privacy, Airflow's login and the levels enforced.

Two ways in: the plugin's own app with a stand-in token check (fast, every branch), and the
real Airflow API server app (``airflow.api_fastapi.app.create_app``) with the plugin mounted
and tokens issued and validated by Airflow's SimpleAuthManager. The FAB auth manager of the
deployment is tested on a real Airflow in ``test_roles_browser.py``.
"""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.ui.conftest import airflow_token
from tests.ui.role_probe_plugin import add_level_routes
from tests.ui.seed import TODAY
from welfare_exchange import audit, insz
from welfare_exchange.db import session_scope
from welfare_exchange.orchestration import ui_auth as auth
from welfare_exchange.ui import URL_PREFIX, create_app, queries

GOOD_TOKEN = "good-token"


async def fake_resolver(token: str) -> auth.Caller:
    if token == GOOD_TOKEN:
        return auth.Caller("data-engineer", auth.Level.VIEWER)
    if token == "no-ui-access":
        raise auth.Forbidden(auth.Level.VIEWER)
    raise auth.NotAuthenticated("invalid")


@pytest.fixture
def client():
    return TestClient(create_app(caller_resolver=fake_resolver))


def _bearer(token: str = GOOD_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- login enforced


@pytest.mark.parametrize("path", ["/api/exchanges", "/api/whoami"])
def test_the_api_without_a_token_is_401(client, seeded, path):
    resp = client.get(path)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert "Zonnedorp" not in resp.text


def test_the_page_without_login_sends_the_browser_to_airflow_login(client, seeded):
    resp = client.get("/?state=failed", follow_redirects=False)
    assert resp.status_code == 303
    # Airflow's login page (the default path when no auth manager was set up in this process yet).
    assert resp.headers["location"] in ("/auth/login", "/auth/login?next=%2F%3Fstate%3Dfailed")
    assert "Zonnedorp" not in resp.text


def test_the_login_redirect_returns_to_the_page_by_path_only(seeded, monkeypatch):
    asked = []
    monkeypatch.setattr(auth, "login_url", lambda next_url: asked.append(next_url) or "/auth/login/")
    client = TestClient(create_app(caller_resolver=fake_resolver), root_path="/welfare-exchange")
    assert client.get("/?state=failed", follow_redirects=False).status_code == 303
    # A path of this server (never a host a forged Host header could name), query kept.
    assert asked == ["/welfare-exchange/?state=failed"]


@pytest.mark.parametrize("token", ["not-a-jwt", ""])
def test_a_bad_token_is_refused(client, seeded, token):
    assert client.get("/api/exchanges", headers=_bearer(token)).status_code == 401
    client.cookies.set(auth.COOKIE_NAME, token)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_user_without_ui_access_is_403(client, seeded):
    resp = client.get("/api/exchanges", headers=_bearer("no-ui-access"))
    assert resp.status_code == 403 and "needs the viewer level" in resp.json()["detail"]


def test_whoami_names_the_user_and_level(client, seeded):
    resp = client.get("/api/whoami", headers=_bearer())
    assert resp.status_code == 200 and resp.json() == {"user": "data-engineer", "level": "viewer"}
    client.cookies.set(auth.COOKIE_NAME, GOOD_TOKEN)
    assert 'Logged in as data-engineer (<span id="level">viewer</span>)' in client.get("/").text


def test_the_ui_cookie_is_accepted_and_the_header_wins(client, seeded):
    client.cookies.set(auth.COOKIE_NAME, GOOD_TOKEN)
    assert client.get("/").status_code == 200
    # An explicit, bad header is not rescued by a good cookie (as in Airflow's own API).
    assert client.get("/api/exchanges", headers=_bearer("bad")).status_code == 401


# --------------------------------------------------------------------------- levels


def _levels_app() -> FastAPI:
    """One route per level, each guarded by ``require``; callers named after their level."""
    callers = {level.label: auth.Caller(level.label, level) for level in auth.Level}

    async def resolver(token: str) -> auth.Caller:
        if token not in callers:
            raise auth.NotAuthenticated("invalid")
        return callers[token]

    return add_level_routes(create_app(caller_resolver=resolver))


def test_require_lets_a_level_and_every_higher_one_through():
    client = TestClient(_levels_app())
    for caller in auth.Level:
        for needed in auth.Level:
            resp = client.get(f"/api/needs-{needed.label}", headers=_bearer(caller.label))
            expected = 200 if caller >= needed else 403
            assert resp.status_code == expected, (caller, needed)
            if expected == 403:
                detail = resp.json()["detail"]
                assert f"needs the {needed.label} level" in detail and f"gives {caller.label}" in detail
    assert client.get("/api/needs-viewer").status_code == 401


def test_levels_are_ordered_and_named_once():
    assert [level.label for level in sorted(auth.Level)] == ["viewer", "operator", "admin"]
    assert [level for level, _ in auth.LEVEL_CHECKS] == sorted(auth.Level)


class _Manager:
    """An auth manager answering yes to the checks in ``allowed`` (by check function name)."""

    def __init__(self, *allowed: str) -> None:
        self.allowed = set(allowed)


def test_a_level_needs_every_lower_levels_check(monkeypatch):
    # A user who passes the admin check but not the operator one is a viewer, not an admin.
    checks = tuple((level, lambda manager, user, level=level: level.label in manager.allowed) for level in auth.Level)
    monkeypatch.setattr(auth, "LEVEL_CHECKS", checks)
    assert auth.level_of(_Manager("viewer", "admin"), None) is auth.Level.VIEWER
    assert auth.level_of(_Manager("operator", "admin"), None) is None
    assert auth.level_of(_Manager("viewer", "operator", "admin"), None) is auth.Level.ADMIN


# --------------------------------------------------------------------------- content


def test_json_overview_per_protocol(client, seeded, monkeypatch):
    resp = client.get("/api/exchanges", headers=_bearer())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["audit"]["ok"] is True and body["audit"]["checked"] > 0
    rows = {p["protocol_id"]: p for p in body["protocols"]}
    row = rows[seeded.protocol_id]
    assert (row["nis_code"], row["municipality"], row["status"], row["gate"]) == ("99101", "Testgemeente Zonnedorp", "signed", "open")
    assert row["dag_id"] == seeded.dag_id and row["dag_path"] == f"/dags/{seeded.dag_id}"
    last = row["last_exchange"]
    assert last["id"] == seeded.exchange_id and last["state"] == "matched" and last["final"] is False
    assert last["step"] == "entitlements matched"
    assert last["counts"] == {"rows": 125, "valid": 121, "duplicates": 1, "matched_children": 47, "beneficiaries": 39}
    assert last["run_path"] == "/dags/{}/runs/manual__2026-11-02T09%3A00%3A00%2B00%3A00".format(seeded.dag_id)
    assert row["exchanges"] == 1 and row["by_state"] == {"matched": 1}
    assert row["retention"]["pending"] == 2 and row["retention"]["next_deadline"] == "2026-11-20"
    revoked = rows[seeded.revoked_protocol_id]
    assert revoked["status"] == "revoked" and revoked["gate"] == "closed" and revoked["last_exchange"] is None


def test_overdue_retention_is_judged_on_the_day(seeded):
    with session_scope() as session:
        ov = queries.overview(session, today=TODAY)
    [row] = [p for p in ov.protocols if p.protocol_id == seeded.protocol_id]
    assert row.retention.overdue == 1  # the request file was due on 20 November
    with session_scope() as session:
        early = queries.overview(session, today=dt.date(2026, 11, 10))
    assert [p.retention.overdue for p in early.protocols if p.protocol_id == seeded.protocol_id] == [0]


def test_page_shows_the_row_links_and_no_personal_data(client, seeded):
    client.cookies.set(auth.COOKIE_NAME, GOOD_TOKEN)
    resp = client.get("/")
    assert resp.status_code == 200
    html = resp.text
    for expected in ("Testgemeente Zonnedorp", "NIS 99101", "entitlements matched", "matched_children: 47",
                     "next due 2026-11-20", "Audit chain <strong>intact</strong>", "Testgemeente Maanbeek",
                     f'href="/dags/{seeded.dag_id}/runs/manual__2026-11-02T09%3A00%3A00%2B00%3A00"'):
        assert expected in html, expected
    assert 'target="_top"' in html  # links leave the UI's iframe
    # The request file was named after an INSZ: neither it nor any number like it is shown.
    assert seeded.request_name not in html
    assert insz.find_insz_shaped(html) == []
    assert insz.find_insz_shaped(client.get("/api/exchanges", headers=_bearer()).text) == []


def test_a_broken_audit_chain_is_shown(client, seeded, monkeypatch):
    from welfare_exchange.audit import integrity

    broken = integrity.IntegrityReport(audit.VerifyResult(False, 3, 4, "record 4 was altered (hash mismatch)"), None)
    monkeypatch.setattr(queries.integrity, "check", lambda session: broken)
    client.cookies.set(auth.COOKIE_NAME, GOOD_TOKEN)
    html = client.get("/").text
    assert "Audit chain <strong>BROKEN</strong> at record 4: record 4 was altered" in html
    assert client.get("/api/exchanges", headers=_bearer()).json()["audit"]["ok"] is False


def test_a_chain_that_no_longer_matches_its_anchor_is_shown_broken(client, seeded, monkeypatch):
    """The chain checks out in itself, but a (signed, authentic) anchor contradicts it."""
    import json

    from welfare_exchange.audit import anchors, authentication

    line = {"seq": 1, "prev": "0" * 64, "anchored_at": "2026-11-01T00:00:00+00:00", "last_id": 1, "last_hash": "00" * 32}
    line["sig"] = authentication.sign(json.dumps(line, sort_keys=True, separators=(",", ":")).encode())
    anchors.anchor_file().write_text(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
    client.cookies.set(auth.COOKIE_NAME, GOOD_TOKEN)
    html = client.get("/").text
    assert "Audit chain <strong>BROKEN</strong> against its anchors: record 1 no longer has the hash anchored in anchor 1" in html
    assert "The audit chain is broken" in html


def test_audit_verification_is_reused_for_a_minute(seeded, monkeypatch):
    calls = []
    real = queries.integrity.check
    monkeypatch.setattr(queries.integrity, "check", lambda session: calls.append(1) or real(session))
    with session_scope() as session:
        queries.overview(session)
        queries.overview(session)
        queries.overview(session, audit_max_age=0)
    assert len(calls) == 2


def test_unreachable_project_database_is_503_without_the_url(client, monkeypatch, tmp_path):
    secret_url = "postgresql+psycopg2://wx:s3cret-password@127.0.0.1:1/nowhere"
    monkeypatch.setenv("WELFARE_EXCHANGE_DB_URL", secret_url)
    queries.audit_cache.clear()
    client.cookies.set(auth.COOKIE_NAME, GOOD_TOKEN)
    page = client.get("/")
    assert page.status_code == 503 and "project database is unreachable" in page.text
    api = client.get("/api/exchanges")
    assert api.status_code == 503 and "RUNBOOK" in api.text
    assert "s3cret" not in page.text + api.text


def test_empty_registry(client, sqlite_db):
    queries.audit_cache.clear()
    client.cookies.set(auth.COOKIE_NAME, GOOD_TOKEN)
    assert 'id="no-protocols"' in client.get("/").text


# --------------------------------------------------------------------------- inside Airflow's own app


def test_mounted_in_airflow_and_protected_by_its_login(airflow_app, seeded):
    client = TestClient(airflow_app)
    assert client.get(f"{URL_PREFIX}/api/exchanges").status_code == 401
    to_login = client.get(f"{URL_PREFIX}/", follow_redirects=False)
    assert to_login.status_code == 303
    assert to_login.headers["location"] == "/auth/login?next=%2Fwelfare-exchange%2F"  # Airflow's login, then back
    assert client.get(f"{URL_PREFIX}/api/exchanges", headers=_bearer("eyJhbGciOi.forged.token")).status_code == 401

    token = airflow_token()
    resp = client.get(f"{URL_PREFIX}/api/exchanges", headers=_bearer(token))
    assert resp.status_code == 200, resp.text
    assert seeded.protocol_id in [p["protocol_id"] for p in resp.json()["protocols"]]
    client.cookies.set(auth.COOKIE_NAME, token)  # what the Airflow UI sends to its iframe
    page = client.get(f"{URL_PREFIX}/")
    assert page.status_code == 200 and "Testgemeente Zonnedorp" in page.text
    assert 'href="/dags/' in page.text  # Airflow at the root: links are /dags/...


@pytest.mark.parametrize(
    ("role", "level"), [("viewer", "viewer"), ("user", "operator"), ("op", "admin"), ("admin", "admin")]
)
def test_levels_follow_the_simple_auth_managers_roles(airflow_app, seeded, role, level):
    """SimpleAuthManager (demo, ``make up``) has no finer role than op for connections: op is admin."""
    client = TestClient(airflow_app)
    resp = client.get(f"{URL_PREFIX}/api/whoami", headers=_bearer(airflow_token(role)))
    assert resp.status_code == 200 and resp.json() == {"user": "wx-test", "level": level}


def test_a_user_without_a_role_is_403(airflow_app, seeded):
    client = TestClient(airflow_app)
    assert client.get(f"{URL_PREFIX}/api/exchanges", headers=_bearer(airflow_token(None))).status_code == 403


def test_a_token_signed_with_another_key_is_refused(airflow_app, seeded):
    import jwt

    forged = jwt.encode({"sub": "admin", "role": "admin", "aud": "apache-airflow"}, "not-the-airflow-secret", algorithm="HS512")
    client = TestClient(airflow_app)
    assert client.get(f"{URL_PREFIX}/api/exchanges", headers=_bearer(forged)).status_code == 401


def test_the_view_is_in_the_airflow_navigation(airflow_app):
    from airflow import plugins_manager

    external_views, _ = plugins_manager._get_ui_plugins()
    [view] = [v for v in external_views if v.get("url_route") == "welfare-exchanges"]
    assert view["href"] == f"{URL_PREFIX}/" and view["destination"] == "nav"
