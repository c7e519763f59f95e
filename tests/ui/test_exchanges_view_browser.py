"""The Exchanges view in a real browser against a real Airflow API server.

Headless Chromium (Debian ``chromium``) opens the view on an Airflow started by
:class:`~welfare_exchange.devtools.airflow_server.AirflowServer` with the checkout's plugins:
sent to Airflow's login page without login; then it logs in through Airflow's own login form
(SimpleAuthManager, the generated admin password), sees the seeded protocol's row on the page and inside the
Airflow UI's navigation frame, and keeps screenshots as test artifacts:

* ``var/test-artifacts/exchanges-view.png`` — the page;
* ``var/test-artifacts/exchanges-view-in-airflow.png`` — the page inside the Airflow UI.
"""

from __future__ import annotations

import httpx
import pytest

from tests.ui.browser import Browser
from tests.ui.seed import seed
from welfare_exchange import insz
from welfare_exchange.settings import REPO_ROOT
from welfare_exchange.ui import URL_PREFIX

ARTIFACTS = REPO_ROOT / "var" / "test-artifacts"

@pytest.mark.slow
def test_exchanges_view_in_chromium_behind_airflow_login(sqlite_db, airflow_server_factory, tmp_path):
    seeded = seed()
    dags = tmp_path / "dags"  # no DAGs needed: the view reads the project database
    dags.mkdir()
    af = airflow_server_factory(dags_folder=dags)
    view = f"{af.url}{URL_PREFIX}/"

    # Without login: 401 for scripts; a browser is sent to Airflow's login, nothing of the registry shown.
    assert httpx.get(f"{af.url}{URL_PREFIX}/api/exchanges").status_code == 401
    assert httpx.get(view).status_code == 303

    with Browser() as browser:
        browser.navigate(view)
        browser.wait_for(lambda: browser.evaluate("!!document.querySelector('input[name=password]')"), 30, "the login form")
        assert browser.evaluate("location.pathname").startswith("/auth/login") and "Zonnedorp" not in browser.text()

        # Log in through Airflow's own form; it stores the JWT in the `_token` cookie and
        # sends the browser on to `next`.
        browser.navigate(f"{af.url}/auth/login?next={URL_PREFIX}/")
        browser.wait_for(lambda: browser.evaluate("!!document.querySelector('input[name=password]')"), 30, "the login form")
        browser.type_into("input[name=username]", "admin")
        browser.type_into("input[name=password]", af.admin_password())
        browser.click("button[type=submit]")
        browser.wait_for(lambda: "Testgemeente Zonnedorp" in browser.text(), 60, "the Exchanges page after login")
        cookies = {c["name"] for c in browser.send("Network.getCookies", urls=[af.url])["cookies"]}
        assert "_token" in cookies

        assert browser.navigate(view) == 200
        text = browser.text()
        for expected in ("Exchanges", "Testgemeente Zonnedorp", "NIS 99101", "signed", "gate open", "matched",
                         "entitlements matched", "rows: 125", "next due 2026-11-20", "Audit chain intact",
                         "Testgemeente Maanbeek", "revoked"):
            assert expected in text, (expected, text[:600])
        run_link = browser.evaluate("document.querySelector('a.run-link').getAttribute('href')")
        assert run_link.startswith(f"/dags/{seeded.dag_id}/runs/manual__2026-11-02")
        html = browser.evaluate("document.documentElement.outerHTML")
        assert seeded.request_name not in html and insz.find_insz_shaped(html) == []
        shot = browser.screenshot(ARTIFACTS / "exchanges-view.png")
        assert shot.stat().st_size > 10_000

        # Inside the Airflow UI: the nav entry opens the view in the UI's frame.
        browser.navigate(f"{af.url}/plugin/welfare-exchanges")
        frame_text = (
            "(() => { const f = document.querySelector('iframe');"
            " return f && f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : ''; })()"
        )
        browser.wait_for(lambda: "Testgemeente Zonnedorp" in browser.evaluate(frame_text), 60, "the view inside the Airflow UI")
        # The nav entry (the outer page may still be laying out when the frame has loaded).
        browser.wait_for(lambda: "Exchanges" in browser.text(), 30, "the nav entry")
        browser.screenshot(ARTIFACTS / "exchanges-view-in-airflow.png", full_page=False)

        # Logged out (cookie gone): back to the login page.
        browser.send("Network.clearBrowserCookies")
        browser.navigate(view)
        browser.wait_for(lambda: browser.evaluate("location.pathname").startswith("/auth/login"), 30, "the login page")
