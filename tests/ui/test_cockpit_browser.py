"""The operator's cockpit in headless Chromium, on a real Airflow (scheduler, triggerer, FAB login).

Three municipalities over the real OpenSSH server, three Method 1 runs through the scheduler:

* Zonnedorp sends a good request, but the agency's key connection for it is missing: the run
  fails in ``decrypt_and_validate`` — the view says *failed*, cause ``key_connection_missing``,
  with the link to the runbook section; nothing is reported to the municipality;
* Maanbeek has sent nothing yet: *waiting* for the request, until the arrival window closes;
* Sterrenhove sends an unencrypted file: *quarantined*, code ``not_encrypted``.

Anonymous → FAB's login page. A viewer sees the states, the history with its filters and the
processing register (and its CSV), but the retry button is disabled and the POST refused (403).
An admin adds the key connection through Airflow's API; the operator presses *Retry* — the run
goes on through the real scheduler and the exchange ends delivered exactly once: one result in
the outbox and nothing else, one ``result.delivered`` fact, the retry audited under the
operator's name. ``welfare-exchange exchange retry`` refuses the refused exchange.

Screenshots (1000 px wide): ``var/test-artifacts/cockpit/*.png``; with
``WELFARE_EXCHANGE_UPDATE_SCREENSHOTS=1`` also ``docs/screenshots/`` (committed; synthetic data).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import secrets

import pytest
import sqlalchemy as sa

from tests.exchange.builders import build_world, encrypted_request, request_workbook
from tests.exchange.conftest import sign_protocol
from tests.fixtures.pii_scan import assert_no_insz_in_files
from tests.ui.browser import Browser, fetch_status, log_in_fab
from welfare_exchange import audit, cli, insz
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange
from welfare_exchange.orchestration.dag_factory import method1_dag_id
from welfare_exchange.protocols import registry
from welfare_exchange.settings import REPO_ROOT
from welfare_exchange.ui import URL_PREFIX

ARTIFACTS = REPO_ROOT / "var" / "test-artifacts" / "cockpit"
DOCS = REPO_ROOT / "docs" / "screenshots"
LOGICAL_DATE = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone.utc)
VIEW = f"{URL_PREFIX}/"


def _screenshot(browser: Browser, name: str) -> None:
    """A small PNG of the page: 1000 px wide, a 64-colour palette."""
    from PIL import Image

    raw = browser.screenshot(ARTIFACTS / f"{name}.raw.png")
    image = Image.open(raw).convert("RGB")
    image = image.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    targets = [ARTIFACTS / f"{name}.png"]
    if os.environ.get("WELFARE_EXCHANGE_UPDATE_SCREENSHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)
        targets.append(DOCS / f"{name}.png")
    for target in targets:
        image.save(target, optimize=True)
    raw.unlink()


def _row_state(browser: Browser, nis: str) -> str:
    return browser.evaluate(f"(document.querySelector('tr[data-nis=\"{nis}\"]') || {{dataset: {{}}}}).dataset.state || ''")


def _protocol(m, name: str, monkeypatch, *, key: bool) -> tuple[int, str]:
    """A signed Method 1 protocol; its key connection exported only when ``key``."""
    password = secrets.token_urlsafe(12)
    if key:
        monkeypatch.setenv(f"AIRFLOW_CONN_KEY_{m.nis}", json.dumps({"conn_type": "generic", "password": password}))
    return sign_protocol(m.nis, f"key_{m.nis}", municipality=name, channel="sftp"), password


@pytest.mark.slow
@pytest.mark.sftp
def test_states_history_register_and_retry_in_chromium(sqlite_db, sftp_municipalities, airflow_server_factory, monkeypatch,
                                                        tmp_path):
    for name, value in {"WELFARE_EXCHANGE_SETTLE_SECONDS": "0.3", "WELFARE_EXCHANGE_POKE_INTERVAL_SECONDS": "1",
                        "WELFARE_EXCHANGE_RETRY_DELAY_SECONDS": "1", "WELFARE_EXCHANGE_TASK_RETRIES": "1",
                        "WELFARE_EXCHANGE_ARRIVAL_TIMEOUT_SECONDS": "900"}.items():
        monkeypatch.setenv(name, value)
    failing, waiting, refused = sftp_municipalities(3)
    failing_id, password = _protocol(failing, "Testgemeente Zonnedorp", monkeypatch, key=False)  # its key is missing
    waiting_id, _ = _protocol(waiting, "Testgemeente Maanbeek", monkeypatch, key=True)
    refused_id, _ = _protocol(refused, "Testgemeente Sterrenhove", monkeypatch, key=True)
    world = build_world(failing.nis, children=120, seed=7)
    failing.upload_request(encrypted_request([n for n, _ in world.children[:80]], password), "aanvraag.xlsx")
    refused.upload_request(request_workbook([n for n, _ in world.children[:5]]), "aanvraag.xlsx")  # not encrypted
    with session_scope() as session:
        registry.write_snapshot(session)
        entries = {p["id"]: p for p in registry.snapshot(session)}
    dags = {pid: method1_dag_id(entries[pid]) for pid in (failing_id, waiting_id, refused_id)}

    env = {k: v for k, v in os.environ.items() if k.startswith(("WELFARE_EXCHANGE_", "AIRFLOW_CONN_"))}
    af = airflow_server_factory(dags_folder=REPO_ROOT / "dags", env=env, auth_manager="fab")
    passwords = {role: af.create_user(f"wx-{role.lower()}", role) for role in ("Viewer", "Op")}
    runs = {}
    for pid, dag_id in dags.items():
        af.wait_for_dag(dag_id, timeout=180)
        af.unpause(dag_id)
        runs[pid] = af.trigger(dag_id, logical_date=LOGICAL_DATE)
    assert af.wait_for_run(dags[failing_id], runs[failing_id], timeout=240) == "failed"
    assert af.wait_for_run(dags[refused_id], runs[refused_id], timeout=240) == "failed"
    with session_scope() as session:
        failed_exchange = session.scalars(sa.select(Exchange).where(Exchange.protocol_id == failing_id)).one()
        refused_exchange = session.scalars(sa.select(Exchange).where(Exchange.protocol_id == refused_id)).one()
    assert failed_exchange.state == "received" and refused_exchange.state == "quarantined"
    assert failing.read_outbox() == {}, "an agency-side failure must not answer the municipality"

    with Browser(width=1000, height=480) as browser:
        # Anonymous: FAB's login page, nothing of the registry.
        browser.navigate(f"{af.url}{VIEW}")
        browser.wait_for(lambda: "Sign In" in browser.text(), 30, "FAB's login page")
        assert "Zonnedorp" not in browser.text()

        # Viewer: every state, cause and runbook link; the retry button disabled, the POST refused.
        log_in_fab(browser, af.url, VIEW, "wx-viewer", passwords["Viewer"])
        browser.wait_for(lambda: _row_state(browser, waiting.nis) == "waiting", 90, "the waiting run")
        assert (_row_state(browser, failing.nis), _row_state(browser, refused.nis)) == ("failed", "quarantined")
        text = browser.text()
        assert "Logged in as wx-viewer (viewer)" in text
        for expected in ("key_connection_missing", "runbook: The key connection is missing or wrong", "decrypt_and_validate",
                         "waiting for the request", "arrival window closes", "not_encrypted"):
            assert expected in text, expected
        row = f"tr[data-nis=\"{failing.nis}\"]"
        assert browser.evaluate(f"document.querySelector('{row} button.retry').disabled") is True
        retry_url = f"{URL_PREFIX}/api/exchanges/{failed_exchange.id}/retry"
        csrf = browser.evaluate("document.querySelector('meta[name=csrf-token]').content")
        assert fetch_status(browser, retry_url, "POST", {"X-CSRF-Token": csrf}) == 403
        html = browser.evaluate("document.documentElement.outerHTML")
        assert insz.find_insz_shaped(html) == [] and "aanvraag" not in html
        _screenshot(browser, "overview-waiting-failed-quarantined")

        link = browser.evaluate(f"document.querySelector('{row} a.runbook-link').getAttribute('href')")
        assert link == f"{URL_PREFIX}/runbook#the-key-connection-is-missing-or-wrong"
        browser.navigate(f"{af.url}{link}")
        assert browser.evaluate("!!document.getElementById('the-key-connection-is-missing-or-wrong')")

        browser.navigate(f"{af.url}{URL_PREFIX}/history?who={failing.nis}&state=failed")
        browser.wait_for(lambda: browser.evaluate("document.querySelectorAll('#history tbody tr[data-state=failed]').length") == 1,
                         30, "the filtered history")
        assert f"#{failed_exchange.id}" in browser.text()
        _screenshot(browser, "history-filtered")

        browser.navigate(f"{af.url}{URL_PREFIX}/audit?exchange={failed_exchange.id}")
        text = browser.text()
        assert "task.failed" in text and "request.fetched" in text and "cause key_connection_missing" in text
        csv = browser.evaluate(f"fetch({json.dumps(URL_PREFIX + '/api/audit.csv?exchange=' + str(failed_exchange.id))},"
                               " {credentials: 'same-origin'}).then(r => r.text())")
        assert csv.splitlines()[0].startswith("id,recorded_at,actor_type") and "task.failed" in csv
        assert insz.find_insz_shaped(csv) == []

        # The admin adds the missing key connection (Airflow's API, as the Admin → Connections page does).
        af.request("POST", "/api/v2/connections", json_body={"connection_id": f"key_{failing.nis}", "conn_type": "generic",
                                                              "password": password})

        # Operator: a POST without the page's CSRF token is refused; the button retries.
        log_in_fab(browser, af.url, VIEW, "wx-op", passwords["Op"])
        browser.wait_for(lambda: _row_state(browser, failing.nis) == "failed", 60, "the failed exchange")
        assert fetch_status(browser, retry_url, "POST") == 403
        browser.click(f"{row} button.retry")
        browser.wait_for(lambda: "retry of exchange" in browser.text(), 30, "the retry's answer")
        assert af.wait_for_run(dags[failing_id], runs[failing_id], timeout=240) == "success"
        browser.wait_for(lambda: _row_state(browser, failing.nis) == "delivered", 60, "the page refreshing itself")
        text = browser.text()
        assert "SHA-256" in text and f"groeipakket_resultaat_{failing.nis}_exchange-{failed_exchange.id}" in text
        assert "key_connection_missing" not in browser.evaluate(f"document.querySelector('{row}').innerText")  # no stale reason
        _screenshot(browser, "overview-delivered-after-retry")
        browser.navigate(f"{af.url}{URL_PREFIX}/exchanges/{failed_exchange.id}")
        _screenshot(browser, "exchange-detail")
        browser.navigate(f"{af.url}{URL_PREFIX}/audit?action=result.")
        assert "result.delivered" in browser.text()
        browser.navigate(f"{af.url}{URL_PREFIX}/audit?exchange={failed_exchange.id}")
        assert "exchange.retry_requested" in browser.text() and "wx-op" in browser.text()
        _screenshot(browser, "audit-register")
        assert browser.evaluate(f"fetch({json.dumps(retry_url)}, {{method: 'POST', credentials: 'same-origin', "
                                "headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}})"
                                ".then(r => r.status)") == 409  # delivered: nothing to retry

    # Exactly once, and nothing but the receipt and the result.
    outbox = failing.read_outbox()
    assert sorted(outbox) == [f"groeipakket_ontvangstbevestiging_{failing.nis}_exchange-{failed_exchange.id}.txt",
                              f"groeipakket_resultaat_{failing.nis}_exchange-{failed_exchange.id}_2026-11-02.xlsx"]
    with session_scope() as session:
        delivered = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "result.delivered")).all()
        assert [r.exchange_id for r in delivered] == [failed_exchange.id]
        retries = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "exchange.retry_requested")).all()
        assert [(r.actor, r.outcome) for r in retries] == [("wx-op", "requested"), ("wx-op", "refused")]
        assert audit.verify(session).ok

    # The CLI, as the same operator: a refused request is not retried.
    monkeypatch.setenv("WX_OP_PASSWORD", passwords["Op"])
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    code = cli.main(["exchange", "retry", str(refused_exchange.id), "--api-url", af.url, "--user", "wx-op",
                     "--password-env", "WX_OP_PASSWORD"])
    assert code == 2 and "its request was refused" in err.getvalue()
    assert assert_no_insz_in_files(af.task_log_dir()) > 0
