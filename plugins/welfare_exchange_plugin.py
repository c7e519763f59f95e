"""Airflow plugin: the "Exchanges" view of welfare-exchange in the Airflow UI.

Thin on purpose: the page, its queries and its login check live in
:mod:`welfare_exchange.ui`. This file mounts that FastAPI app under ``/welfare-exchange`` on
the API server and adds an entry to the UI's navigation (an *external view*, rendered in the
UI's frame; same origin, so the Airflow login cookie reaches it).

The app enforces Airflow's login itself: Airflow does not protect plugin apps.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from welfare_exchange.orchestration import hooks  # noqa: F401  (the view reads connections through them)
from welfare_exchange.ui import URL_PREFIX, create_app


class WelfareExchangePlugin(AirflowPlugin):
    """Exchanges view: per protocol / municipality, status, last exchange, step, retention, audit."""

    name = "welfare_exchange"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Welfare exchanges"}]
    external_views = [
        {
            "name": "Exchanges",
            "href": f"{URL_PREFIX}/",
            "url_route": "welfare-exchanges",
            "destination": "nav",
            # A top-level entry, not one item in the "Plugins" menu: it is the operators' home.
            "nav_top_level": True,
        }
    ]
