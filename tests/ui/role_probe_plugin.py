"""Test-only Airflow plugin: one route per project level, each guarded by ``require(level)``.

Every level, admin included, through the dependency the view's routes use (the retry needs
the operator level): the view's own app, with ``GET /api/needs-<level>`` added, answers the
caller's name when the caller's Airflow role gives that level and 403 otherwise. Mounted at :data:`PROBE_PREFIX` by copying this file into
a test server's plugins folder; never part of a deployment.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI

from welfare_exchange.orchestration import ui_auth as auth
from welfare_exchange.ui import create_app

PROBE_PREFIX = "/welfare-exchange-probe"


def add_level_routes(app: FastAPI) -> FastAPI:
    """``GET /api/needs-viewer|operator|admin`` on ``app``: ``{"user": name}`` or 401/403."""
    for level in auth.Level:
        app.add_api_route(f"/api/needs-{level.label}", lambda caller=Depends(auth.require(level)): {"user": caller.name})
    return app


class RoleProbePlugin(AirflowPlugin):
    name = "welfare_exchange_role_probe"
    fastapi_apps = [{"app": add_level_routes(create_app()), "url_prefix": PROBE_PREFIX, "name": "role probe (tests)"}]
