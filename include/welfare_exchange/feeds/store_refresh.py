"""Refreshing the entitlement store from Airflow, so the refresh becomes an Asset event.

The ``entitlement_import`` DAG calls :func:`import_entitlements`; its task declares
:data:`~welfare_exchange.feeds.assets.ENTITLEMENT_SNAPSHOT` as an outlet, so a successful
import emits the event the structural feeds wait for. The event's extra carries counts only.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from welfare_exchange import audit
from welfare_exchange.errors import InputError
from welfare_exchange.settings import get_settings


def default_import_file() -> str:
    """Where the agency's extract is dropped (``WELFARE_EXCHANGE_ENTITLEMENT_IMPORT_FILE``)."""
    return os.environ.get("WELFARE_EXCHANGE_ENTITLEMENT_IMPORT_FILE") or str(get_settings().home / "imports" / "entitlements.csv")


def import_entitlements(path: str | None, actor: audit.Actor) -> dict[str, Any]:
    """Import the CSV (validated as a whole first, idempotent upsert); returns counts only."""
    from welfare_exchange.entitlements import import_csv

    target = pathlib.Path(path or default_import_file())
    if not target.is_file():
        raise InputError(
            f"no entitlement extract at {target}: drop the CSV there (or pass import_file when triggering); "
            "nothing was imported and no snapshot event was emitted"
        )
    counts = import_csv(target, actor=actor)
    return {k: v for k, v in counts.items() if isinstance(v, int)}
