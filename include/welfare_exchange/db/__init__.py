"""The project database: protocol registry, entitlement store, exchange ledger, audit trail.

Separate from Airflow's metadata database (task code in Airflow 3 cannot touch that one).
SQLite file by default, PostgreSQL through ``WELFARE_EXCHANGE_DB_URL``; schema managed by the
Alembic migrations in ``migrations/``.
"""

from welfare_exchange.db.engine import get_engine, session_scope, upgrade

__all__ = ["get_engine", "session_scope", "upgrade"]
