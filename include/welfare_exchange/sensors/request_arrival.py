"""Sensor that waits for a complete request file in a municipality's SFTP inbox."""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from welfare_exchange.db.models import Exchange
from welfare_exchange.hooks.project_db import ProjectDbHook
from welfare_exchange.transport import sftp


class RequestArrivalSensor(BaseSensorOperator):
    """Wait until a request file is complete in ``inbox/``; push the oldest one to XCom.

    A file is taken only when it is not a ``.part`` upload and its size did not change across
    two looks ``settle_seconds`` apart. Several files: the oldest is this run's exchange, the
    others wait for the next runs (oldest first). Pokes in ``reschedule`` mode.

    The file travels to ``fetch_request`` as a handle (:func:`~welfare_exchange.transport.sftp.name_handle`),
    never by name. Idempotent: when this run already took a file (the task was cleared after the exchange
    started), it returns that same file at once instead of waiting for a new one.

    :param protocol_id: the protocol the exchange runs under.
    :param sftp_conn_id: the municipality's SFTP connection (host key pinned).
    :param directory: where requests arrive.
    :param patterns: file-name patterns of requests.
    :param settle_seconds: pause between the two looks.
    """

    template_fields = ("sftp_conn_id", "directory")

    def __init__(
        self,
        *,
        protocol_id: int,
        sftp_conn_id: str,
        directory: str = "inbox",
        patterns: Sequence[str] = sftp.DEFAULT_REQUEST_PATTERNS,
        settle_seconds: float = 10.0,
        **kwargs,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.protocol_id = protocol_id
        self.sftp_conn_id = sftp_conn_id
        self.directory = directory
        self.patterns = tuple(patterns)
        self.settle_seconds = settle_seconds

    def poke(self, context) -> PokeReturnValue | bool:
        taken = self._already_taken(context["ti"].run_id)
        if taken is not None:
            self.log.info("this run already took its request file (exchange %s)", taken["exchange_id"])
            return PokeReturnValue(is_done=True, xcom_value=taken)
        hook = sftp.sftp_hook(self.sftp_conn_id)
        ready = sftp.list_ready_requests(hook, self.directory, self.patterns, self.settle_seconds)
        if not ready:
            self.log.info("no complete request file in %s yet", self.directory)
            return False
        first = ready[0]
        self.log.info("request file %s is complete (%d bytes); %d more waiting", sftp.shown(first.name), first.size, len(ready) - 1)
        # XCom never carries the file name (a municipality may put a number in it): a handle.
        handle = {"name_sha256": sftp.name_handle(first.name), "size": first.size, "mtime": first.mtime,
                  "directory": self.directory}
        return PokeReturnValue(is_done=True, xcom_value=handle)

    def _already_taken(self, run_id: str) -> dict | None:
        with ProjectDbHook().session() as session:
            exchange = (
                session.query(Exchange).filter_by(protocol_id=int(self.protocol_id), run_id=run_id).one_or_none()
            )
            if exchange is None:
                return None
            return {"name_sha256": sftp.name_handle(exchange.request_name or ""), "size": exchange.request_size,
                    "mtime": 0, "directory": self.directory, "exchange_id": exchange.id}
