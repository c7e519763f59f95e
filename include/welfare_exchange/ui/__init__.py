"""The "Exchanges" view in the Airflow UI: per protocol / municipality, what is happening.

The Airflow plugin (``plugins/welfare_exchange_plugin.py``) only mounts :func:`create_app`;
everything else lives here so it can be tested without an Airflow API server:

* :mod:`~welfare_exchange.ui.queries` — the overview, read from the project database
  (registry, ledger, retention, audit-chain status); no personal data by construction;
* :mod:`~welfare_exchange.orchestration.ui_auth` — Airflow's own login and the project's three levels
  (viewer, operator, admin), enforced: FastAPI plugin apps are *not* protected by Airflow;
* :mod:`~welfare_exchange.ui.app` — the FastAPI app: an HTML page and a JSON API.
"""

from welfare_exchange.ui.app import URL_PREFIX, create_app

__all__ = ["URL_PREFIX", "create_app"]
