"""Hook to the project database (protocol registry, ledger, audit trail).

Airflow 3 task code may not touch Airflow's own metadata database; the project's state lives
in its own database, reached through this hook. The URL comes from ``WELFARE_EXCHANGE_DB_URL``
(see :mod:`welfare_exchange.settings`), which a deployment fills from its secrets backend.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

from airflow.sdk import BaseHook
from sqlalchemy.orm import Session

from welfare_exchange.db import session_scope
from welfare_exchange.protocols import GateDecision, check_gate, get


class ProjectDbHook(BaseHook):
    """Sessions on the project database and the protocol-gate check.

    :param db_url: SQLAlchemy URL; default the configured project database.
    """

    hook_name = "Welfare-exchange project database"

    def __init__(self, db_url: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.db_url = db_url

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with session_scope(self.db_url) as session:
            yield session

    def gate_decision(self, protocol_id: int, on: dt.date, **requirements) -> GateDecision:
        """The protocol gate for ``protocol_id`` on ``on`` (see :func:`~welfare_exchange.protocols.check_gate`)."""
        with self.session() as session:
            return check_gate(get(session, protocol_id), on, **requirements)
