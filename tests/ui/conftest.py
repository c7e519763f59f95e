"""Airflow's API server app in process, with the checkout's plugins, and tokens it accepts."""

from __future__ import annotations

import pytest

from tests.ui.seed import seed
from welfare_exchange.ui import queries


@pytest.fixture(scope="module")
def airflow_app():
    """Airflow's API server app with the checkout's plugins, in process (~10 s to build)."""
    from airflow.api_fastapi.app import create_app as create_airflow_app

    return create_airflow_app()


def airflow_token(role: str | None = "admin", username: str = "wx-test") -> str:
    """A JWT of the in-process app's SimpleAuthManager for a user with ``role``."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))


@pytest.fixture
def seeded(sqlite_db):
    """The seeded project database (:func:`tests.ui.seed.seed`), with a fresh audit verification."""
    queries.audit_cache.clear()
    yield seed()
    queries.audit_cache.clear()
