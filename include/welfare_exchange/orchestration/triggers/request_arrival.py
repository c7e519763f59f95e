"""Trigger that waits, in the triggerer, until a municipality's SFTP inbox holds something to act on."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from welfare_exchange.transport import sftp

#: Failed looks in a row (each after a backoff) before the trigger gives up and the task fails.
MAX_FAILED_LOOKS = 5


def _fatal(exc: BaseException) -> bool:
    """A failure no later look can cure: a refused login, a host key that does not match."""
    import asyncssh

    return isinstance(exc, (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable, ValueError))


class RequestArrivalTrigger(BaseTrigger):
    """Looks at the inbox every ``poke_interval`` seconds with the provider's ``SFTPHookAsync`` (asyncssh).

    Fires one of:

    * ``{"status": "actionable", "look": {...}, ...}`` — a request file is complete, or a file
      must be answered (a dotfile, another extension, too large, an abandoned upload). ``look``
      is the last listing as handles → ``[size, mtime]`` (never names): the sensor, back on a
      worker, compares one listing of its own with it instead of waiting to settle again.
    * ``{"status": "timeout", ...}`` — the arrival window closed (``deadline``) with nothing.
    * ``{"status": "error", "reason": …}`` — the server refused the login or the host key, or
      could not be reached for :data:`MAX_FAILED_LOOKS` looks in a row (each retried after a
      backoff): the task fails and retries rather than waiting blind.

    Every event carries ``window_start`` and ``deadline`` back, so the window survives
    re-deferral and a triggerer restart. The classification is the sync sensor's
    (:func:`~welfare_exchange.transport.sftp.classify_inbox`).

    :param sftp_conn_id: the municipality's SFTP connection (host key pinned).
    :param window_start: ISO time the wait began (UTC).
    :param deadline: ISO time the arrival window closes (UTC).
    :param directory: where requests arrive.
    :param patterns: request file-name patterns.
    :param settle_seconds: pause between the two looks of one poll.
    :param poke_interval: seconds between two polls.
    :param max_bytes: largest request accepted (listed size).
    :param stale_after: seconds after which an unchanged temporary upload is abandoned.
    """

    def __init__(
        self,
        sftp_conn_id: str,
        window_start: str,
        deadline: str,
        directory: str = "inbox",
        patterns: Sequence[str] = sftp.DEFAULT_REQUEST_PATTERNS,
        settle_seconds: float = 10.0,
        poke_interval: float = 60.0,
        max_bytes: int | None = None,
        stale_after: float = 86400.0,
    ) -> None:
        super().__init__()
        self.sftp_conn_id = sftp_conn_id
        self.window_start = window_start
        self.deadline = deadline
        self.directory = directory
        self.patterns = list(patterns)
        self.settle_seconds = float(settle_seconds)
        self.poke_interval = float(poke_interval)
        self.max_bytes = max_bytes
        self.stale_after = float(stale_after)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "sftp_conn_id": self.sftp_conn_id, "window_start": self.window_start, "deadline": self.deadline,
                "directory": self.directory, "patterns": self.patterns, "settle_seconds": self.settle_seconds,
                "poke_interval": self.poke_interval, "max_bytes": self.max_bytes, "stale_after": self.stale_after,
            },
        )

    def _event(self, status: str, **fields: Any) -> TriggerEvent:
        return TriggerEvent({"status": status, "window_start": self.window_start, "deadline": self.deadline, **fields})

    async def _listing(self, client) -> list[sftp.RemoteFile]:
        files = []
        for entry in await client.readdir(self.directory):
            name = entry.filename if isinstance(entry.filename, str) else entry.filename.decode("utf-8", "surrogateescape")
            attrs = entry.attrs
            f = sftp.remote_file(name, attrs.size, attrs.mtime, attrs.permissions, self.directory)
            if f is not None:
                files.append(f)
        return files

    async def survey(self, hook) -> tuple[sftp.InboxSurvey, sftp.Look]:
        """One poll: a look, and a second one ``settle_seconds`` later when something may settle."""
        async with hook.get_managed_conn() as client:
            current = await self._listing(client)
            previous = sftp.look_of(current)
            if sftp.needs_second_look(current, stale_after=self.stale_after):
                await asyncio.sleep(self.settle_seconds)
                current = await self._listing(client)
        survey = sftp.classify_inbox(previous, current, patterns=self.patterns, max_bytes=self.max_bytes,
                                     stale_after=self.stale_after)
        return survey, sftp.look_of(current)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.providers.sftp.hooks.sftp import SFTPHookAsync

        deadline = dt.datetime.fromisoformat(self.deadline)
        hook = SFTPHookAsync(sftp_conn_id=self.sftp_conn_id)
        failures = 0
        while True:
            left = (deadline - dt.datetime.now(dt.timezone.utc)).total_seconds()
            if left <= 0:
                yield self._event("timeout")
                return
            try:
                survey, look = await self.survey(hook)
            except Exception as exc:  # asyncssh's and the network's errors are many
                failures += 1
                reason = f"the SFTP server of connection {self.sftp_conn_id!r} could not be read ({type(exc).__name__})"
                if _fatal(exc) or failures >= MAX_FAILED_LOOKS:
                    yield self._event("error", reason=f"{reason}, {failures} time(s) in a row")
                    return
                pause = min(sftp.connect_delay(failures), max(self.poke_interval, 1.0))
                self.log.warning("%s, %d time(s) in a row; looking again in %.1f s", reason, failures, pause)
                await asyncio.sleep(min(pause, max(left, 0.0)))
                continue
            failures = 0
            if survey.actionable:
                yield self._event("actionable", look={k: list(v) for k, v in look.items()},
                                  ready=len(survey.ready), unanswered=len(survey.unanswered))
                return
            self.log.info("no complete request file in %s yet (%d file(s) still changing); looking again in %ss",
                          self.directory, survey.waiting, self.poke_interval)
            await asyncio.sleep(min(self.poke_interval, max(left, 0.0)))
