"""A worker is free the moment its task process exits, whatever the heartbeat interval.

Airflow 3.3's task supervisor (``ActivitySubprocess`` in ``airflow.sdk.execution_time.supervisor``)
waits in ``select()`` on the task process's sockets, for up to ``[workers] min_heartbeat_interval``
at a time, and looks whether the process has ended after each wait. A finishing task process
closes its sockets first and exits a moment later, so the supervisor reads the sockets' end,
finds the process still alive, and sleeps the full interval before it looks again: every try
holds its worker (a LocalExecutor worker, a Celery pool process) up to 5 s after its step ended.
Lowering the interval (the 1 s wake-up of :data:`welfare_exchange.exchange.scheduling.WORKER_WAKEUP_SECONDS`)
frees the worker sooner, but every running try then also heartbeats the API server every second:
measured on a CPU-bound 2-core machine, that cost more than the slot it freed.

:func:`install` adds one thing the supervisor's ``select()`` waits on: a *pidfd* of the task
process (Linux 5.3+, ``os.pidfd_open``), which becomes readable when the process exits. The wait
ends then, the supervisor reaps the process as it always does, and the heartbeat keeps its own
interval. Nothing else in the supervisor changes; where ``os.pidfd_open`` is missing (not Linux)
or the process is already gone, the supervisor works as before.

It is installed where the project's code starts the workers — the
:class:`~welfare_exchange.orchestration.executor.PreloadingLocalExecutor` before it forks them,
and a Celery worker when it loads :mod:`welfare_exchange.orchestration.celery_config` — and
``tests/orchestration/test_task_exit.py`` checks it against the installed Airflow (a changed
supervisor fails that test, not an exchange).
"""

from __future__ import annotations

import contextlib
import functools
import os
import selectors

from welfare_exchange.settings import task_exit_watch

#: Set on the supervisor class once installed (installing twice changes nothing).
MARK = "_welfare_exchange_exit_watch"


class ExitWatch:
    """The task process's pidfd, as the supervisor's selector wants it: ``fileno()`` and ``close()``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1


def watch(supervisor) -> ExitWatch | None:
    """Register ``supervisor``'s task process exit in its selector; ``None`` when it cannot be watched."""
    if supervisor.pid == os.getpid():  # an in-process supervisor (``dag.test()``): nothing to wait for
        return None
    try:
        fd = os.pidfd_open(supervisor.pid)
    except (AttributeError, OSError):  # not Linux 5.3+, or the process is already reaped
        return None
    exit_watch = ExitWatch(fd)

    def readable(_fileobj) -> bool:
        return False  # the process has exited: nothing more to read, stop watching

    # The selector's data is (handler, on_close), as for the supervisor's own sockets; the
    # supervisor closes the watch after on_close. It is not one of its "open sockets", so it
    # never holds the supervisor back.
    supervisor.selector.register(
        exit_watch, selectors.EVENT_READ, (readable, functools.partial(_unregister, supervisor.selector)))
    return exit_watch


def unwatch(supervisor) -> None:
    """Close the watch if the supervisor ended without reading it.

    That happens when the process was reaped in the same wake-up that read its sockets' end: the
    supervisor stops looking, and the pidfd would stay open in a worker that supervises try
    after try. Called when the supervisor's loop ends, before it closes its selector.
    """
    mapping = supervisor.selector.get_map()
    for key in list(mapping.values()) if mapping is not None else ():
        if isinstance(key.fileobj, ExitWatch):
            _unregister(supervisor.selector, key.fileobj)
            key.fileobj.close()


def _unregister(selector, exit_watch: ExitWatch) -> None:
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(exit_watch)


def install() -> bool:
    """Make every task supervisor of this process (and of processes forked from it) wake at its task's exit.

    Returns whether the supervisor is watched: ``False`` where ``os.pidfd_open`` is missing, or
    when the operator turned it off (``WELFARE_EXCHANGE_TASK_EXIT_WATCH=false``, e.g. to rule it
    out after an Airflow upgrade).
    """
    from airflow.sdk.execution_time.supervisor import ActivitySubprocess

    if not hasattr(os, "pidfd_open") or not task_exit_watch():
        return False
    if getattr(ActivitySubprocess, MARK, False):
        return True
    register, monitor = ActivitySubprocess._register_pipe_readers, ActivitySubprocess._monitor_subprocess

    @functools.wraps(register)
    def register_and_watch(self, *args, **kwargs):
        register(self, *args, **kwargs)
        watch(self)

    @functools.wraps(monitor)
    def monitor_then_unwatch(self):
        try:
            return monitor(self)
        finally:
            unwatch(self)

    ActivitySubprocess._register_pipe_readers = register_and_watch
    ActivitySubprocess._monitor_subprocess = monitor_then_unwatch
    setattr(ActivitySubprocess, MARK, True)
    return True
