"""Sensor that waits for a complete request file in a municipality's SFTP inbox."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.configuration import conf

from welfare_exchange import audit
from welfare_exchange.db.models import Exchange
from welfare_exchange.orchestration.hooks.project_db import ProjectDbHook
from welfare_exchange.orchestration.sensors.arrival_window import ArrivalWindow, Window, now
from welfare_exchange.transport import sftp


class RequestArrivalSensor(ArrivalWindow, BaseSensorOperator):
    """Wait until a request file is complete in ``inbox/``; push the oldest one to XCom.

    A file is taken only when it has a request's name (not hidden, not a temporary upload such
    as ``.part``) and its size and mtime did not change across two looks ``settle_seconds``
    apart. Several files: the oldest is this run's exchange, the others wait for the next runs
    (oldest first). Whatever else lies in the inbox once it stopped changing — a dotfile,
    another extension, a file over the size limit, an upload abandoned under a temporary
    name — is answered: quarantined, reported to the municipality, audited
    (:mod:`welfare_exchange.channels.sftp_inbox`).

    **The wait is a window.** ``timeout`` is the arrival window: when it closes with no
    request, the audit records ``request.none_arrived`` ("no request arrived between … and …;
    nothing to do") and the task ends *skipped*, and with it the rest of the run — never
    failed, and waiting never uses up retries. Deferrable (the default when Airflow's
    ``[operators] default_deferrable`` is on, as for the SFTP provider's sensor), the wait runs
    in the triggerer (:class:`~welfare_exchange.orchestration.triggers.request_arrival.RequestArrivalTrigger`)
    and costs no worker slot and no task process per look; otherwise it pokes in
    ``reschedule`` mode.

    The file travels to ``fetch_request`` as a handle (:func:`~welfare_exchange.transport.sftp.name_handle`),
    never by name. Idempotent: when this run already took a file (the task was cleared after the exchange
    started), it returns that same file at once instead of waiting for a new one.

    :param protocol_id: the protocol the exchange runs under.
    :param sftp_conn_id: the municipality's SFTP connection (host key pinned).
    :param directory: where requests arrive.
    :param patterns: file-name patterns of requests.
    :param settle_seconds: pause between the two looks.
    :param max_bytes: largest request accepted, judged on its listed size; default the intake
        limit (``WELFARE_EXCHANGE_INTAKE_MAX_FILE_BYTES``).
    :param stale_after: seconds after which an unchanged temporary upload is reported; default
        ``WELFARE_EXCHANGE_INBOX_STALE_UPLOAD_SECONDS`` (24 h).
    :param deferrable: wait in the triggerer instead of rescheduling.
    """

    template_fields = ("sftp_conn_id", "directory")
    awaited_in = "the SFTP inbox"

    def __init__(
        self,
        *,
        protocol_id: int,
        sftp_conn_id: str,
        directory: str = "inbox",
        patterns: Sequence[str] = sftp.DEFAULT_REQUEST_PATTERNS,
        settle_seconds: float = 10.0,
        max_bytes: int | None = None,
        stale_after: float | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.protocol_id = protocol_id
        self.sftp_conn_id = sftp_conn_id
        self.directory = directory
        self.patterns = tuple(patterns)
        self.settle_seconds = settle_seconds
        self.max_bytes = max_bytes
        self.stale_after = stale_after
        self.deferrable = deferrable

    # ------------------------------------------------------------------ limits
    def _max_bytes(self) -> int:
        if self.max_bytes is not None:
            return int(self.max_bytes)
        from welfare_exchange.intake import IntakeLimits

        return IntakeLimits.from_env().max_file_bytes

    def _stale_after(self) -> float:
        from welfare_exchange.channels import sftp_inbox as inbox

        return float(self.stale_after) if self.stale_after is not None else inbox.stale_upload_seconds()

    # ------------------------------------------------------------------ looking
    def _look(self, context, window: Window, previous: sftp.Look | None = None) -> dict | None:
        """One look: answer what must be answered, return the oldest complete request's handle,
        or end the run skipped when the window closed with none."""
        taken = self._already_taken(context["ti"].run_id)
        if taken is not None:
            self.log.info("this run already took its request file (exchange %s)", taken["exchange_id"])
            return taken
        from welfare_exchange.channels import sftp_inbox as inbox
        from welfare_exchange.runinfo import exchange_date

        hook = sftp.sftp_hook(self.sftp_conn_id)
        max_bytes, stale_after = self._max_bytes(), self._stale_after()
        survey = sftp.survey_inbox(hook, self.directory, self.patterns, self.settle_seconds, max_bytes=max_bytes,
                                   stale_after=stale_after, previous=previous)
        if survey.unanswered:
            answered = inbox.answer(int(self.protocol_id), survey, hook, actor=audit.Actor.from_context(context),
                                    on=exchange_date(context), max_bytes=max_bytes, stale_after=stale_after)
            self.log.info("%d file(s) in %s that are no request to take were quarantined and reported", answered,
                          self.directory)
        if survey.ready:
            first = survey.ready[0]
            self.log.info("request file %s is complete (%d bytes); %d more waiting", sftp.shown(first.name), first.size,
                          len(survey.ready) - 1)
            # XCom never carries the file name (a municipality may put a number in it): a handle.
            return {"name_sha256": sftp.name_handle(first.name), "size": first.size, "mtime": first.mtime,
                    "directory": self.directory}
        self.window_closed(context, window)
        self.log.info("no complete request file in %s yet (%d file(s) still changing)", self.directory, survey.waiting)
        return None

    def poke(self, context) -> PokeReturnValue | bool:
        found = self._look(context, self.reschedule_window(context))
        return PokeReturnValue(is_done=True, xcom_value=found) if found is not None else False

    # ------------------------------------------------------------------ deferrable
    def execute(self, context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        start = now()
        window = (start, start + dt.timedelta(seconds=self.timeout))
        found = self._look(context, window)  # the usual case — already there — needs no deferral
        if found is not None:
            return found
        self._defer(window)

    def _defer(self, window: Window) -> None:
        from welfare_exchange.orchestration.triggers.request_arrival import RequestArrivalTrigger

        left = max((window[1] - now()).total_seconds(), 0.0)
        # Only a backstop: the trigger itself fires "timeout" at the deadline, so the audit says why.
        grace = max(60.0, 2 * self.poke_interval + self.settle_seconds)
        self.defer(
            trigger=RequestArrivalTrigger(
                self.sftp_conn_id, window[0].isoformat(), window[1].isoformat(), directory=self.directory,
                patterns=self.patterns, settle_seconds=self.settle_seconds, poke_interval=self.poke_interval,
                max_bytes=self._max_bytes(), stale_after=self._stale_after(),
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=left + grace),
        )

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> dict:
        event = event or {}
        window = (dt.datetime.fromisoformat(event["window_start"]), dt.datetime.fromisoformat(event["deadline"]))
        status = event.get("status")
        if status == "timeout":
            self.none_arrived(context, *window)
        if status != "actionable":
            raise self.wait_failed(f"{event.get('reason', 'no event')}; see the runbook, 'SFTP or e-mail is unreachable'")
        look = {k: (int(v[0]), int(v[1])) for k, v in (event.get("look") or {}).items()}
        found = self._look(context, window, previous=look)
        if found is not None:
            return found
        self._defer(window)  # nothing left to take (only files answered, or the file went away): wait on

    def _already_taken(self, run_id: str) -> dict | None:
        with ProjectDbHook().session() as session:
            exchange = (
                session.query(Exchange).filter_by(protocol_id=int(self.protocol_id), run_id=run_id).one_or_none()
            )
            if exchange is None:
                return None
            return {"name_sha256": sftp.name_handle(exchange.request_name or ""), "size": exchange.request_size,
                    "mtime": 0, "directory": self.directory, "exchange_id": exchange.id}
