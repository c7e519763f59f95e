"""Refreshing the entitlement store from Airflow, so the refresh becomes an Asset event.

The ``entitlement_import`` DAG calls :func:`import_entitlements`; its task declares
:data:`~welfare_exchange.orchestration.assets.ENTITLEMENT_SNAPSHOT` as an outlet, so a successful
import emits the event the structural feeds wait for. The event's extra carries counts only.
"""

from __future__ import annotations

import pathlib
from typing import Any

from welfare_exchange import audit
from welfare_exchange.errors import InputError
from welfare_exchange.settings import entitlement_import_file


def default_import_file() -> str:
    """Where the agency's extract is dropped (``WELFARE_EXCHANGE_ENTITLEMENT_IMPORT_FILE``)."""
    return str(entitlement_import_file())


def import_entitlements(path: str | None, actor: audit.Actor, *, mode: str = "full", allow_shrink: bool = False) -> dict[str, Any]:
    """Import the CSV as the agency's ``full`` extract or a ``delta`` (see
    :func:`welfare_exchange.entitlements.importer.import_csv`); returns counts only."""
    from welfare_exchange.entitlements import import_csv

    if mode not in ("full", "delta"):
        raise InputError(f"mode must be 'full' (the agency's whole extract) or 'delta' (a partial file), got {mode!r}")
    target = pathlib.Path(path or default_import_file())
    if not target.is_file():
        raise InputError(
            f"no entitlement extract at {target}: drop the CSV there (or pass import_file when triggering); "
            "nothing was imported and no snapshot event was emitted"
        )
    counts = import_csv(target, actor=actor, delta=mode == "delta", allow_shrink=allow_shrink, progress=False)
    return {k: v for k, v in counts.items() if isinstance(v, int)}
