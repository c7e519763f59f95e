"""The Airflow side of :mod:`welfare_exchange.connections`: the one place connections are read.

:class:`AirflowHooks` reads a connection with ``BaseHook.get_connection`` (so the metadata
database, ``AIRFLOW_CONN_*`` variables and any secrets backend all work) and fills the plain
:class:`~welfare_exchange.connections.Connection`; SFTP, IMAP and SMTP clients come from the
providers' hooks, which read host, port, login, keys and TLS settings exactly as Airflow's UI
documents them. :func:`install` makes it the source the logic asks.
"""

from __future__ import annotations

import contextlib
import imaplib
from collections.abc import Iterator
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from welfare_exchange import connections
from welfare_exchange.connections import Connection, ConnectionNotFound


class AirflowHooks:
    """:class:`welfare_exchange.connections.Hooks` over Airflow connections and provider hooks."""

    def connection(self, conn_id: str) -> Connection:
        try:
            found = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            raise ConnectionNotFound(f"the connection {conn_id!r} is not defined") from None
        return Connection(
            conn_id=conn_id, conn_type=found.conn_type, host=found.host, port=found.port, login=found.login,
            password=found.password, schema=found.schema, extra=dict(found.extra_dejson or {}),
        )

    def sftp(self, conn_id: str, **kwargs: Any):
        """The provider's ``SFTPHook``. ``conn_retry_attempts`` defaults to 1: the provider's own
        retry repeats every failure (a refused login too) at a fixed 3–5 s; the transport retries
        only a refused handshake, with backoff."""
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        kwargs.setdefault("conn_retry_attempts", 1)
        return SFTPHook(ssh_conn_id=conn_id, **kwargs)

    @contextlib.contextmanager
    def imap(self, conn_id: str) -> Iterator[imaplib.IMAP4]:
        from airflow.providers.imap.hooks.imap import ImapHook

        hook = ImapHook(imap_conn_id=conn_id)
        hook.get_conn()
        client = hook.mail_client
        if client is None:
            raise RuntimeError("the imap provider's ImapHook opened no client: adapt welfare_exchange.orchestration.hooks")
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    @contextlib.contextmanager
    def smtp(self, conn_id: str):
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        # The hook handles TLS, STARTTLS, login and OAuth2 from the connection; our messages are
        # ready-made (S/MIME), so they go through the client it opened.
        with SmtpHook(smtp_conn_id=conn_id) as hook:
            client = getattr(hook, "_smtp_client", None)
            if client is None:
                raise RuntimeError(
                    "the smtp provider's SmtpHook no longer exposes its client: adapt "
                    "welfare_exchange.orchestration.hooks.airflow_connections to the installed provider version"
                )
            yield client

    def base_url(self) -> str:
        # [api] base_url when the deployment sets it (links in e-mails need a host); else paths.
        try:
            from airflow.configuration import conf

            return (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        except Exception:
            return ""


def install() -> None:
    """Make Airflow the source of every connection the logic asks for."""
    connections.install(AirflowHooks())
