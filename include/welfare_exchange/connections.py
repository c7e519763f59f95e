"""Connections as the logic sees them: a plain description, and the clients opened from one.

A port at the ground floor. The logic never reads an Airflow connection: it asks this module,
and the Airflow hooks (:mod:`welfare_exchange.orchestration.hooks.airflow_connections`) answer —
they read the connection (Admin > Connections, ``AIRFLOW_CONN_*``, a secrets backend) and
fill a :class:`Connection`, or open the provider's client from it. The hooks install themselves
when :mod:`welfare_exchange.orchestration.hooks` is imported: by every DAG file, trigger and
deadline callback, by the CLI and by the UI plugin. Another deployment (or a test) installs
its own :class:`Hooks` with :func:`install`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from welfare_exchange.errors import WelfareExchangeError


class ConnectionNotFound(WelfareExchangeError):
    """No connection has this id (or no hooks are installed to look it up)."""


@dataclass(frozen=True)
class Connection:
    """One connection, as plain data (the fields an Airflow connection has)."""

    conn_id: str
    conn_type: str | None = None
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


class Hooks(Protocol):
    """What the logic needs of the scheduler's connections."""

    def connection(self, conn_id: str) -> Connection:
        """The connection, or :class:`ConnectionNotFound`."""

    def sftp(self, conn_id: str, **kwargs: Any) -> Any:
        """An SFTP session factory: an object whose ``get_managed_conn()`` yields a paramiko
        ``SFTPClient`` (see :class:`welfare_exchange.transport.sftp.SFTPHook`)."""

    def imap(self, conn_id: str) -> contextlib.AbstractContextManager[Any]:
        """A logged-in ``imaplib`` client (logged out on exit)."""

    def smtp(self, conn_id: str) -> contextlib.AbstractContextManager[Any]:
        """A connected, logged-in ``smtplib`` client (closed on exit)."""

    def base_url(self) -> str:
        """The scheduler UI's public URL (``""`` when not configured): links in alerts."""


_installed: Hooks | None = None


def install(hooks: Hooks) -> None:
    """Make ``hooks`` the source of every connection from now on."""
    global _installed
    _installed = hooks


def hooks() -> Hooks:
    if _installed is None:
        raise ConnectionNotFound(
            "no connection reader is installed: import welfare_exchange.orchestration.hooks "
            "(DAG files, the CLI and the UI plugin do) or install one with welfare_exchange.connections.install"
        )
    return _installed


def get(conn_id: str) -> Connection:
    """The connection ``conn_id`` (raises :class:`ConnectionNotFound`)."""
    return hooks().connection(conn_id)


def find(conn_id: str) -> Connection | None:
    """The connection ``conn_id``, or ``None`` when it does not exist."""
    try:
        return get(conn_id)
    except ConnectionNotFound:
        return None
