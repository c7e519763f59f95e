"""A fresh project database for each entitlement test, on SQLite and on PostgreSQL.

``store_db`` is parametrised: the SQLite case is a new file in ``tmp_path``; the PostgreSQL case
uses one database per test module (created here, dropped after the module) on the server at
``127.0.0.1:5432`` and empties the entitlement store before each test. When PostgreSQL cannot be
reached the PostgreSQL cases FAIL — they are never skipped.
"""

from __future__ import annotations

import os
import re

import pytest
import sqlalchemy as sa

from welfare_exchange.db import upgrade
from welfare_exchange.db.engine import dispose_engines

#: Maintenance connection used to create and drop the per-module test databases.
PG_ADMIN_URL = os.environ.get("WELFARE_EXCHANGE_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def _admin_engine() -> sa.Engine:
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture(scope="module")
def _pg_database(request) -> str:
    """A fresh PostgreSQL database for this test module, migrated to head; dropped afterwards."""
    module = re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1]).lower()
    name = f"wx_test_{module}_{os.getpid()}"
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {sa.engine.make_url(PG_ADMIN_URL).render_as_string(hide_password=True)} "
            f"({type(exc.orig).__name__}); start it (`.ci/run` does) — PostgreSQL tests must not be skipped",
            pytrace=False,
        )
    url = str(sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    upgrade(url)
    yield url
    dispose_engines()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_db(request, tmp_path, monkeypatch) -> str:
    """The URL of an empty, migrated project database, also set as ``WELFARE_EXCHANGE_DB_URL``."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'welfare_exchange.db'}"
        monkeypatch.setenv("WELFARE_EXCHANGE_DB_URL", url)
        upgrade()
    else:
        url = request.getfixturevalue("_pg_database")
        monkeypatch.setenv("WELFARE_EXCHANGE_DB_URL", url)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE entitlement, beneficiary, child RESTART IDENTITY")
        engine.dispose()
    yield url
    dispose_engines()
