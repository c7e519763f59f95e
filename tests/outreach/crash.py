"""Workers that die by SIGKILL at a chosen point of sending, for the kill-and-resume tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.outreach.conftest import EXCHANGE_DATE

#: Runs the send step as a worker would. ``mode`` decides where it dies: ``none`` (the test
#: kills it from outside), ``after_accept`` (the n-th message was accepted by the server, the
#: outbox not yet told), ``before_send`` (the n-th message was begun, never handed over).
WORKER = r"""
import datetime as dt, os, signal, sys
import welfare_exchange.orchestration.hooks  # a worker reads connections through the Airflow hooks (its DAG file imports them)
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.outreach import smtp, steps

mode, n, exchange_id, day = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
original = smtp.SmtpSession.send
calls = {"n": 0}

def send(self, *args, **kwargs):
    if kwargs["recipient"].endswith("@bounce.invalid"):  # count only messages the server will take
        return original(self, *args, **kwargs)
    calls["n"] += 1
    if mode == "before_send" and calls["n"] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(self, *args, **kwargs)
    if mode == "after_accept" and calls["n"] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

smtp.SmtpSession.send = send
run = RunInfo(exchange_date=dt.date.fromisoformat(day), dag_id="method2_crash_test", run_id="crash", task_id="send_messages", try_number=1)
steps.send_messages(exchange_id, run)
"""


def worker(mode: str, n: int, exchange_id: int, rate: str) -> subprocess.Popen:
    env = {**os.environ, "WELFARE_EXCHANGE_OUTREACH_RATE": rate}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, mode, str(n), str(exchange_id), EXCHANGE_DATE.isoformat()],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def worker_killing_itself(stage: str, n: int, exchange_id: int) -> None:
    """A worker that sends flat out and kills itself at ``stage`` of its ``n``-th message."""
    process = worker(stage, n, exchange_id, rate="0")
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL


#: Resolves one uncertain message as ``resend`` as an operator would, and dies by SIGKILL right
#: after the SMTP server accepted the resend, before the outbox was told.
RESOLVER = r"""
import datetime as dt, os, signal, sys
import welfare_exchange.orchestration.hooks  # as the CLI does: connections through the Airflow hooks
from welfare_exchange import audit
from welfare_exchange.outreach import resolution, smtp

exchange_id, outbox_id, day = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
original = smtp.SmtpSession.send

def send(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

smtp.SmtpSession.send = send
resolution.resolve(exchange_id, "resend", actor=audit.Actor(type="user", name="operator-a"), reason="not in the log",
                   outbox_ids=[outbox_id], on=dt.date.fromisoformat(day))
"""


def resolver_killed_after_accept(exchange_id: int, outbox_id: int) -> None:
    """An operator's resend whose process dies once the server took the message."""
    process = subprocess.Popen(
        [sys.executable, "-c", RESOLVER, str(exchange_id), str(outbox_id), EXCHANGE_DATE.isoformat()],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
