"""A task supervisor wakes when its task process exits, not at its next heartbeat wake-up.

Runs Airflow's own supervisor (``ActivitySubprocess``) over a real forked child that ends as the
task runner does — it closes its sockets, then exits a moment later — with the wake-up set to
8 s: watched, the supervisor is done within a few seconds of the fork; not watched (the control,
so the test can fail), it sleeps out the 8 s.
"""

from __future__ import annotations

import importlib
import os
import time
import uuid

import pytest
from airflow.sdk.execution_time import supervisor as sv

from welfare_exchange.orchestration import task_exit

WAKE_UP = 8.0


def _finish_like_a_task():
    # The task runner's exit: its sockets close first, the process ends a moment later.
    os.closerange(0, 1024)
    time.sleep(0.5)
    os._exit(0)


def _finish_at_once():
    # Sockets closed and the process gone in the same instant: often reaped before the watch is read.
    os.closerange(0, 1024)
    os._exit(0)


@pytest.fixture
def restorable(monkeypatch):
    """Airflow's own supervisor class for the test (this process may have installed the watch
    already: importing the Celery config does); whatever the test installs is undone after it."""
    for name in ("_register_pipe_readers", "_monitor_subprocess"):
        method = getattr(sv.ActivitySubprocess, name)
        monkeypatch.setattr(sv.ActivitySubprocess, name, getattr(method, "__wrapped__", method))
    monkeypatch.setattr(sv.ActivitySubprocess, task_exit.MARK, False, raising=False)
    monkeypatch.setattr(sv, "MIN_HEARTBEAT_INTERVAL", WAKE_UP)


def _supervise_one(target=_finish_like_a_task):
    """Fork a child under an ActivitySubprocess and supervise it to the end; seconds it took."""
    started = time.monotonic()
    proc = sv.WatchedSubprocess.start.__func__(sv.ActivitySubprocess, target=target, id=uuid.uuid4(), client=None)
    # No heartbeat is due in this short test (there is no API server behind client=None).
    proc._last_heartbeat_attempt = proc._last_successful_heartbeat = time.monotonic()
    proc._monitor_subprocess()
    assert proc._exit_code == 0
    return time.monotonic() - started


@pytest.mark.parametrize("watched", [True, False], ids=["watched", "airflow-alone"])
def test_the_supervisor_wakes_at_the_task_exit(restorable, watched):
    if watched:
        assert task_exit.install() is True
        assert task_exit.install() is True  # twice changes nothing
    took = _supervise_one()
    if watched:
        assert took < WAKE_UP / 2, f"the supervisor took {took:.1f} s to see its task exit"
    else:
        assert took >= WAKE_UP - 1, f"without the watch the supervisor woke after {took:.1f} s: is it still needed?"


def test_the_operator_can_turn_it_off(restorable, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_TASK_EXIT_WATCH", "false")
    assert task_exit.install() is False
    assert getattr(sv.ActivitySubprocess, task_exit.MARK) is False


def _pidfds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        except OSError:
            pass
    return count


def test_the_watch_is_closed_and_leaves_no_descriptor(restorable):
    task_exit.install()
    before = _pidfds()
    for target in [_finish_like_a_task] * 2 + [_finish_at_once] * 20:
        _supervise_one(target)
    assert _pidfds() == before


def test_a_watch_left_unread_is_closed_when_the_supervisor_ends(restorable, monkeypatch):
    """A process reaped in the same wake-up that read its sockets' end leaves the watch unread:
    the supervisor's loop closes it when it ends (the worker supervises try after try)."""
    import selectors
    import subprocess

    child = subprocess.Popen(["sleep", "30"])
    try:
        class Supervisor:
            pid = child.pid
            selector = selectors.DefaultSelector()

        before = _pidfds()
        assert task_exit.watch(Supervisor) is not None
        assert _pidfds() == before + 1
        task_exit.unwatch(Supervisor)
        assert _pidfds() == before and not Supervisor.selector.get_map()
    finally:
        child.kill()
        child.wait()
    # And the installed loop calls it every time, however the loop ended.
    calls = []
    monkeypatch.setattr(task_exit, "unwatch", calls.append)
    task_exit.install()
    _supervise_one(_finish_at_once)
    assert len(calls) == 1


def test_an_in_process_supervisor_is_not_watched():
    class InProcess:
        pid = os.getpid()

    assert task_exit.watch(InProcess()) is None


def test_the_project_starts_workers_with_the_watch(restorable):
    from welfare_exchange.orchestration import celery_config

    importlib.reload(celery_config)  # a Celery worker loading its config
    assert getattr(sv.ActivitySubprocess, task_exit.MARK) is True


def test_the_local_executor_installs_the_watch_before_it_forks_its_workers(restorable):
    from welfare_exchange.orchestration.executor import PreloadingLocalExecutor

    executor = PreloadingLocalExecutor(parallelism=1)
    executor.start()
    try:
        assert getattr(sv.ActivitySubprocess, task_exit.MARK) is True
    finally:
        executor.end()
