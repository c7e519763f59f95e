"""Roles on a real Airflow with the deployment's FAB auth manager, in headless Chromium.

The Airflow components run with ``FabAuthManager``; the users are made with
``airflow users create`` (roles Viewer, User, Op, Admin) and passwords generated at test time.
Besides the checkout's plugin, the server mounts the test-only role probe
(:mod:`tests.ui.role_probe_plugin`): the view's own app plus one route per level, guarded by
the same ``require(level)`` a later operator action (retry) will use.

* anonymous: the view sends the browser to FAB's login page; the APIs answer 401;
* viewer: logs in through FAB's form, sees the Exchanges view, is refused (403) on the
  operator-level route;
* operator (role Op): allowed there, refused on the admin one; admin (role Admin): allowed;
* every role's level through ``/api/whoami`` with a token from ``POST /auth/token``.

Screenshot: ``var/test-artifacts/exchanges-view-fab-viewer.png``.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.ui import role_probe_plugin
from tests.ui.browser import Browser, fetch_status, log_in_fab
from tests.ui.seed import seed
from welfare_exchange import insz
from welfare_exchange.settings import REPO_ROOT
from welfare_exchange.ui import URL_PREFIX

ARTIFACTS = REPO_ROOT / "var" / "test-artifacts"
PROBE = role_probe_plugin.PROBE_PREFIX
#: FAB role → the project level it gives (the table in welfare_exchange.orchestration.ui_auth).
ROLES = {"Viewer": "viewer", "User": "operator", "Op": "operator", "Admin": "admin"}


def _status_from_page(browser: Browser, path: str) -> int:
    return fetch_status(browser, path)


def _log_in(browser: Browser, base: str, username: str, password: str) -> None:
    log_in_fab(browser, base, f"{URL_PREFIX}/", username, password)


@pytest.mark.slow
def test_roles_on_airflow_with_the_fab_auth_manager(sqlite_db, airflow_server_factory, tmp_path):
    seed()
    dags, plugins = tmp_path / "dags", tmp_path / "plugins"
    dags.mkdir()
    plugins.mkdir()
    shutil.copy(REPO_ROOT / "plugins" / "welfare_exchange_plugin.py", plugins)
    shutil.copy(role_probe_plugin.__file__, plugins)
    af = airflow_server_factory(dags_folder=dags, env={"AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins)}, auth_manager="fab")
    passwords = {role: af.create_user(f"wx-{role.lower()}", role) for role in ROLES}

    # Anonymous scripts: 401 everywhere, nothing of the registry.
    for path in (f"{URL_PREFIX}/api/exchanges", f"{URL_PREFIX}/api/whoami", f"{PROBE}/api/needs-viewer"):
        resp = httpx.get(f"{af.url}{path}")
        assert resp.status_code == 401 and "Zonnedorp" not in resp.text, path

    # API clients: each role's level, and the operator route refused below operator.
    for role, level in ROLES.items():
        headers = {"Authorization": f"Bearer {af.login(f'wx-{role.lower()}', passwords[role])}"}
        whoami = httpx.get(f"{af.url}{URL_PREFIX}/api/whoami", headers=headers)
        assert whoami.status_code == 200 and whoami.json() == {"user": f"wx-{role.lower()}", "level": level}, role
        operate = httpx.get(f"{af.url}{PROBE}/api/needs-operator", headers=headers)
        assert operate.status_code == (403 if level == "viewer" else 200), role
    refused = httpx.post(f"{af.url}/auth/token", json={"username": "wx-viewer", "password": "not-the-password"})
    assert refused.status_code == 401

    with Browser() as browser:
        # Anonymous browser: sent to FAB's login page, which returns to the view afterwards.
        browser.navigate(f"{af.url}{URL_PREFIX}/")
        browser.wait_for(lambda: "Sign In" in browser.text(), 30, "FAB's login page")
        assert browser.evaluate("location.pathname") == "/auth/login/"
        assert "Zonnedorp" not in browser.text()

        # Viewer: sees the view, may not operate.
        _log_in(browser, af.url, "wx-viewer", passwords["Viewer"])
        browser.wait_for(lambda: "Testgemeente Zonnedorp" in browser.text(), 60, "the Exchanges view")
        text = browser.text()
        assert "Logged in as wx-viewer (viewer)" in text and "NIS 99101" in text
        assert insz.find_insz_shaped(browser.evaluate("document.documentElement.outerHTML")) == []
        browser.screenshot(ARTIFACTS / "exchanges-view-fab-viewer.png")
        assert _status_from_page(browser, f"{URL_PREFIX}/api/exchanges") == 200
        assert _status_from_page(browser, f"{PROBE}/api/needs-viewer") == 200
        assert _status_from_page(browser, f"{PROBE}/api/needs-operator") == 403

        # Operator (role Op): allowed to operate, not to administer.
        _log_in(browser, af.url, "wx-op", passwords["Op"])
        browser.wait_for(lambda: "Logged in as wx-op (operator)" in browser.text(), 60, "the view as operator")
        assert _status_from_page(browser, f"{PROBE}/api/needs-operator") == 200
        assert _status_from_page(browser, f"{PROBE}/api/needs-admin") == 403

        # Admin: everything.
        _log_in(browser, af.url, "wx-admin", passwords["Admin"])
        browser.wait_for(lambda: "Logged in as wx-admin (admin)" in browser.text(), 60, "the view as admin")
        assert _status_from_page(browser, f"{PROBE}/api/needs-admin") == 200

        # Logged out through Airflow: the view sends the browser to the login page again.
        browser.navigate(f"{af.url}/auth/logout")
        browser.navigate(f"{af.url}{URL_PREFIX}/")
        browser.wait_for(lambda: "Sign In" in browser.text(), 30, "FAB's login page after logout")
        assert _status_from_page(browser, f"{PROBE}/api/needs-viewer") == 401

    # The generated passwords are in a file of the test's Airflow home readable by its owner only.
    assert oct(af.password_file.stat().st_mode & 0o777) == "0o600"
